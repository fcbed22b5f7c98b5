//! Containers through the agent's RPCs, as a Kata runtime drives them: create,
//! start, stdio, wait, exec, signal, remove. Real busybox containers; root only.

mod common;

use common::{busybox_rootfs, call, root_or_skip, Agent};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

const SVC: &str = "grpc.AgentService";

fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A CreateContainerRequest for a busybox container running `args`.
fn create_req(dir: &std::path::Path, id: &str, args: &[&str]) -> CreateContainerRequest {
    common::container_request(busybox_rootfs(dir), id, args)
}

async fn create_and_start(c: &Client, dir: &std::path::Path, id: &str, args: &[&str]) {
    let _: Empty = call(c, SVC, "CreateContainer", &create_req(dir, id, args))
        .await
        .unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.into();
    let _: Empty = call(c, SVC, "StartContainer", &s).await.unwrap();
}

async fn read_all(c: &Client, id: &str, exec_id: &str, method: &str) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = id.into();
        r.exec_id = exec_id.into();
        r.len = 1 << 20;
        let resp: ReadStreamResponse = call(c, SVC, method, &r).await.unwrap();
        if resp.data.is_empty() {
            return out;
        }
        out.extend_from_slice(&resp.data);
    }
}

async fn wait(c: &Client, id: &str, exec_id: &str) -> Result<i32, (Code, String)> {
    let mut w = WaitProcessRequest::new();
    w.container_id = id.into();
    w.exec_id = exec_id.into();
    call::<_, WaitProcessResponse>(c, SVC, "WaitProcess", &w)
        .await
        .map(|r| r.status)
}

async fn remove(c: &Client, id: &str) {
    let mut r = RemoveContainerRequest::new();
    r.container_id = id.into();
    r.timeout = 1;
    let _: Empty = call(c, SVC, "RemoveContainer", &r).await.unwrap();
}

#[tokio::test]
async fn echo_stdout_stderr_and_exit_code() {
    if !root_or_skip("echo_stdout_stderr_and_exit_code") {
        return;
    }
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("echo");
    create_and_start(&c, dir.path(), &id, &["sh", "-c", "echo hello; echo oops >&2; exit 3"]).await;
    // Read after the process has exited: the output is still there.
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 3);
    assert_eq!(read_all(&c, &id, &id, "ReadStdout").await, b"hello\n");
    assert_eq!(read_all(&c, &id, &id, "ReadStderr").await, b"oops\n");
    // After the empty read that reported the end: a clear error.
    let mut r = ReadStreamRequest::new();
    r.container_id = id.clone();
    r.len = 10;
    let (code, msg) = call::<_, ReadStreamResponse>(&c, SVC, "ReadStdout", &r)
        .await
        .unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    // Waiting twice is refused.
    let (code, _) = wait(&c, &id, &id).await.unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION);
    remove(&c, &id).await;
    let (code, _) = wait(&c, &id, &id).await.unwrap_err();
    assert_eq!(code, Code::NOT_FOUND);
}

#[tokio::test]
async fn stdin_round_trip_exec_and_signals() {
    if !root_or_skip("stdin_round_trip_exec_and_signals") {
        return;
    }
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("cat");
    create_and_start(&c, dir.path(), &id, &["cat"]).await;
    let mut w = WriteStreamRequest::new();
    w.container_id = id.clone();
    w.exec_id = id.clone();
    w.data = b"round trip\n".to_vec();
    let r: WriteStreamResponse = call(&c, SVC, "WriteStdin", &w).await.unwrap();
    assert_eq!(r.len, 11);
    let mut cl = CloseStdinRequest::new();
    cl.container_id = id.clone();
    cl.exec_id = id.clone();
    let _: Empty = call(&c, SVC, "CloseStdin", &cl).await.unwrap();
    assert_eq!(read_all(&c, &id, &id, "ReadStdout").await, b"round trip\n");
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0);
    remove(&c, &id).await;

    // A long-running container: exec into it, probe and kill with signals.
    let id = unique("sleeper");
    create_and_start(&c, &dir.path().join("sleeper"), &id, &["sleep", "60"]).await;
    let mut e = ExecProcessRequest::new();
    e.container_id = id.clone();
    e.exec_id = "x1".into();
    let mut spec = create_req(
        dir.path().join("unused").as_path(),
        &id,
        &["sh", "-c", "hostname; exit 5"],
    );
    e.process = spec.OCI.take().unwrap().Process;
    let _: Empty = call(&c, SVC, "ExecProcess", &e).await.unwrap();
    assert_eq!(read_all(&c, &id, "x1", "ReadStdout").await, b"youki\n");
    assert_eq!(wait(&c, &id, "x1").await.unwrap(), 5);
    // Forgotten once waited for.
    assert_eq!(wait(&c, &id, "x1").await.unwrap_err().0, Code::NOT_FOUND);

    let mut s = SignalProcessRequest::new();
    s.container_id = id.clone();
    s.exec_id = id.clone();
    s.signal = 0;
    let _: Empty = call(&c, SVC, "SignalProcess", &s).await.unwrap();
    s.signal = 9;
    let _: Empty = call(&c, SVC, "SignalProcess", &s).await.unwrap();
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 137);
    remove(&c, &id).await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_others_keep_running() {
    if !root_or_skip("bad_requests_get_clear_errors_and_others_keep_running") {
        return;
    }
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let keeper = unique("keeper");
    create_and_start(&c, dir.path(), &keeper, &["sleep", "60"]).await;

    for (i, (id, code)) in [("a/b", Code::INVALID_ARGUMENT), ("..", Code::INVALID_ARGUMENT)]
        .into_iter()
        .enumerate()
    {
        let sub = dir.path().join(format!("bad{i}"));
        let (got, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &create_req(&sub, id, &["true"]))
            .await
            .unwrap_err();
        assert_eq!(got, code, "{id}: {msg}");
    }
    let (code, _) = call::<_, Empty>(
        &c,
        SVC,
        "CreateContainer",
        &create_req(dir.path().join("dup").as_path(), &keeper, &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::ALREADY_EXISTS);
    let mut bad = create_req(dir.path().join("norootfs").as_path(), &unique("norootfs"), &["true"]);
    bad.OCI.as_mut().unwrap().Root.as_mut().unwrap().Path = "/nonexistent/rootfs".into();
    let (code, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &bad).await.unwrap_err();
    assert_ne!(code, Code::OK);
    assert!(msg.contains("/nonexistent/rootfs"), "{msg}");
    let mut s = StartContainerRequest::new();
    s.container_id = "nope".into();
    assert_eq!(
        call::<_, Empty>(&c, SVC, "StartContainer", &s).await.unwrap_err().0,
        Code::NOT_FOUND
    );
    assert_eq!(wait(&c, &keeper, "no-such-exec").await.unwrap_err().0, Code::NOT_FOUND);

    // The first container is untouched.
    let mut probe = SignalProcessRequest::new();
    probe.container_id = keeper.clone();
    let _: Empty = call(&c, SVC, "SignalProcess", &probe).await.unwrap();
    remove(&c, &keeper).await;
}

#[tokio::test]
async fn hooks_run_by_the_agent_report_their_status() {
    if !root_or_skip("hooks_run_by_the_agent_report_their_status") {
        return;
    }
    // The agent reaps every child; hook statuses must still reach rustjail.
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks.log");
    let hook = |name: &str| {
        let mut h = protocols::oci::Hook::new();
        h.Path = "/bin/sh".into();
        h.Args = vec!["sh".into(), "-c".into(), format!("echo {name} >> {}", log.display())];
        h
    };
    let id = unique("hooked");
    let mut req = create_req(&dir.path().join("a"), &id, &["true"]);
    let mut hooks = protocols::oci::Hooks::new();
    hooks.CreateRuntime = vec![hook("createRuntime")];
    hooks.Poststart = vec![hook("poststart")];
    hooks.Poststop = vec![hook("poststop")];
    req.OCI.as_mut().unwrap().Hooks = protobuf::MessageField::some(hooks);
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.clone();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0);
    remove(&c, &id).await;
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "createRuntime\npoststart\npoststop\n"
    );

    let mut req = create_req(&dir.path().join("b"), &unique("badhook"), &["true"]);
    let mut hooks = protocols::oci::Hooks::new();
    let mut h = protocols::oci::Hook::new();
    h.Path = "/bin/false".into();
    h.Args = vec!["false".into()];
    hooks.CreateRuntime = vec![h];
    req.OCI.as_mut().unwrap().Hooks = protobuf::MessageField::some(hooks);
    let (_, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &req).await.unwrap_err();
    assert!(
        msg.contains("createRuntime hook /bin/false failed: exit status: 1"),
        "{msg}"
    );
}
