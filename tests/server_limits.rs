//! Whole-agent bounds over a real Unix socket (issue 15 items 6 and 7): stalled
//! frames are dropped, idle connections are not, connections over the limit and
//! at the descriptor limit get an answer, and memory of closed connections is
//! given back.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::Agent;
use protobuf::Message;
use protocols::health::CheckRequest;
use ttrpc::proto::{Code, Request, Response};

/// Starts an agent with a TOML config file holding `toml`.
fn agent_with(toml: &str) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pith.toml");
    std::fs::write(&file, toml).unwrap();
    let agent = Agent::start(&["--config-file", file.to_str().unwrap()]);
    // The agent read the file at start; keep the directory until then only.
    drop(dir);
    agent
}

fn check_frame(stream_id: u32) -> Vec<u8> {
    let mut req = Request::new();
    req.service = "grpc.Health".into();
    req.method = "Check".into();
    req.payload = CheckRequest::new().write_to_bytes().unwrap();
    let body = req.write_to_bytes().unwrap();
    let mut f = Vec::new();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(&[1, 0]);
    f.extend_from_slice(&body);
    f
}

/// What a connection got back for one Check: a response, or EOF.
fn one_check(s: &mut UnixStream) -> Option<Response> {
    s.write_all(&check_frame(1)).ok()?;
    let mut h = [0u8; 10];
    s.read_exact(&mut h).ok()?;
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(Response::parse_from_bytes(&body).unwrap())
}

fn connect(agent: &Agent) -> UnixStream {
    let s = UnixStream::connect(&agent.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until EOF or the read timeout; true on EOF (or reset).
fn closed_by_agent(s: &mut UnixStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

fn agent_pid(agent: &Agent) -> u32 {
    agent.child.as_ref().unwrap().id()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Raises this process's open-file limit to its hard limit (the agent inherits it).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Waits (up to 20 s) until `f` holds; returns whether it did.
fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn a_stalled_frame_is_dropped_and_an_idle_connection_is_not() {
    let agent = agent_with("frame_timeout = 1\n");
    let mut idle = connect(&agent);
    let mut used = connect(&agent);
    assert_eq!(one_check(&mut used).unwrap().status.code(), Code::OK);

    // Half a frame header, then nothing.
    let mut stalled = connect(&agent);
    stalled.write_all(&[0, 0, 0, 20, 0]).unwrap();
    assert!(closed_by_agent(&mut stalled), "a stalled frame was not dropped");
    let log = agent.wait_log("stalled frame");
    assert!(log.contains("stalled frame"), "{log}");

    // Well past the frame timeout, both idle connections still work.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(one_check(&mut idle).unwrap().status.code(), Code::OK);
    assert_eq!(one_check(&mut used).unwrap().status.code(), Code::OK);
}

#[test]
fn connections_over_the_limit_get_an_answer_and_a_log_line() {
    let agent = agent_with("max_connections = 4\n");
    // The harness's probe (it connected once to see the agent listen) counts
    // until the agent has seen it close: a refused one is tried again.
    let mut held: Vec<UnixStream> = Vec::new();
    let mut refused = 0;
    while held.len() < 4 {
        let mut s = connect(&agent);
        let r = one_check(&mut s).expect("an answer, not silence");
        if r.status.code() == Code::OK {
            held.push(s);
            continue;
        }
        assert_eq!(r.status.code(), Code::RESOURCE_EXHAUSTED, "{}", r.status.message);
        refused += 1;
        assert!(
            refused < 200,
            "connection {} of 4 still refused after 10 s",
            held.len() + 1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut over = connect(&agent);
    let r = one_check(&mut over).expect("an answer, not silence");
    assert_eq!(r.status.code(), Code::RESOURCE_EXHAUSTED);
    assert!(
        r.status.message.contains("too many connections") && r.status.message.contains("limit 4"),
        "{}",
        r.status.message
    );
    assert!(closed_by_agent(&mut over));
    let log = agent.wait_log("refusing connection");
    assert!(log.contains("refusing connection"), "{log}");

    // A place freed is a place for the next client.
    drop(held.pop());
    assert!(
        wait_until(|| one_check(&mut connect(&agent)).is_some_and(|r| r.status.code() == Code::OK)),
        "no place freed after a connection closed"
    );
    for s in &mut held {
        assert_eq!(one_check(s).unwrap().status.code(), Code::OK);
    }
}

#[test]
fn at_the_descriptor_limit_a_new_client_is_answered() {
    let agent = agent_with("max_connections = 1000\n");
    let pid = agent_pid(&agent);
    // Leave the agent four descriptors to spare.
    let limit = open_fds(pid) + 4;
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:{limit}")])
        .output()
        .expect("prlimit (util-linux)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut conns = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..12 {
        let mut s = connect(&agent);
        let r = one_check(&mut s).expect("an answer, not silence, at the descriptor limit");
        match r.status.code() {
            Code::OK => served += 1,
            Code::RESOURCE_EXHAUSTED => {
                assert!(
                    r.status.message.contains("out of file descriptors"),
                    "{}",
                    r.status.message
                );
                refused += 1;
            }
            c => panic!("unexpected {c:?}: {}", r.status.message),
        }
        conns.push(s);
    }
    assert!(served >= 1 && refused >= 1, "served {served}, refused {refused}");
    let log = agent.wait_log("out of file descriptors");
    assert!(log.contains("out of file descriptors"), "{log}");

    // Descriptors back: new clients are served again.
    conns.clear();
    assert!(
        wait_until(|| one_check(&mut connect(&agent)).is_some_and(|r| r.status.code() == Code::OK)),
        "not served again after the descriptors were freed"
    );
}

#[test]
fn memory_of_closed_connections_is_returned() {
    raise_nofile();
    let agent = agent_with("max_connections = 2000\n");
    let pid = agent_pid(&agent);
    let mut first = connect(&agent);
    assert_eq!(one_check(&mut first).unwrap().status.code(), Code::OK);
    drop(first);
    let base_fds = open_fds(pid);
    let baseline = rss_kib(pid);
    let mut peak = 0;
    for round in 0..4 {
        let mut conns: Vec<UnixStream> = (0..1000).map(|_| connect(&agent)).collect();
        for s in &mut conns {
            assert_eq!(one_check(s).unwrap().status.code(), Code::OK, "round {round}");
        }
        peak = peak.max(rss_kib(pid));
        drop(conns);
        assert!(
            wait_until(|| open_fds(pid) <= base_fds),
            "round {round}: connections not closed"
        );
    }
    let settled = wait_until(|| rss_kib(pid) <= 2 * baseline);
    let after = rss_kib(pid);
    eprintln!("RSS KiB: baseline {baseline}, peak {peak}, after the load {after}");
    assert!(
        settled,
        "RSS after 4 x 1,000 connections is {after} KiB, over twice the baseline {baseline} KiB (peak {peak} KiB)"
    );
}
