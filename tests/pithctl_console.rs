//! `pithctl console` against a stand-in for a VMM's hybrid vsock socket: the
//! handshake names the console port, piped stdin reaches the guest, the output
//! is printed until the guest closes, and the write side is never half-closed
//! (hybrid vsock backends drop a half-closed connection).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn console_pipes_stdin_and_prints_until_the_guest_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.vsock");
    let listener = UnixListener::bind(&path).unwrap();
    let guest = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut w = s;
        w.write_all(b"OK 1073741824\n").unwrap();
        // What the "shell" receives, up to its exit command.
        let mut got = String::new();
        while !got.ends_with("exit\n") {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "stdin ended early: {got:?}");
            got.push_str(&l);
        }
        // The host's stdin is at its end by now; the connection must stay whole.
        w.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut b = [0u8; 1];
        let half_closed = matches!(r.get_mut().read(&mut b), Ok(0));
        w.write_all(b"guest says hi\n").unwrap();
        drop(w);
        drop(r);
        (line, got, half_closed)
    });
    let mut child = Command::new(common::pithctl_bin())
        .arg("--addr")
        .arg(format!("hvsock://{}:1024", path.display()))
        .args(["console", "--port", "1026"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"echo hi\nexit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (connect, got, half_closed) = guest.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(connect, "CONNECT 1026\n");
    assert_eq!(got, "echo hi\nexit\n");
    assert!(!half_closed, "pithctl half-closed the connection at the end of stdin");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "guest says hi\n");
}

#[test]
fn console_port_needs_a_vsock_address() {
    let out = Command::new(common::pithctl_bin())
        .args(["--addr", "unix:///nonexistent.sock", "console", "--port", "1026"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port needs a vsock:// or hvsock:// address"));
}
