//! `make bench` part 5: live upgrade (root only).
//!
//! An agent under its keeper with 10, then 100, idle containers and one
//! container printing a counter every millisecond, read by a ReadStdout loop
//! on the same connection as the upgrade (as Kata's shim reads). Each round
//! upgrades to another copy of the same binary (A to B, B to A...) and
//! measures:
//! * the upgrade pause: the Upgrade request sent to its answer, which the new
//!   binary writes once it serves (the first RPC it serves); the binary's
//!   check (`--upgrade-check`, a process start) is part of it;
//! * the agent's own pause: from the moment the old binary stopped reading
//!   requests to the moment the new one was ready (`pause_us` of the answer);
//! * the longest gap between two counter reads around the upgrade, against
//!   the longest gap in a same-length window without one.
//!
//! The agent binary is `PITH_AGENT_BIN` (make bench passes the guest build,
//! then the gnu release build), or this build's. State on tmpfs (/dev/shm).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protobuf::Message;
use protocols::agent::*;
use ttrpc::proto::Request;
use ttrpc::r#async::Client;

const ROUNDS: usize = 5;

type Empty = protobuf::well_known_types::empty::Empty;

async fn call<Req: Message, Resp: Message>(c: &Client, method: &str, req: &Req) -> Resp {
    let mut r = Request::new();
    r.service = "grpc.AgentService".into();
    r.method = method.into();
    r.payload = req.write_to_bytes().unwrap();
    r.timeout_nano = Duration::from_secs(30).as_nanos() as i64;
    let resp = c.request(r).await.unwrap_or_else(|e| panic!("{method}: {e}"));
    Resp::parse_from_bytes(&resp.payload).unwrap()
}

struct Keeper(Child, std::path::PathBuf);

impl Drop for Keeper {
    fn drop(&mut self) {
        common::destroy_sandbox(&self.1);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn start(bin: &Path, dir: &Path) -> Keeper {
    let sock = dir.join("agent.sock");
    std::fs::write(dir.join("cmdline"), "").unwrap();
    let child = Command::new(bin)
        .arg("--keeper")
        .arg("--server-addr")
        .arg(format!("unix://{}", sock.display()))
        .arg("--cmdline")
        .arg(dir.join("cmdline"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--resolv-conf")
        .arg(dir.join("resolv.conf"))
        .arg("--log-level")
        .arg("warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .expect("spawn agent");
    Keeper(child, sock)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Reads the counter to its end, recording when each read returned.
async fn read_loop(c: Client, times: Arc<Mutex<Vec<Instant>>>) {
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = "counter".into();
        r.exec_id = "counter".into();
        r.len = 32 * 1024;
        let mut req = Request::new();
        req.service = "grpc.AgentService".into();
        req.method = "ReadStdout".into();
        req.payload = r.write_to_bytes().unwrap();
        match c.request(req).await {
            Ok(resp) if !resp.payload.is_empty() => times.lock().unwrap().push(Instant::now()),
            _ => return,
        }
    }
}

/// The longest gap between reads that returned within [from, to].
fn longest_gap(times: &[Instant], from: Instant, to: Instant) -> f64 {
    let inside: Vec<&Instant> = times.iter().filter(|t| **t >= from && **t <= to).collect();
    inside
        .windows(2)
        .map(|w| w[1].duration_since(*w[0]).as_secs_f64() * 1e3)
        .fold(0.0, f64::max)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("live upgrade: skipped (needs root)");
        return;
    }
    let bin = std::env::var("PITH_AGENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pith-agent").to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("live upgrade under the keeper ({bin}; {ROUNDS} upgrades, each to another copy of the binary)");
    for n in [10usize, 100] {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
        let copies = [dir.path().join("pith-agent-a"), dir.path().join("pith-agent-b")];
        for c in &copies {
            std::fs::copy(&bin, c).unwrap();
        }
        let rootfs = common::sleeper_rootfs(dir.path());
        let keeper = start(&copies[0], dir.path());
        let addr = protocols::addr::Address::Unix(keeper.1.clone());
        rt.block_on(async {
            let c = pithctl::client::connect(&addr, Duration::from_secs(10)).await.unwrap();
            pithctl::upgrade::negotiate(&c, Duration::from_secs(5)).await.unwrap();
            let _: Empty = call(&c, "CreateSandbox", &CreateSandboxRequest::new()).await;
            for i in 0..n {
                let id = format!("idle-{i}");
                let _: Empty = call(&c, "CreateContainer", &common::sleeper_request(&rootfs, &id)).await;
                let mut s = StartContainerRequest::new();
                s.container_id = id;
                let _: Empty = call(&c, "StartContainer", &s).await;
            }
            let script = "i=0; while :; do echo $i; i=$((i+1)); busybox usleep 1000; done";
            let spec = common::oci_default_spec(&rootfs, &["/bin/busybox", "sh", "-c", script]);
            let mut req = CreateContainerRequest::new();
            req.container_id = "counter".into();
            req.exec_id = "counter".into();
            req.OCI = protobuf::MessageField::some(protocols::oci_convert::from_oci(&spec));
            let _: Empty = call(&c, "CreateContainer", &req).await;
            let mut s = StartContainerRequest::new();
            s.container_id = "counter".into();
            let _: Empty = call(&c, "StartContainer", &s).await;
            let times = Arc::new(Mutex::new(Vec::new()));
            let reader = tokio::spawn(read_loop(c.clone(), times.clone()));
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (mut rtt, mut pause, mut gaps, mut quiet) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                // A window as long as the upgrade will be, without one: the
                // reader's own gaps (the counter's pace, the scheduler).
                let w = Instant::now();
                tokio::time::sleep(Duration::from_millis(200)).await;
                quiet.push(longest_gap(&times.lock().unwrap(), w, Instant::now()));
                let to = &copies[(round + 1) % 2];
                let t = Instant::now();
                let r = pithctl::upgrade::upgrade(&c, to.to_str().unwrap(), Duration::from_secs(10), Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("upgrade: {e}"));
                let done = Instant::now();
                rtt.push(done.duration_since(t).as_secs_f64() * 1e3);
                pause.push(r.pause_us as f64 / 1e3);
                tokio::time::sleep(Duration::from_millis(100)).await;
                gaps.push(longest_gap(&times.lock().unwrap(), t, Instant::now()));
            }
            println!(
                "  {n} idle containers + the counter: upgrade pause (Upgrade sent -> answered by the new binary) \
                 median {:.2} ms, worst {:.2} ms (goal at 100: <= 50 ms); the agent's own pause (stopped reading -> \
                 new binary ready) median {:.2} ms; longest gap between counter reads across an upgrade: median {:.2} ms, \
                 worst {:.2} ms (without an upgrade, same window: {:.2} ms)",
                median(rtt.clone()),
                max(&rtt),
                median(pause),
                median(gaps.clone()),
                max(&gaps),
                max(&quiet),
            );
            let mut k = SignalProcessRequest::new();
            k.container_id = "counter".into();
            k.exec_id = "counter".into();
            k.signal = 9;
            let _: Empty = call(&c, "SignalProcess", &k).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        });
        drop(keeper);
    }
}
