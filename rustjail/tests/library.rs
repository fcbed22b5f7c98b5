//! The library as the agent uses it: a `Runtime` in a multi-threaded process,
//! the container's stdio on pipes the caller owns, the caller waiting for it.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use common::Bundle;
use rustjail::{CreateOptions, ExecOptions, Runtime};

/// The bundle's spec, read as the command line would.
fn spec(b: &Bundle) -> oci_spec::runtime::Spec {
    oci_spec::runtime::Spec::load(b.path().join("config.json")).unwrap()
}

/// A copy of one of this process's descriptors (stdin, stderr).
fn dup(fd: impl AsFd) -> OwnedFd {
    fd.as_fd().try_clone_to_owned().unwrap()
}

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
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn container_stdio_on_the_callers_pipes() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "read line; echo \"got $line\"; grep SigIgn /proc/self/status; echo oops >&2; exit 9",
    ]);
    let rt = runtime(&b);
    let (in_r, mut in_w) = std::io::pipe().unwrap();
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let (mut err_r, err_w) = std::io::pipe().unwrap();
    let id = format!("lib-{}", std::process::id());
    let st = rt
        .create(CreateOptions {
            id: id.clone(),
            spec: spec(&b),
            bundle: b.path().to_path_buf(),
            // Taken and closed by create, so EOF comes when the container exits.
            stdio: Some([in_r.into(), out_w.into(), err_w.into()]),
            ..Default::default()
        })
        .unwrap()
        .container;
    rt.start(&st).unwrap();
    in_w.write_all(b"hello\n").unwrap();
    drop(in_w);
    let mut out = String::new();
    out_r.read_to_string(&mut out).unwrap();
    let mut err = String::new();
    err_r.read_to_string(&mut err).unwrap();
    // No signal ignored: SIGPIPE is the default again, as under runc.
    assert_eq!(out, "got hello\nSigIgn:\t0000000000000000\n");
    assert_eq!(err, "oops\n");
    // The init is this process's child: its status is ours to collect.
    assert_eq!(wait_code(nix::unistd::Pid::from_raw(st.pid)), 9);
    rt.delete(&st, false).unwrap();
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn exec_stdio_on_the_callers_pipes() {
    let b = Bundle::new(&["sleep", "60"]);
    let rt = runtime(&b);
    let id = format!("libx-{}", std::process::id());
    let (null_in, _keep) = std::io::pipe().unwrap();
    let c = rt
        .create(CreateOptions {
            id: id.clone(),
            spec: spec(&b),
            bundle: b.path().to_path_buf(),
            stdio: Some([null_in.into(), dup(std::io::stderr()), dup(std::io::stderr())]),
            ..Default::default()
        })
        .unwrap()
        .container;
    rt.start(&c).unwrap();
    // The spec the container was created with is in the handle.
    let mut process = c.spec.process().clone().unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        // Not the last command: busybox sh execs that one itself, ignoring SIGQUIT.
        "echo from exec; cat /proc/1/comm; grep SigIgn /proc/self/status; true".into(),
    ]));
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let pid = rt
        .exec(
            &c,
            ExecOptions {
                process,
                stdio: Some([dup(std::io::stdin()), out_w.into(), dup(std::io::stderr())]),
            },
        )
        .unwrap()
        .pid;
    let mut out = String::new();
    out_r.read_to_string(&mut out).unwrap();
    // No signal ignored: SIGPIPE is the default again, as under runc.
    assert_eq!(out, "from exec\nsleep\nSigIgn:\t0000000000000000\n");
    assert_eq!(wait_code(pid), 0);
    rt.delete(&c, true).unwrap();
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn terminal_master_is_returned_by_create_and_exec() {
    let b = Bundle::new(&["sh", "-c", "tty; read x; echo \"init got $x\""]);
    b.edit(|c| c["process"]["terminal"] = true.into());
    let rt = runtime(&b);
    let id = format!("libt-{}", std::process::id());
    let created = rt
        .create(CreateOptions {
            id: id.clone(),
            spec: spec(&b),
            bundle: b.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap();
    let c = created.container;
    let mut term = std::fs::File::from(created.terminal.expect("a terminal master from create"));
    rt.start(&c).unwrap();
    let mut process = c.spec.process().clone().unwrap();
    process.set_args(Some(vec!["sh".into(), "-c".into(), "tty; echo exec done".into()]));
    let spawned = rt.exec(&c, ExecOptions { process, stdio: None }).unwrap();
    let mut exec_term = std::fs::File::from(spawned.terminal.expect("a terminal master from exec"));
    // EIO once the slave side is gone: read what came before it.
    let read_all = |f: &mut std::fs::File| {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let exec_out = read_all(&mut exec_term);
    assert!(
        exec_out.contains("/dev/pts/") && exec_out.contains("exec done"),
        "{exec_out:?}"
    );
    assert_eq!(wait_code(spawned.pid), 0);
    term.write_all(b"hi\n").unwrap();
    let init_out = read_all(&mut term);
    assert!(
        init_out.contains("/dev/pts/") && init_out.contains("init got hi"),
        "{init_out:?}"
    );
    assert_eq!(wait_code(nix::unistd::Pid::from_raw(c.pid)), 0);
    rt.delete(&c, true).unwrap();
}

/// A spec built in memory is checked by `create` as a `config.json` is
/// (`spec::check`, with the runtime's policy): nothing is made for a refused one.
#[test]
fn an_in_memory_spec_is_checked_as_a_file_is() {
    let b = Bundle::new(&["true"]);
    let mut rt = runtime(&b);
    let create = |rt: &Runtime, spec| {
        rt.create(CreateOptions {
            id: format!("libspec-{}", std::process::id()),
            spec,
            bundle: b.path().to_path_buf(),
            ..Default::default()
        })
    };
    let with_sysctl = |key: &str| {
        let mut s = spec(&b);
        let mut linux = s.linux().clone().unwrap();
        linux.set_sysctl(Some([(key.to_string(), "1".to_string())].into()));
        linux.set_namespaces(Some(
            linux
                .namespaces()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Network)
                .collect(),
        ));
        s.set_linux(Some(linux));
        s
    };
    let e = create(&rt, with_sysctl("kernel.core_pattern")).unwrap_err();
    assert!(matches!(e, rustjail::Error::Spec(_)), "{e}");
    assert!(e.to_string().contains("linux.sysctl \"kernel.core_pattern\""), "{e}");
    let e = create(&rt, with_sysctl("net.ipv4.ip_forward")).unwrap_err();
    assert!(e.to_string().contains("needs a network namespace"), "{e}");
    // Twice the same rlimit, which only the typed spec can say here.
    let mut s = spec(&b);
    let mut p = s.process().clone().unwrap();
    let r = oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
        .hard(1024u64)
        .soft(1024u64)
        .build()
        .unwrap();
    p.set_rlimits(Some(vec![r, r]));
    s.set_process(Some(p));
    let e = create(&rt, s).unwrap_err();
    assert!(
        e.to_string()
            .contains("process.rlimits[1].type: \"RLIMIT_NOFILE\" is listed twice"),
        "{e}"
    );
    assert!(rt.list().unwrap().is_empty(), "nothing was created");
    // A Kata agent's policy lets net.* through (checked only: the next check,
    // of the rootfs, fails before anything is made).
    rt.set_policy(rustjail::spec::Policy {
        caller_netns_is_the_sandbox: true,
        ignore_apparmor: true,
    });
    let mut s = with_sysctl("net.ipv4.ip_forward");
    let mut root = s.root().clone().unwrap();
    root.set_path("no-such-rootfs".into());
    s.set_root(Some(root));
    let e = create(&rt, s).unwrap_err();
    assert!(e.to_string().contains("no-such-rootfs"), "{e}");
    assert!(rt.list().unwrap().is_empty());
}

/// `meanwhile` runs once, while the init builds its root, and is told the
/// init as the container keeps it: its own, or the child an init joining
/// another container's PID namespace forks into it.
#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn meanwhile_is_told_the_init_the_container_keeps() {
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<(i32, u64, Vec<String>)>>>;
    let b = Bundle::new(&["sleep", "60"]);
    let rt = runtime(&b);
    let create = |id: &str, spec, seen: &Seen| {
        let seen = seen.clone();
        rt.create(CreateOptions {
            id: id.into(),
            spec,
            bundle: b.path().to_path_buf(),
            stdio: Some([dup(std::io::stdin()), dup(std::io::stderr()), dup(std::io::stderr())]),
            meanwhile: Some(rustjail::container::Meanwhile(Box::new(move |s| {
                let args = s
                    .spec
                    .process()
                    .as_ref()
                    .and_then(|p| p.args().clone())
                    .unwrap_or_default();
                seen.lock().unwrap().push((s.pid, s.start_time, args));
            }))),
            ..Default::default()
        })
        .unwrap()
        .container
    };
    let first_seen = Seen::default();
    let first = create(&format!("libm1-{}", std::process::id()), spec(&b), &first_seen);
    assert_eq!(
        *first_seen.lock().unwrap(),
        [(first.pid, first.start_time, vec!["sleep".to_string(), "60".to_string()])]
    );
    rt.start(&first).unwrap();
    // The second joins the first's PID namespace: its init forks, and the
    // child is the container's init.
    let mut s = spec(&b);
    let mut linux = s.linux().clone().unwrap();
    let ns = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|mut n| {
            if n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid {
                n.set_path(Some(format!("/proc/{}/ns/pid", first.pid).into()));
            }
            n
        })
        .collect();
    linux.set_namespaces(Some(ns));
    s.set_linux(Some(linux));
    let second_seen = Seen::default();
    let second = create(&format!("libm2-{}", std::process::id()), s, &second_seen);
    let seen = second_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].0, seen[0].1), (second.pid, second.start_time));
    let stat = std::fs::read_to_string(format!("/proc/{}/status", second.pid)).unwrap();
    let nspid = stat.lines().find(|l| l.starts_with("NSpid:")).unwrap().to_string();
    assert_eq!(
        nspid.split_whitespace().count(),
        3,
        "in the first's PID namespace: {nspid}"
    );
    rt.delete(&second, true).unwrap();
    // Reaped, or the first's init (the namespace's) waits for it to end.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(second.pid), None);
    rt.delete(&first, true).unwrap();
}
