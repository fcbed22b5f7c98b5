//! Terminals: the pty master arrives on the console socket (SCM_RIGHTS) and the
//! process sees the slave as its controlling terminal.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::JoinHandle;

use common::{stderr, Bundle};

/// Accepts one connection on `path`, takes the pty master, and reads it until
/// the slave side is gone.
fn console_reader(path: &Path) -> JoinHandle<String> {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let master = rustjail::sync::recv_fd(&s).unwrap();
        let mut f = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every slave descriptor is closed.
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// `rustjail run` of the bundle as `id` with a console socket; returns what
/// the pty master read.
fn run_with_console(b: &Bundle, id: &str) -> String {
    let sock = b.path().join("console.sock");
    let reader = console_reader(&sock);
    let out = b.rustjail(&[
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        id,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    reader.join().unwrap()
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn run_with_a_terminal_sends_the_pty_master() {
    let b = Bundle::new(&["sh", "-c", "tty; stty size; echo done"]);
    b.edit(|c| {
        c["process"]["terminal"] = true.into();
        c["process"]["consoleSize"] = serde_json::json!({"height": 40, "width": 100});
    });
    let text = run_with_console(&b, "tty1");
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(text.contains("40 100"), "{text:?}");
    assert!(text.contains("done"), "{text:?}");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn terminal_without_console_socket_is_refused() {
    let b = Bundle::new(&["true"]);
    b.edit(|c| c["process"]["terminal"] = true.into());
    let out = b.rustjail(&["create", "--bundle", b.path().to_str().unwrap(), "notty"]);
    assert!(
        !out.status.success() && stderr(&out).contains("console-socket"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn exec_with_a_terminal() {
    let b = Bundle::new(&["sleep", "60"]);
    b.create_and_start("xt");
    // Twice: an exec's terminal is not bound over /dev/console (as runc), so
    // the second does not trip over the first one's pty, gone by then.
    for i in 0..2 {
        let sock = b.path().join(format!("exec-console-{i}.sock"));
        let reader = console_reader(&sock);
        let out = b.rustjail(&[
            "exec",
            "--tty",
            "--console-socket",
            sock.to_str().unwrap(),
            "xt",
            "sh",
            "-c",
            "tty; echo exec-done",
        ]);
        assert!(out.status.success(), "exec {i}: {}", stderr(&out));
        let text = reader.join().unwrap();
        assert!(
            text.contains("/dev/pts/") && text.contains("exec-done"),
            "exec {i}: {text:?}"
        );
    }
    assert!(b.rustjail(&["delete", "--force", "xt"]).status.success());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn dev_console_is_the_processs_terminal() {
    let b = Bundle::new(&["sh", "-c", "stat -L -c %t:%T /dev/console; stat -L -c %t:%T $(tty)"]);
    b.edit(|c| c["process"]["terminal"] = true.into());
    let text = run_with_console(&b, "devconsole");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert_eq!(lines[0], lines[1], "/dev/console is not the terminal: {text:?}");
}
