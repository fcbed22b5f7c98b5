//! Reading statistics from cgroup v2 files. Files of controllers that are not enabled read as 0.

use super::error::Result;
use super::fs;
use super::stats::{parse_io_stat_v2, HugetlbStats, MemoryData, Stats};
use super::v2::V2Manager;

impl V2Manager {
    /// Reads CPU, memory, pids, io and hugetlb statistics.
    pub fn stats(&self) -> Result<Stats> {
        let dir = self.path();
        let mut s = Stats::default();

        let cpu = fs::read_keyed(dir, "cpu.stat")?;
        let get = |k: &str| cpu.get(k).copied().unwrap_or(0);
        s.cpu.usage.total = get("usage_usec") * 1000;
        s.cpu.usage.user = get("user_usec") * 1000;
        s.cpu.usage.kernel = get("system_usec") * 1000;
        s.cpu.throttling.periods = get("nr_periods");
        s.cpu.throttling.throttled_periods = get("nr_throttled");
        s.cpu.throttling.throttled_time = get("throttled_usec") * 1000;

        let stats = fs::read_keyed(dir, "memory.stat")?;
        let events = fs::read_keyed(dir, "memory.events")?;
        let m = &mut s.memory;
        m.cache = stats.get("file").copied().unwrap_or(0);
        m.rss = stats.get("anon").copied().unwrap_or(0);
        m.usage = MemoryData {
            usage: fs::read_u64_or_zero(dir, "memory.current")?,
            max_usage: fs::read_u64_or_zero(dir, "memory.peak")?,
            failcnt: events.get("max").copied().unwrap_or(0),
            limit: fs::read_u64_or_zero(dir, "memory.max")?,
        };
        m.swap = MemoryData {
            usage: fs::read_u64_or_zero(dir, "memory.swap.current")?,
            max_usage: fs::read_u64_or_zero(dir, "memory.swap.peak")?,
            failcnt: fs::read_keyed(dir, "memory.swap.events")?
                .get("max")
                .copied()
                .unwrap_or(0),
            limit: fs::read_u64_or_zero(dir, "memory.swap.max")?,
        };
        m.kernel.usage = stats.get("kernel").copied().unwrap_or(0);
        m.use_hierarchy = true;
        m.stats = stats;

        s.pids.current = fs::read_u64_or_zero(dir, "pids.current")?;
        s.pids.limit = fs::read_u64_or_zero(dir, "pids.max")?;

        if let Some(text) = fs::read_opt(dir, "io.stat")? {
            let (bytes, ios) = parse_io_stat_v2(&text);
            s.blkio.io_service_bytes_recursive = bytes;
            s.blkio.io_serviced_recursive = ios;
        }

        for size in fs::hugetlb_sizes(dir, "current") {
            let usage = fs::read_u64_or_zero(dir, &format!("hugetlb.{size}.current"))?;
            let failcnt = fs::read_keyed(dir, &format!("hugetlb.{size}.events"))?
                .get("max")
                .copied()
                .unwrap_or(0);
            s.hugetlb.insert(
                size,
                HugetlbStats {
                    usage,
                    max_usage: 0,
                    failcnt,
                },
            );
        }
        Ok(s)
    }
}
