//! Tests on the host's real cgroups (root only: ignored otherwise). On a hybrid or
//! legacy host they exercise v1; every cgroup created is removed by a guard, even on failure.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxThrottleDeviceBuilder,
};

use super::tests_units::{default_rules, rule};
use super::{Error, FreezerState, Manager, OomWatch};

/// A cgroup name unique to this process and test.
pub(crate) fn unique(test: &str) -> String {
    format!("pith-test-{}-{test}", std::process::id())
}

/// Kills the test's processes and removes the cgroup when dropped.
pub(crate) struct Guard {
    pub mgr: Manager,
    pub children: Vec<Child>,
    /// (directory, subtree_control before the test): controllers enabled by the test are disabled again.
    pub restore_subtree: Option<(PathBuf, String)>,
}

impl Guard {
    pub(crate) fn new(mgr: Manager) -> Self {
        Guard {
            mgr,
            children: Vec::new(),
            restore_subtree: None,
        }
    }

    /// Spawns `sh -c script`, moves it into the cgroup and keeps it for
    /// cleanup. The shell waits on stdin until it is in every hierarchy: a
    /// process it forked on the way would be in only the first few (as a
    /// `sleep` once was, in blkio and cpu: the cleanup, which lists the pids
    /// hierarchy, missed it and its directories stayed).
    pub(crate) fn spawn(&mut self, script: &str) -> u32 {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let moved = self.mgr.add_task(pid as i32);
        let go = child.stdin.take().unwrap().write_all(b"go\n");
        self.children.push(child);
        moved.unwrap();
        go.unwrap();
        pid
    }
}

/// Every process in any of `mgr`'s directories.
fn all_pids(mgr: &Manager) -> Vec<i32> {
    let mut pids: Vec<i32> = match mgr {
        Manager::V1(m) => m
            .paths()
            .values()
            .flat_map(|d| super::fs::procs_recursive(d).unwrap_or_default())
            .collect(),
        Manager::V2(_) => mgr.pids().unwrap_or_default(),
    };
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Waits up to `limit` for process `pid` to end (its pidfd becomes readable).
fn wait_gone(pid: i32, limit: Duration) {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return; // gone already
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX));
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.mgr.thaw();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // From every hierarchy, and gone before the rmdirs (an exit can
        // outlast their retries when make test loads the machine).
        let left = all_pids(&self.mgr);
        for &pid in &left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for pid in left {
            wait_gone(pid, Duration::from_secs(10));
        }
        if let Err(e) = self.mgr.destroy() {
            eprintln!("test cleanup failed: {e}");
        }
        if let Some((dir, before)) = &self.restore_subtree {
            let now = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            for c in now
                .split_whitespace()
                .filter(|c| !before.split_whitespace().any(|b| b == *c))
            {
                let _ = fs::write(dir.join("cgroup.subtree_control"), format!("-{c}"));
            }
        }
    }
}

/// Runs `sh -c script` inside the cgroup: the shell waits on stdin until it has been moved in.
pub(crate) fn run_in(mgr: &Manager, script: &str) -> Output {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let moved = mgr.add_task(child.id() as i32);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    moved.unwrap();
    out
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Checks with a CPU-burning process that freezing stops it and thawing lets it run again.
pub(crate) fn check_freeze_stops_cpu(mgr: &Manager, pid: u32) {
    sleep(Duration::from_millis(200));
    mgr.freeze().unwrap();
    assert_eq!(mgr.state().unwrap(), FreezerState::Frozen);
    let t0 = cpu_ticks(pid);
    sleep(Duration::from_millis(400));
    assert_eq!(cpu_ticks(pid), t0, "a frozen process must not run");
    mgr.thaw().unwrap();
    assert_eq!(mgr.state().unwrap(), FreezerState::Thawed);
    sleep(Duration::from_millis(400));
    assert!(cpu_ticks(pid) > t0, "a thawed process runs again");
}

/// Shell snippet that reports whether /dev/null and /dev/zero can be opened.
pub(crate) const OPEN_DEVICES: &str = "if head -c1 /dev/null; then echo null-ok; else echo null-denied; fi; \
     if head -c1 /dev/zero >/dev/null; then echo zero-ok; else echo zero-denied; fi";

/// The first block device of the host as "major:minor" numbers.
fn some_block_device() -> Option<(i64, i64)> {
    let mut names: Vec<_> = fs::read_dir("/sys/block").ok()?.flatten().map(|e| e.path()).collect();
    names.sort();
    let dev = fs::read_to_string(names.first()?.join("dev")).ok()?;
    let (a, b) = dev.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn v1_file(mgr: &Manager, ctrl: &str, file: &str) -> String {
    let Manager::V1(m) = mgr else { unreachable!() };
    fs::read_to_string(m.path(ctrl).unwrap().join(file))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
#[cfg_attr(not(all(pith_root, pith_cgroup_v1)), ignore = "needs root and cgroup v1 hierarchies")]
fn real_v1_lifecycle() {
    let name = unique("life");
    let mgr = Manager::new(None, &name).unwrap();
    let mut g = Guard::new(mgr.clone());
    let Manager::V1(v1) = &mgr else {
        panic!("a v1 manager on a host with v1 hierarchies (cfg pith_cgroup_v1)");
    };
    mgr.create().unwrap();
    assert!(v1.paths().values().all(|p| p.is_dir()));
    let own_mem = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_mem = own_mem
        .lines()
        .find(|l| l.split(':').nth(1) == Some("memory"))
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    assert!(v1
        .path("memory")
        .unwrap()
        .ends_with(Path::new(own_mem.trim_start_matches('/')).join(&name)));

    let mut res = LinuxResourcesBuilder::default()
        .devices(default_rules())
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .swap(128 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let dev = some_block_device();
    // A weight needs a proportional-weight I/O scheduler (CFQ or BFQ), which
    // some kernels have none of: then it is refused, saying so.
    let blkio_dir = v1.path("blkio").unwrap();
    let has_weight = ["blkio.weight", "blkio.bfq.weight"]
        .iter()
        .any(|f| blkio_dir.join(f).exists());
    if !has_weight {
        let weight_only = LinuxResourcesBuilder::default()
            .block_io(LinuxBlockIoBuilder::default().weight(200u16).build().unwrap())
            .build()
            .unwrap();
        let e = mgr.apply(&weight_only).unwrap_err().to_string();
        assert!(e.contains("blockIO.weight") && e.contains("blkio.bfq.weight"), "{e}");
    }
    if let Some((ma, mi)) = dev {
        let t = LinuxThrottleDeviceBuilder::default()
            .major(ma)
            .minor(mi)
            .rate(1u64 << 20)
            .build()
            .unwrap();
        let mut b = LinuxBlockIoBuilder::default().throttle_read_bps_device(vec![t]);
        if has_weight {
            b = b.weight(200u16);
        }
        res.set_block_io(Some(b.build().unwrap()));
    }
    mgr.apply(&res).unwrap();
    assert_eq!(
        v1_file(&mgr, "memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        v1_file(&mgr, "memory", "memory.memsw.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    assert_eq!(v1_file(&mgr, "pids", "pids.max"), "20");
    assert_eq!(v1_file(&mgr, "cpu", "cpu.shares"), "512");
    assert_eq!(v1_file(&mgr, "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(v1_file(&mgr, "cpuset", "cpuset.cpus"), "0");
    let list = v1_file(&mgr, "devices", "devices.list");
    assert!(list.contains("c 1:3 rwm") && !list.contains("a *:* rwm"), "{list}");
    if let Some((ma, mi)) = dev {
        assert_eq!(
            v1_file(&mgr, "blkio", "blkio.throttle.read_bps_device"),
            format!("{ma}:{mi} 1048576")
        );
    }
    // Lowering the memory limit below memsw and raising both again works in either order.
    let mem = |l: i64, s: i64| {
        LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(l).swap(s).build().unwrap())
            .build()
            .unwrap()
    };
    mgr.apply(&mem(32 << 20, 32 << 20)).unwrap();
    mgr.apply(&mem(256 << 20, 512 << 20)).unwrap();
    assert_eq!(
        v1_file(&mgr, "memory", "memory.memsw.limit_in_bytes"),
        (512u64 << 20).to_string()
    );

    let sleeper = g.spawn("exec sleep 30");
    let burner = g.spawn("while :; do :; done");
    assert_eq!(mgr.pids().unwrap(), {
        let mut v = vec![sleeper as i32, burner as i32];
        v.sort();
        v
    });
    let cg = fs::read_to_string(format!("/proc/{sleeper}/cgroup")).unwrap();
    assert!(cg.lines().any(|l| l.contains(":memory:") && l.ends_with(&name)), "{cg}");
    check_freeze_stops_cpu(&mgr, burner);
    assert_eq!(v1_file(&mgr, "freezer", "freezer.state"), "THAWED");

    // Pages are charged where they are allocated: allocate some after moving in.
    assert!(run_in(&mgr, "head -c 4M /dev/zero | tail > /dev/null").status.success());
    let s = mgr.stats().unwrap();
    assert!(s.cpu.usage.total > 0 && !s.cpu.usage.per_cpu.is_empty(), "{:?}", s.cpu);
    let mu = &s.memory.usage;
    assert!(mu.max_usage >= 4 << 20 && mu.limit == 256 << 20, "{mu:?}");
    assert_eq!((s.pids.current, s.pids.limit), (2, 20));

    // Busy: rmdir fails while processes are inside; the error names the directory and the pids.
    match mgr.destroy().unwrap_err() {
        Error::Busy { path, pids, .. } => assert!(
            path.ends_with(&name) && pids.contains(&(sleeper as i32)),
            "{path:?} {pids:?}"
        ),
        e => panic!("expected Busy, got {e}"),
    }
    for c in &mut g.children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    mgr.destroy().unwrap();
    assert!(v1.paths().values().all(|p| !p.exists()), "all directories removed");
}

#[test]
#[cfg_attr(not(all(pith_root, pith_cgroup_v1)), ignore = "needs root and cgroup v1 hierarchies")]
fn real_v1_devices_and_hot_plug() {
    let mgr = Manager::new(Some(Path::new(&format!("/{}", unique("dev")))), "dev").unwrap();
    let _g = Guard::new(mgr.clone());
    assert!(
        matches!(mgr, Manager::V1(_)),
        "a v1 manager on a host with v1 hierarchies (cfg pith_cgroup_v1)"
    );
    mgr.create().unwrap();
    let only_null = vec![
        rule(false, None, None, None, "rwm"),
        rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm"),
    ];
    mgr.update_devices(&only_null).unwrap();
    let out = run_in(&mgr, OPEN_DEVICES);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout, "null-ok\nzero-denied\n", "stderr: {stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");

    let mut with_zero = only_null.clone();
    with_zero.push(rule(true, Some(LinuxDeviceType::C), Some(1), Some(5), "rwm"));
    mgr.update_devices(&with_zero).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run_in(&mgr, OPEN_DEVICES).stdout),
        "null-ok\nzero-ok\n"
    );
    mgr.update_devices(&only_null).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run_in(&mgr, OPEN_DEVICES).stdout),
        "null-ok\nzero-denied\n"
    );
}

#[test]
#[cfg_attr(not(all(pith_root, pith_cgroup_v1)), ignore = "needs root and cgroup v1 hierarchies")]
fn real_v1_unjoined_device_rules_replace_what_the_directory_inherited() {
    let parent_path = format!("/{}", unique("devparent"));
    let parent = Manager::new(Some(Path::new(&parent_path)), "p").unwrap();
    let _pg = Guard::new(parent.clone());
    parent.create().unwrap();
    let null = rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm");
    let zero = rule(true, Some(LinuxDeviceType::C), Some(1), Some(5), "rwm");
    let deny_all = rule(false, None, None, None, "rwm");
    // An allow list above: a fresh child starts with the same one.
    parent.update_devices(&[deny_all.clone(), null.clone(), zero]).unwrap();
    for (target, want) in [
        (vec![deny_all.clone(), null.clone()], "c 1:3 rwm"),
        (vec![deny_all.clone()], ""),
    ] {
        let child = Manager::new(Some(Path::new(&format!("{parent_path}/c"))), "c").unwrap();
        let g = Guard::new(child.clone());
        child.create().unwrap();
        assert_eq!(v1_file(&child, "devices", "devices.list"), "c 1:3 rwm\nc 1:5 rwm");
        let res = LinuxResourcesBuilder::default().devices(target).build().unwrap();
        child.apply_unjoined(&res).unwrap();
        assert_eq!(v1_file(&child, "devices", "devices.list"), want);
        drop(g);
    }
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn real_oom_notification() {
    // Absolute: on a pure v2 host the caller's own cgroup may hold processes and could not delegate.
    let mgr = Manager::new(Some(Path::new(&format!("/{}", unique("oom")))), "oom").unwrap();
    let _g = Guard::new(mgr.clone());
    mgr.create().unwrap();
    // memory+swap = memory: no swap to escape to (v1 memsw 16M, v2 memory.swap.max 0).
    let mem = LinuxMemoryBuilder::default()
        .limit(16 << 20)
        .swap(16 << 20)
        .build()
        .unwrap();
    mgr.apply(&LinuxResourcesBuilder::default().memory(mem).build().unwrap())
        .unwrap();
    let watch = mgr.oom_watch().unwrap();
    // tail keeps a newline-free stream in memory until the OOM killer stops it.
    let out = run_in(&mgr, "head -c 300M /dev/zero | tail > /dev/null");
    assert!(!out.status.success(), "the memory hog must have been killed");
    assert!(mgr.oom_kill_count().unwrap() >= 1);
    if let OomWatch::EventFd(fd) = watch {
        use std::os::fd::AsFd;
        let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        assert_eq!(
            poll(&mut pfd, PollTimeout::from(5000u16)).unwrap(),
            1,
            "eventfd readable after an OOM"
        );
        let mut buf = [0u8; 8];
        std::io::Read::read_exact(&mut fs::File::from(fd), &mut buf).unwrap();
        assert!(u64::from_ne_bytes(buf) >= 1);
    }
}

/// Removes the directories left above a test's cgroups (deepest first) in
/// every v1 hierarchy, when dropped.
struct Parents(Vec<PathBuf>);

impl Drop for Parents {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

#[test]
#[cfg_attr(not(all(pith_root, pith_cgroup_v1)), ignore = "needs root and cgroup v1 hierarchies")]
fn real_v1_cpuset_parents_made_here_fill_their_later_children() {
    let top = unique("cpuset-fill");
    let mgr = |path: &str, name: &str| {
        let m = Manager::new(Some(Path::new(&format!("/{top}{path}"))), name).unwrap();
        let Manager::V1(v1) = &m else {
            panic!("a v1 manager on a host with v1 hierarchies (cfg pith_cgroup_v1)");
        };
        let (dir, mount) = (v1.path("cpuset").unwrap().to_path_buf(), v1.mounts()["cpuset"].clone());
        (m, dir, mount)
    };
    let plain = LinuxResourcesBuilder::default().build().unwrap();
    let (a, a_dir, mount) = mgr("/pod/a", "a");
    let pod = a_dir.parent().unwrap().to_path_buf();
    let mut made = Vec::new();
    let Manager::V1(v1) = &a else { unreachable!() };
    for dir in v1.paths().values() {
        made.push(dir.parent().unwrap().parent().unwrap().to_path_buf());
        made.push(dir.parent().unwrap().to_path_buf());
    }
    // Someone else's parent, filled by them: used as it is, not flagged.
    let (c, c_dir, _) = mgr("-theirs/c", "c");
    let Manager::V1(v1) = &c else { unreachable!() };
    made.extend(v1.paths().values().map(|d| d.parent().unwrap().to_path_buf()));
    made.sort();
    made.dedup();
    let _parents = Parents(made);
    let _ga = Guard::new(a.clone());
    let read = |d: &Path, f: &str| fs::read_to_string(d.join(f)).unwrap().trim().to_string();
    let root_flag = read(&mount, "cgroup.clone_children");
    let theirs = c_dir.parent().unwrap();
    fs::create_dir(theirs).unwrap();
    for f in ["cpuset.cpus", "cpuset.mems"] {
        fs::write(theirs.join(f), read(&mount, f)).unwrap();
    }
    let _gc = Guard::new(c.clone());

    assert!(a.create_new(&plain).unwrap());
    for d in [pod.parent().unwrap(), pod.as_path()] {
        assert_eq!(read(d, "cgroup.clone_children"), "1", "{}", d.display());
    }
    assert_eq!(
        read(&a_dir, "cgroup.clone_children"),
        "0",
        "the container's own is not written"
    );
    assert_eq!(
        read(&mount, "cgroup.clone_children"),
        root_flag,
        "the root is left alone"
    );
    // The kernel fills the next sibling at its mkdir; it takes tasks.
    let (b, b_dir, _) = mgr("/pod/b", "b");
    let mut gb = Guard::new(b.clone());
    assert!(b.create_new(&plain).unwrap());
    for d in [&a_dir, &b_dir] {
        for f in ["cpuset.cpus", "cpuset.mems"] {
            assert_eq!(read(d, f), read(&mount, f), "{} {f}", d.display());
        }
    }
    gb.spawn("sleep 10");
    // Made below a flagged parent, it has the flag from the kernel.
    assert_eq!(read(&b_dir, "cgroup.clone_children"), "1");

    assert!(c.create_new(&plain).unwrap());
    assert_eq!(read(theirs, "cgroup.clone_children"), "0");
    assert_eq!(read(&c_dir, "cpuset.cpus"), read(&mount, "cpuset.cpus"));
}
