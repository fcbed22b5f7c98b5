//! `make bench` part 2: one container's whole life, `create` + `start` + wait +
//! `delete` of `/bin/true` in a busybox bundle, with rustjail, runc and crun.
//!
//! All three runtimes run the same bundle (rootfs from Debian's busybox-static,
//! config.json from `rustjail spec` with `process.args = ["/bin/true"]`; runc 1.1
//! and crun 1.8 accept that config unchanged), each with its own `--root` state
//! directory. After 5 warm-up cycles each, 100 measured cycles are interleaved:
//! cycle i runs rustjail, runc and crun in turn, so a noisy moment on the machine
//! hits all of them alike.
//!
//! Waiting for the container's exit is the same for every runtime: the bench is a
//! child subreaper, opens a pidfd on the pid from `--pid-file` between `create`
//! and `start` (the init is alive and blocked then, so the pid cannot be reused),
//! polls it until the process has exited, and reaps it. No `state` calls, no
//! sleeping.
//!
//! crun 1.8 refuses this machine's hybrid cgroup mode; `make bench` runs this
//! bench in a private mount namespace where `/sys/fs/cgroup/unified` is unmounted,
//! which all three runtimes then share.

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const WARMUP: usize = 5;
const RUNS: usize = 100;
const BUSYBOX: &str = "/bin/busybox";
/// How long `/bin/true` may take to exit after `start` before the cycle fails.
const EXIT_LIMIT_MS: u16 = 10_000;
/// The runtime the others are compared with.
const BASELINE: &str = "crun";
/// The target: rustjail's median below this fraction of crun's.
const TARGET_RATIO: f64 = 0.8;

/// One runtime under test.
struct Runtime {
    name: &'static str,
    bin: PathBuf,
    version: String,
    /// Its private `--root` state directory.
    state: tempfile::TempDir,
    /// stderr of every command: a regular file, not a pipe (a container created
    /// by `create` keeps the command's stdio), read only when a command fails.
    err: File,
    times: Vec<Duration>,
    /// Per cycle: create, start, wait, delete.
    phases: Vec<[Duration; 4]>,
    failed: Option<String>,
}

fn main() {
    println!(
        "Container lifecycle (create + start + wait + delete of /bin/true in a busybox bundle): \
         {RUNS} cycles per runtime, interleaved, after {WARMUP} warm-up cycles"
    );
    let wanted: [(&'static str, Option<PathBuf>); 3] = [
        ("rustjail", Some(PathBuf::from(env!("CARGO_BIN_EXE_rustjail")))),
        ("runc", which("runc")),
        ("crun", which("crun")),
    ];
    if !nix::unistd::geteuid().is_root() {
        for (name, _) in &wanted {
            println!("SKIPPED: {name}: containers need root (run `make bench` as root)");
        }
        return;
    }
    if !Path::new(BUSYBOX).exists() {
        for (name, _) in &wanted {
            println!("SKIPPED: {name}: {BUSYBOX} missing (apt-get install busybox-static; `make bench` does)");
        }
        return;
    }
    if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        println!(
            "NOTE: /sys/fs/cgroup/unified is mounted (hybrid cgroups), which crun 1.8 refuses; \
             `make bench` runs this in a private mount namespace without it"
        );
    }
    // Orphaned container inits are re-parented to us, so we can reap them.
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");

    let bundle = make_bundle(Path::new(env!("CARGO_BIN_EXE_rustjail")));
    let mut runtimes = Vec::new();
    for (name, bin) in wanted {
        let Some(bin) = bin else {
            println!("SKIPPED: {name}: not found in PATH (apt-get install {name}; `make bench` does)");
            continue;
        };
        let version = first_line_of(&bin, "--version");
        let state = tempfile::tempdir().unwrap();
        let err = File::create(state.path().join("stderr")).unwrap();
        runtimes.push(Runtime {
            name,
            bin,
            version,
            state,
            err,
            times: Vec::with_capacity(RUNS),
            phases: Vec::with_capacity(RUNS),
            failed: None,
        });
    }
    println!("bundle: {}", bundle.path().display());
    for rt in &runtimes {
        println!("  {:<9} {} ({})", rt.name, rt.version, rt.bin.display());
    }

    let started = Instant::now();
    let mut cycles = 0;
    for i in 0..WARMUP + RUNS {
        for rt in runtimes.iter_mut().filter(|rt| rt.failed.is_none()) {
            let id = format!("bench-{}-{i}", rt.name);
            cycles += 1;
            match cycle(rt, bundle.path(), &id) {
                Ok((d, phases)) if i >= WARMUP => {
                    rt.times.push(d);
                    rt.phases.push(phases);
                }
                Ok(_) => {}
                Err(e) => {
                    let phase = if i < WARMUP { "warm-up" } else { "measured" };
                    let n = if i < WARMUP { i + 1 } else { i - WARMUP + 1 };
                    rt.failed = Some(format!("{phase} cycle {n}: {e}"));
                }
            }
        }
    }
    let elapsed = started.elapsed();

    let base = runtimes
        .iter()
        .find(|rt| rt.name == BASELINE && rt.failed.is_none())
        .map(|rt| median(&rt.times));
    println!();
    println!(
        "{:<10} {:>8} {:>10} {:>8} {:>9}",
        "runtime", "runs", "median ms", "p90 ms", "vs crun"
    );
    for rt in &runtimes {
        let runs = if rt.failed.is_some() {
            format!("{}/{RUNS}!", rt.times.len())
        } else {
            rt.times.len().to_string()
        };
        if rt.times.is_empty() {
            println!("{:<10} {runs:>8} {:>10} {:>8} {:>9}", rt.name, "-", "-", "-");
            continue;
        }
        let med = median(&rt.times);
        let ratio = base.map_or("-".to_string(), |b| format!("{:.2}x", med / b));
        println!(
            "{:<10} {runs:>8} {med:>10.2} {:>8.2} {ratio:>9}",
            rt.name,
            p90(&rt.times)
        );
    }
    println!("({} cycles in {:.1} s)", cycles, elapsed.as_secs_f64());
    let rustjail = runtimes.iter().find(|rt| rt.name == "rustjail" && rt.failed.is_none());
    if let (Some(rj), Some(b)) = (rustjail, base) {
        let r = median(&rj.times) / b;
        let verdict = if r < TARGET_RATIO { "met" } else { "NOT met" };
        println!("target (rustjail median below {TARGET_RATIO}x crun's): {verdict} ({r:.2}x)");
    }
    println!();
    println!("median per phase, ms (where the time goes):");
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>8}",
        "runtime", "create", "start", "wait", "delete"
    );
    for rt in runtimes.iter().filter(|rt| !rt.phases.is_empty()) {
        let m = |k: usize| median(&rt.phases.iter().map(|p| p[k]).collect::<Vec<_>>());
        println!(
            "{:<10} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            rt.name,
            m(0),
            m(1),
            m(2),
            m(3)
        );
    }
    let mut failures = 0;
    for rt in &runtimes {
        if let Some(e) = &rt.failed {
            failures += 1;
            println!("FAILED: {}: {e}", rt.name);
        }
    }
    if failures > 0 {
        // exit() skips destructors: remove the bundle and state dirs first.
        drop(runtimes);
        drop(bundle);
        std::process::exit(1);
    }
}

/// One measured cycle: create, start, wait for the init to exit, delete. Returns
/// the whole cycle's time and each phase's.
fn cycle(rt: &Runtime, bundle: &Path, id: &str) -> Result<(Duration, [Duration; 4]), String> {
    let pid_file = rt.state.path().join("pid");
    let _ = std::fs::remove_file(&pid_file);
    let create = [
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        id,
    ];
    let t = Instant::now();
    let mut marks = [t; 4];
    run(rt, &create)?;
    let res = (|| {
        let text = std::fs::read_to_string(&pid_file).map_err(|e| format!("read {}: {e}", pid_file.display()))?;
        let pid: i32 = text.trim().parse().map_err(|_| format!("pid file holds {text:?}"))?;
        let pidfd = pidfd_open(pid)?;
        marks[1] = Instant::now();
        run(rt, &["start", id])?;
        marks[2] = Instant::now();
        wait_exit(pidfd, pid)?;
        marks[3] = Instant::now();
        run(rt, &["delete", id])
    })();
    let end = Instant::now();
    if res.is_err() {
        let _ = run(rt, &["delete", "--force", id]);
    }
    reap_strays();
    res.map(|_| {
        let phases = [
            marks[1] - marks[0],
            marks[2] - marks[1],
            marks[3] - marks[2],
            end - marks[3],
        ];
        (end - t, phases)
    })
}

/// Runs `RUNTIME --root STATE ARGS`; on failure, its exit status and stderr.
fn run(rt: &Runtime, args: &[&str]) -> Result<(), String> {
    let offset = rt.err.metadata().map(|m| m.len()).unwrap_or(0);
    let status = Command::new(&rt.bin)
        .arg("--root")
        .arg(rt.state.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(rt.err.try_clone().unwrap())
        .status()
        .map_err(|e| format!("spawn {}: {e}", rt.bin.display()))?;
    if status.success() {
        return Ok(());
    }
    let all = std::fs::read(rt.state.path().join("stderr")).unwrap_or_default();
    let text = String::from_utf8_lossy(all.get(offset as usize..).unwrap_or_default());
    Err(format!("`{} {}` {status}: {}", rt.name, args.join(" "), text.trim()))
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(format!("pidfd_open({pid}): {}", Errno::last()));
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process behind `pidfd` has exited, then reaps it (it is our
/// child: we are a subreaper and the runtime that forked it has exited).
fn wait_exit(pidfd: OwnedFd, pid: i32) -> Result<(), String> {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::from(EXIT_LIMIT_MS)) {
            Ok(0) => {
                return Err(format!(
                    "container init {pid} still runs {EXIT_LIMIT_MS} ms after start"
                ))
            }
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll pidfd of {pid}: {e}")),
        }
    }
    match waitpid(Pid::from_raw(pid), None) {
        Ok(_) | Err(Errno::ECHILD) => Ok(()),
        Err(e) => Err(format!("waitpid({pid}): {e}")),
    }
}

/// Reaps any other orphan that a runtime left to us.
fn reap_strays() {
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// A bundle with a busybox-static rootfs and `rustjail spec`'s config running
/// `/bin/true` without a terminal.
fn make_bundle(rustjail: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    for tool in ["true", "false", "sh", "echo", "cat", "ls", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
    }
    let status = Command::new(rustjail)
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "rustjail spec: {status}");
    let path = dir.path().join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    c["process"]["args"] = serde_json::json!(["/bin/true"]);
    c["process"]["terminal"] = false.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    dir
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
}

fn first_line_of(bin: &Path, arg: &str) -> String {
    match Command::new(bin).arg(arg).stdin(Stdio::null()).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) => format!("(`{} {arg}`: {e})", bin.display()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn sorted_ms(times: &[Duration]) -> Vec<f64> {
    let mut v: Vec<f64> = times.iter().copied().map(ms).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median(times: &[Duration]) -> f64 {
    let v = sorted_ms(times);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank 90th percentile.
fn p90(times: &[Duration]) -> f64 {
    let v = sorted_ms(times);
    v[(v.len() * 9).div_ceil(10) - 1]
}
