//! No exit status lost, whatever the host's connection does (issue 15 items
//! 1, 2), and containers under a low open-file limit (item 8), through the
//! real agent with busybox containers (root only).
//!
//! A host's WaitProcess may be cancelled: its connection closes (the shim
//! restarts, the VM socket resets) or its ttrpc deadline runs out. Kata's
//! host then waits again; the status must still be there. Every concurrent
//! waiter gets it; an exec'd process is forgotten once a wait returned it,
//! as kata-agent does.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::containers::*;
use common::frames::{check_frame, read_response, request_frame};
use common::{call, call_raw, Agent};
use protobuf::well_known_types::empty::Empty;
use protobuf::Message;
use protocols::agent::*;
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

/// Starts `sh -c 'read x; exit 5'` as exec `e` of a running container `id`.
async fn exec_waiting_for_stdin(c: &Client, dir: &std::path::Path, id: &str, e: &str) {
    let mut req = ExecProcessRequest::new();
    req.container_id = id.into();
    req.exec_id = e.into();
    req.process = create_req(&dir.join(e), id, &["sh", "-c", "read x; exit 5"])
        .OCI
        .take()
        .unwrap()
        .Process;
    let _: Empty = call(c, SVC, "ExecProcess", &req).await.unwrap();
}

async fn end_it(c: &Client, id: &str, e: &str) {
    let mut w = CloseStdinRequest::new();
    w.container_id = id.into();
    w.exec_id = e.into();
    let _: Empty = call(c, SVC, "CloseStdin", &w).await.unwrap();
}

fn wait_request(id: &str, e: &str) -> Vec<u8> {
    let mut w = WaitProcessRequest::new();
    w.container_id = id.into();
    w.exec_id = e.into();
    w.write_to_bytes().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_cancelled_wait_takes_nothing_and_every_waiter_gets_the_status() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("w");
    create_and_start(&c, dir.path(), &id, &["sleep", "1000"]).await;

    // 1. The connection of a pending WaitProcess closes (a raw frame, then EOF).
    exec_waiting_for_stdin(&c, dir.path(), &id, "e1").await;
    {
        let mut raw = UnixStream::connect(&agent.sock).unwrap();
        raw.write_all(&frame(1, "WaitProcess", wait_request(&id, "e1")))
            .unwrap();
    }
    let log = agent.wait_log("rpc cancelled");
    assert!(
        log.contains("rpc cancelled"),
        "the closed connection's wait was not cancelled:\n{log}"
    );
    end_it(&c, &id, "e1").await;
    assert_eq!(wait(&c, &id, "e1").await.unwrap(), 5, "the status is still there");
    // Returned once: forgotten, as kata-agent does.
    assert_eq!(wait(&c, &id, "e1").await.unwrap_err().0, Code::NOT_FOUND);

    // 2. A WaitProcess whose ttrpc deadline runs out.
    exec_waiting_for_stdin(&c, dir.path(), &id, "e2").await;
    let mut req = ttrpc::proto::Request::new();
    req.service = SVC.into();
    req.method = "WaitProcess".into();
    req.payload = wait_request(&id, "e2");
    req.timeout_nano = Duration::from_millis(100).as_nanos() as i64;
    // The agent's dispatcher or the client's own deadline ends it first.
    match c.request(req).await {
        Err(ttrpc::Error::RpcStatus(s)) => assert_eq!(s.code(), Code::DEADLINE_EXCEEDED, "{}", s.message),
        Err(ttrpc::Error::Others(m)) => assert!(m.contains("deadline"), "{m}"),
        other => panic!("want a deadline error, got {other:?}"),
    }
    // 3. Two waits at once, both pending when the process ends: sent on one
    // connection, then a Check; its answer comes after both waits were taken
    // up (frames are read in order, each call started before the next read).
    let mut raw = UnixStream::connect(&agent.sock).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    raw.write_all(&frame(1, "WaitProcess", wait_request(&id, "e2")))
        .unwrap();
    raw.write_all(&frame(3, "WaitProcess", wait_request(&id, "e2")))
        .unwrap();
    raw.write_all(&check_frame(5)).unwrap();
    assert_eq!(
        read_response(&mut raw).0,
        5,
        "Check answers first: the waits are pending"
    );
    end_it(&c, &id, "e2").await;
    for _ in 0..2 {
        let (stream, resp) = read_response(&mut raw);
        assert!(stream == 1 || stream == 3);
        assert!(
            resp.status.is_none() || resp.status.code() == Code::OK,
            "{:?}",
            resp.status
        );
        assert_eq!(WaitProcessResponse::parse_from_bytes(&resp.payload).unwrap().status, 5);
    }
    let c2 = agent.client().await;

    // The init: its status stays until RemoveContainer.
    let mut s = SignalProcessRequest::new();
    s.container_id = id.clone();
    s.exec_id = id.clone();
    s.signal = 9;
    let _: Empty = call(&c, SVC, "SignalProcess", &s).await.unwrap();
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 137);
    assert_eq!(wait(&c2, &id, &id).await.unwrap(), 137);
    remove(&c, &id).await;
}

/// A request frame of `grpc.AgentService/method`, without a deadline.
fn frame(stream_id: u32, method: &str, payload: Vec<u8>) -> Vec<u8> {
    request_frame(stream_id, SVC, method, payload, Duration::ZERO)
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn containers_are_made_under_an_open_file_limit_of_64_and_emfile_is_named() {
    let mut agent = Agent::start(&[]);
    let c = agent.client().await;
    let pid = agent.child.as_ref().unwrap().id() as i32;
    // The soft limit (the one that bounds descriptor numbers) at 64; the
    // hard one as it was, so containers may raise theirs (the spec's rlimits).
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: hard,
    };
    // SAFETY: prlimit on the agent, a child of this test, with a valid rlimit.
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit(RLIMIT_NOFILE) on pid {pid}");
    let dir = tempfile::tempdir().unwrap();
    let mut made = Vec::new();
    let failure = loop {
        let id = unique("fd");
        match call::<_, Empty>(
            &c,
            SVC,
            "CreateContainer",
            &create_req(&dir.path().join(&id), &id, &["sleep", "1000"]),
        )
        .await
        {
            Ok(_) => made.push(id),
            Err(e) => break e,
        }
        assert!(made.len() < 64, "64 containers under 64 descriptors?");
    };
    assert!(
        made.len() >= 2,
        "only {} containers under RLIMIT_NOFILE 64: {failure:?}",
        made.len()
    );
    let (code, msg) = failure;
    eprintln!("{} containers under RLIMIT_NOFILE 64, then {code:?} {msg}", made.len());
    assert!(
        msg.contains("Too many open files") || msg.contains("EMFILE"),
        "{code:?} {msg}"
    );
    // The agent is fine and the containers made are usable.
    let (code, _) = call_raw(
        &c,
        "grpc.Health",
        "Check",
        protocols::health::CheckRequest::new().write_to_bytes().unwrap(),
    )
    .await
    .map(|_| (Code::OK, String::new()))
    .unwrap_or_else(|e| e);
    assert_eq!(code, Code::OK);
    for id in &made {
        remove(&c, id).await;
    }
    // Room again: one more can be made.
    let id = unique("fd");
    create_and_start(&c, &dir.path().join(&id), &id, &["true"]).await;
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0);
    remove(&c, &id).await;
    assert!(agent.alive());
}
