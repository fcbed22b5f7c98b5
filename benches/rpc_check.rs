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
//! Also prints pith-agent's RSS when idle.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;
use protocols::health::{CheckRequest, HealthCheckResponse};
use ttrpc::proto::Request;

const CALLS: usize = 10_000;
const WARMUP: usize = 1_000;
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
    println!("grpc.Health/Check round trips over a Unix socket, {CALLS} calls each (after {WARMUP} warm-up calls)");
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
    for (name, set) in [("one core (pinned to one CPU)", one), ("all cores", all)] {
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("sched_setaffinity");
        println!();
        println!("== {name}");
        run_suite(&agents);
    }
}

fn first_cpu(set: &nix::sched::CpuSet) -> usize {
    (0..nix::sched::CpuSet::count())
        .find(|&i| set.is_set(i).unwrap_or(false))
        .unwrap_or(0)
}

fn run_suite(agents: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let stock_sock = dir.path().join("stock.sock");
    let mut stock = spawn(&mut self_as("ttrpc-server", &stock_sock), &stock_sock);
    let floor_sock = dir.path().join("floor.sock");
    let mut floor = spawn(&mut self_as("floor-server", &floor_sock), &floor_sock);
    let stock_async = bench_async(&stock_sock);
    let stock_raw = bench_raw(&stock_sock);
    let mut rows = Vec::new();
    let mut rss = Vec::new();
    for (label, bin) in agents {
        let sock = dir.path().join(format!("{label}.sock"));
        let mut agent = spawn(
            Command::new(bin)
                .arg("--cmdline")
                .arg("/dev/null")
                .arg("--log-level")
                .arg("warn")
                .arg("--server-addr")
                .arg(format!("unix://{}", sock.display())),
            &sock,
        );
        std::thread::sleep(Duration::from_millis(300));
        let idle = rss_kib(agent.id());
        rows.push((
            format!("{label} / ttrpc async client"),
            bench_async(&sock),
            &stock_async,
        ));
        rows.push((format!("{label} / raw frames"), bench_raw(&sock), &stock_raw));
        rss.push((label.clone(), idle, rss_kib(agent.id())));
        let _ = agent.kill();
        let _ = agent.wait();
    }
    rows.push((
        "stock ttrpc Server / async client".into(),
        stock_async.clone(),
        &stock_async,
    ));
    rows.push(("stock ttrpc Server / raw frames".into(), stock_raw.clone(), &stock_raw));
    rows.push((
        "floor (canned reply) / raw frames".into(),
        bench_raw(&floor_sock),
        &stock_raw,
    ));
    println!(
        "{:<40} {:>8} {:>8} {:>10} {:>13}",
        "server / client", "p50 µs", "p99 µs", "calls/s", "p50 vs stock"
    );
    for (name, s, base) in &rows {
        println!(
            "{name:<40} {:>8.1} {:>8.1} {:>10.0} {:>12.2}x",
            s.p50,
            s.p99,
            s.rate,
            s.p50 / base.p50
        );
    }
    for (label, idle, after) in rss {
        println!(
            "{label} RSS: idle after start {:.2} MiB, after {} calls {:.2} MiB",
            idle as f64 / 1024.0,
            2 * (CALLS + WARMUP),
            after as f64 / 1024.0
        );
    }
    for c in [&mut stock, &mut floor] {
        let _ = c.kill();
        let _ = c.wait();
    }
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

fn bench_async(sock: &Path) -> Stats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = pith_agent::addr::Address::Unix(sock.to_path_buf());
        let Ok(client) = pith_agent::client::connect(&addr, Duration::from_secs(5)).await else {
            panic!("connect {}", sock.display())
        };
        let client = protocols::health_ttrpc::HealthClient::new(client);
        let req = CheckRequest::new();
        let ctx = || ttrpc::context::with_timeout(0);
        for _ in 0..WARMUP {
            client.check(ctx(), &req).await.unwrap();
        }
        let mut lat = Vec::with_capacity(CALLS);
        let start = Instant::now();
        for _ in 0..CALLS {
            let t = Instant::now();
            let r = client.check(ctx(), &req).await.unwrap();
            lat.push(t.elapsed());
            assert_eq!(r.status.value(), 1);
        }
        stats(lat, start.elapsed())
    })
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

fn bench_raw(sock: &Path) -> Stats {
    let mut s = UnixStream::connect(sock).unwrap();
    let frame = check_frame();
    let mut buf = Vec::new();
    let mut one = |s: &mut UnixStream| {
        s.write_all(&frame).unwrap();
        read_frame(s, &mut buf).unwrap();
    };
    for _ in 0..WARMUP {
        one(&mut s);
    }
    let mut lat = Vec::with_capacity(CALLS);
    let start = Instant::now();
    for _ in 0..CALLS {
        let t = Instant::now();
        one(&mut s);
        lat.push(t.elapsed());
    }
    stats(lat, start.elapsed())
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
