//! The library as the agent uses it: a `Runtime` in a multi-threaded process,
//! the container's stdio on pipes the caller owns, the caller waiting for it.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use common::{can_run, Bundle};
use rustjail::{CreateOptions, ExecOptions, Runtime};

fn runtime(b: &Bundle) -> Runtime {
    // The test binary cannot serve as the init: use the rustjail command.
    Runtime::with_binary(b.state_root.path(), Path::new(env!("CARGO_BIN_EXE_rustjail"))).unwrap()
}

fn wait_code(pid: nix::unistd::Pid) -> i32 {
    match nix::sys::wait::waitpid(pid, None).unwrap() {
        nix::sys::wait::WaitStatus::Exited(_, c) => c,
        nix::sys::wait::WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        other => panic!("{other:?}"),
    }
}

#[test]
fn container_stdio_on_the_callers_pipes() {
    if !can_run() {
        return;
    }
    let b = Bundle::new(&["sh", "-c", "read line; echo \"got $line\"; echo oops >&2; exit 9"]);
    let rt = runtime(&b);
    let (in_r, mut in_w) = std::io::pipe().unwrap();
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let (mut err_r, err_w) = std::io::pipe().unwrap();
    let id = format!("lib-{}", std::process::id());
    let st = rt
        .create(&CreateOptions {
            id: id.clone(),
            bundle: b.path().to_path_buf(),
            stdio: Some([in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()]),
            ..Default::default()
        })
        .unwrap();
    // Our copies of the container's ends go away, so EOF comes when it exits.
    drop((in_r, out_w, err_w));
    rt.start(&id).unwrap();
    in_w.write_all(b"hello\n").unwrap();
    drop(in_w);
    let mut out = String::new();
    out_r.read_to_string(&mut out).unwrap();
    let mut err = String::new();
    err_r.read_to_string(&mut err).unwrap();
    assert_eq!(out, "got hello\n");
    assert_eq!(err, "oops\n");
    // The init is this process's child: its status is ours to collect.
    assert_eq!(wait_code(nix::unistd::Pid::from_raw(st.pid)), 9);
    rt.delete(&id, false).unwrap();
}

#[test]
fn exec_stdio_on_the_callers_pipes() {
    if !can_run() {
        return;
    }
    let b = Bundle::new(&["sleep", "60"]);
    let rt = runtime(&b);
    let id = format!("libx-{}", std::process::id());
    let (null_in, _keep) = std::io::pipe().unwrap();
    rt.create(&CreateOptions {
        id: id.clone(),
        bundle: b.path().to_path_buf(),
        stdio: Some([null_in.as_raw_fd(), 2, 2]),
        ..Default::default()
    })
    .unwrap();
    rt.start(&id).unwrap();
    let mut process = rt.spec(&id).unwrap().process().clone().unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo from exec; cat /proc/1/comm".into(),
    ]));
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let pid = rt
        .exec(
            &id,
            ExecOptions {
                process,
                console_socket: None,
                stdio: Some([0, out_w.as_raw_fd(), 2]),
            },
        )
        .unwrap();
    drop(out_w);
    let mut out = String::new();
    out_r.read_to_string(&mut out).unwrap();
    assert_eq!(out, "from exec\nsleep\n");
    assert_eq!(wait_code(pid), 0);
    rt.delete(&id, true).unwrap();
}
