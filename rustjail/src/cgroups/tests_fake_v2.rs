//! cgroup v2 tests against a fake unified tree in a temporary directory (no root needed).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxRdma,
    LinuxResources, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
};

use super::{Error, FreezerState, Manager, OomWatch, SysRoot, V2Manager};

const CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma";

const FILES: &[(&str, &str)] = &[
    ("cgroup.controllers", CONTROLLERS),
    ("cgroup.subtree_control", ""),
    ("cgroup.procs", "5\n"),
    ("cgroup.freeze", "0\n"),
    ("cgroup.events", "populated 1\nfrozen 0\n"),
    ("cpu.weight", "100"),
    ("cpu.max", "max 100000"),
    ("cpu.max.burst", "0"),
    ("cpuset.cpus", ""),
    ("cpuset.mems", ""),
    ("memory.max", "max"),
    ("memory.low", "0"),
    ("memory.swap.max", "max"),
    ("memory.high", "max"),
    ("pids.max", "max"),
    ("io.weight", "default 100"),
    ("io.max", ""),
    ("hugetlb.2MB.max", "max"),
    ("hugetlb.2MB.current", "4194304"),
    ("hugetlb.2MB.events", "max 3\n"),
    ("hugetlb.2MB.rsvd.current", "0"),
    ("rdma.max", ""),
    (
        "cpu.stat",
        "usage_usec 30\nuser_usec 20\nsystem_usec 10\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n",
    ),
    ("memory.current", "8192"),
    ("memory.peak", "16384"),
    ("memory.events", "low 0\nhigh 0\nmax 6\noom 1\noom_kill 1\n"),
    ("memory.stat", "anon 4096\nfile 2048\nkernel 1024\n"),
    ("memory.swap.current", "512"),
    ("pids.current", "3"),
    ("io.stat", "254:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n"),
];

/// A fake unified host with container "c1" at /sys/fs/cgroup/pith/c1.
fn fake_v2() -> (tempfile::TempDir, V2Manager) {
    let dir = tempfile::tempdir().unwrap();
    let root = SysRoot::under(dir.path());
    let mnt = dir.path().join("sys/fs/cgroup");
    fs::create_dir_all(dir.path().join("proc/self")).unwrap();
    fs::write(
        &root.mountinfo,
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
    )
    .unwrap();
    fs::write(&root.self_cgroup, "0::/\n").unwrap();
    let cg = mnt.join("pith/c1");
    fs::create_dir_all(&cg).unwrap();
    for d in [&mnt, &mnt.join("pith")] {
        fs::write(d.join("cgroup.controllers"), CONTROLLERS).unwrap();
        fs::write(d.join("cgroup.subtree_control"), "").unwrap();
    }
    for (f, v) in FILES {
        fs::write(cg.join(f), v).unwrap();
    }
    let Manager::V2(m) = Manager::with_root(&root, Some(Path::new("/pith/c1")), "c1").unwrap() else {
        panic!("unified host must give v2")
    };
    (dir, m)
}

fn read(m: &V2Manager, f: &str) -> String {
    fs::read_to_string(m.path().join(f)).unwrap().trim().to_string()
}

fn resources() -> LinuxResources {
    let thr = |rate: u64| {
        LinuxThrottleDeviceBuilder::default()
            .major(254i64)
            .minor(0i64)
            .rate(rate)
            .build()
            .unwrap()
    };
    let mut rdma = HashMap::new();
    rdma.insert(
        "mlx5_0".to_string(),
        serde_json::from_str::<LinuxRdma>(r#"{"hcaHandles": 3}"#).unwrap(),
    );
    LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(50_000i64)
                .period(200_000u64)
                .cpus("0-1")
                .burst(1000u64)
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .swap(96 << 20)
                .reservation(16 << 20)
                .swappiness(5u64)
                .disable_oom_killer(true)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(500u16)
                .throttle_write_bps_device(vec![thr(0)])
                .build()
                .unwrap(),
        )
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(1i64 << 22)
            .build()
            .unwrap()])
        .rdma(rdma)
        .unified(HashMap::from([("memory.high".to_string(), "50000000".to_string())]))
        .build()
        .unwrap()
}

#[test]
fn create_enables_controllers_in_ancestors() {
    let (dir, m) = fake_v2();
    m.create().unwrap();
    let mnt = dir.path().join("sys/fs/cgroup");
    let want = "+cpuset +cpu +io +memory +hugetlb +pids +rdma";
    assert_eq!(fs::read_to_string(mnt.join("cgroup.subtree_control")).unwrap(), want);
    assert_eq!(
        fs::read_to_string(mnt.join("pith/cgroup.subtree_control")).unwrap(),
        want
    );
    assert_eq!(
        fs::read_to_string(m.path().join("cgroup.subtree_control")).unwrap(),
        "",
        "not in the leaf"
    );
    assert!(V2Manager::with_dir(&mnt, Path::new("/elsewhere")).is_err());
    assert!(V2Manager::with_dir(&mnt, &mnt).is_err());
}

#[test]
fn apply_writes_v2_files() {
    let (_dir, m) = fake_v2();
    let notes = m.apply(&resources()).unwrap();
    assert!(
        notes.iter().any(|n| n.contains("swappiness")) && notes.iter().any(|n| n.contains("OOM")),
        "{notes:?}"
    );
    assert_eq!(read(&m, "cpu.weight"), "39");
    assert_eq!(read(&m, "cpu.max"), "50000 200000");
    assert_eq!(read(&m, "cpu.max.burst"), "1000");
    assert_eq!(read(&m, "cpuset.cpus"), "0-1");
    assert_eq!(read(&m, "memory.max"), (64u64 << 20).to_string());
    assert_eq!(
        read(&m, "memory.swap.max"),
        (32u64 << 20).to_string(),
        "v2 swap = (memory+swap) - memory"
    );
    assert_eq!(read(&m, "memory.low"), (16u64 << 20).to_string());
    assert_eq!(read(&m, "pids.max"), "max");
    assert_eq!(read(&m, "io.weight"), "default 4950");
    assert_eq!(read(&m, "io.max"), "254:0 wbps=max");
    assert_eq!(read(&m, "hugetlb.2MB.max"), (1u64 << 22).to_string());
    assert_eq!(read(&m, "rdma.max"), "mlx5_0 hca_handle=3");
    assert_eq!(read(&m, "memory.high"), "50000000");

    // Only the period: the current quota is kept.
    let p = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().period(50_000u64).build().unwrap())
        .build()
        .unwrap();
    m.apply(&p).unwrap();
    assert_eq!(read(&m, "cpu.max"), "50000 50000");
}

#[test]
fn v2_errors_name_what_is_missing() {
    let (_dir, m) = fake_v2();
    let rt = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().realtime_runtime(100i64).build().unwrap())
        .build()
        .unwrap();
    assert!(matches!(
        m.apply(&rt).unwrap_err(),
        Error::Unsupported { version: "v2", .. }
    ));

    fs::write(m.path().join("cgroup.controllers"), "cpu memory").unwrap();
    let pids = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(3).build().unwrap())
        .build()
        .unwrap();
    let e = m.apply(&pids).unwrap_err().to_string();
    assert!(
        e.contains("pids controller is not available") && e.contains("c1/cgroup.controllers"),
        "{e}"
    );

    let uni = |k: &str| {
        LinuxResourcesBuilder::default()
            .unified(HashMap::from([(k.to_string(), "1".to_string())]))
            .build()
            .unwrap()
    };
    for bad in ["../memory.max", "nodot", "cgroup.procs", ""] {
        assert!(
            matches!(m.apply(&uni(bad)).unwrap_err(), Error::InvalidValue { .. }),
            "{bad}"
        );
    }
    let e = m.apply(&uni("misc.max")).unwrap_err().to_string();
    assert!(e.contains("misc controller"), "{e}");

    let swap = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(100i64).swap(50i64).build().unwrap())
        .build()
        .unwrap();
    assert!(m.apply(&swap).unwrap_err().to_string().contains(">= the memory limit"));
}

#[test]
fn v2_freeze_pids_stats_oom_on_fake_files() {
    let (_dir, m) = fake_v2();
    // A fake kernel: cgroup.events already says what the real one would say after the write.
    fs::write(m.path().join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    m.freeze().unwrap();
    assert_eq!(read(&m, "cgroup.freeze"), "1");
    assert_eq!(m.state().unwrap(), FreezerState::Frozen);
    fs::write(m.path().join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    assert_eq!(m.state().unwrap(), FreezerState::Freezing);
    m.thaw().unwrap();
    assert_eq!(m.state().unwrap(), FreezerState::Thawed);
    fs::remove_file(m.path().join("cgroup.freeze")).unwrap();
    assert!(matches!(m.freeze().unwrap_err(), Error::Unsupported { .. }));

    let sub: PathBuf = m.path().join("inner");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("cgroup.procs"), "9\n").unwrap();
    assert_eq!(m.pids().unwrap(), vec![5, 9]);

    let s = m.stats().unwrap();
    assert_eq!(
        (s.cpu.usage.total, s.cpu.usage.user, s.cpu.usage.kernel),
        (30_000, 20_000, 10_000)
    );
    assert_eq!(s.cpu.throttling.throttled_time, 7000);
    assert_eq!(
        (s.memory.usage.usage, s.memory.usage.max_usage, s.memory.usage.failcnt),
        (8192, 16384, 6)
    );
    assert_eq!(
        (
            s.memory.usage.limit,
            s.memory.cache,
            s.memory.rss,
            s.memory.kernel.usage
        ),
        (u64::MAX, 2048, 4096, 1024)
    );
    assert_eq!(s.memory.swap.usage, 512);
    assert_eq!((s.pids.current, s.pids.limit), (3, u64::MAX));
    assert_eq!(s.blkio.io_service_bytes_recursive[1].value, 200);
    let h = &s.hugetlb["2MB"];
    assert_eq!((h.usage, h.failcnt, s.hugetlb.len()), (4 << 20, 3, 1));

    assert_eq!(m.oom_kill_count().unwrap(), 1);
    let OomWatch::MemoryEvents(p) = Manager::V2(m.clone()).oom_watch().unwrap() else {
        panic!()
    };
    assert_eq!(p, m.path().join("memory.events"));
}
