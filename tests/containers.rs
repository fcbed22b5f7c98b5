//! Containers through the agent's RPCs, as a Kata runtime drives them: create,
//! start, stdio, wait, exec, signal, remove. Real busybox containers; root only.

mod common;

use common::containers::*;
use common::{call, Agent};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use ttrpc::proto::Code;

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn echo_stdout_stderr_and_exit_code() {
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
    // Waiting again gets the status again (a host that reconnects waits
    // again, issue 15); it is gone with the container.
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 3);
    remove(&c, &id).await;
    let (code, _) = wait(&c, &id, &id).await.unwrap_err();
    assert_eq!(code, Code::NOT_FOUND);
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn stdin_round_trip_exec_and_signals() {
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
    // No CreateSandbox and no spec hostname: the new UTS namespace starts with the guest's name.
    let host = format!("{}\n", nix::unistd::gethostname().unwrap().to_string_lossy());
    assert_eq!(read_all(&c, &id, "x1", "ReadStdout").await, host.as_bytes());
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
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn bad_requests_get_clear_errors_and_others_keep_running() {
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
    assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("/nonexistent/rootfs"), "{msg}");
    // Nothing of it is left: no bundle, no rustjail state.
    let state = agent.dir.path().join("state");
    for sub in ["bundles", "containers"] {
        let left: Vec<_> = std::fs::read_dir(state.join(sub))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(left, [std::ffi::OsString::from(&keeper)], "{sub}");
    }
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
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn hooks_run_by_the_agent_report_their_status() {
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

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_removed_containers_cgroup_goes_and_its_id_can_be_made_again_at_once() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("again");
    let mut cgroup = None;
    // Its cgroup path is /<id> both times: the second create comes while
    // the first one's cgroup may still be being removed (after the answer).
    for round in 0..2 {
        create_and_start(&c, &dir.path().join(round.to_string()), &id, &["sleep", "1000"]).await;
        let pid = *pids_of(&c, &id).await.iter().min().unwrap();
        if let Some(d) = v1_cgroup_dir(pid, "memory") {
            assert!(d.ends_with(&id), "{}", d.display());
            cgroup = Some(d);
        }
        kill_init(&c, &id).await;
        assert_eq!(wait(&c, &id, &id).await.unwrap(), 137, "round {round}");
        remove(&c, &id).await;
    }
    // Removed after the answer; a moment later it is gone (unless the
    // machine has no v1 memory hierarchy to look in).
    if let Some(d) = cgroup {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while d.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!d.exists(), "{} is still there", d.display());
    }
}

/// SIGKILLs container `id`'s init.
async fn kill_init(c: &ttrpc::r#async::Client, id: &str) {
    let mut s = SignalProcessRequest::new();
    s.container_id = id.into();
    s.exec_id = id.into();
    s.signal = 9;
    let _: Empty = call(c, SVC, "SignalProcess", &s).await.unwrap();
}

/// The descriptors of process `pid` open on `ns` (a `/proc/<pid>/ns/*`
/// link's text). Only one process is looked at: a namespace's number is
/// reused once it is gone, by any other test's new container.
fn held_by(pid: u32, ns: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == ns))
        .map(|fd| fd.path().display().to_string())
        .collect()
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_containers_mount_namespace_outlives_its_init_until_removal() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("mntns");
    create_and_start(&c, dir.path(), &id, &["sleep", "1000"]).await;
    let pid = *pids_of(&c, &id).await.iter().min().unwrap();
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let ns = ns.to_str().unwrap().to_string();
    kill_init(&c, &id).await;
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 137);
    // The init is gone; the agent still holds its namespace (its teardown
    // is not part of the exit WaitProcess reports).
    let me = agent.child.as_ref().unwrap().id();
    assert!(
        !held_by(me, &ns).is_empty(),
        "the agent does not hold {ns} after the init's exit"
    );
    remove(&c, &id).await;
    // Closed after the answer: a moment later the agent no longer holds it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !held_by(me, &ns).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        held_by(me, &ns),
        Vec::<String>::new(),
        "{ns} still held after RemoveContainer"
    );
}
