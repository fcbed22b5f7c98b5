//! Resource usage of a cgroup, shaped like Kata's `CgroupStats` (StatsContainerResponse) so the RPC
//! layer converts field by field. Values a cgroup version or kernel does not provide stay 0/empty.

use std::collections::HashMap;

use serde::Serialize;

/// All statistics of a container cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// CPU usage and throttling.
    pub cpu: CpuStats,
    /// Memory usage.
    pub memory: MemoryStats,
    /// Number of tasks.
    pub pids: PidsStats,
    /// Block I/O.
    pub blkio: BlkioStats,
    /// Huge page usage, keyed by page size ("2MB").
    pub hugetlb: HashMap<String, HugetlbStats>,
}

/// CPU statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuStats {
    /// Usage counters.
    pub usage: CpuUsage,
    /// CFS throttling counters.
    pub throttling: ThrottlingData,
}

/// CPU time used, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuUsage {
    /// Total CPU time.
    pub total: u64,
    /// Per-CPU total (v1 only; empty on v2).
    pub per_cpu: Vec<u64>,
    /// Time in kernel mode.
    pub kernel: u64,
    /// Time in user mode.
    pub user: u64,
}

/// CFS bandwidth throttling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ThrottlingData {
    /// Enforcement periods elapsed.
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Total time throttled, in nanoseconds.
    pub throttled_time: u64,
}

/// One memory counter set (usage, peak, limit, hits of the limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryData {
    /// Current usage in bytes.
    pub usage: u64,
    /// Peak usage in bytes (0 when the kernel does not report it).
    pub max_usage: u64,
    /// Times the limit was hit (v1 failcnt; v2 "max" events).
    pub failcnt: u64,
    /// Limit in bytes (`u64::MAX` when unlimited).
    pub limit: u64,
}

/// Memory statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStats {
    /// Page cache in bytes (v1 "cache", v2 "file").
    pub cache: u64,
    /// Anonymous memory in bytes (v1 "rss", v2 "anon").
    pub rss: u64,
    /// Memory counters.
    pub usage: MemoryData,
    /// Swap counters (v1: memory+swap, as the kernel reports it; v2: swap alone).
    pub swap: MemoryData,
    /// Kernel memory counters (v1 kmem; v2 "kernel" from memory.stat when present).
    pub kernel: MemoryData,
    /// Whether usage is hierarchical (always true on v2).
    pub use_hierarchy: bool,
    /// Every key of memory.stat.
    pub stats: HashMap<String, u64>,
}

/// Task counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PidsStats {
    /// Tasks in the cgroup.
    pub current: u64,
    /// Limit (`u64::MAX` when unlimited).
    pub limit: u64,
}

/// One block I/O counter: device, operation ("Read", "Write", "Sync", "Async", "Discard", "Total").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlkioEntry {
    /// Device major.
    pub major: u64,
    /// Device minor.
    pub minor: u64,
    /// Operation.
    pub op: String,
    /// Counter value.
    pub value: u64,
}

/// Block I/O statistics (recursive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlkioStats {
    /// Bytes transferred.
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// I/O operations.
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// Huge page usage for one page size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HugetlbStats {
    /// Current usage in bytes.
    pub usage: u64,
    /// Peak usage (v1 only).
    pub max_usage: u64,
    /// Allocations that failed because of the limit.
    pub failcnt: u64,
}

/// Parses v1 blkio files ("8:0 Read 4096" lines plus a "Total N" line).
pub(crate) fn parse_blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [dev, op, value] = f[..] else { return None };
            let (ma, mi) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: ma.parse().ok()?,
                minor: mi.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Parses v2 io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6") into (bytes, ios).
pub(crate) fn parse_io_stat_v2(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some((ma, mi)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (ma.parse::<u64>(), mi.parse::<u64>()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let Ok(value) = v.parse::<u64>() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "dbytes" => (&mut bytes, "Discard"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                "dios" => (&mut ios, "Discard"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}
