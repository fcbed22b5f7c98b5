//! The agent binary's configuration layers and log outputs, end to end.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Agent;
use protocols::addr::Address;

#[tokio::test]
async fn environment_address_and_malformed_cmdline_values() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("env.sock");
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        "console=ttyS0 agent.hotplug_timeout=soon agent.log=debug agent.unknown_key=1\n",
    )
    .unwrap();
    let log_path = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pith-agent"))
        .arg("--cmdline")
        .arg(&cmdline)
        .env("KATA_AGENT_SERVER_ADDR", format!("unix://{}", sock.display()))
        .env_remove("PITH_AGENT_SERVER_ADDR")
        .env_remove("PITH_AGENT_LOG_LEVEL")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let client = pithctl::client::connect(&Address::Unix(sock.clone()), Duration::from_secs(10)).await;
    let ok = client.is_ok();
    // Logging is asynchronous: let the startup records reach the file before the kill.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log_path).unwrap().contains("\"starting\"") && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        ok,
        "agent did not listen on the KATA_AGENT_SERVER_ADDR socket; log:\n{log}"
    );
    let warning = log
        .lines()
        .find(|l| l.contains("agent.hotplug_timeout"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        warning.contains("\"WARN\"") && warning.contains("soon") && warning.contains("keeping 3s"),
        "{warning}"
    );
    assert!(!log.contains("unknown_key"), "unknown keys are ignored silently: {log}");
    // agent.log=debug from the command line took effect.
    assert!(
        log.contains("\"log_level\":\"DEBG\"") || log.contains("\"log_level\":\"DEBUG\""),
        "{log}"
    );
}

#[tokio::test]
async fn config_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file_sock = dir.path().join("file.sock");
    let toml = dir.path().join("pith.toml");
    std::fs::write(
        &toml,
        format!(
            "server_addr = \"unix://{}\"\nlog_level = \"warn\"\n",
            file_sock.display()
        ),
    )
    .unwrap();
    // Flags win over the file: the fixture passes --server-addr, and --log-level here.
    let agent = Agent::start(&["--config-file", toml.to_str().unwrap(), "--log-level", "info"]);
    let c = agent.client().await;
    drop(c);
    let log = agent.wait_log("\"listening\"");
    assert!(log.contains("\"listening\""), "{log}");
    assert!(
        !file_sock.exists(),
        "flag --server-addr should override the file's address"
    );
}

#[tokio::test]
async fn logs_go_to_kmsg_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kmsg");
    std::fs::write(&kmsg, "").unwrap();
    let mut agent = Agent::start(&["--kmsg", "--kmsg-path", kmsg.to_str().unwrap()]);
    let _ = agent.client().await;
    agent.terminate();
    let text = std::fs::read_to_string(&kmsg).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("<6>pith-agent: INFO starting")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>pith-agent: INFO listening listener=unix://")),
        "{text}"
    );
    assert!(lines.iter().any(|l| l.contains("INFO stopped")), "{text}");
}

#[tokio::test]
async fn json_log_lines_have_level_time_module_and_fields() {
    let agent = Agent::start(&[]);
    let _ = agent.client().await;
    let log = agent.wait_log("\"listening\"");
    let line = log.lines().find(|l| l.contains("\"listening\"")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["module"], "pith_agent::server");
    assert_eq!(v["name"], "pith-agent");
    assert!(v["ts"].as_str().unwrap().starts_with("20"), "{line}");
    assert!(v["listener"].as_str().unwrap().starts_with("unix://"), "{line}");
}

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_pith-agent"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pith-agent {}", pith_agent::AGENT_VERSION)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pith-agent"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--server-addr", "--log-level", "--config-file", "--cmdline", "--kmsg"] {
        assert!(help.contains(flag), "{help}");
    }
}

#[test]
fn unusable_address_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_pith-agent"))
        .args(["--cmdline", "/dev/null", "--server-addr", "hvsock:///tmp/x.sock:1024"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on hvsock:///tmp/x.sock:1024"), "{err}");
}
