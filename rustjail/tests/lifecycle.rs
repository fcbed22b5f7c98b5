//! Real containers from a busybox bundle through the `rustjail` command line.

mod common;

use common::{stderr, stdout, Bundle};

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn run_reports_output_and_exit_code() {
    let b = Bundle::new(&["sh", "-c", "echo hello; exit 7"]);
    let out = b.run("exit7");
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    // run deletes the container afterwards.
    assert!(!b.state_root.path().join("exit7").exists());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn signal_death_is_128_plus_signal() {
    // The container's PID 1 ignores signals sent from inside its own namespace,
    // so kill it from outside while `run` waits for it.
    let b = Bundle::new(&["sleep", "60"]);
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_rustjail"))
        .arg("--root")
        .arg(b.state_root.path())
        .args(["run", "--bundle", b.path().to_str().unwrap(), "sig9"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s: serde_json::Value = serde_json::from_slice(&b.rustjail(&["state", "sig9"]).stdout).unwrap_or_default();
        if s["status"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never running: {s}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = b.rustjail(&["kill", "sig9", "9"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(run.wait().unwrap().code(), Some(137));
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn create_start_state_kill_delete() {
    let b = Bundle::new(&["sleep", "60"]);
    let bundle = b.path().to_str().unwrap();
    let pid_file = b.path().join("pid");
    let out = b.rustjail(&[
        "create",
        "--bundle",
        bundle,
        "--pid-file",
        pid_file.to_str().unwrap(),
        "c1",
    ]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();

    let state =
        |b: &Bundle| -> serde_json::Value { serde_json::from_slice(&b.rustjail(&["state", "c1"]).stdout).unwrap() };
    let s = state(&b);
    assert_eq!(s["status"], "created");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["id"], "c1");
    assert_eq!(s["ociVersion"], "1.0.2");
    // Until start, the init has not run the user's program.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("sleep"), "ran before start");

    // Creating the same id again is refused, the first one untouched.
    let dup = b.rustjail(&["create", "--bundle", bundle, "c1"]);
    assert!(
        !dup.status.success() && stderr(&dup).contains("already exists"),
        "{}",
        stderr(&dup)
    );

    let out = b.rustjail(&["start", "c1"]);
    assert!(out.status.success(), "start: {}", stderr(&out));
    assert_eq!(state(&b)["status"], "running");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).starts_with("sleep"), "{cmdline:?}");

    let out = b.rustjail(&["delete", "c1"]);
    assert!(
        !out.status.success() && stderr(&out).contains("running"),
        "{}",
        stderr(&out)
    );

    let out = b.rustjail(&["kill", "c1", "KILL"]);
    assert!(out.status.success(), "kill: {}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while state(&b)["status"] != "stopped" {
        assert!(std::time::Instant::now() < deadline, "still {}", state(&b)["status"]);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = b.rustjail(&["delete", "c1"]);
    assert!(out.status.success(), "delete: {}", stderr(&out));
    let out = b.rustjail(&["state", "c1"]);
    assert!(
        !out.status.success() && stderr(&out).contains("does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn delete_force_kills_a_running_container() {
    let b = Bundle::new(&["sleep", "60"]);
    b.create_and_start("f1");
    let out = b.rustjail(&["delete", "--force", "f1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&b.rustjail(&["list"]));
    assert!(!list.contains("f1"), "{list}");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    let b = Bundle::new(&["true"]);
    let bundle = b.path().to_str().unwrap();
    for id in ["../x", "a/b", ".."] {
        let out = b.rustjail(&["create", "--bundle", bundle, id]);
        assert!(
            !out.status.success() && stderr(&out).contains("invalid container id"),
            "{id}: {}",
            stderr(&out)
        );
    }
    b.edit(|c| c["root"]["path"] = "no-such-rootfs".into());
    let out = b.rustjail(&["create", "--bundle", bundle, "norootfs"]);
    assert!(
        !out.status.success() && stderr(&out).contains("no-such-rootfs"),
        "{}",
        stderr(&out)
    );
    assert!(!b.state_root.path().join("norootfs").exists());

    let b = Bundle::new(&["/no/such/program"]);
    let out = b.rustjail(&["create", "--bundle", b.path().to_str().unwrap(), "noprog"]);
    assert!(
        !out.status.success() && stderr(&out).contains("/no/such/program"),
        "{}",
        stderr(&out)
    );
    assert!(!b.state_root.path().join("noprog").exists(), "state left behind");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn exec_joins_the_running_containers_namespaces() {
    let b = Bundle::new(&["sleep", "60"]);
    b.edit(|c| c["hostname"] = "exec-host".into());
    b.create_and_start("x1");
    let s: serde_json::Value = serde_json::from_slice(&b.rustjail(&["state", "x1"]).stdout).unwrap();
    let pid = s["pid"].as_i64().unwrap();
    let ns = |name: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
            .unwrap()
            .display()
            .to_string()
    };

    let out = b.rustjail(&[
        "exec", "x1", "sh", "-c",
        "hostname; readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt; readlink /proc/self/ns/net; cat /proc/1/comm; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "exec-host".to_string(),
            ns("pid"),
            ns("mnt"),
            ns("net"),
            "sleep".to_string()
        ]
    );

    let out = b.rustjail(&[
        "exec",
        "--env",
        "GREETING=hi",
        "--cwd",
        "/proc",
        "--user",
        "1000:1000",
        "x1",
        "sh",
        "-c",
        "echo $GREETING; pwd; id",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n/proc\nuid=1000 gid=1000\n");

    let out = b.rustjail(&["exec", "x1", "/no/such/thing"]);
    assert!(
        !out.status.success() && stderr(&out).contains("/no/such/thing"),
        "{}",
        stderr(&out)
    );
    let out = b.rustjail(&["exec", "nope", "true"]);
    assert!(
        !out.status.success() && stderr(&out).contains("does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(b.rustjail(&["delete", "--force", "x1"]).status.success());
}
