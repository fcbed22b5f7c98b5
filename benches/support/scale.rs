//! The scaling line of `make bench` (issue 16): CreateContainer with one
//! container in the sandbox next to CreateContainer with 199 others running.
//!
//! In a fresh agent: a pause container, then `CYCLES` create → start → wait →
//! remove cycles of `/bin/true` (the 2nd container of the sandbox); then 198
//! more idle containers (`sleep`), each CreateContainer timed, the agent's RSS
//! read at 100; then the same cycles again, each container the 200th; then the
//! idle containers removed. [`rounds`] times over, so that the machine's speed,
//! which drifts over a run, weighs on both sides alike (the ramp's figures
//! and the RSS are the first round's). Each round's own ratio is printed too:
//! one slow moment on one side moves a round's ratio by up to 0.3. With
//! three rounds the pooled line went over 1.2x in about half the runs; with
//! eight, three runs of one build gave 1.10, 1.08 and 1.03x.
//!
//! The containers have ids as Kata's runtime makes them (64 hex digits,
//! from a hash of a name, so a run repeats): where a new id sorts among the
//! others decided how much of the state file the write after a create
//! rewrote, and the bench's own names had always sorted near the end.
//!
//! `PITH_SCALE_ROUNDS` and `PITH_SCALE_CYCLES` change the rounds and the
//! cycles per side (longer windows for tracing one side).

use std::path::Path;
use std::time::{Duration, Instant};

use protocols::agent::*;

use super::common::rss_kib;
use super::{call, start, start_agent, summary, Empty};

/// Containers in the sandbox at the end, the cycled one included.
const SCALE: usize = 200;
/// Cycles on each side, per round.
fn cycles_per_side() -> usize {
    super::env_or("PITH_SCALE_CYCLES", 20)
}

/// Rounds: the ramp up to 200 and back, with the cycles on both sides.
fn rounds() -> usize {
    super::env_or("PITH_SCALE_ROUNDS", 8)
}

/// A Kata-like id (64 hex digits) for `name`: the same name, the same id.
fn kata_id(name: &str) -> String {
    use std::hash::{Hash, Hasher};
    (0..4u8)
        .map(|part| {
            // SipHash with fixed keys: the same in every run.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (name, part).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// `n` cycles, each container a [`kata_id`] of `tag`, this process and its number.
async fn cycles(
    c: &ttrpc::r#async::Client,
    spec: &oci_spec::runtime::Spec,
    tag: &str,
    n: usize,
) -> ([Vec<f64>; 4], Vec<f64>) {
    let pid = std::process::id();
    super::cycles_named(c, spec, n, &|i| kata_id(&format!("{tag}-{pid}-{i}"))).await
}

/// Runs the scaling line in a fresh agent `bin`.
pub fn run(rt: &tokio::runtime::Runtime, bin: &str, rootfs: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(bin, dir.path());
    rt.block_on(async {
        let addr = protocols::addr::Address::Unix(agent.sock.clone());
        let c = pithctl::client::connect(&addr, Duration::from_secs(10)).await.unwrap();
        let _: Empty = call(&c, "CreateSandbox", &CreateSandboxRequest::new()).await;
        start(&c, rootfs, &kata_id(&format!("scale-pause-{}", std::process::id())), &["sleep", "100000"]).await;
        let true_spec = super::spec(rootfs, &["true"]);
        let pid = agent.child.id();
        let (mut create1, mut cycle1, mut create200, mut cycle200) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut cpu1, mut cpu200) = (0.0, 0.0);
        let mut ramp = Vec::new();
        let mut rss100 = 0;
        let mut ratios = Vec::new();
        for round in 0..rounds() {
            let cpu = super::cpu_ms_of(pid);
            let ([create, ..], cycle) = cycles(&c, &true_spec, &format!("scale-first-{round}"), cycles_per_side()).await;
            cpu1 += super::cpu_ms_of(pid) - cpu;
            let r1 = summary(create.clone()).0;
            create1.extend(create);
            cycle1.extend(cycle);
            // The pause container and the cycled one make 200.
            let mut idle = Vec::new();
            for i in 2..SCALE {
                let id = kata_id(&format!("scale-idle-{}-{round}-{i}", std::process::id()));
                let t = Instant::now();
                let _: Empty = call(&c, "CreateContainer", &super::create_req(rootfs, &id, &["sleep", "100000"])).await;
                if round == 0 {
                    ramp.push(t.elapsed().as_secs_f64() * 1e3);
                }
                let mut s = StartContainerRequest::new();
                s.container_id = id.clone();
                let _: Empty = call(&c, "StartContainer", &s).await;
                idle.push(id);
                if round == 0 && i + 1 == 100 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    rss100 = rss_kib(agent.child.id());
                }
            }
            let cpu = super::cpu_ms_of(pid);
            let ([create, ..], cycle) = cycles(&c, &true_spec, &format!("scale-last-{round}"), cycles_per_side()).await;
            cpu200 += super::cpu_ms_of(pid) - cpu;
            ratios.push(summary(create.clone()).0 / r1);
            create200.extend(create);
            cycle200.extend(cycle);
            if round + 1 < rounds() {
                // Timeout 0: SIGKILL at once.
                for id in idle {
                    super::remove(&c, &id).await;
                }
            }
        }
        let per_side = (rounds() * (cycles_per_side() + super::WARMUP)) as f64;
        let (cpu1, cpu200) = (cpu1 / per_side, cpu200 / per_side);
        let t = Instant::now();
        let _: Empty = call(&c, "DestroySandbox", &DestroySandboxRequest::new()).await;
        let destroy = t.elapsed();
        let (c1, c1p90) = summary(create1);
        let (c200, c200p90) = summary(create200);
        let (y1, _) = summary(cycle1);
        let (y200, _) = summary(cycle200);
        let head = summary(ramp[..20].to_vec()).0;
        let tail = summary(ramp[ramp.len() - 20..].to_vec()).0;
        println!(
            "  {SCALE} containers in one sandbox (fresh agent; {} cycles of /bin/true each side, in {} rounds):",
            rounds() * cycles_per_side(),
            rounds()
        );
        println!(
            "    CreateContainer of the 2nd:   median {c1:.2} ms, p90 {c1p90:.2} ms (whole cycle median {y1:.2} ms)"
        );
        println!(
            "    CreateContainer of the {SCALE}th: median {c200:.2} ms, p90 {c200p90:.2} ms (whole cycle median {y200:.2} ms)"
        );
        println!(
            "    {SCALE}th / 2nd: {:.2}x (goal <= 1.2x); idle containers' CreateContainer, first 20 vs last 20: {head:.2} / {tail:.2} ms",
            c200 / c1
        );
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "    each round's own 200th / 2nd: median {:.2}x ({})",
            summary(ratios.clone()).0,
            each.join(", ")
        );
        println!(
            "    CPU per cycle (the agent and the inits it reaped; other load does not inflate it): {cpu1:.2} ms as the 2nd, \
             {cpu200:.2} ms as the {SCALE}th ({:.2}x)",
            cpu200 / cpu1
        );
        println!(
            "    agent RSS with 100 containers running: {:.2} MiB; DestroySandbox of {SCALE}: {} ms",
            rss100 as f64 / 1024.0,
            destroy.as_millis()
        );
    });
}
