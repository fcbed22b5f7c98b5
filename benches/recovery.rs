//! `make bench` part 4: crash recovery (root only).
//!
//! * recovery time: `kill -9` of the agent running under its keeper with 10,
//!   then 100, idle containers, until the new agent has taken them back and
//!   answers a Health check on a new connection (median and worst of 4 kills);
//! * the cost of persisting on CreateContainer: the agent's own measure of
//!   the state write that follows it ("state written" at debug level) next
//!   to the CreateContainer round trip, both taken while the 91st to 100th
//!   containers are created (and, apart, the write after StartContainer);
//! * RSS of the design: agent plus keeper with 100 idle containers, against
//!   the same with none (the containers' own processes not counted).
//!
//! The state directory is on tmpfs (`/dev/shm`), as `/run/pith` is in a guest.
//! The agent binary is `PITH_AGENT_BIN` (make bench passes the release build),
//! or this build's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;
use protocols::agent::*;
use ttrpc::proto::Request;
use ttrpc::r#async::Client;

const KILLS: usize = 4;

type Empty = protobuf::well_known_types::empty::Empty;

async fn call<Req: Message, Resp: Message>(c: &Client, service: &str, method: &str, req: &Req) -> Resp {
    let mut r = Request::new();
    r.service = service.into();
    r.method = method.into();
    r.payload = req.write_to_bytes().unwrap();
    r.timeout_nano = Duration::from_secs(30).as_nanos() as i64;
    let resp = c.request(r).await.unwrap_or_else(|e| panic!("{method}: {e}"));
    Resp::parse_from_bytes(&resp.payload).unwrap()
}

/// The keeper's child that is the agent (the keeper's only child until an
/// agent dies and leaves it the containers; the newest child after that).
fn agent_pid(keeper: i32) -> Option<i32> {
    let kids = std::fs::read_to_string(format!("/proc/{keeper}/task/{keeper}/children")).ok()?;
    kids.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.ends_with("pith-agent")))
        .max_by_key(|p| rustjail::state::proc_start_time(*p).map_or(0, |(t, _)| t))
}

struct Keeper {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        common::destroy_sandbox(&self.sock);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn start(bin: &str, dir: &Path, level: &str) -> Keeper {
    let sock = dir.join("agent.sock");
    let cmdline = dir.join("cmdline");
    std::fs::write(&cmdline, "").unwrap();
    let log = dir.join("agent.log");
    let child = Command::new(bin)
        .arg("--keeper")
        .arg("--server-addr")
        .arg(format!("unix://{}", sock.display()))
        .arg("--cmdline")
        .arg(&cmdline)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--resolv-conf")
        .arg(dir.join("resolv.conf"))
        .arg("--log-level")
        .arg(level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn agent");
    Keeper { child, sock, log }
}

/// A Health check answered on a new connection (None: not yet).
async fn health(addr: &protocols::addr::Address) -> Option<()> {
    // One attempt (a timeout shorter than the client's 50 ms retry pause):
    // the caller polls every 0.5 ms, and a retry pause would be measured as
    // recovery time.
    let c = pithctl::client::connect(addr, Duration::from_millis(1)).await.ok()?;
    let mut r = Request::new();
    r.service = "grpc.Health".into();
    r.method = "Check".into();
    r.payload = protocols::health::CheckRequest::new().write_to_bytes().ok()?;
    r.timeout_nano = Duration::from_secs(1).as_nanos() as i64;
    c.request(r).await.ok().map(|_| ())
}

async fn until_healthy(addr: &protocols::addr::Address) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while health(addr).await.is_none() {
        assert!(Instant::now() < deadline, "no agent answered within 60 s");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// (CreateContainer round trips, in ms) of `n` idle containers.
async fn fill(c: &Client, rootfs: &Path, n: usize) -> Vec<f64> {
    let mut create_ms = Vec::new();
    for i in 0..n {
        let id = format!("idle-{i}");
        let t = Instant::now();
        let _: Empty = call(
            c,
            "grpc.AgentService",
            "CreateContainer",
            &common::sleeper_request(rootfs, &id),
        )
        .await;
        create_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let mut s = StartContainerRequest::new();
        s.container_id = id;
        let _: Empty = call(c, "grpc.AgentService", "StartContainer", &s).await;
    }
    create_ms
}

/// One state write the agent logged: its duration (µs) in all, of taking
/// the snapshot and of encoding it, and the file's size.
struct Write {
    us: f64,
    view_us: f64,
    encode_us: f64,
    bytes: u64,
    /// The file already held what it would write (not written again).
    unchanged: bool,
}

/// The state writes logged so far.
fn writes(log: &Path) -> Vec<Write> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["msg"] == "state written")
        .map(|j| Write {
            us: j["duration_us"].as_f64().unwrap_or(0.0),
            view_us: j["view_us"].as_f64().unwrap_or(0.0),
            encode_us: j["encode_us"].as_f64().unwrap_or(0.0),
            bytes: j["bytes"].as_u64().unwrap_or(0),
            unchanged: j["unchanged"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// RSS and PSS (KiB) of the keeper and its agent together.
fn memory(keeper: i32) -> (u64, u64) {
    let pids = [Some(keeper), agent_pid(keeper)];
    let pids = pids.iter().flatten().map(|p| *p as u32);
    pids.fold((0, 0), |(r, p), pid| {
        (r + common::rss_kib(pid), p + common::pss_kib(pid))
    })
}

fn main() {
    let Some((bin, rt)) = common::root_bench("crash recovery") else {
        return;
    };
    println!("crash recovery under the keeper ({bin})");
    for n in [10usize, 100] {
        // On tmpfs, as the guest's /run (the default state directory) is.
        let dir = common::state_tempdir();
        let rootfs = common::sleeper_rootfs(dir.path());
        // Debug logs (for the write costs) only in the 100-container run.
        let keeper = start(&bin, dir.path(), if n == 100 { "debug" } else { "warn" });
        let kpid = keeper.child.id() as i32;
        let addr = protocols::addr::Address::Unix(keeper.sock.clone());
        rt.block_on(async {
            until_healthy(&addr).await;
            let c = pithctl::client::connect(&addr, Duration::from_secs(10)).await.unwrap();
            let _: Empty = call(&c, "grpc.AgentService", "CreateSandbox", &CreateSandboxRequest::new()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (rss0, pss0) = memory(kpid);
            let before = writes(&keeper.log).len();
            let create_ms = fill(&c, &rootfs, n).await;
            if n == 100 {
                // One write after each CreateContainer and each StartContainer,
                // in turn; those of the last 10 containers.
                // (The agent's log is written asynchronously: its last lines may lag.)
                let mut w = writes(&keeper.log);
                for _ in 0..100 {
                    if w.len() >= before + 2 * n {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    w = writes(&keeper.log);
                }
                let mine = &w[before..];
                assert_eq!(mine.len(), 2 * n, "one state write after each CreateContainer and StartContainer");
                let creates: Vec<&Write> = mine.iter().step_by(2).skip(n - 10).collect();
                let starts: Vec<&Write> = mine.iter().skip(1).step_by(2).skip(n - 10).collect();
                let ms = |ws: &[&Write], f: &dyn Fn(&Write) -> f64| median(ws.iter().map(|w| f(w) / 1e3).collect());
                let bytes = w.last().map_or(0, |w| w.bytes);
                let (wm, cm) = (ms(&creates, &|w| w.us), median(create_ms[n - 10..].to_vec()));
                println!(
                    "  persisting on CreateContainer with 91-100 containers: state write {wm:.2} ms \
                     ({:.0} KiB file; snapshot {:.2} ms, encoding {:.2} ms, the rest writing it) \
                     vs CreateContainer {cm:.2} ms: {:.1}% (goal <= 5%); after StartContainer {:.2} ms \
                     ({} of 10 found the file as it would write it)",
                    bytes as f64 / 1024.0,
                    ms(&creates, &|w| w.view_us),
                    ms(&creates, &|w| w.encode_us),
                    100.0 * wm / cm,
                    ms(&starts, &|w| w.us),
                    starts.iter().filter(|w| w.unchanged).count()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (rss, pss) = memory(kpid);
                let mib = |k: u64| k as f64 / 1024.0;
                println!(
                    "  memory of agent + keeper with {n} idle containers (goal <= 8 MiB): RSS {:.2} MiB \
                     ({:.2} MiB with none, {:.1} KiB per container), PSS {:.2} MiB ({:.2} MiB with none; \
                     RSS counts the binary's shared pages twice); keeper alone RSS {:.2} MiB, PSS {:.2} MiB",
                    mib(rss),
                    mib(rss0),
                    (rss as f64 - rss0 as f64) / n as f64,
                    mib(pss),
                    mib(pss0),
                    mib(common::rss_kib(kpid as u32)),
                    mib(common::pss_kib(kpid as u32))
                );
            }
            drop(c);
            let mut ms = Vec::new();
            for _ in 0..KILLS {
                // Each kill a single crash: the keeper backs off from an agent
                // that dies within a second of its start (a crash loop).
                tokio::time::sleep(Duration::from_millis(1100)).await;
                let agent = agent_pid(kpid).expect("the keeper's agent");
                let t = Instant::now();
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), nix::sys::signal::Signal::SIGKILL).unwrap();
                until_healthy(&addr).await;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                assert_ne!(agent_pid(kpid), Some(agent), "a new agent answers");
            }
            let worst = ms.iter().cloned().fold(0.0, f64::max);
            println!(
                "  recovery, kill -9 -> first RPC served by the new agent, {n} containers: median {:.1} ms, worst {worst:.1} ms of {KILLS} (goal <= 100 ms at 100)",
                median(ms)
            );
        });
    }
}
