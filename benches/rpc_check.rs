//! `make bench` part 1: `grpc.Health/Check` round trips over a Unix socket.
//!
//! Measured in the same run, each server in its own process:
//! * pith-agent (the binary under test),
//! * the stock `ttrpc::r#async::Server` serving the same generated Health service
//!   (what an agent built on ttrpc-rust's server gets),
//! * a plain floor: a server that reads a frame and writes a canned response
//!   frame, no protobuf, no dispatch.
//!
//! Clients: the async ttrpc client (what a host runtime uses) and a raw blocking
//! client writing pre-encoded frames (to see the server's own cost).
//!
//! Also prints pith-agent's idle footprint (VmRSS 300 ms after start, median
//! of 5 starts, with its anonymous and file-backed parts and its threads),
//! then the load line (`support/load.rs`): 1,000 connections x 100 calls and
//! 8 x 20,000.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;
use protocols::health::{CheckRequest, HealthCheckResponse};
use ttrpc::proto::Request;

#[path = "support/load.rs"]
mod load;

const CALLS: usize = 10_000;
const WARMUP: usize = 1_000;
const ROUNDS: usize = 10;
const ROLE_VAR: &str = "PITH_BENCH_ROLE";

fn main() {
    match std::env::var(ROLE_VAR).ok().as_deref() {
        Some("ttrpc-server") => return serve_stock_ttrpc(&std::env::args().next_back().unwrap()),
        Some("floor-server") => return serve_floor(&std::env::args().next_back().unwrap()),
        _ => {}
    }
    // PITH_AGENT_BINS: label=path pairs separated by ':' (make bench passes the
    // static musl build that goes into the guest image beside the gnu build).
    let agents: Vec<(String, String)> = match std::env::var("PITH_AGENT_BINS") {
        Ok(list) => list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("PITH_AGENT_BINS entries are label=path");
                (k.to_string(), v.to_string())
            })
            .collect(),
        Err(_) => vec![("pith-agent".to_string(), env!("CARGO_BIN_EXE_pith-agent").to_string())],
    };
    println!(
        "grpc.Health/Check round trips over a Unix socket: {CALLS} calls per server and client, \
         in {ROUNDS} interleaved rounds, after {WARMUP} warm-up calls"
    );
    for (label, path) in &agents {
        println!("  {label}: {path}");
    }
    // One core: client and servers share CPU 0, as in a one-vCPU guest where the
    // host's request wakes the agent on the same core. All cores: wakeups cross
    // CPUs, which on these nested-virtualised machines costs ~70 µs by itself
    // (see the floor row).
    let all = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("sched_getaffinity");
    let mut one = nix::sched::CpuSet::new();
    one.set(first_cpu(&all)).unwrap();
    idle_footprint(&agents);
    for (name, set) in [("one core (pinned to one CPU)", one), ("all cores", all)] {
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("sched_setaffinity");
        println!();
        println!("== {name}");
        run_suite(&agents);
    }

    let dir = tempfile::tempdir().unwrap();
    let mut targets: Vec<load::Target> = agents
        .iter()
        .map(|(label, bin)| {
            let sock = dir.path().join(format!("load-{label}.sock"));
            let mut cmd = Command::new(bin);
            cmd.args(["--cmdline", "/dev/null", "--log-level", "warn", "--state-dir"])
                .arg(dir.path().join(format!("state-{label}")))
                .arg("--server-addr")
                .arg(format!("unix://{}", sock.display()));
            load::Target {
                label: format!("pith-agent {label}"),
                cmd,
                sock,
            }
        })
        .collect();
    let sock = dir.path().join("load-stock.sock");
    targets.push(load::Target {
        label: "stock ttrpc Server".into(),
        cmd: self_as("ttrpc-server", &sock),
        sock,
    });
    load::run(targets);
}

/// Starts of each agent measured for its idle RSS.
const IDLE_STARTS: usize = 5;
/// Issue 16's goal for the idle agent.
const IDLE_GOAL_KIB: u64 = 2048;

/// Each agent's RSS 300 ms after start, median of [`IDLE_STARTS`] fresh starts
/// (the same moment the RSS line of each round below is taken), with the
/// anonymous and file-backed parts of the median start.
fn idle_footprint(agents: &[(String, String)]) {
    println!(
        "idle RSS: VmRSS 300 ms after start, median of {IDLE_STARTS} starts (goal <= 2 MiB; \
         kata-agent 4.1.0: 12.0 MiB in issue 16's table, measured 2026-12-01, not in this run)"
    );
    let dir = tempfile::tempdir().unwrap();
    for (label, bin) in agents {
        let mut samples: Vec<(u64, String, usize)> = (0..IDLE_STARTS)
            .map(|i| {
                let sock = dir.path().join(format!("idle-{label}-{i}.sock"));
                let mut child = spawn(
                    Command::new(bin)
                        .args(["--cmdline", "/dev/null", "--log-level", "warn", "--state-dir"])
                        .arg(dir.path().join(format!("idle-state-{label}-{i}")))
                        .arg("--server-addr")
                        .arg(format!("unix://{}", sock.display())),
                    &sock,
                );
                std::thread::sleep(Duration::from_millis(300));
                let pid = child.id();
                let split = rss_split(pid);
                let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
                    .map(|d| d.count())
                    .unwrap_or(0);
                let sample = (rss_kib(pid), split, threads);
                let _ = child.kill();
                let _ = child.wait();
                sample
            })
            .collect();
        samples.sort_by_key(|s| s.0);
        let (median, split, threads) = &samples[IDLE_STARTS / 2];
        println!(
            "  {label}: {:.2} MiB ({median} KiB; {split}; {threads} threads; all starts: {}); {}",
            *median as f64 / 1024.0,
            samples.iter().map(|s| s.0.to_string()).collect::<Vec<_>>().join(" "),
            if *median <= IDLE_GOAL_KIB {
                "within the goal".to_string()
            } else {
                format!("OVER the goal by {} KiB", median - IDLE_GOAL_KIB)
            }
        );
    }
    println!();
}

/// `anon A KiB, file F KiB`: the parts of VmRSS (`RssAnon`, `RssFile` in
/// `/proc/PID/status`; file-backed pages are the binary's own, shared with the
/// page cache).
fn rss_split(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("?")
            .to_string()
    };
    format!("anon {} KiB, file {} KiB", field("RssAnon:"), field("RssFile:"))
}

fn first_cpu(set: &nix::sched::CpuSet) -> usize {
    (0..nix::sched::CpuSet::count())
        .find(|&i| set.is_set(i).unwrap_or(false))
        .unwrap_or(0)
}

/// How each target is driven.
#[derive(Clone, Copy, PartialEq)]
enum ClientKind {
    Async,
    Raw,
}

/// A live connection to one server.
enum Conn {
    Async(protocols::health_ttrpc::HealthClient),
    Raw(UnixStream, Vec<u8>),
}

fn run_suite(agents: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Servers(Vec::new());
    for (label, bin) in agents {
        let sock = dir.path().join(format!("{label}.sock"));
        // A state directory each: two agents never share one (the second
        // would refuse to start on the first's lock).
        let child = spawn(
            Command::new(bin)
                .arg("--cmdline")
                .arg("/dev/null")
                .arg("--log-level")
                .arg("warn")
                .arg("--state-dir")
                .arg(dir.path().join(format!("{label}.state")))
                .arg("--server-addr")
                .arg(format!("unix://{}", sock.display())),
            &sock,
        );
        servers.0.push((label.clone(), sock, child));
    }
    std::thread::sleep(Duration::from_millis(300));
    let idle: Vec<u64> = servers.iter().map(|s| rss_kib(s.2.id())).collect();
    for (label, role) in [
        ("stock ttrpc Server", "ttrpc-server"),
        ("floor (canned reply)", "floor-server"),
    ] {
        let sock = dir.path().join(format!("{role}.sock"));
        let child = spawn(&mut self_as(role, &sock), &sock);
        servers.0.push((label.to_string(), sock, child));
    }

    let mut targets = Vec::new();
    for (label, sock, _) in servers.iter() {
        for kind in [ClientKind::Async, ClientKind::Raw] {
            if kind == ClientKind::Async && label.starts_with("floor") {
                continue; // the floor only answers raw frames correctly framed by hand
            }
            let name = format!(
                "{label} / {}",
                if kind == ClientKind::Async {
                    "ttrpc async client"
                } else {
                    "raw frames"
                }
            );
            targets.push((name, sock.clone(), kind));
        }
    }
    let lat = measure_interleaved(&targets);

    let base = |kind| {
        let i = targets
            .iter()
            .position(|t| t.0.starts_with("stock") && t.2 == kind)
            .unwrap();
        lat[i].p50
    };
    println!(
        "{:<40} {:>8} {:>8} {:>10} {:>13}",
        "server / client", "p50 µs", "p99 µs", "calls/s", "p50 vs stock"
    );
    for ((name, _, kind), s) in targets.iter().zip(&lat) {
        println!(
            "{name:<40} {:>8.1} {:>8.1} {:>10.0} {:>12.2}x",
            s.p50,
            s.p99,
            s.rate,
            s.p50 / base(*kind)
        );
    }
    for (i, (label, _, child)) in servers.iter().enumerate().take(agents.len()) {
        println!(
            "{label} RSS: idle after start {:.2} MiB, after the calls {:.2} MiB",
            idle[i] as f64 / 1024.0,
            rss_kib(child.id()) as f64 / 1024.0
        );
    }
}

/// The servers of a suite: (label, socket, process), each killed when the
/// suite ends, a failed one included (a leftover agent would hold its state
/// directory's lock and its socket).
struct Servers(Vec<(String, PathBuf, Child)>);

impl std::ops::Deref for Servers {
    type Target = Vec<(String, PathBuf, Child)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `CALLS` calls per target in `ROUNDS` interleaved rounds, so that a noisy
/// moment on the machine hits every target alike.
fn measure_interleaved(targets: &[(String, PathBuf, ClientKind)]) -> Vec<Stats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conns = Vec::new();
        for (_, sock, kind) in targets {
            conns.push(match kind {
                ClientKind::Async => {
                    let addr = protocols::addr::Address::Unix(sock.clone());
                    let Ok(c) = pithctl::client::connect(&addr, Duration::from_secs(5)).await else {
                        panic!("connect {}", sock.display())
                    };
                    Conn::Async(protocols::health_ttrpc::HealthClient::new(c))
                }
                ClientKind::Raw => Conn::Raw(UnixStream::connect(sock).unwrap(), Vec::new()),
            });
        }
        let frame = check_frame();
        let req = CheckRequest::new();
        let mut lat: Vec<Vec<Duration>> = vec![Vec::with_capacity(CALLS); targets.len()];
        let mut busy = vec![Duration::ZERO; targets.len()];
        for round in 0..=ROUNDS {
            for (i, conn) in conns.iter_mut().enumerate() {
                let n = if round == 0 { WARMUP } else { CALLS / ROUNDS };
                let start = Instant::now();
                for _ in 0..n {
                    let t = Instant::now();
                    match conn {
                        Conn::Async(c) => {
                            let r = c.check(ttrpc::context::with_timeout(0), &req).await.unwrap();
                            assert_eq!(r.status.value(), 1);
                        }
                        Conn::Raw(s, buf) => {
                            s.write_all(&frame).unwrap();
                            read_frame(s, buf).unwrap();
                        }
                    }
                    if round > 0 {
                        lat[i].push(t.elapsed());
                    }
                }
                if round > 0 {
                    busy[i] += start.elapsed();
                }
            }
        }
        lat.into_iter().zip(busy).map(|(l, b)| stats(l, b)).collect()
    })
}

fn self_as(role: &str, sock: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env(ROLE_VAR, role).arg(sock);
    c
}

fn spawn(cmd: &mut Command, sock: &Path) -> Child {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "server on {} did not come up",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[derive(Clone)]
struct Stats {
    p50: f64,
    p99: f64,
    rate: f64,
}

fn stats(mut lat: Vec<Duration>, total: Duration) -> Stats {
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Stats {
        p50: us(lat[lat.len() / 2]),
        p99: us(lat[lat.len() * 99 / 100]),
        rate: lat.len() as f64 / total.as_secs_f64(),
    }
}

/// A pre-encoded Check request frame.
fn check_frame() -> Vec<u8> {
    let mut req = Request::new();
    req.service = "grpc.Health".into();
    req.method = "Check".into();
    req.payload = CheckRequest::new().write_to_bytes().unwrap();
    let body = req.write_to_bytes().unwrap();
    let mut f = Vec::new();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes());
    f.extend_from_slice(&[1, 0]);
    f.extend_from_slice(&body);
    f
}

fn read_frame(s: &mut UnixStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut h = [0u8; 10];
    s.read_exact(&mut h)?;
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    buf.resize(len, 0);
    s.read_exact(buf)
}

struct Health;

#[async_trait::async_trait]
impl protocols::health_ttrpc::Health for Health {
    async fn check(
        &self,
        _ctx: &ttrpc::r#async::TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<HealthCheckResponse> {
        let mut r = HealthCheckResponse::new();
        r.status = protocols::health::health_check_response::ServingStatus::SERVING.into();
        Ok(r)
    }
}

fn serve_stock_ttrpc(sock: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let svc = protocols::health_ttrpc::create_health(std::sync::Arc::new(Health));
        let mut server = ttrpc::r#async::Server::new()
            .bind(&format!("unix://{sock}"))
            .unwrap()
            .register_service(svc);
        server.start().await.unwrap();
        std::future::pending::<()>().await;
    });
}

fn serve_floor(sock: &str) {
    let _ = std::fs::remove_file(sock);
    let l = std::os::unix::net::UnixListener::bind(PathBuf::from(sock)).unwrap();
    let mut resp = ttrpc::proto::Response::new();
    let mut ok = HealthCheckResponse::new();
    ok.status = protocols::health::health_check_response::ServingStatus::SERVING.into();
    resp.payload = ok.write_to_bytes().unwrap();
    let body = resp.write_to_bytes().unwrap();
    for conn in l.incoming() {
        let Ok(mut s) = conn else { continue };
        let body = body.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut h = [0u8; 10];
            while s.read_exact(&mut h).is_ok() {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                buf.resize(len, 0);
                if s.read_exact(&mut buf).is_err() {
                    break;
                }
                let mut f = Vec::with_capacity(10 + body.len());
                f.extend_from_slice(&(body.len() as u32).to_be_bytes());
                f.extend_from_slice(&h[4..8]);
                f.extend_from_slice(&[2, 0]);
                f.extend_from_slice(&body);
                if s.write_all(&f).is_err() {
                    break;
                }
            }
        });
    }
}
