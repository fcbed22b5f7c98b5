//! The README tells the truth: every shell block a reader is meant to run is
//! taken from README.md itself and run exactly as written, in order, and the
//! output its `# -> ...` comments show is checked. Blocks that CI cannot run
//! this way carry `<!-- readme-test: skip: REASON -->` (the reason says what
//! covers them); `make run`, which blocks a terminal, carries
//! `<!-- readme-test: background until PATH -->`.
//!
//! Everything runs in private mount, UTS, IPC, PID and network namespaces
//! (`unshare`), with tmpfs over `/tmp`, `/run` and `target/run-state` and a
//! copy over `/etc/resolv.conf` (see `readme/script.rs`): the machine keeps
//! its hostname, files, mounts and processes, which the test checks after.

#[path = "readme/blocks.rs"]
mod blocks;
#[path = "readme/script.rs"]
mod script;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blocks::{Block, Mark};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme_blocks() -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    blocks::parse(&text).unwrap_or_else(|e| panic!("README.md: {e}"))
}

#[test]
fn the_readme_blocks_parse_and_the_skipped_ones_are_few() {
    let blocks = readme_blocks();
    let run = blocks.iter().filter(|b| b.mark == Mark::Run).count();
    let skipped: Vec<_> = blocks.iter().filter(|b| matches!(b.mark, Mark::Skip(_))).collect();
    assert!(
        run >= 3,
        "the README's run, pod and rustjail walk-throughs: {blocks:#?}"
    );
    // make test, make bench, the guest image targets.
    assert!(skipped.len() <= 3, "more blocks skipped than before: {skipped:#?}");
    assert!(blocks.iter().any(|b| b.mark == Mark::Vm), "the guest image blocks");
    // `make run` is started before the blocks that talk to it.
    let bg = blocks
        .iter()
        .position(|b| matches!(b.mark, Mark::Background { .. }))
        .expect("make run is marked to run in the background");
    assert!(
        blocks[bg].cmds.iter().any(|c| c.text == "make run"),
        "{:#?}",
        blocks[bg]
    );
    assert!(blocks[bg + 1..].iter().any(|b| b.mark == Mark::Run));
    // The README shows what to expect, and the test checks it.
    let shown: usize = blocks.iter().flat_map(|b| &b.cmds).map(|c| c.expect.len()).sum();
    assert!(shown >= 4, "output comments: {shown}");
}

/// The state of the machine the README's commands could change.
#[derive(Debug, PartialEq, Eq)]
struct Machine {
    hostname: String,
    resolv_conf: Option<Vec<u8>>,
    /// README paths under /tmp and /run that exist.
    paths: Vec<PathBuf>,
    /// Mount points among those paths and the ones the script mounts.
    mounts: Vec<String>,
    /// Cgroup directories named like the README's containers under ours.
    cgroups: Vec<PathBuf>,
}

const README_PATHS: &[&str] = &[
    "/tmp/pith-agent.sock",
    "/tmp/rootfs",
    "/tmp/demo",
    "/run/rustjail/demo",
    "/tmp/pith-vm",
];
const CONTAINER_IDS: &[&str] = &["web", "c1", "demo"];

fn machine() -> Machine {
    let watched: Vec<String> = ["/tmp", "/run", "/etc/resolv.conf"]
        .iter()
        .map(|s| s.to_string())
        .chain([repo().join("target/run-state").display().to_string()])
        .chain(README_PATHS.iter().map(|s| s.to_string()))
        .collect();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| watched.iter().any(|w| w == m))
        .map(str::to_string)
        .collect();
    // Our cgroup in each hierarchy: the README's containers' cgroups are made
    // under the agent's, which is ours.
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut cgroups = Vec::new();
    for l in cgroup.lines() {
        let mut f = l.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let ctrl = ctrl.trim_start_matches("name=");
        let base = match ctrl {
            "" => ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.join("cgroup.controllers").exists()),
            c => c
                .split(',')
                .map(|c| Path::new("/sys/fs/cgroup").join(c))
                .find(|p| p.is_dir()),
        };
        let Some(dir) = base.map(|b| b.join(path.trim_start_matches('/'))) else {
            continue;
        };
        for id in CONTAINER_IDS {
            let d = dir.join(id);
            if d.exists() {
                cgroups.push(d);
            }
        }
    }
    cgroups.sort();
    Machine {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        resolv_conf: std::fs::read("/etc/resolv.conf").ok(),
        paths: README_PATHS.iter().map(PathBuf::from).filter(|p| p.exists()).collect(),
        mounts,
        cgroups,
    }
}

/// Runs `script` as PID 1 of new namespaces; returns whether it exited 0.
fn run_in_namespaces(script: &Path, work: &Path, path: &[PathBuf]) -> bool {
    let log = std::fs::File::create(work.join("script.log")).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--uts",
        "--ipc",
        "--pid",
        "--net",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--propagation",
        "private",
        "bash",
    ])
    .arg(script)
    .current_dir(repo())
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log)
    // A reader's environment, not cargo's or make's.
    .env_clear();
    let reader_path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(path.iter().cloned().chain(std::env::split_paths(&reader_path))).unwrap();
    cmd.env("PATH", path);
    for k in ["HOME", "USER", "LANG"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().expect("unshare (util-linux)");
    // A guard against a block that never ends, not a timing check: the
    // blocks take seconds, plus a build when `make run` finds one to do.
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.success();
        }
        if Instant::now() > deadline {
            // --kill-child: the namespace's PID 1 and everything in it go.
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of a long output.
fn tail(out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    let from = lines.len().saturating_sub(20);
    let mut t = lines[from..].join("\n");
    if !t.is_empty() {
        t.push('\n');
    }
    t
}

fn read(work: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(work.join(name)).ok()
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn every_readme_block_runs_as_written_and_prints_what_it_shows() {
    run_readme(|m| matches!(m, Mark::Run | Mark::Background { .. }), &[]);
}

/// Booting by hand, once `make vm-e2e` has built the initrd and installed
/// `vhost-device-vsock` into `target/vm/cargo/bin` (a reader's `cargo
/// install` puts it on PATH).
#[test]
#[ignore = "boots a VM: run with `make readme-vm`"]
fn the_readme_guest_blocks_run_as_written() {
    let vm_bin = repo().join("target/vm/cargo/bin");
    run_readme(|m| *m == Mark::Vm, &[vm_bin]);
}

/// Runs the blocks `selected` takes, with `path` before the reader's PATH,
/// and checks their statuses and outputs and that the machine is unchanged.
fn run_readme(selected: impl Fn(&Mark) -> bool, path: &[PathBuf]) {
    let blocks = readme_blocks();
    let work = tempfile::Builder::new()
        .prefix("readme-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let script_path = work.path().join("readme.sh");
    let script = script::build(&blocks, &repo(), work.path(), &selected);
    std::fs::write(&script_path, script).unwrap();
    let before = machine();
    let ok = run_in_namespaces(&script_path, work.path(), path);
    let after = machine();

    let mut failures = Vec::new();
    let mut background = Vec::new();
    let mut report = String::new();
    for (b, block) in blocks.iter().enumerate() {
        match &block.mark {
            Mark::Skip(why) => report.push_str(&format!("README:{} skipped: {why}\n", block.line)),
            m if !selected(m) => report.push_str(&format!("README:{} not run here ({m:?})\n", block.line)),
            Mark::Background { .. } => {
                let out = tail(&read(work.path(), &script::bg_out_file(b)).unwrap_or_default());
                let rc = read(work.path(), &script::bg_rc_file(b));
                report.push_str(&format!("README:{} in the background: status {rc:?}\n", block.line));
                if read(work.path(), &script::bg_early_file(b)).is_some() {
                    failures.push(format!("README:{}: ended before it was ready:\n{out}", block.line));
                } else if rc.as_deref().map(str::trim) != Some("0") {
                    background.push(format!(
                        "README:{}: status {rc:?} (it must end with 0 once the README stops it):\n{out}",
                        block.line
                    ));
                }
            }
            Mark::Run | Mark::Vm => {
                for (n, c) in block.cmds.iter().enumerate() {
                    let Some(rc) = read(work.path(), &script::rc_file(b, n)) else {
                        if failures.is_empty() {
                            failures.push(format!("README:{} `{}` never ran", c.line, c.text));
                        }
                        continue;
                    };
                    let out = read(work.path(), &script::out_file(b, n)).unwrap_or_default();
                    report.push_str(&format!("README:{} $ {}\n{}", c.line, c.text, tail(&out)));
                    if rc.trim() != "0" {
                        failures.push(format!("README:{} `{}` exited {}:\n{out}", c.line, c.text, rc.trim()));
                    } else if let Err(missing) = blocks::find_in_order(&out, &c.expect) {
                        failures.push(format!(
                            "README:{} `{}` did not print {missing:?} (the README shows {:?}):\n{out}",
                            c.line, c.text, c.expect
                        ));
                    }
                }
            }
        }
    }
    // A background block still running when a command failed was stopped then.
    if failures.is_empty() {
        failures = background;
    }
    if !ok && failures.is_empty() {
        failures.push(format!(
            "the script failed: {}",
            read(work.path(), "script.log").unwrap_or_default()
        ));
    }
    assert_eq!(after, before, "the README's commands changed the machine");
    assert!(
        failures.is_empty(),
        "{}\n\n== every block:\n{report}",
        failures.join("\n\n")
    );
    eprintln!("{report}");
}
