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
        .arg("info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .expect("spawn agent");
    Keeper(child, sock)
}

/// The phases of the last upgrade in the agent's log (ms): stopped ->
/// the new binary's first line, -> sandbox taken back (of which decode,
/// handoff, restore), -> ready.
fn phases(log: &Path) -> Option<[f64; 6]> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let at = |msg: &str| lines.iter().rposition(|j| j["msg"] == msg);
    let (p, s, t, r) = (
        at("upgrade: pausing")?,
        at("starting")?,
        at("state taken back")?,
        at("upgrade: took over")?,
    );
    if !(p < s && s < t && t < r) {
        return None;
    }
    let ts = |i: usize| -> Option<f64> {
        let t = lines[i]["ts"].as_str()?;
        // HH:MM:SS.fraction of an RFC 3339 UTC time.
        let clock = t.split('T').nth(1)?.trim_end_matches('Z');
        let mut f = clock.split(':').map(|x| x.parse::<f64>().ok());
        Some((f.next()?? * 3600.0 + f.next()?? * 60.0 + f.next()??) * 1e3)
    };
    let us = |k: &str| lines[t][k].as_f64().unwrap_or(0.0) / 1e3;
    Some([
        ts(s)? - ts(p)?,
        ts(t)? - ts(s)?,
        us("decode_us"),
        us("handoff_us"),
        us("restore_us"),
        ts(r)? - ts(t)?,
    ])
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
        r.container_id = "upgrade-counter".into();
        r.exec_id = "upgrade-counter".into();
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
    let Some((bin, rt)) = common::root_bench("live upgrade") else {
        return;
    };
    println!("live upgrade under the keeper ({bin}; {ROUNDS} upgrades, each to another copy of the binary)");
    for n in [10usize, 100] {
        // On tmpfs, as the guest's /run (the default state directory) is.
        let dir = common::state_tempdir();
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
                let id = format!("upgrade-idle-{i}");
                let _: Empty = call(&c, "CreateContainer", &common::sleeper_request(&rootfs, &id)).await;
                let mut s = StartContainerRequest::new();
                s.container_id = id;
                let _: Empty = call(&c, "StartContainer", &s).await;
            }
            let script = "i=0; while :; do echo $i; i=$((i+1)); busybox usleep 1000; done";
            let spec = common::oci_default_spec(&rootfs, &["/bin/busybox", "sh", "-c", script]);
            let mut req = CreateContainerRequest::new();
            req.container_id = "upgrade-counter".into();
            req.exec_id = "upgrade-counter".into();
            req.OCI = protobuf::MessageField::some(protocols::oci_convert::from_oci(&spec));
            let _: Empty = call(&c, "CreateContainer", &req).await;
            let mut s = StartContainerRequest::new();
            s.container_id = "upgrade-counter".into();
            let _: Empty = call(&c, "StartContainer", &s).await;
            let times = Arc::new(Mutex::new(Vec::new()));
            let reader = tokio::spawn(read_loop(c.clone(), times.clone()));
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (mut rtt, mut pause, mut gaps, mut quiet) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut parts: Vec<[f64; 6]> = Vec::new();
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
                parts.extend(phases(&dir.path().join("agent.log")));
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
            let part = |i: usize| median(parts.iter().map(|p| p[i]).collect());
            if !parts.is_empty() {
                println!(
                    "    its phases (medians, from the agent's log): pause, write, execve and start {:.2} ms; \
                     sandbox taken back {:.2} ms (decode {:.2}, keeper handoff {:.2}, restore {:.2}); ready {:.2} ms",
                    part(0),
                    part(1),
                    part(2),
                    part(3),
                    part(4),
                    part(5)
                );
            }
            let mut k = SignalProcessRequest::new();
            k.container_id = "upgrade-counter".into();
            k.exec_id = "upgrade-counter".into();
            k.signal = 9;
            let _: Empty = call(&c, "SignalProcess", &k).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        });
        drop(keeper);
    }
}
