//! The cgroup v1 cost per hierarchy (issue 16, item 1), what a container's
//! cgroup costs in each mounted hierarchy: mkdir, the cpuset copy (cpuset
//! only), the join (`tasks` "0", as rustjail's init does) and leaving plus
//! rmdir. Median of `ROUNDS`, the hierarchies interleaved within each round.
//! Measured in a single-threaded child process (this bench binary run again
//! with `CHILD_ENV` set), as a container's init is: a thread of a
//! multi-threaded process joins `cpu` in milliseconds, not microseconds.

use std::path::{Path, PathBuf};
use std::time::Instant;

const ROUNDS: usize = 100;

/// (controllers, mount point) of each mounted cgroup v1 hierarchy (no name=).
fn hierarchies() -> Vec<(String, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        if r.next() != Some("cgroup") {
            continue;
        }
        let opts = r.nth(1).unwrap_or("");
        let ctrls: Vec<&str> = opts
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("name=") && !o.contains('='))
            .collect();
        let Some(mp) = left.split_whitespace().nth(4) else {
            continue;
        };
        if !ctrls.is_empty() {
            out.push((ctrls.join(","), PathBuf::from(mp)));
        }
    }
    out.sort();
    out
}

/// The calling process's cgroup in the hierarchy of `ctrls`, as a directory.
fn own_dir(ctrls: &str, mount: &Path) -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let first = ctrls.split(',').next().unwrap_or("");
    let rel = text
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, c, p) = (f.next()?, f.next()?, f.next()?);
            c.split(',').any(|c| c == first).then(|| p.to_string())
        })
        .unwrap_or_else(|| "/".into());
    mount.join(rel.trim_start_matches('/'))
}

fn write(path: &Path, v: &str) {
    std::fs::write(path, v).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// This thread's CPU time in µs.
fn thread_cpu_us() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Set in the child that measures.
pub const CHILD_ENV: &str = "PITH_BENCH_V1COST_CHILD";

/// Runs the measurement in a single-threaded child process.
pub fn run() {
    let exe = std::env::current_exe().unwrap();
    let st = std::process::Command::new(exe).env(CHILD_ENV, "1").status().unwrap();
    assert!(st.success(), "v1 cost child: {st}");
}

/// In the child (before anything starts a thread): prints the per-hierarchy
/// lines; nothing on a host without v1 hierarchies.
pub fn child_main() {
    let hs = hierarchies();
    if hs.is_empty() {
        println!("  cgroup v1 cost per hierarchy: skipped (no v1 hierarchy mounted)");
        return;
    }
    let lines = {
        // [mkdir, cpuset copy, join, leave + rmdir, join's CPU] in µs, per hierarchy.
        let mut t: Vec<[Vec<f64>; 5]> = vec![Default::default(); hs.len()];
        for round in 0..ROUNDS {
            for (k, (ctrls, mount)) in hs.iter().enumerate() {
                let home = own_dir(ctrls, mount);
                let dir = home.join(format!("pith-bench-v1cost-{}-{round}", std::process::id()));
                let t0 = Instant::now();
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                let t1 = Instant::now();
                if ctrls.split(',').any(|c| c == "cpuset") {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let v = std::fs::read_to_string(home.join(f)).unwrap_or_default();
                        write(&dir.join(f), v.trim());
                    }
                }
                let tasks = dir.join("tasks");
                let (t2, c2) = (Instant::now(), thread_cpu_us());
                write(&tasks, "0");
                let (t3, c3) = (Instant::now(), thread_cpu_us());
                write(&home.join("tasks"), "0");
                std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
                let t4 = Instant::now();
                for (j, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3].into_iter().enumerate() {
                    t[k][j].push(d.as_secs_f64() * 1e6);
                }
                t[k][4].push(c3 - c2);
            }
        }
        hs.iter()
            .zip(t)
            .map(|((c, _), [a, b, j, r, jc])| (c.clone(), [median(a), median(b), median(j), median(r), median(jc)]))
            .collect::<Vec<_>>()
    };
    println!(
        "  cgroup v1 cost per hierarchy, µs (median of {ROUNDS}, a single-threaded process): mkdir, cpuset copy, \
         join (tasks 0), leave + rmdir; sum; the join's own CPU time"
    );
    let mut total = 0.0;
    for (c, m) in &lines {
        let sum: f64 = m[..4].iter().sum();
        total += sum;
        println!(
            "    {c:<16} {:7.1} {:7.1} {:7.1} {:7.1}; {sum:7.1}; {:5.1}",
            m[0], m[1], m[2], m[3], m[4]
        );
    }
    println!(
        "    all hierarchies: {total:.0} µs per container (a join whose time far exceeds its CPU time waited for a CPU: \
         a task moved into a new cpu group is scheduled anew)"
    );
}
