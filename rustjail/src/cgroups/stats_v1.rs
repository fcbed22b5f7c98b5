//! Reading statistics from cgroup v1 files. Controllers that are not mounted leave their part empty.

use std::path::Path;

use super::error::Result;
use super::fs;
use super::stats::{parse_blkio_v1, BlkioEntry, CpuStats, HugetlbStats, MemoryData, MemoryStats, Stats};
use super::v1::V1Manager;

/// Nanoseconds per USER_HZ tick (cpuacct.stat counts ticks).
fn ns_per_tick() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

fn memory_data(dir: &Path, prefix: &str) -> Result<MemoryData> {
    let f = |name: &str| fs::read_u64_or_zero(dir, &format!("{prefix}.{name}"));
    Ok(MemoryData {
        usage: f("usage_in_bytes")?,
        max_usage: f("max_usage_in_bytes")?,
        failcnt: f("failcnt")?,
        limit: f("limit_in_bytes")?,
    })
}

/// The first of `files` that has entries other than "Total".
fn blkio_first(dir: &Path, files: &[&str]) -> Result<Vec<BlkioEntry>> {
    for f in files {
        if let Some(text) = fs::read_opt(dir, f)? {
            let entries = parse_blkio_v1(&text);
            if !entries.is_empty() {
                return Ok(entries);
            }
        }
    }
    Ok(Vec::new())
}

impl V1Manager {
    /// Reads CPU, memory, pids, blkio and hugetlb statistics.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if let Some(dir) = self.path("cpuacct") {
            s.cpu = cpuacct_stats(dir)?;
        }
        if let Some(dir) = self.path("cpu") {
            let st = fs::read_keyed(dir, "cpu.stat")?;
            let get = |k: &str| st.get(k).copied().unwrap_or(0);
            s.cpu.throttling.periods = get("nr_periods");
            s.cpu.throttling.throttled_periods = get("nr_throttled");
            s.cpu.throttling.throttled_time = get("throttled_time");
        }
        if let Some(dir) = self.path("memory") {
            s.memory = memory_stats(dir)?;
        }
        if let Some(dir) = self.path("pids") {
            s.pids.current = fs::read_u64_or_zero(dir, "pids.current")?;
            s.pids.limit = if fs::exists(dir, "pids.max") {
                fs::read_u64(dir, "pids.max")?
            } else {
                0
            };
        }
        if let Some(dir) = self.path("blkio") {
            s.blkio.io_service_bytes_recursive = blkio_first(
                dir,
                &[
                    "blkio.io_service_bytes_recursive",
                    "blkio.bfq.io_service_bytes_recursive",
                    "blkio.throttle.io_service_bytes_recursive",
                ],
            )?;
            s.blkio.io_serviced_recursive = blkio_first(
                dir,
                &[
                    "blkio.io_serviced_recursive",
                    "blkio.bfq.io_serviced_recursive",
                    "blkio.throttle.io_serviced_recursive",
                ],
            )?;
        }
        if let Some(dir) = self.path("hugetlb") {
            for size in fs::hugetlb_sizes(dir, "usage_in_bytes") {
                let f = |name: &str| fs::read_u64_or_zero(dir, &format!("hugetlb.{size}.{name}"));
                let h = HugetlbStats {
                    usage: f("usage_in_bytes")?,
                    max_usage: f("max_usage_in_bytes")?,
                    failcnt: f("failcnt")?,
                };
                s.hugetlb.insert(size, h);
            }
        }
        Ok(s)
    }
}

fn cpuacct_stats(dir: &Path) -> Result<CpuStats> {
    let mut c = CpuStats::default();
    c.usage.total = fs::read_u64_or_zero(dir, "cpuacct.usage")?;
    if let Some(text) = fs::read_opt(dir, "cpuacct.usage_percpu")? {
        let path = dir.join("cpuacct.usage_percpu");
        c.usage.per_cpu = text
            .split_whitespace()
            .map(|v| fs::parse_u64(&path, v))
            .collect::<Result<_>>()?;
    }
    if fs::exists(dir, "cpuacct.usage_user") {
        c.usage.user = fs::read_u64(dir, "cpuacct.usage_user")?;
        c.usage.kernel = fs::read_u64_or_zero(dir, "cpuacct.usage_sys")?;
    } else {
        let st = fs::read_keyed(dir, "cpuacct.stat")?;
        let tick = ns_per_tick();
        c.usage.user = st.get("user").copied().unwrap_or(0) * tick;
        c.usage.kernel = st.get("system").copied().unwrap_or(0) * tick;
    }
    Ok(c)
}

fn memory_stats(dir: &Path) -> Result<MemoryStats> {
    let stats = fs::read_keyed(dir, "memory.stat")?;
    Ok(MemoryStats {
        cache: stats.get("cache").copied().unwrap_or(0),
        rss: stats.get("rss").copied().unwrap_or(0),
        usage: memory_data(dir, "memory")?,
        swap: memory_data(dir, "memory.memsw")?,
        kernel: memory_data(dir, "memory.kmem")?,
        use_hierarchy: fs::read_u64_or_zero(dir, "memory.use_hierarchy")? == 1,
        stats,
    })
}
