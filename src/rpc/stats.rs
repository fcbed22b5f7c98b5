//! `StatsContainer`: the sandbox's container statistics (Kata's values, see
//! `sandbox::stats`) in Kata's message types.

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
pub(crate) fn cgroup_stats(s: &cg::Stats) -> pb::CgroupStats {
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
