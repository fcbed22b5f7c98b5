//! `make bench` part 3: containers through the agent's RPCs (root only).
//!
//! * create → start → wait → remove of `/bin/true` in a busybox container,
//!   through the agent's RPCs over a Unix socket, with a long-lived "pause"
//!   container in the sandbox (as a Kata pod has): median and p90 of 100
//!   cycles, next to `rustjail run` (the CLI doing the same create, start, wait
//!   and delete in one process) measured in the same run;
//! * `ReadStdout` throughput: 1 GiB from `dd` in a container, read with 1 MiB
//!   requests, next to the same bytes through a plain pipe (`dd | cat`);
//! * the agent's RSS with 10 idle containers;
//! * the cycle again with the agent pinned to one CPU, as issue 16's table
//!   measured both agents;
//! * the cgroup v1 cost per hierarchy (`support/v1_cost.rs`);
//! * 200 containers in one sandbox: CreateContainer of the 200th next to
//!   the 2nd's (`support/scale.rs`);
//! * pod start as a Kata runtime drives it: UpdateInterface + UpdateRoutes +
//!   CreateSandbox + two containers running, each pod in a fresh agent inside a
//!   fresh network namespace with a veth NIC (median of 20), and the agent's RSS
//!   once the network is configured.
//!
//! The agent binary is `PITH_AGENT_BIN` (make bench passes the static musl
//! build that goes into the guest image), or the release build.
//! `PITH_BENCH_PARTS` picks parts (comma-separated: cycle, stream, rss, pinned,
//! v1cost, scale, pods; default all), `PITH_BENCH_CYCLES` the number of
//! cycles of the first, of the pinned one and of the A/B comparison.
//! With `PITH_AGENT_BIN_B` set, the cycle also runs through that build and
//! `PITH_AGENT_BIN`'s, alternating cycle by cycle (a before/after comparison;
//! `PITH_AB_BLOCK` and `PITH_AB_PINNED` make the turns longer and pin both
//! agents to one CPU, see `ab_cycles`). `PITH_BENCH_GAP_MS=N` idles N ms
//! before each cycle of the pinned part, the default-spec cycles and the
//! scaling line: the previous removal has settled, and each create meets an
//! idle CPU, as a pod's containers, which do not come back to back, do.

mod common;
#[path = "support/scale.rs"]
mod scale;
#[path = "support/v1_cost.rs"]
mod v1_cost;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;
use protocols::agent::*;
use ttrpc::proto::Request;
use ttrpc::r#async::Client;

const CYCLES: usize = 100;
const WARMUP: usize = 5;
const STREAM_BYTES: u64 = 1 << 30;
const IDLE_CONTAINERS: usize = 10;

async fn call<Req: Message, Resp: Message>(c: &Client, method: &str, req: &Req) -> Resp {
    let mut r = Request::new();
    r.service = "grpc.AgentService".into();
    r.method = method.into();
    r.payload = req.write_to_bytes().unwrap();
    let resp = c.request(r).await.unwrap_or_else(|e| panic!("{method}: {e}"));
    Resp::parse_from_bytes(&resp.payload).unwrap()
}

type Empty = protobuf::well_known_types::empty::Empty;

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("/bin/busybox (apt-get install busybox-static)");
    for tool in ["sh", "true", "sleep", "dd", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
    }
    root
}

/// The spec as Kata's Go runtime sends it (`constrainGRPCSpec`): oci-spec's
/// default without the network and cgroup namespaces (the VM is the pod's).
fn spec(rootfs: &Path, args: &[&str]) -> oci_spec::runtime::Spec {
    let mut spec = common::oci_default_spec(rootfs, args);
    if let Some(linux) = spec.linux_mut() {
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        ns.retain(|n| {
            !matches!(
                n.typ(),
                oci_spec::runtime::LinuxNamespaceType::Network | oci_spec::runtime::LinuxNamespaceType::Cgroup
            )
        });
        linux.set_namespaces(Some(ns));
    }
    spec
}

fn create_req(rootfs: &Path, id: &str, args: &[&str]) -> CreateContainerRequest {
    create_req_with(&spec(rootfs, args), id)
}

/// The cgroup parent of the bench's containers: a Kata host's are nested
/// (containerd's `/<namespace>/<id>`, kubelet's `/kubepods/.../pod<uid>/<id>`),
/// not at the hierarchy's root. Removed by [`remove_cgroup_parent`].
fn cgroup_parent() -> String {
    format!("/pith-bench-{}", std::process::id())
}

/// Removes [`cgroup_parent`] from every hierarchy (the agents leave the
/// parents of their containers' cgroups, as runc does). An agent removes a
/// container's cgroups after it has answered, so the last ones may still be
/// going: each parent gets a few seconds to empty, and one still busy then
/// is reported rather than left behind silently.
fn remove_cgroup_parent() {
    let rel = cgroup_parent();
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup")];
    dirs.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    for d in dirs {
        let dir = d.join(rel.trim_start_matches('/'));
        loop {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    println!(
                        "NOTE: could not remove the bench's cgroup parent {}: {e}",
                        dir.display()
                    );
                    break;
                }
                _ => break,
            }
        }
    }
}

fn create_req_with(spec: &oci_spec::runtime::Spec, id: &str) -> CreateContainerRequest {
    let mut req = CreateContainerRequest::new();
    req.container_id = id.into();
    req.exec_id = id.into();
    let mut oci = protocols::oci_convert::from_oci(spec);
    if let Some(linux) = oci.Linux.as_mut() {
        if linux.CgroupsPath.is_empty() {
            linux.CgroupsPath = format!("{}/{id}", cgroup_parent());
        }
    }
    req.OCI = protobuf::MessageField::some(oci);
    req
}

/// One create → start → wait → remove of container `id` through `c`: each
/// phase's time (CreateContainer, StartContainer, WaitProcess,
/// RemoveContainer) and the whole cycle's, in ms.
async fn timed_cycle(c: &Client, req: &CreateContainerRequest, id: &str) -> ([f64; 4], f64) {
    let t = Instant::now();
    let _: Empty = call(c, "CreateContainer", req).await;
    let t1 = Instant::now();
    let mut s = StartContainerRequest::new();
    s.container_id = id.into();
    let _: Empty = call(c, "StartContainer", &s).await;
    let t2 = Instant::now();
    assert_eq!(wait(c, id).await, 0);
    let t3 = Instant::now();
    remove(c, id).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        [ms(t1 - t), ms(t2 - t1), ms(t3 - t2), ms(t3.elapsed())],
        ms(t.elapsed()),
    )
}

/// Appends one [`timed_cycle`]'s phase times to `phases`.
fn push_phases(phases: &mut [Vec<f64>; 4], times: [f64; 4]) {
    for (v, ms) in phases.iter_mut().zip(times) {
        v.push(ms);
    }
}

/// `n` create → start → wait → remove cycles of `spec` after warm-up: each
/// phase's times and the whole cycle's, in ms ([`timed_cycle`]).
async fn cycles_of(c: &Client, spec: &oci_spec::runtime::Spec, tag: &str, n: usize) -> ([Vec<f64>; 4], Vec<f64>) {
    cycles_named(c, spec, n, &|i| format!("{tag}-{}-{i}", std::process::id())).await
}

/// [`cycles_of`], the `i`th container (warm-up included) named `name(i)`.
async fn cycles_named(
    c: &Client,
    spec: &oci_spec::runtime::Spec,
    n: usize,
    name: &dyn Fn(usize) -> String,
) -> ([Vec<f64>; 4], Vec<f64>) {
    let (mut phases, mut total): ([Vec<f64>; 4], _) = (Default::default(), Vec::new());
    let gap = Duration::from_millis(gap_ms() as u64);
    for i in 0..n + WARMUP {
        let id = name(i);
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let (times, ms) = timed_cycle(c, &create_req_with(spec, &id), &id).await;
        if i >= WARMUP {
            push_phases(&mut phases, times);
            total.push(ms);
        }
    }
    (phases, total)
}

async fn start(c: &Client, rootfs: &Path, id: &str, args: &[&str]) {
    let _: Empty = call(c, "CreateContainer", &create_req(rootfs, id, args)).await;
    let mut s = StartContainerRequest::new();
    s.container_id = id.into();
    let _: Empty = call(c, "StartContainer", &s).await;
}

async fn wait(c: &Client, id: &str) -> i32 {
    let mut w = WaitProcessRequest::new();
    w.container_id = id.into();
    w.exec_id = id.into();
    call::<_, WaitProcessResponse>(c, "WaitProcess", &w).await.status
}

async fn remove(c: &Client, id: &str) {
    let mut r = RemoveContainerRequest::new();
    r.container_id = id.into();
    let _: Empty = call(c, "RemoveContainer", &r).await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&ms, 0.5), percentile(&ms, 0.9))
}

/// "name median, ..." of each phase's times.
fn phase_medians(names: &[&str], phases: [Vec<f64>; 4]) -> String {
    let med: Vec<String> = names
        .iter()
        .zip(phases)
        .map(|(n, v)| format!("{n} {:.2}", summary(v).0))
        .collect();
    med.join(", ")
}

/// User + system CPU time of `pid` and of the children it reaped, in ms.
fn cpu_ms_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14-17 of proc(5) (utime stime cutime cstime); `rest` starts at field 3.
    let ticks: i64 = f[11..15].iter().map(|v| v.parse::<i64>().unwrap()).sum();
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 * 1e3 / hz
}

struct AgentProc {
    child: Child,
    sock: PathBuf,
    /// The agent's state directory; removed once the agent is gone.
    _state: tempfile::TempDir,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        // Containers outlive a killed agent (a bench that failed half-way): let
        // it remove them first.
        common::destroy_sandbox(&self.sock);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(bin: &str, dir: &Path) -> AgentProc {
    start_agent_in(&[], bin, dir)
}

/// The agent run by `wrapper` (which must exec it: `nsenter --net=...`).
fn start_agent_in(wrapper: &[&str], bin: &str, dir: &Path) -> AgentProc {
    let sock = dir.join("agent.sock");
    let state = common::state_tempdir();
    let cmdline = dir.join("cmdline");
    std::fs::write(&cmdline, "").unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .arg("--server-addr")
        .arg(format!("unix://{}", sock.display()))
        .arg("--cmdline")
        .arg(&cmdline)
        .arg("--state-dir")
        .arg(state.path())
        .arg("--resolv-conf")
        .arg(dir.join("resolv.conf"))
        .arg("--log-level")
        .arg("warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agent");
    AgentProc {
        child,
        sock,
        _state: state,
    }
}

/// `rustjail run` of the same container, as one CLI command (create, start, wait, delete).
fn rustjail_cycle(rustjail: &Path, root: &Path, bundle: &Path, id: &str) -> f64 {
    let t = Instant::now();
    let st = Command::new(rustjail)
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .status()
        .expect("rustjail run");
    assert!(st.success(), "rustjail run {id}: {st}");
    t.elapsed().as_secs_f64() * 1e3
}

/// Reads a container's stdout to the end over a blocking socket with one
/// reused buffer, parsing the reply frames by hand. Returns (bytes, seconds).
fn raw_read_all(sock: &Path, id: &str) -> (u64, f64) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let mut rs = ReadStreamRequest::new();
    rs.container_id = id.into();
    rs.exec_id = id.into();
    rs.len = 1 << 20;
    let mut req = Request::new();
    req.service = "grpc.AgentService".into();
    req.method = "ReadStdout".into();
    req.payload = rs.write_to_bytes().unwrap();
    let body = req.write_to_bytes().unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes()); // stream id, reused: one call in flight
    frame.extend_from_slice(&[1, 0]); // request, no flags
    frame.extend_from_slice(&body);
    let mut buf: Vec<u8> = Vec::new();
    let (mut total, t) = (0u64, Instant::now());
    loop {
        s.write_all(&frame).unwrap();
        let mut h = [0u8; 10];
        s.read_exact(&mut h).unwrap();
        let len = u32::from_be_bytes(h[..4].try_into().unwrap()) as usize;
        buf.resize(len, 0);
        s.read_exact(&mut buf).unwrap();
        let data = reply_data(&buf);
        if data == 0 {
            return (total, t.elapsed().as_secs_f64());
        }
        total += data as u64;
    }
}

/// Length of `Response.payload.data` in a reply body; panics on an error status.
fn reply_data(body: &[u8]) -> usize {
    fn varint(b: &[u8], i: &mut usize) -> usize {
        let (mut v, mut shift) = (0usize, 0);
        loop {
            let x = b[*i];
            *i += 1;
            v |= ((x & 0x7f) as usize) << shift;
            if x < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut i = 0;
    let mut data = 0;
    while i < body.len() {
        let tag = body[i];
        i += 1;
        let len = varint(body, &mut i);
        match tag {
            0x0a => assert!(len == 0 || body[i + 1] == 0, "error status in reply"),
            0x12 => {
                let mut j = i + 1;
                data = varint(body, &mut j);
            }
            _ => panic!("unexpected field tag {tag:#x}"),
        }
        i += len;
    }
    data
}

/// Whether `PITH_BENCH_PARTS` (default: every part) names `part`.
fn part(part: &str) -> bool {
    std::env::var("PITH_BENCH_PARTS").map_or(true, |v| v.split(',').any(|p| p.trim() == part))
}

fn main() {
    if std::env::var_os(v1_cost::CHILD_ENV).is_some() {
        return v1_cost::child_main();
    }
    let Some((bin, rt)) = common::root_bench("containers through the agent") else {
        return;
    };
    let _parent = CgroupParent;
    let rustjail = PathBuf::from(env!("CARGO_BIN_EXE_pith-agent"))
        .parent()
        .unwrap()
        .join("rustjail");
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    let agent = start_agent(&bin, dir.path());
    println!("containers through the agent ({bin})");
    rt.block_on(async {
        let pause = format!("pause-{}", std::process::id());
        let c = sandbox_with_pause(&agent, "bench", &rootfs, &pause).await;

        // 1. create → start → wait → remove, interleaved with `rustjail run`.
        if part("cycle") {
            let bundle = dir.path().join("bundle");
            std::fs::create_dir_all(&bundle).unwrap();
            spec(&rootfs, &["true"]).save(bundle.join("config.json")).unwrap();
            let rj_root = dir.path().join("rustjail-root");
            let (mut rpc, mut cli) = (Vec::new(), Vec::new());
            let mut phases: [Vec<f64>; 4] = Default::default();
            let cycles = bench_cycles();
            // The agent's CPU time and that of the children it reaped (the
            // containers' inits): what the cycle costs whatever else runs.
            let cpu0 = cpu_ms_of(agent.child.id());
            for i in 0..WARMUP + cycles {
                let id = format!("true-{}-{i}", std::process::id());
                let (times, ms) = timed_cycle(&c, &create_req(&rootfs, &id, &["true"]), &id).await;
                if i >= WARMUP {
                    push_phases(&mut phases, times);
                }
                let cli_ms = if rustjail.exists() {
                    Some(rustjail_cycle(
                        &rustjail,
                        &rj_root,
                        &bundle,
                        &format!("rj-{}-{i}", std::process::id()),
                    ))
                } else {
                    None
                };
                if i >= WARMUP {
                    rpc.push(ms);
                    cli.extend(cli_ms);
                }
            }
            let cpu_per_cycle = (cpu_ms_of(agent.child.id()) - cpu0) / (WARMUP + cycles) as f64;
            let (m, p90) = summary(rpc);
            println!("  create+start+wait+remove of /bin/true (the spec as a Kata host sends it), {cycles} cycles after {WARMUP} warm-up, pause container running:");
            println!("    agent RPCs:     median {m:.2} ms, p90 {p90:.2} ms   (goal: median <= 4 ms, p90 <= 5 ms)");
            println!("      phase medians (ms): {}", phase_medians(&["create", "start", "wait", "remove"], phases));
            println!(
                "      CPU per cycle, the agent and the inits it reaped (user+system, load-independent): {cpu_per_cycle:.2} ms"
            );
            let ([dc, ..], dt) = cycles_of(&c, &common::oci_default_spec(&rootfs, &["true"]), "ocidefault", 30).await;
            let ((dcm, _), (dtm, dtp90)) = (summary(dc), summary(dt));
            println!(
                "    with oci-spec's default spec (new network and cgroup namespaces, which a Kata host strips), 30 cycles: \
                 median {dtm:.2} ms, p90 {dtp90:.2} ms, CreateContainer median {dcm:.2} ms"
            );
            if cli.is_empty() {
                println!("    rustjail run:   skipped ({} not built)", rustjail.display());
            } else {
                let (cm, cp90) = summary(cli);
                println!(
                    "    rustjail run:   median {cm:.2} ms, p90 {cp90:.2} ms   (agent / CLI: {:.2}x)",
                    m / cm
                );
            }
        }

        // 2. ReadStdout throughput.
        if part("stream") {
            let id = format!("stream-{}", std::process::id());
            let cmd = format!("dd if=/dev/zero bs=1M count={} 2>/dev/null", STREAM_BYTES >> 20);
            start(&c, &rootfs, &id, &["sh", "-c", &cmd]).await;
            let t = Instant::now();
            let mut total = 0u64;
            let mut reads = 0u64;
            loop {
                reads += 1;
                let mut r = ReadStreamRequest::new();
                r.container_id = id.clone();
                r.exec_id = id.clone();
                r.len = 1 << 20;
                let resp: ReadStreamResponse = call(&c, "ReadStdout", &r).await;
                if resp.data.is_empty() {
                    break;
                }
                total += resp.data.len() as u64;
            }
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(total, STREAM_BYTES);
            assert_eq!(wait(&c, &id).await, 0);
            remove(&c, &id).await;
            let rpc_mib_s = total as f64 / (1 << 20) as f64 / secs;

            // The same through a client that reuses its buffer, as a Go runtime's
            // heap does (ttrpc-rust's client allocates fresh memory for every reply).
            let id = format!("stream-raw-{}", std::process::id());
            start(&c, &rootfs, &id, &["sh", "-c", &cmd]).await;
            let sock = agent.sock.clone();
            let sid = id.clone();
            let (raw_total, raw_secs) = tokio::task::spawn_blocking(move || raw_read_all(&sock, &sid))
                .await
                .unwrap();
            assert_eq!(raw_total, STREAM_BYTES);
            assert_eq!(wait(&c, &id).await, 0);
            remove(&c, &id).await;
            let raw_mib_s = raw_total as f64 / (1 << 20) as f64 / raw_secs;
            let t = Instant::now();
            let st = Command::new("sh")
                .args([
                    "-c",
                    &format!(
                        "/bin/busybox dd if=/dev/zero bs=1M count={} 2>/dev/null | /bin/busybox cat > /dev/null",
                        STREAM_BYTES >> 20
                    ),
                ])
                .status()
                .unwrap();
            assert!(st.success());
            let pipe_mib_s = STREAM_BYTES as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64();
            println!(
                "  ReadStdout, 1 GiB in 1 MiB reads ({reads} reads, {:.0} KiB each), target >= 1024 MiB/s:",
                total as f64 / reads as f64 / 1024.0
            );
            println!(
                "    ttrpc-rust async client:        {rpc_mib_s:.0} MiB/s (agent / pipe: {:.2}x)",
                rpc_mib_s / pipe_mib_s
            );
            println!(
                "    client reusing its buffer:      {raw_mib_s:.0} MiB/s (agent / pipe: {:.2}x)",
                raw_mib_s / pipe_mib_s
            );
            println!("    baseline, dd | cat in a pipe:   {pipe_mib_s:.0} MiB/s");
        }

        let _: Empty = call(&c, "DestroySandbox", &DestroySandboxRequest::new()).await;
    });
    drop(agent);

    // 3. RSS with idle containers, in a fresh agent: what the streaming above
    // left in its connection's buffer pool is not an idle container's cost.
    if part("rss") {
        let dir2 = tempfile::tempdir().unwrap();
        let agent = start_agent(&bin, dir2.path());
        rt.block_on(async {
            let addr = protocols::addr::Address::Unix(agent.sock.clone());
            let c = pithctl::client::connect(&addr, Duration::from_secs(10)).await.unwrap();
            let _: Empty = call(&c, "CreateSandbox", &CreateSandboxRequest::new()).await;
            let idle0 = common::rss_kib(agent.child.id());
            for i in 0..IDLE_CONTAINERS {
                let id = format!("idle-{}-{i}", std::process::id());
                start(&c, &rootfs, &id, &["sleep", "100000"]).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let rss = common::rss_kib(agent.child.id());
            println!(
            "  agent RSS: {:.2} MiB with {IDLE_CONTAINERS} idle containers, {:.2} MiB with none (kata-agent 4.1.0: \
             15.5 / 12.0 MiB in issue 16's table, measured 2026-12-01, not in this run)",
            rss as f64 / 1024.0,
            idle0 as f64 / 1024.0
        );
            let _: Empty = call(&c, "DestroySandbox", &DestroySandboxRequest::new()).await;
        });
    }

    // 3b. The cycle with the agent (and so its containers) pinned to one CPU,
    // as issue 16's table measured kata-agent and pith.
    if part("pinned") {
        pinned_cycles(&rt, &bin, &rootfs);
    }

    // A/B: the same cycle through two agent builds, alternating every cycle.
    if let Ok(bin_b) = std::env::var("PITH_AGENT_BIN_B") {
        ab_cycles(&rt, &[bin.as_str(), bin_b.as_str()], &rootfs);
    }

    if part("v1cost") {
        v1_cost::run();
    }

    // 4. 200 containers in one sandbox.
    if part("scale") {
        scale::run(&rt, &bin, &rootfs);
    }
    if part("pods") {
        pod_start(&rt, &bin, &rootfs);
    }
}

/// Calls [`remove_cgroup_parent`] when dropped: at the end of `main`, and
/// when a part panics (its agents are gone by then, dropped on the way).
struct CgroupParent;

impl Drop for CgroupParent {
    fn drop(&mut self) {
        remove_cgroup_parent();
    }
}

/// `PITH_BENCH_GAP_MS`: the idle time before each cycle of [`cycles_named`]
/// (default none).
fn gap_ms() -> usize {
    env_or("PITH_BENCH_GAP_MS", 0)
}

/// `PITH_BENCH_CYCLES`, or [`CYCLES`].
fn bench_cycles() -> usize {
    env_or("PITH_BENCH_CYCLES", CYCLES)
}

/// The number in the environment variable `name`, or `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The cycle through a fresh agent started under `taskset` on the last CPU
/// this process may use: the agent, its helpers and the containers' inits
/// share that CPU, so every microsecond of their CPU time is one of the
/// cycle's (the client is left free).
fn pinned_cycles(rt: &tokio::runtime::Runtime, bin: &str, rootfs: &Path) {
    let Some(cpu) = pin_cpu() else {
        return println!("  pinned to one CPU: skipped (no CPU in this process's affinity mask)");
    };
    let dir = tempfile::tempdir().unwrap();
    let cpu_arg = cpu.to_string();
    let agent = start_agent_in(&["taskset", "-c", &cpu_arg], bin, dir.path());
    rt.block_on(async {
        let pause = format!("pause-pin-{}", std::process::id());
        let c = sandbox_with_pause(&agent, "bench-pinned", rootfs, &pause).await;
        let n = bench_cycles();
        let cpu0 = cpu_ms_of(agent.child.id());
        let (phases, cycles) = cycles_of(&c, &spec(rootfs, &["true"]), "pinned", n).await;
        let cpu_per_cycle = (cpu_ms_of(agent.child.id()) - cpu0) / (WARMUP + n) as f64;
        let ((cm, cp90), (m, p90)) = (summary(phases[0].clone()), summary(cycles));
        let gap = match gap_ms() {
            0 => String::new(),
            ms => format!(", each after {ms} ms idle (PITH_BENCH_GAP_MS)"),
        };
        println!(
            "  the same cycle, agent pinned to CPU {cpu} (taskset; as issue 16's table measured kata-agent 4.1.0 at \
             12.6-14.0 ms, p90 17-19, on 2026-12-01, not in this run), {n} cycles after {WARMUP} warm-up{gap}:"
        );
        println!(
            "    agent RPCs:     median {m:.2} ms, p90 {p90:.2} ms; CreateContainer median {cm:.2} ms, p90 {cp90:.2} ms; \
             CPU per cycle {cpu_per_cycle:.2} ms"
        );
        println!(
            "      phase medians (ms): {}",
            phase_medians(&["create", "start", "wait", "remove"], phases)
        );
        let _: Empty = call(&c, "DestroySandbox", &DestroySandboxRequest::new()).await;
    });
}

/// The CPU a pinned agent gets: the last one this process may use.
fn pin_cpu() -> Option<usize> {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("sched_getaffinity");
    (0..nix::sched::CpuSet::count())
        .rev()
        .find(|&i| allowed.is_set(i).unwrap_or(false))
}

/// The create → start → wait → remove cycle through each agent of `bins`
/// (each with its own sandbox and pause container), taking turns: a
/// before/after comparison that load on the machine affects alike. Prints
/// each agent's cycle, phase medians and CPU per cycle.
///
/// By default the turn passes every cycle. With `PITH_AB_BLOCK=N` each agent
/// runs N cycles in a row and the first of each run is not counted: work one
/// build leaves for after its answers (RemoveContainer's) lands in whatever
/// comes next, which taking turns every cycle charges to the other build.
/// With `PITH_AB_PINNED=1` both agents run on the CPU the pinned part uses.
fn ab_cycles(rt: &tokio::runtime::Runtime, bins: &[&str], rootfs: &Path) {
    let cycles = bench_cycles();
    let block = env_or("PITH_AB_BLOCK", 1).max(1);
    let pin = std::env::var_os("PITH_AB_PINNED")
        .and_then(|_| pin_cpu())
        .map(|c| c.to_string());
    let dirs: Vec<_> = bins.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let agents: Vec<AgentProc> = bins
        .iter()
        .zip(&dirs)
        .map(|(b, d)| match &pin {
            Some(cpu) => start_agent_in(&["taskset", "-c", cpu], b, d.path()),
            None => start_agent(b, d.path()),
        })
        .collect();
    rt.block_on(async {
        let mut clients = Vec::new();
        // Container ids name host-wide cgroups: each agent gets its own.
        for (k, a) in agents.iter().enumerate() {
            let c = sandbox_with_pause(a, "bench-ab", rootfs, &format!("pause-ab{k}-{}", std::process::id())).await;
            clients.push(c);
        }
        let cpu0: Vec<f64> = agents.iter().map(|a| cpu_ms_of(a.child.id())).collect();
        let mut total: Vec<Vec<f64>> = vec![Vec::new(); bins.len()];
        let mut phases: Vec<[Vec<f64>; 4]> = vec![Default::default(); bins.len()];
        // Turn t is agent t % n's, its cycles block*(t/n) onwards; the order
        // within a round of turns alternates.
        let per_agent = WARMUP + cycles;
        let rounds = per_agent.div_ceil(block);
        for round in 0..rounds {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..bins.len()).collect()
            } else {
                (0..bins.len()).rev().collect()
            };
            for k in order {
                let c = &clients[k];
                for i in round * block..((round + 1) * block).min(per_agent) {
                    let id = format!("ab{k}-{}-{i}", std::process::id());
                    let (times, ms) = timed_cycle(c, &create_req(rootfs, &id, &["true"]), &id).await;
                    let first_of_block = block > 1 && i % block == 0;
                    if i >= WARMUP && !first_of_block {
                        total[k].push(ms);
                        push_phases(&mut phases[k], times);
                    }
                }
            }
        }
        let how = match (block, &pin) {
            (1, None) => "alternating cycle by cycle".to_string(),
            (1, Some(cpu)) => format!("alternating cycle by cycle, both pinned to CPU {cpu}"),
            (n, None) => format!("in turns of {n} cycles, the first of each not counted"),
            (n, Some(cpu)) => {
                format!("in turns of {n} cycles, the first of each not counted, both pinned to CPU {cpu}")
            }
        };
        println!("  A/B, {cycles} cycles of each agent, {how} (PITH_AGENT_BIN_B):");
        for (k, bin) in bins.iter().enumerate() {
            let cpu = (cpu_ms_of(agents[k].child.id()) - cpu0[k]) / per_agent as f64;
            let (m, p90) = summary(std::mem::take(&mut total[k]));
            let ph = std::mem::take(&mut phases[k]);
            println!(
                "    {}: {bin}: cycle median {m:.2} ms, p90 {p90:.2} ms, CPU per cycle {cpu:.2} ms",
                ["A", "B"][k.min(1)]
            );
            println!(
                "      phase medians (ms): {}",
                phase_medians(&["create", "start", "wait", "remove"], ph)
            );
        }
        for c in &clients {
            let _: Empty = call(c, "DestroySandbox", &DestroySandboxRequest::new()).await;
        }
    });
}

const PODS: usize = 20;

/// A client of `agent` with a sandbox `sandbox_id` and a long-lived "pause"
/// container `pause` running in it, as a Kata pod has.
async fn sandbox_with_pause(agent: &AgentProc, sandbox_id: &str, rootfs: &Path, pause: &str) -> Client {
    let addr = protocols::addr::Address::Unix(agent.sock.clone());
    let c = pithctl::client::connect(&addr, Duration::from_secs(10)).await.unwrap();
    let mut sb = CreateSandboxRequest::new();
    sb.sandbox_id = sandbox_id.into();
    sb.hostname = "bench".into();
    let _: Empty = call(&c, "CreateSandbox", &sb).await;
    start(&c, rootfs, pause, &["sleep", "100000"]).await;
    c
}

/// `ip ARGS...`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pod as Kata's Go runtime starts one: the NIC, the routes, the sandbox, a
/// pause container and an app container running. Each pod gets a fresh agent in
/// a fresh network namespace (a veth pair inside it stands in for the VM's NIC).
fn pod_start(rt: &tokio::runtime::Runtime, bin: &str, rootfs: &Path) {
    use protocols::types::{IPAddress, Interface, Route};
    let mut total = Vec::new();
    let mut phases: [Vec<f64>; 4] = Default::default();
    let mut rss_net = 0;
    for i in 0..PODS + 1 {
        let ns = format!("pith-bench-{}-{i}", std::process::id());
        ip(&["netns", "add", &ns]);
        // Deleted even when the bench panics half way.
        struct Del(String);
        impl Drop for Del {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let ns_guard = Del(ns.clone());
        ip(&[
            "-n",
            &ns,
            "link",
            "add",
            "ens3",
            "address",
            "02:42:ac:11:00:02",
            "type",
            "veth",
            "peer",
            "name",
            "host0",
        ]);
        ip(&["-n", &ns, "link", "set", "host0", "up"]);
        let dir = tempfile::tempdir().unwrap();
        // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts.
        let netns = format!("--net=/run/netns/{ns}");
        let mut agent = start_agent_in(&["nsenter", &netns], bin, dir.path());
        rt.block_on(async {
            let addr = protocols::addr::Address::Unix(agent.sock.clone());
            let c = pithctl::client::connect(&addr, Duration::from_secs(10)).await.unwrap();
            let mut iface = Interface::new();
            iface.device = "eth0".into();
            iface.name = "eth0".into();
            iface.hwAddr = "02:42:ac:11:00:02".into();
            iface.mtu = 1500;
            iface.type_ = "veth".into();
            let mut a = IPAddress::new();
            a.address = "10.88.0.5".into();
            a.mask = "16".into();
            iface.IPAddresses.push(a);
            let mut ui = UpdateInterfaceRequest::new();
            ui.interface = protobuf::MessageField::some(iface);
            let mut r = Route::new();
            r.gateway = "10.88.0.1".into();
            r.device = "eth0".into();
            let mut routes = Routes::new();
            routes.Routes.push(r);
            let mut ur = UpdateRoutesRequest::new();
            ur.routes = protobuf::MessageField::some(routes);
            let mut sb = CreateSandboxRequest::new();
            sb.sandbox_id = format!("pod-{i}");
            sb.hostname = "pod".into();

            let t0 = Instant::now();
            let _: Interface = call(&c, "UpdateInterface", &ui).await;
            let t1 = Instant::now();
            let _: Routes = call(&c, "UpdateRoutes", &ur).await;
            let t2 = Instant::now();
            let _: Empty = call(&c, "CreateSandbox", &sb).await;
            let t3 = Instant::now();
            start(&c, rootfs, &format!("pause-{i}"), &["sleep", "100000"]).await;
            start(&c, rootfs, &format!("app-{i}"), &["sleep", "100000"]).await;
            let t4 = Instant::now();
            // The first pod warms the page cache and the kernel's allocators.
            if i > 0 {
                total.push((t4 - t0).as_secs_f64() * 1e3);
                for (k, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3].into_iter().enumerate() {
                    phases[k].push(d.as_secs_f64() * 1e3);
                }
            }
            rss_net = common::rss_kib(agent.child.id());
            let _: Empty = call(&c, "DestroySandbox", &DestroySandboxRequest::new()).await;
        });
        let _ = agent.child.wait();
        drop(agent);
        drop(ns_guard);
    }
    let (m, p90) = summary(total);
    println!("  pod start (UpdateInterface + UpdateRoutes + CreateSandbox + 2 containers running), {PODS} pods, each in a fresh agent and netns:");
    println!("    median {m:.2} ms, p90 {p90:.2} ms");
    let names = ["UpdateInterface", "UpdateRoutes", "CreateSandbox", "2 containers"];
    println!("      phase medians (ms): {}", phase_medians(&names, phases));
    println!(
        "    agent RSS with the network configured and 2 containers running: {:.2} MiB",
        rss_net as f64 / 1024.0
    );
}
