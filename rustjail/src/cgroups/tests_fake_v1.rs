//! cgroup v1 tests against a fake tree in a temporary directory (no root needed). Files are plain
//! files here, so each test checks the last value written to each file.

use std::fs;
use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxInterfacePriorityBuilder, LinuxMemoryBuilder,
    LinuxNetworkBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
    LinuxWeightDeviceBuilder,
};

use super::tests_fake_tree::{cg_dir, fake_host, populated, read};
use super::tests_units::default_rules;
use super::{Error, FreezerState, Manager};

fn full_resources() -> LinuxResources {
    let thr = |major: i64, minor: i64, rate: u64| {
        LinuxThrottleDeviceBuilder::default()
            .major(major)
            .minor(minor)
            .rate(rate)
            .build()
            .unwrap()
    };
    LinuxResourcesBuilder::default()
        .devices(default_rules())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .realtime_period(500_000u64)
                .realtime_runtime(1000i64)
                .cpus("0")
                .mems("0")
                .idle(1i64)
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .swap(128 << 20)
                .reservation(32 << 20)
                .swappiness(10u64)
                .disable_oom_killer(true)
                .kernel(1i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(42).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(300u16)
                .weight_device(vec![LinuxWeightDeviceBuilder::default()
                    .major(8)
                    .minor(0)
                    .weight(200u16)
                    .build()
                    .unwrap()])
                .throttle_read_bps_device(vec![thr(8, 0, 1 << 20)])
                .throttle_write_iops_device(vec![thr(8, 16, 100)])
                .build()
                .unwrap(),
        )
        .network(
            LinuxNetworkBuilder::default()
                .class_id(0x10001u32)
                .priorities(vec![LinuxInterfacePriorityBuilder::default()
                    .name("eth0")
                    .priority(5u32)
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

#[test]
fn paths_follow_own_cgroup_and_shared_mounts() {
    let (dir, m) = populated();
    assert_eq!(m.path("memory").unwrap(), cg_dir(dir.path(), "memory"));
    assert_eq!(m.path("net_cls"), m.path("net_prio"));
    assert!(m.path("name=systemd").is_none() && m.path("hugetlb").is_none());
    // cpuset.cpus/mems were inherited from the parent by create().
    assert_eq!(read(dir.path(), "cpuset", "cpuset.cpus"), "0-1");
    assert_eq!(read(dir.path(), "cpuset", "cpuset.mems"), "0");
    let (_d, root) = fake_host();
    let Manager::V1(abs) = Manager::with_root(&root, Some(Path::new("/pith/x")), "x").unwrap() else {
        panic!()
    };
    assert!(abs.path("memory").unwrap().ends_with("sys/fs/cgroup/memory/pith/x"));
}

#[test]
fn apply_writes_every_resource() {
    let (dir, m) = populated();
    let notes = m.apply(&full_resources()).unwrap();
    assert!(notes.iter().any(|n| n.contains("kernel")), "{notes:?}");
    let b = dir.path();
    assert_eq!(read(b, "cpu", "cpu.shares"), "512");
    assert_eq!(read(b, "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(b, "cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(read(b, "cpu", "cpu.rt_period_us"), "500000");
    assert_eq!(read(b, "cpu", "cpu.rt_runtime_us"), "1000");
    assert_eq!(read(b, "cpu", "cpu.idle"), "1");
    assert_eq!(read(b, "cpuset", "cpuset.cpus"), "0");
    assert_eq!(read(b, "memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(
        read(b, "memory", "memory.memsw.limit_in_bytes"),
        (128u64 << 20).to_string(),
        "v1 memsw = memory+swap"
    );
    assert_eq!(
        read(b, "memory", "memory.soft_limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(b, "memory", "memory.swappiness"), "10");
    assert_eq!(read(b, "memory", "memory.oom_control"), "1");
    assert_eq!(read(b, "pids", "pids.max"), "42");
    assert_eq!(
        read(b, "blkio", "blkio.bfq.weight"),
        "300",
        "no CFQ blkio.weight: BFQ file used"
    );
    assert_eq!(read(b, "blkio", "blkio.bfq.weight_device"), "8:0 200");
    assert_eq!(read(b, "blkio", "blkio.throttle.read_bps_device"), "8:0 1048576");
    assert_eq!(read(b, "blkio", "blkio.throttle.write_iops_device"), "8:16 100");
    assert_eq!(read(b, "net_cls,net_prio", "net_cls.classid"), "65537");
    assert_eq!(read(b, "net_cls,net_prio", "net_prio.ifpriomap"), "eth0 5");
    // Devices: from "a *:* rwm" the first write is deny "a", then the allows
    // in the spec's order, one write each through one descriptor (which a
    // regular file, unlike the kernel's, keeps one after the other).
    assert_eq!(read(b, "devices", "devices.deny"), "a");
    assert_eq!(
        read(b, "devices", "devices.allow"),
        ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 136:* rwm"].concat()
    );
}

#[test]
fn bad_values_and_missing_controllers_give_clear_errors() {
    let (dir, m) = populated();
    let mem = |l: i64| {
        LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(l).build().unwrap())
            .build()
            .unwrap()
    };
    let e = m.apply(&mem(-5)).unwrap_err().to_string();
    assert!(e.contains("memory.limit") && e.contains("-5"), "{e}");
    assert_eq!(
        read(dir.path(), "memory", "memory.limit_in_bytes"),
        "9223372036854771712",
        "nothing written"
    );
    let swap = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().swappiness(101u64).build().unwrap())
        .build()
        .unwrap();
    assert!(m.apply(&swap).unwrap_err().to_string().contains("0 and 100"));

    let unified = LinuxResourcesBuilder::default()
        .unified(std::collections::HashMap::from([(
            "memory.high".to_string(),
            "1".to_string(),
        )]))
        .build()
        .unwrap();
    let e = m.apply(&unified).unwrap_err();
    assert!(matches!(e, Error::Unsupported { version: "v1", .. }), "{e}");

    let huge = vec![LinuxHugepageLimitBuilder::default()
        .page_size("2MB")
        .limit(1 << 21)
        .build()
        .unwrap()];
    let e = m
        .apply(&LinuxResourcesBuilder::default().hugepage_limits(huge).build().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("hugetlb controller is not available"), "{e}");
    let bad = vec![LinuxHugepageLimitBuilder::default()
        .page_size("2XB")
        .limit(1)
        .build()
        .unwrap()];
    assert!(m
        .apply(&LinuxResourcesBuilder::default().hugepage_limits(bad).build().unwrap())
        .is_err());

    let neg = LinuxBlockIoBuilder::default()
        .throttle_read_bps_device(vec![LinuxThrottleDeviceBuilder::default()
            .major(-1)
            .minor(0)
            .rate(1u64)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let e = m
        .apply(&LinuxResourcesBuilder::default().block_io(neg).build().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("-1"), "{e}");

    // A missing file is named with the operation and the full path.
    fs::remove_file(cg_dir(dir.path(), "pids").join("pids.max")).unwrap();
    let e = m
        .apply(
            &LinuxResourcesBuilder::default()
                .pids(LinuxPidsBuilder::default().limit(5).build().unwrap())
                .build()
                .unwrap(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("open ") && e.contains("pids/c1/pids.max: No such file or directory"),
        "{e}"
    );
    assert!(m.add_task(-3).is_err() && m.add_task(0).is_err());
}

#[test]
fn freezer_pids_stats_oom_on_fake_files() {
    let (dir, m) = populated();
    m.freeze().unwrap();
    assert_eq!(m.state().unwrap(), FreezerState::Frozen);
    m.thaw().unwrap();
    assert_eq!(m.state().unwrap(), FreezerState::Thawed);

    let sub = cg_dir(dir.path(), "pids").join("nested");
    fs::create_dir_all(&sub).unwrap();
    fs::write(sub.join("cgroup.procs"), "12\n10\n").unwrap();
    assert_eq!(m.pids().unwrap(), vec![10, 11, 12]);

    let s = m.stats().unwrap();
    assert_eq!(
        (s.cpu.usage.total, s.cpu.usage.user, s.cpu.usage.kernel),
        (3000, 2000, 1000)
    );
    assert_eq!(s.cpu.usage.per_cpu, vec![1000, 2000]);
    assert_eq!(
        (
            s.cpu.throttling.periods,
            s.cpu.throttling.throttled_periods,
            s.cpu.throttling.throttled_time
        ),
        (10, 3, 5000)
    );
    assert_eq!(
        (s.memory.usage.usage, s.memory.usage.max_usage, s.memory.usage.failcnt),
        (4096, 8192, 1)
    );
    assert_eq!((s.memory.cache, s.memory.rss, s.memory.swap.usage), (100, 200, 4096));
    assert!(s.memory.use_hierarchy);
    assert_eq!((s.pids.current, s.pids.limit), (2, u64::MAX));
    assert_eq!(
        s.blkio.io_service_bytes_recursive.len(),
        2,
        "falls back to throttle stats when BFQ has none"
    );
    assert_eq!(m.oom_kill_count().unwrap(), 2);
}

#[test]
fn destroy_removes_dirs_and_reports_busy_ones() {
    let (dir, root) = fake_host();
    let Manager::V1(m) = Manager::with_root(&root, Some(Path::new("/d1")), "d1").unwrap() else {
        panic!()
    };
    // A fake cpuset dir needs its files before create() can copy cpus/mems.
    let cs = dir.path().join("sys/fs/cgroup/cpuset/d1");
    fs::create_dir_all(&cs).unwrap();
    fs::write(cs.join("cpuset.cpus"), "0").unwrap();
    fs::write(cs.join("cpuset.mems"), "0").unwrap();
    m.create().unwrap();
    fs::remove_dir_all(&cs).unwrap();
    fs::create_dir(&cs).unwrap();
    assert!(m.path("pids").unwrap().is_dir());
    m.destroy().unwrap();
    assert!(m.paths().values().all(|p| !p.exists()));
    m.destroy().unwrap();

    // A directory that cannot be removed yields Busy naming it and the pids inside.
    let p = m.path("freezer").unwrap().to_path_buf();
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("cgroup.procs"), "77\n").unwrap();
    let e = m.destroy().unwrap_err();
    assert!(
        matches!(&e, Error::Busy { path, pids, .. } if path == &p && pids == &vec![77]),
        "{e}"
    );
    assert!(e.to_string().contains("freezer/d1"), "{e}");
}

#[test]
fn on_demand_hierarchies_are_made_when_the_resources_use_them() {
    let (dir, root) = fake_host();
    let Manager::V1(m) = Manager::with_root(&root, None, "c1").unwrap() else {
        panic!("hybrid host must give v1")
    };
    let b = dir.path();
    let plain = LinuxResourcesBuilder::default()
        .devices(default_rules())
        .build()
        .unwrap();
    // The kernel's files of a new cpuset (plain files here).
    let cpuset = cg_dir(b, "cpuset");
    fs::create_dir_all(&cpuset).unwrap();
    for f in ["cpuset.cpus", "cpuset.mems"] {
        fs::write(cpuset.join(f), "").unwrap();
    }
    m.create_new(&plain).unwrap();
    // net_cls,net_prio: no resource uses it, so no directory; every other one made.
    assert!(!cg_dir(b, "net_cls,net_prio").exists());
    for ctrl in ["cpu", "cpuset", "memory", "devices", "freezer", "blkio", "pids"] {
        assert!(cg_dir(b, ctrl).is_dir(), "{ctrl}");
    }
    // Only what exists is joined and removed; nothing fails for the missing one.
    m.make_on_demand(&plain).unwrap();
    assert!(!cg_dir(b, "net_cls,net_prio").exists());
    // A class id (at creation or by an update) makes it.
    let classed = LinuxResourcesBuilder::default()
        .network(LinuxNetworkBuilder::default().class_id(7u32).build().unwrap())
        .build()
        .unwrap();
    m.make_on_demand(&classed).unwrap();
    assert!(cg_dir(b, "net_cls,net_prio").is_dir());
    for f in ["cpuset.cpus", "cpuset.mems"] {
        fs::remove_file(cpuset.join(f)).unwrap();
    }
    m.destroy().unwrap();
    for ctrl in ["cpu", "cpuset", "net_cls,net_prio", "pids"] {
        assert!(!cg_dir(b, ctrl).exists(), "{ctrl}");
    }
}

#[test]
fn a_join_goes_through_the_opened_files_or_else_by_path() {
    let (_dir, m) = populated();
    let m = Manager::V1(m);
    let Manager::V1(v1) = &m else { unreachable!() };
    let dirs: Vec<std::path::PathBuf> = v1.join_files().iter().map(|f| f.parent().unwrap().into()).collect();
    assert!(!dirs.is_empty());
    for d in &dirs {
        fs::write(d.join("tasks"), "").unwrap();
    }
    let files = m.open_join_files().unwrap();
    assert_eq!(files.len(), dirs.len());
    // Moved away after the opening: only a write through the descriptor lands there.
    for d in &dirs {
        fs::rename(d.join("tasks"), d.join("tasks.opened")).unwrap();
        fs::write(d.join("tasks"), "").unwrap();
    }
    m.join_self_through(&files).unwrap();
    for d in &dirs {
        assert_eq!(
            fs::read_to_string(d.join("tasks.opened")).unwrap(),
            "0",
            "{}",
            d.display()
        );
        assert_eq!(fs::read_to_string(d.join("tasks")).unwrap(), "", "{}", d.display());
    }
    // Not one per directory: by path.
    m.join_self_through(&files[..1]).unwrap();
    for d in &dirs {
        assert_eq!(fs::read_to_string(d.join("tasks")).unwrap(), "0", "{}", d.display());
    }
}
