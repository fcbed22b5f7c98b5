//! The binary started as PID 1, in a new PID and mount namespace (as the
//! guest's init, without a VM): the keeper is init and the agent its child;
//! a `kill -9`'d agent is replaced and the socket, held by the keeper,
//! answers a new connection; SIGTERM to PID 1 stops the agent, and the keeper
//! "powers off" (in a PID namespace, `reboot(2)` ends the namespace's init).
//! The mounts init makes stay inside the test's mount namespace, and the
//! directories it makes for the cgroup hierarchies in a tmpfs of the test's.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn until(what: &str, log: &Path, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "no {what} within 30 s; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    common::children(pid as i32).into_iter().map(|p| p as u32).collect()
}

fn check(addr: &str) -> String {
    let out = Command::new(common::pithctl_bin())
        .args(["--addr", addr, "--timeout", "10", "check"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn as_pid_1_the_keeper_is_init_and_outlives_a_killed_agent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("cmdline"), "agent.log=debug").unwrap();
    let log = d.join("out.log");
    let sock = d.join("a.sock");
    let addr = format!("unix://{}", sock.display());
    // unshare forks: its child is PID 1 of the new namespace. A tmpfs of its
    // own on /sys/fs/cgroup first (then `exec`, still PID 1): init makes the
    // directories of the cgroup hierarchies it mounts, and directories made in
    // the host's cgroup tmpfs would outlive the namespace (as `cpu,cpuacct`,
    // `hugetlb`, `net_cls` did on the test machine).
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--propagation", "private"])
        .args([
            "sh",
            "-c",
            "mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup && exec \"$0\" \"$@\"",
        ])
        .arg(env!("CARGO_BIN_EXE_pith-agent"))
        .args(["--server-addr", &addr, "--cmdline"])
        .arg(d.join("cmdline"))
        .arg("--state-dir")
        .arg(d.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("unshare");
    let us = unshare.id();
    until("PID 1", &log, || children(us).len() == 1);
    let init = children(us)[0];
    // Until PID 1 is the agent's binary: before its `exec`, the shell's child
    // is `mount`, which the agent must not be taken for.
    let binary = Path::new(env!("CARGO_BIN_EXE_pith-agent"));
    until("PID 1 running the agent's binary", &log, || {
        std::fs::read_link(format!("/proc/{init}/exe")).is_ok_and(|e| e == binary)
    });
    until("agent", &log, || children(init).len() == 1);
    let agent = children(init)[0];
    until("listener", &log, || sock.exists());
    assert!(check(&addr).contains("SERVING"));
    let comm = std::fs::read_to_string(format!("/proc/{agent}/comm")).unwrap();
    assert_eq!(comm.trim(), "pith-agent");

    // SIGKILL to the agent: PID 1 lives on and starts a new one.
    let t = Instant::now();
    // SAFETY: kill(2) on the agent, a process this test started.
    assert_eq!(unsafe { libc::kill(agent as i32, libc::SIGKILL) }, 0);
    assert!(check(&addr).contains("SERVING"), "no answer after the crash");
    let back = t.elapsed();
    let now = children(init);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], agent);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the agent ended (Signal(9)); starting a new one"),
        "{text}"
    );
    println!("kill -9 -> Check answered on a new connection: {} ms", back.as_millis());

    // SIGTERM to PID 1: forwarded; the agent stops cleanly, the keeper powers off.
    // SAFETY: kill(2) on the namespace's init, a process this test started.
    assert_eq!(unsafe { libc::kill(init as i32, libc::SIGTERM) }, 0);
    let st = unshare.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"msg\":\"stopped\""), "{text}");
    assert!(
        text.contains("the agent ended for good (code 0); powering off"),
        "{text}"
    );
    // reboot(RB_POWER_OFF) in a PID namespace ends its init with SIGINT
    // (unshare passes it on as its own death or as 128 + 2).
    let sig = std::os::unix::process::ExitStatusExt::signal(&st);
    assert!(
        sig == Some(libc::SIGINT) || st.code() == Some(128 + libc::SIGINT),
        "{st:?}\n{text}"
    );
    assert!(!sock.exists(), "the socket file is left behind");
}
