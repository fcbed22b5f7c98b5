//! `StatsContainer`: rustjail's cgroup statistics in Kata's message types, plus
//! the sandbox's network interface counters from /proc/net/dev.

use protocols::agent as pb;
use rustjail::cgroups as cg;

fn memory_data(d: &cg::MemoryData) -> pb::MemoryData {
    pb::MemoryData {
        usage: d.usage,
        max_usage: d.max_usage,
        failcnt: d.failcnt,
        limit: d.limit,
        ..Default::default()
    }
}

fn blkio(entries: &[cg::BlkioEntry]) -> Vec<pb::BlkioStatsEntry> {
    entries
        .iter()
        .map(|e| pb::BlkioStatsEntry {
            major: e.major,
            minor: e.minor,
            op: e.op.clone(),
            value: e.value,
            ..Default::default()
        })
        .collect()
}

/// rustjail's statistics as Kata's `CgroupStats`.
pub fn cgroup_stats(s: &cg::Stats) -> pb::CgroupStats {
    let mut out = pb::CgroupStats::new();
    out.cpu_stats = protobuf::MessageField::some(pb::CpuStats {
        cpu_usage: protobuf::MessageField::some(pb::CpuUsage {
            total_usage: s.cpu.usage.total,
            percpu_usage: s.cpu.usage.per_cpu.clone(),
            usage_in_kernelmode: s.cpu.usage.kernel,
            usage_in_usermode: s.cpu.usage.user,
            ..Default::default()
        }),
        throttling_data: protobuf::MessageField::some(pb::ThrottlingData {
            periods: s.cpu.throttling.periods,
            throttled_periods: s.cpu.throttling.throttled_periods,
            throttled_time: s.cpu.throttling.throttled_time,
            ..Default::default()
        }),
        ..Default::default()
    });
    out.memory_stats = protobuf::MessageField::some(pb::MemoryStats {
        cache: s.memory.cache,
        usage: protobuf::MessageField::some(memory_data(&s.memory.usage)),
        swap_usage: protobuf::MessageField::some(memory_data(&s.memory.swap)),
        kernel_usage: protobuf::MessageField::some(memory_data(&s.memory.kernel)),
        use_hierarchy: s.memory.use_hierarchy,
        stats: s.memory.stats.clone().into_iter().collect(),
        ..Default::default()
    });
    out.pids_stats = protobuf::MessageField::some(pb::PidsStats {
        current: s.pids.current,
        limit: s.pids.limit,
        ..Default::default()
    });
    out.blkio_stats = protobuf::MessageField::some(pb::BlkioStats {
        io_service_bytes_recursive: blkio(&s.blkio.io_service_bytes_recursive),
        io_serviced_recursive: blkio(&s.blkio.io_serviced_recursive),
        ..Default::default()
    });
    out.hugetlb_stats = s
        .hugetlb
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                pb::HugetlbStats {
                    usage: v.usage,
                    max_usage: v.max_usage,
                    failcnt: v.failcnt,
                    ..Default::default()
                },
            )
        })
        .collect();
    out
}

/// Interface counters from the text of /proc/net/dev (the sandbox's network
/// namespace is the agent's: the VM's).
pub fn network_stats(proc_net_dev: &str) -> Vec<pb::NetworkStats> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if v.len() < 12 {
                return None;
            }
            Some(pb::NetworkStats {
                name: name.trim().to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev_columns() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo: 1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
eth0: 5000      50    1    2    0     0          0         0     7000      70    3    4    0     0       0          0\n";
        let s = network_stats(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, "eth0");
        assert_eq!(
            (s[1].rx_bytes, s[1].rx_packets, s[1].rx_errors, s[1].rx_dropped),
            (5000, 50, 1, 2)
        );
        assert_eq!(
            (s[1].tx_bytes, s[1].tx_packets, s[1].tx_errors, s[1].tx_dropped),
            (7000, 70, 3, 4)
        );
    }
}
