//! The fake cgroup v1 tree shared by the v1 fake-tree tests: a hybrid mountinfo, a nested memory
//! cgroup for the caller, and the files of a fresh container cgroup "c1".

use std::fs;
use std::path::{Path, PathBuf};

use super::{Manager, SysRoot, V1Manager};

const MOUNTINFO: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
42 31 0:39 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// Files of a fresh container cgroup, per controller.
const FILES: &[(&str, &[(&str, &str)])] = &[
    (
        "cpu",
        &[
            ("cpu.shares", "1024"),
            ("cpu.cfs_quota_us", "-1"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.rt_period_us", "1000000"),
            ("cpu.rt_runtime_us", "0"),
            ("cpu.cfs_burst_us", "0"),
            ("cpu.idle", "0"),
            ("cpu.stat", "nr_periods 10\nnr_throttled 3\nthrottled_time 5000\n"),
        ],
    ),
    (
        "cpuacct",
        &[
            ("cpuacct.usage", "3000"),
            ("cpuacct.usage_percpu", "1000 2000 \n"),
            ("cpuacct.usage_user", "2000"),
            ("cpuacct.usage_sys", "1000"),
        ],
    ),
    ("cpuset", &[("cpuset.cpus", ""), ("cpuset.mems", "")]),
    (
        "memory",
        &[
            ("memory.limit_in_bytes", "9223372036854771712"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712"),
            ("memory.soft_limit_in_bytes", "0"),
            ("memory.swappiness", "60"),
            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            ("memory.usage_in_bytes", "4096"),
            ("memory.max_usage_in_bytes", "8192"),
            ("memory.failcnt", "1"),
            ("memory.memsw.usage_in_bytes", "4096"),
            ("memory.stat", "cache 100\nrss 200\ntotal_cache 100\n"),
            ("memory.use_hierarchy", "1"),
        ],
    ),
    (
        "devices",
        &[
            ("devices.list", "a *:* rwm\n"),
            ("devices.allow", ""),
            ("devices.deny", ""),
        ],
    ),
    ("freezer", &[("freezer.state", "THAWED\n")]),
    (
        "blkio",
        &[
            ("blkio.bfq.weight", "100"),
            ("blkio.bfq.weight_device", ""),
            ("blkio.throttle.read_bps_device", ""),
            ("blkio.throttle.write_iops_device", ""),
            ("blkio.bfq.io_service_bytes_recursive", "Total 0\n"),
            (
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 512\n8:0 Write 1024\nTotal 1536\n",
            ),
        ],
    ),
    (
        "pids",
        &[("pids.max", "max"), ("pids.current", "2"), ("cgroup.procs", "10\n11\n")],
    ),
    (
        "net_cls,net_prio",
        &[("net_cls.classid", "0"), ("net_prio.ifpriomap", "")],
    ),
];

/// A fake hybrid host: returns the temp dir and the SysRoot; the memory cgroup of "us" is nested.
pub(crate) fn fake_host() -> (tempfile::TempDir, SysRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = SysRoot::under(dir.path());
    fs::create_dir_all(dir.path().join("proc/self")).unwrap();
    fs::write(&root.mountinfo, MOUNTINFO).unwrap();
    fs::write(&root.self_cgroup, "5:memory:/user/me\n4:cpuset:/\n1:cpu:/\n0::/\n").unwrap();
    for (ctrl, _) in FILES {
        let mp = dir.path().join("sys/fs/cgroup").join(ctrl);
        fs::create_dir_all(&mp).unwrap();
    }
    fs::write(dir.path().join("sys/fs/cgroup/cpuset/cpuset.cpus"), "0-1\n").unwrap();
    fs::write(dir.path().join("sys/fs/cgroup/cpuset/cpuset.mems"), "0\n").unwrap();
    (dir, root)
}

/// The cgroup directory of container "c1" (relative path) for a controller mount.
pub(crate) fn cg_dir(base: &Path, ctrl: &str) -> PathBuf {
    let mp = base.join("sys/fs/cgroup").join(ctrl);
    if ctrl == "memory" {
        mp.join("user/me/c1")
    } else {
        mp.join("c1")
    }
}

/// A v1 manager for "c1" with every controller's files in place.
pub(crate) fn populated() -> (tempfile::TempDir, V1Manager) {
    let (dir, root) = fake_host();
    for (ctrl, files) in FILES {
        let d = cg_dir(dir.path(), ctrl);
        fs::create_dir_all(&d).unwrap();
        for (f, v) in *files {
            fs::write(d.join(f), v).unwrap();
        }
    }
    let Manager::V1(m) = Manager::with_root(&root, None, "c1").unwrap() else {
        panic!("hybrid host must give v1")
    };
    m.create().unwrap();
    (dir, m)
}

pub(crate) fn read(base: &Path, ctrl: &str, file: &str) -> String {
    fs::read_to_string(cg_dir(base, ctrl).join(file))
        .unwrap()
        .trim()
        .to_string()
}
