//! OCI hooks run in order, with the state on stdin, and time out.

mod common;

use common::{stderr, Bundle};

/// A hook that appends "<name> <state json>" to `log` (a path valid where the hook runs).
fn hook(name: &str, log: &str) -> serde_json::Value {
    serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("printf '%s ' {name} >> {log}; cat >> {log}; echo >> {log}")],
    })
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn hooks_run_in_order_with_state_on_stdin() {
    let b = Bundle::new(&["sleep", "60"]);
    let host_log = b.path().join("hooks.log");
    let host = host_log.to_str().unwrap().to_string();
    b.edit(|c| {
        c["hooks"] = serde_json::json!({
            "prestart": [hook("prestart", &host)],
            "createRuntime": [hook("createRuntime", &host)],
            "createContainer": [hook("createContainer", &host)],
            // After the root is entered: the path and the log are the container's.
            "startContainer": [hook("startContainer", "/start.log")],
            "poststart": [hook("poststart", &host)],
            "poststop": [hook("poststop", &host)],
        });
        c["annotations"] = serde_json::json!({"org.example.k": "v"});
        c["root"]["readonly"] = false.into();
    });
    let bundle = b.path().to_str().unwrap();
    let out = b.rustjail(&["create", "--bundle", bundle, "h1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = b.rustjail(&["start", "h1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // startContainer runs in the init after `start` returns: wait for it.
    let start_log = b.rootfs().join("start.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(&start_log).unwrap_or_default().ends_with('\n') {
        assert!(std::time::Instant::now() < deadline, "startContainer hook did not run");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = b.rustjail(&["delete", "--force", "h1"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let log = std::fs::read_to_string(&host_log).unwrap();
    let entries: Vec<(String, serde_json::Value)> = log
        .lines()
        .map(|l| {
            let (name, json) = l.split_once(' ').unwrap();
            (
                name.to_string(),
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {l}")),
            )
        })
        .collect();
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        vec!["prestart", "createRuntime", "createContainer", "poststart", "poststop"],
        "{log}"
    );
    let status: Vec<&str> = entries.iter().map(|e| e.1["status"].as_str().unwrap()).collect();
    assert_eq!(status, vec!["creating", "creating", "creating", "running", "stopped"]);
    for (name, s) in &entries {
        assert_eq!(s["id"], "h1", "{name}");
        assert_eq!(s["annotations"]["org.example.k"], "v", "{name}");
        assert_eq!(
            s["bundle"],
            b.path().canonicalize().unwrap().to_str().unwrap(),
            "{name}"
        );
    }
    let pid = entries[0].1["pid"].as_i64().unwrap();
    assert!(pid > 1);
    assert_eq!(entries[3].1["pid"].as_i64().unwrap(), pid);
    let start = std::fs::read_to_string(start_log).unwrap();
    assert!(start.starts_with("startContainer {"), "{start}");
    assert!(start.contains("\"status\":\"created\""), "{start}");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn a_hook_that_hangs_is_killed_at_its_timeout_and_create_fails() {
    let b = Bundle::new(&["true"]);
    b.edit(|c| {
        c["hooks"] = serde_json::json!({
            "createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}],
        });
    });
    let t = std::time::Instant::now();
    let out = b.rustjail(&["create", "--bundle", b.path().to_str().unwrap(), "slow"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("createRuntime hook /bin/sleep timed out"),
        "{}",
        stderr(&out)
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    assert!(!b.state_root.path().join("slow").exists(), "state left behind");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn a_failing_poststart_hook_is_a_warning() {
    let b = Bundle::new(&["sleep", "60"]);
    b.edit(|c| c["hooks"] = serde_json::json!({"poststart": [{"path": "/bin/false", "args": ["false"]}]}));
    let bundle = b.path().to_str().unwrap();
    assert!(b.rustjail(&["create", "--bundle", bundle, "pw"]).status.success());
    let out = b.rustjail(&["start", "pw"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("warning: poststart hook /bin/false failed"),
        "{}",
        stderr(&out)
    );
    let s: serde_json::Value = serde_json::from_slice(&b.rustjail(&["state", "pw"]).stdout).unwrap();
    assert_eq!(s["status"], "running");
    assert!(b.rustjail(&["delete", "--force", "pw"]).status.success());
}
