//! `pithctl` against a real agent, as a person would use it.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::Agent;

fn pithctl(agent: &Agent, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(common::pithctl_bin())
        .env("PITH_ADDR", agent.address().to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn check_version_hello() {
    let agent = Agent::start(&[]);
    assert_eq!(json(&pithctl(&agent, &["check"], None))["status"], "SERVING");
    assert_eq!(
        json(&pithctl(&agent, &["version"], None))["agentVersion"],
        pith_agent::AGENT_VERSION
    );
    let h = json(&pithctl(&agent, &["hello", "--feature", "introspection"], None));
    assert_eq!(h["level"], protocols::levels::MAX_LEVEL);
    assert_eq!(h["missingFeatures"], serde_json::json!([]));
    let out = pithctl(&agent, &["hello", "--min", "7", "--max", "8"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FAILED_PRECONDITION")
            && err.contains("[7, 8]")
            && err.contains(&format!("[1, {}]", protocols::levels::MAX_LEVEL)),
        "{err}"
    );
}

#[test]
fn call_takes_json_inline_from_stdin_and_from_a_file() {
    let agent = Agent::start(&[]);
    let req = r#"{"hostName":"json-host","minLevel":1,"maxLevel":2}"#;
    assert_eq!(json(&pithctl(&agent, &["call", "Hello", req], None))["level"], 2);
    assert_eq!(
        json(&pithctl(&agent, &["call", "pith.Negotiation/Hello"], Some(req)))["level"],
        2
    );
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "{}").unwrap();
    let s = json(&pithctl(
        &agent,
        &["call", "Status", "--file", f.path().to_str().unwrap()],
        None,
    ));
    assert_eq!(s["hostName"], "json-host");
}

#[test]
fn call_reports_status_errors_and_bad_json() {
    let agent = Agent::start(&[]);
    let out = pithctl(&agent, &["call", "GetDiagnosticData", "{}"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        // Level 1: kata-agent's answer for a method it does not serve.
        err.contains("NOT_FOUND") && err.contains("/grpc.AgentService/GetDiagnosticData is not supported"),
        "{err}"
    );

    let out = pithctl(&agent, &["call", "CreateContainer", r#"{"containerIdd":"c1"}"#], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("grpc.CreateContainerRequest"),
        "{err}"
    );

    let out = pithctl(&agent, &["call", "Frobnicate", "{}"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no method \"Frobnicate\""),
        "{err}"
    );
}

#[test]
fn methods_lists_every_service() {
    let agent = Agent::start(&[]);
    let out = pithctl(&agent, &["methods"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("grpc.AgentService/CreateContainer grpc.CreateContainerRequest -> google.protobuf.Empty"));
    assert!(text.contains("grpc.Health/Check"));
    assert!(text.contains("pith.Negotiation/Hello"));
}

/// `pithctl methods | head -1`: a reader that leaves early is not an error.
#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let mut child = Command::new(common::pithctl_bin())
        .arg("methods")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn no_agent_is_a_clear_error_after_the_timeout() {
    let out = Command::new(common::pithctl_bin())
        .args(["--addr", "unix:///nonexistent/pith.sock", "--timeout", "0.3", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to unix:///nonexistent/pith.sock") && err.contains("attempts"),
        "{err}"
    );

    let out = Command::new(common::pithctl_bin())
        .args(["--addr", "tcp://1.2.3.4:1", "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown scheme"), "{err}");
}

fn text(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The README's walk-through: a sandbox, a container run to completion, a
/// detached one with execs, ps, rm, and the sandbox destroyed.
#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn drives_a_pod_from_the_command_line() {
    let agent = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let rootfs = common::busybox_rootfs(dir.path());
    let rootfs = rootfs.to_str().unwrap();
    text(&pithctl(&agent, &["sandbox", "create", "--hostname", "demo"], None));

    let out = pithctl(
        &agent,
        &[
            "run",
            "--rm",
            "--rootfs",
            rootfs,
            "--id",
            "once",
            "--",
            "sh",
            "-c",
            "hostname; echo err >&2; exit 4",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "demo\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let web = format!("web-{}", std::process::id());
    let web = web.as_str();
    assert_eq!(
        text(&pithctl(
            &agent,
            &["run", "-d", "--rootfs", rootfs, "--id", web, "--", "sleep", "1000"],
            None
        )),
        format!("{web}\n")
    );
    assert_eq!(
        text(&pithctl(&agent, &["exec", web, "--", "echo", "inside"], None)),
        "inside\n"
    );
    let cat = pithctl(
        &agent,
        &["exec", "-i", "--exec-id", "cat1", web, "--", "cat"],
        Some("round trip\n"),
    );
    assert_eq!(text(&cat), "round trip\n");
    // Not a terminal on our side: the process's terminal gets the default size
    // instead of staying 0x0.
    let size = pithctl(
        &agent,
        &[
            "exec",
            "-t",
            "--exec-id",
            "size1",
            web,
            "--",
            "sh",
            "-c",
            // busybox's stty prints nothing on a 0x0 terminal.
            "while :; do s=$(stty size 2>/dev/null); case \"$s\" in ''|'0 0') sleep 0.05;; *) break;; esac; done; echo \"$s\"",
        ],
        None,
    );
    assert_eq!(text(&size), "24 80\r\n");
    let pids: Vec<i32> = serde_json::from_str(&text(&pithctl(&agent, &["ps", web, "--format", "json"], None))).unwrap();
    assert_eq!(pids.len(), 1);
    assert!(text(&pithctl(&agent, &["ps", web], None)).contains("sleep 1000"));
    text(&pithctl(&agent, &["kill", web, "0"], None));
    text(&pithctl(&agent, &["rm", web], None));
    let gone = pithctl(&agent, &["ps", web], None);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NOT_FOUND"));
    text(&pithctl(&agent, &["sandbox", "destroy"], None));
}

/// `pithctl state --state-dir dir`, no agent asked.
fn state_of(dir: &std::path::Path) -> Output {
    Command::new(common::pithctl_bin())
        .args(["state", "--state-dir"])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn state_shows_what_the_agent_persisted() {
    let agent = Agent::start(&[]);
    json(&pithctl(&agent, &["hello", "--name", "state-test"], None));
    let sb = r#"{"hostname": "state-pod", "sandbox_id": "sb-state"}"#;
    let out = pithctl(&agent, &["call", "CreateSandbox", sb], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = state_of(&agent.dir.path().join("state"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "persist_version: ",
        "pod: sb-state (",
        "hostname \"state-pod\"",
        "host \"state-test\"",
        "containers: 0",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn state_names_the_file_and_the_fault_of_a_damaged_or_too_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sandbox.json");
    let golden = std::fs::read(common::fixture("persist/v3.json")).unwrap();
    std::fs::write(&file, &golden[..golden.len() / 2]).unwrap();
    let out = state_of(dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("{}: damaged", file.display())), "{err}");

    std::fs::write(
        &file,
        r#"{"persist_version": 9, "min_reader_version": 8, "sandbox": {}}"#,
    )
    .unwrap();
    let out = state_of(dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&file.display().to_string()) && err.contains("persist version 9") && err.contains("version 8"),
        "{err}"
    );

    // A golden file of each version reads.
    for v in ["v1", "v2", "v3"] {
        std::fs::copy(common::fixture(&format!("persist/{v}.json")), &file).unwrap();
        let out = state_of(dir.path());
        assert!(out.status.success(), "{v}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("c1 (running)"), "{v}");
    }
}
