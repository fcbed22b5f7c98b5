//! Tests on the host's real cgroup2 mount (root only). On this hybrid host that is
//! /sys/fs/cgroup/unified, which has no cpu/memory/pids controllers: freezing, the eBPF device
//! filter, pids and cpu.stat work on any cgroup2 directory and are tested for real here; writing
//! v2 controller files (memory.max, pids.max, io.max, ...) is only covered by the fake-tree tests
//! and the VM test on a pure v2 guest.

use std::fs;
use std::os::fd::AsRawFd;

use oci_spec::runtime::LinuxDeviceType;

use super::bpf::{open_cgroup_dir, query_device_programs};
use super::tests_real_v1::{check_freeze_stops_cpu, run_in, unique, Guard, OPEN_DEVICES};
use super::tests_units::rule;
use super::{FreezerState, Hierarchies, Manager, SysRoot, V2Manager};

/// A v2 manager for a fresh directory directly under the host's cgroup2 mount, with its guard.
fn v2_cgroup(test: &str) -> (Manager, Guard) {
    let h = Hierarchies::discover(&SysRoot::host()).unwrap();
    let v2 = h.v2.expect("a cgroup2 mount (cfg pith_cgroup2 said there is one)");
    let dir = v2.mount_point.join(unique(test));
    let mgr = Manager::V2(V2Manager::with_dir(&v2.mount_point, &dir).unwrap());
    let mut g = Guard::new(mgr.clone());
    let before = fs::read_to_string(v2.mount_point.join("cgroup.subtree_control")).unwrap_or_default();
    g.restore_subtree = Some((v2.mount_point.clone(), before));
    mgr.create().unwrap();
    assert!(dir.is_dir());
    (mgr, g)
}

fn attached(mgr: &Manager) -> usize {
    let Manager::V2(m) = mgr else { unreachable!() };
    let f = open_cgroup_dir(m.path()).unwrap();
    query_device_programs(f.as_raw_fd(), "test").unwrap().len()
}

#[test]
#[cfg_attr(not(all(pith_root, pith_cgroup2)), ignore = "needs root and a cgroup2 mount")]
fn real_v2_freeze_pids_stats_destroy() {
    let (mgr, mut g) = v2_cgroup("v2life");
    let Manager::V2(m) = &mgr else { unreachable!() };
    let sleeper = g.spawn("exec sleep 30");
    let burner = g.spawn("while :; do :; done");
    let mut want = vec![sleeper as i32, burner as i32];
    want.sort();
    assert_eq!(mgr.pids().unwrap(), want);
    assert_eq!(mgr.state().unwrap(), FreezerState::Thawed);

    check_freeze_stops_cpu(&mgr, burner);
    mgr.freeze().unwrap();
    let events = fs::read_to_string(m.path().join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    let status = fs::read_to_string(format!("/proc/{sleeper}/status")).unwrap();
    assert!(
        status.contains("State:\tS"),
        "v2-frozen tasks sleep in the freezer trap: {status}"
    );
    mgr.thaw().unwrap();
    assert!(fs::read_to_string(m.path().join("cgroup.events"))
        .unwrap()
        .contains("frozen 0"));

    let s = mgr.stats().unwrap();
    assert!(s.cpu.usage.total > 0 && s.cpu.usage.user > 0, "{:?}", s.cpu);

    for c in &mut g.children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    mgr.destroy().unwrap();
    assert!(!m.path().exists());
}

#[test]
#[cfg_attr(not(all(pith_root, pith_cgroup2)), ignore = "needs root and a cgroup2 mount")]
fn real_v2_devices_ebpf() {
    let (mgr, _g) = v2_cgroup("v2dev");
    let only_null = vec![
        rule(false, None, None, None, "rwm"),
        rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm"),
    ];
    mgr.update_devices(&only_null).unwrap();
    assert_eq!(attached(&mgr), 1);
    let out = run_in(&mgr, OPEN_DEVICES);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout, "null-ok\nzero-denied\n", "stderr: {stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");

    // mknod is checked too: "m" is not allowed for 1:5.
    let mk = run_in(&mgr, "d=$(mktemp -d) && mknod $d/z c 1 5; r=$?; rm -rf $d; exit $r");
    assert!(!mk.status.success(), "mknod of a denied device must fail");
    assert!(String::from_utf8_lossy(&mk.stderr).contains("Operation not permitted"));

    // Hot-plug: the replacement program allows /dev/zero and the old one is gone.
    let mut with_zero = only_null.clone();
    with_zero.push(rule(true, Some(LinuxDeviceType::C), Some(1), Some(5), "rwm"));
    mgr.update_devices(&with_zero).unwrap();
    assert_eq!(attached(&mgr), 1, "old program detached");
    assert_eq!(
        String::from_utf8_lossy(&run_in(&mgr, OPEN_DEVICES).stdout),
        "null-ok\nzero-ok\n"
    );

    // And back: removal works the same way.
    mgr.update_devices(&only_null).unwrap();
    assert_eq!(attached(&mgr), 1);
    assert_eq!(
        String::from_utf8_lossy(&run_in(&mgr, OPEN_DEVICES).stdout),
        "null-ok\nzero-denied\n"
    );

    // Read-only access: reading works, opening for writing is refused.
    let ro = vec![
        rule(false, None, None, None, "rwm"),
        rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "r"),
        rule(true, Some(LinuxDeviceType::C), Some(1), Some(5), "r"),
    ];
    mgr.update_devices(&ro).unwrap();
    let out = run_in(
        &mgr,
        "head -c1 /dev/zero | wc -c; if echo x > /dev/null; then echo w-ok; else echo w-denied; fi",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\nw-denied\n");
}

#[test]
#[cfg_attr(not(all(pith_root, pith_cgroup2)), ignore = "needs root and a cgroup2 mount")]
fn real_v2_process_created_in_its_cgroup() {
    // clone3(CLONE_INTO_CGROUP): the process is in the cgroup from its first
    // instruction, with nothing moved afterwards.
    let (mgr, _g) = v2_cgroup("v2clone3");
    let Manager::V2(m) = &mgr else { unreachable!() };
    let fd = mgr.v2_dir_fd().unwrap().expect("a v2 manager has a directory to open");
    let bin = crate::spawn::SealedBinary::copy_of(std::path::Path::new("/bin/sleep")).unwrap();
    let pid = crate::spawn::spawn(&crate::spawn::SpawnSpec {
        binary: &bin,
        args: vec![c"sleep".into(), c"30".into()],
        env: Vec::new(),
        flags: nix::sched::CloneFlags::empty(),
        fds: Vec::new(),
        cgroup: Some(fd.as_raw_fd()),
        dispatched: false,
    })
    .unwrap();
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let rel = m.path().strip_prefix(m.mount()).unwrap();
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    assert!(
        own.lines().any(|l| l == format!("0::/{}", rel.display())),
        "pid {pid} is not in {}: {own}",
        m.path().display()
    );
}
