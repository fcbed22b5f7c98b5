//! The load line of `make bench`: `grpc.Health/Check` from 1,000 connections at
//! once (100 calls each) and from 8 busy connections (20,000 calls each), with
//! the server's descriptors and RSS before, at the peak, and 3 s after each
//! load (issue 15: memory and descriptors must come back when connections go).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (connections, calls per connection)
const LOADS: [(usize, usize); 2] = [(1000, 100), (8, 20_000)];

/// A server to load: its label, how to start it, its socket.
pub struct Target {
    pub label: String,
    pub cmd: Command,
    pub sock: PathBuf,
}

/// Descriptors and RSS of a process.
#[derive(Clone, Copy, Default)]
struct Usage {
    fds: usize,
    rss_kib: u64,
}

fn usage(pid: u32) -> Usage {
    Usage {
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0),
        rss_kib: super::rss_kib(pid),
    }
}

/// Samples `pid` until stopped; returns the highest of each.
fn sample_peak(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Usage> {
    std::thread::spawn(move || {
        let mut peak = Usage::default();
        while !stop.load(Ordering::Acquire) {
            let u = usage(pid);
            peak.fds = peak.fds.max(u.fds);
            peak.rss_kib = peak.rss_kib.max(u.rss_kib);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

/// Runs both loads against each target, one target at a time.
pub fn run(targets: Vec<Target>) {
    // 1,000 client sockets here, as many in the server (which inherits this).
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    println!();
    println!("== load: grpc.Health/Check, raw frames, all cores; descriptors and RSS before -> peak -> 3 s after");
    println!(
        "{:<26} {:>12} {:>10} {:>8} {:>8} {:>18} {:>24}",
        "server", "load", "calls/s", "p50 µs", "p99 µs", "descriptors", "RSS MiB"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for mut t in targets {
        let mut child = super::spawn(&mut t.cmd, &t.sock);
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id();
        for (conns, calls) in LOADS {
            let before = usage(pid);
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = sample_peak(pid, stop.clone());
            let (lat, wall) = rt.block_on(load(&t.sock, conns, calls));
            stop.store(true, Ordering::Release);
            let peak = sampler.join().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            let after = usage(pid);
            let s = super::stats(lat, wall);
            let mib = |k: u64| k as f64 / 1024.0;
            println!(
                "{:<26} {:>12} {:>10.0} {:>8.1} {:>8.1} {:>18} {:>24}",
                t.label,
                format!("{conns} x {calls}"),
                s.rate,
                s.p50,
                s.p99,
                format!("{} -> {} -> {}", before.fds, peak.fds, after.fds),
                format!(
                    "{:.1} -> {:.1} -> {:.1}",
                    mib(before.rss_kib),
                    mib(peak.rss_kib),
                    mib(after.rss_kib)
                ),
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Opens `conns` connections, then each makes `calls` calls in turn, all
/// connections at once; returns every call's latency and the wall time.
async fn load(sock: &std::path::Path, conns: usize, calls: usize) -> (Vec<Duration>, Duration) {
    let frame = Arc::new(super::check_frame());
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        streams.push(tokio::net::UnixStream::connect(sock).await.expect("connect"));
    }
    let all = Arc::new(Mutex::new(Vec::with_capacity(conns * calls)));
    let start = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let frame = frame.clone();
            let all = all.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(calls);
                let mut buf = Vec::new();
                for _ in 0..calls {
                    let t = Instant::now();
                    s.write_all(&frame).await.expect("write");
                    let mut h = [0u8; 10];
                    s.read_exact(&mut h).await.expect("read header");
                    buf.resize(u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize, 0);
                    s.read_exact(&mut buf).await.expect("read body");
                    lat.push(t.elapsed());
                }
                all.lock().unwrap().extend(lat);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let wall = start.elapsed();
    let lat = std::mem::take(&mut *all.lock().unwrap());
    (lat, wall)
}
