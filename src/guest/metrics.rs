//! GetMetrics: the agent's and the guest's statistics in Prometheus' text
//! format, with the metric families (names, help, labels, units) kata-agent
//! exposes, so the shim's scraper and dashboards built for Kata read them:
//!
//! * `kata_agent_scrape_count` (counter), `kata_agent_threads`,
//!   `kata_agent_total_time` (s), `kata_agent_total_vm`/`_total_rss` (bytes),
//!   `kata_agent_proc_status{item}` (/proc/self/status, kB as the kernel gives
//!   them), `kata_agent_io_stat{item}`, `kata_agent_proc_stat{item}` (ticks);
//! * `kata_guest_load{item}`, `kata_guest_tasks{item}`,
//!   `kata_guest_cpu_time{cpu,item}` (ms), `kata_guest_vm_stat{item}`,
//!   `kata_guest_netdev_stat{interface,item}`, `kata_guest_diskstat{disk,item}`,
//!   `kata_guest_meminfo{item}` (bytes; counts for the HugePages_* lines).
//!
//! Kata registers `kata_agent_threads` and never sets it (always 0); pith
//! reports the agent's thread count. A /proc file that cannot be read leaves
//! its family out, as Kata does.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static SCRAPES: AtomicU64 = AtomicU64::new(0);

/// One family: help, type, label names, samples by label values.
#[derive(Debug, Default)]
struct Family {
    help: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    samples: BTreeMap<Vec<String>, f64>,
}

/// Families by name (sorted, as Prometheus' encoders write them).
#[derive(Debug, Default)]
pub struct Registry {
    families: BTreeMap<&'static str, Family>,
}

impl Registry {
    fn family(&mut self, name: &'static str, help: &'static str, labels: &'static [&'static str]) -> &mut Family {
        self.families.entry(name).or_insert_with(|| Family {
            help,
            kind: "gauge",
            labels,
            samples: BTreeMap::new(),
        })
    }

    fn set(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        values: &[&str],
        v: f64,
    ) {
        let f = self.family(name, help, labels);
        f.samples.insert(values.iter().map(|s| s.to_string()).collect(), v);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.families {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for (values, v) in &f.samples {
                out.push_str(name);
                if !f.labels.is_empty() {
                    out.push('{');
                    for (i, (l, val)) in f.labels.iter().zip(values).enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let esc = val.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                        let _ = write!(out, "{l}=\"{esc}\"");
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {v}");
            }
        }
        out
    }
}

/// Where the /proc files are (a fake tree in tests) and what the system says.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The proc root (`/proc`).
    pub proc: PathBuf,
    /// The process to report as the agent (`self`).
    pub process: String,
    /// Clock ticks per second.
    pub ticks: u64,
    /// Page size in bytes.
    pub page_size: u64,
}

impl Default for Sources {
    fn default() -> Self {
        // SAFETY: sysconf with constant names has no preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        Sources {
            proc: PathBuf::from("/proc"),
            process: "self".into(),
            ticks: if ticks > 0 { ticks as u64 } else { 100 },
            page_size: if page > 0 { page as u64 } else { 4096 },
        }
    }
}

impl Sources {
    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.proc.join(rel)).ok()
    }
    fn own(&self, file: &str) -> Option<String> {
        self.read(&Path::new(&self.process).join(file).display().to_string())
    }
}

/// One scrape: counts it and gathers every family.
pub fn gather(src: &Sources) -> String {
    let n = SCRAPES.fetch_add(1, Ordering::Relaxed) + 1;
    let mut r = Registry::default();
    let f = r.family("kata_agent_scrape_count", "Metrics scrape count", &[]);
    f.kind = "counter";
    f.samples.insert(Vec::new(), n as f64);
    agent(&mut r, src);
    guest(&mut r, src);
    r.encode()
}

fn num(s: &str) -> f64 {
    s.parse::<f64>().unwrap_or(0.0)
}

fn agent(r: &mut Registry, src: &Sources) {
    if let Some(stat) = src.own("stat") {
        // Fields after the command (which may hold spaces), from field 3 on.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3).map(|s| num(s)).unwrap_or(0.0);
        let (utime, stime, cutime, cstime) = (field(14), field(15), field(16), field(17));
        r.set("kata_agent_threads", "Agent process threads", &[], &[], field(20));
        r.set(
            "kata_agent_total_time",
            "Agent process total time",
            &[],
            &[],
            (utime + stime) / src.ticks as f64,
        );
        r.set(
            "kata_agent_total_vm",
            "Agent process total VM size",
            &[],
            &[],
            field(23),
        );
        r.set(
            "kata_agent_total_rss",
            "Agent process total RSS size",
            &[],
            &[],
            field(24) * src.page_size as f64,
        );
        for (item, v) in [
            ("utime", utime),
            ("stime", stime),
            ("cutime", cutime),
            ("cstime", cstime),
        ] {
            r.set(
                "kata_agent_proc_stat",
                "Agent process statistics.",
                &["item"],
                &[item],
                v,
            );
        }
    }
    if let Some(io) = src.own("io") {
        for l in io.lines() {
            if let Some((k, v)) = l.split_once(':') {
                r.set(
                    "kata_agent_io_stat",
                    "Agent process IO statistics.",
                    &["item"],
                    &[k.trim()],
                    num(v.trim()),
                );
            }
        }
    }
    if let Some(status) = src.own("status") {
        const ITEMS: &[(&str, &str)] = &[
            ("VmPeak", "vmpeak"),
            ("VmSize", "vmsize"),
            ("VmLck", "vmlck"),
            ("VmPin", "vmpin"),
            ("VmHWM", "vmhwm"),
            ("VmRSS", "vmrss"),
            ("RssAnon", "rssanon"),
            ("RssFile", "rssfile"),
            ("RssShmem", "rssshmem"),
            ("VmData", "vmdata"),
            ("VmStk", "vmstk"),
            ("VmExe", "vmexe"),
            ("VmLib", "vmlib"),
            ("VmPTE", "vmpte"),
            ("VmSwap", "vmswap"),
            ("HugetlbPages", "hugetlbpages"),
            ("voluntary_ctxt_switches", "voluntary_ctxt_switches"),
            ("nonvoluntary_ctxt_switches", "nonvoluntary_ctxt_switches"),
        ];
        let values: BTreeMap<&str, f64> = status
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k, num(v.split_whitespace().next().unwrap_or("0"))))
            .collect();
        for (key, item) in ITEMS {
            let v = values.get(key).copied().unwrap_or(0.0);
            r.set("kata_agent_proc_status", "Agent process status.", &["item"], &[item], v);
        }
    }
}

const MEMINFO: &[(&str, &str)] = &[
    ("MemTotal", "mem_total"),
    ("MemFree", "mem_free"),
    ("MemAvailable", "mem_available"),
    ("Buffers", "buffers"),
    ("Cached", "cached"),
    ("SwapCached", "swap_cached"),
    ("Active", "active"),
    ("Inactive", "inactive"),
    ("Active(anon)", "active_anon"),
    ("Inactive(anon)", "inactive_anon"),
    ("Active(file)", "active_file"),
    ("Inactive(file)", "inactive_file"),
    ("Unevictable", "unevictable"),
    ("Mlocked", "mlocked"),
    ("HighTotal", "high_total"),
    ("HighFree", "high_free"),
    ("LowTotal", "low_total"),
    ("LowFree", "low_free"),
    ("MmapCopy", "mmap_copy"),
    ("SwapTotal", "swap_total"),
    ("SwapFree", "swap_free"),
    ("Dirty", "dirty"),
    ("Writeback", "writeback"),
    ("AnonPages", "anon_pages"),
    ("Mapped", "mapped"),
    ("Shmem", "shmem"),
    ("Slab", "slab"),
    ("SReclaimable", "s_reclaimable"),
    ("SUnreclaim", "s_unreclaim"),
    ("KernelStack", "kernel_stack"),
    ("PageTables", "page_tables"),
    ("Quicklists", "quicklists"),
    ("NFS_Unstable", "nfs_unstable"),
    ("Bounce", "bounce"),
    ("WritebackTmp", "writeback_tmp"),
    ("CommitLimit", "commit_limit"),
    ("Committed_AS", "committed_as"),
    ("VmallocTotal", "vmalloc_total"),
    ("VmallocUsed", "vmalloc_used"),
    ("VmallocChunk", "vmalloc_chunk"),
    ("HardwareCorrupted", "hardware_corrupted"),
    ("AnonHugePages", "anon_hugepages"),
    ("ShmemHugePages", "shmem_hugepages"),
    ("ShmemPmdMapped", "shmem_pmd_mapped"),
    ("CmaTotal", "cma_total"),
    ("CmaFree", "cma_free"),
    ("HugePages_Total", "hugepages_total"),
    ("HugePages_Free", "hugepages_free"),
    ("HugePages_Rsvd", "hugepages_rsvd"),
    ("HugePages_Surp", "hugepages_surp"),
    ("Hugepagesize", "hugepagesize"),
    ("DirectMap4k", "direct_map_4k"),
    ("DirectMap4M", "direct_map_4M"),
    ("DirectMap2M", "direct_map_2M"),
    ("DirectMap1G", "direct_map_1G"),
    ("Hugetlb", "hugetlb"),
    ("Percpu", "per_cpu"),
    ("KReclaimable", "k_reclaimable"),
];

const CPU_ITEMS: &[&str] = &[
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

const NET_ITEMS: &[&str] = &[
    "recv_bytes",
    "recv_packets",
    "recv_errs",
    "recv_drop",
    "recv_fifo",
    "recv_frame",
    "recv_compressed",
    "recv_multicast",
    "sent_bytes",
    "sent_packets",
    "sent_errs",
    "sent_drop",
    "sent_fifo",
    "sent_colls",
    "sent_carrier",
    "sent_compressed",
];

const DISK_ITEMS: &[&str] = &[
    "reads",
    "merged",
    "sectors_read",
    "time_reading",
    "writes",
    "writes_merged",
    "sectors_written",
    "time_writing",
    "in_progress",
    "time_in_progress",
    "weighted_time_in_progress",
    "discards",
    "discards_merged",
    "sectors_discarded",
    "time_discarding",
    "flushes",
    "time_flushing",
];

fn guest(r: &mut Registry, src: &Sources) {
    if let Some(l) = src.read("loadavg") {
        let f: Vec<&str> = l.split_whitespace().collect();
        for (i, item) in ["load1", "load5", "load15"].iter().enumerate() {
            r.set(
                "kata_guest_load",
                "Guest system load.",
                &["item"],
                &[item],
                num(f.get(i).unwrap_or(&"0")),
            );
        }
        let (cur, max) = f.get(3).and_then(|t| t.split_once('/')).unwrap_or(("0", "0"));
        r.set("kata_guest_tasks", "Guest system load.", &["item"], &["cur"], num(cur));
        r.set("kata_guest_tasks", "Guest system load.", &["item"], &["max"], num(max));
    }
    if let Some(d) = src.read("diskstats") {
        for l in d.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let Some(name) = f.get(2) else { continue };
            for (i, item) in DISK_ITEMS.iter().enumerate() {
                let v = num(f.get(3 + i).unwrap_or(&"0"));
                r.set(
                    "kata_guest_diskstat",
                    "Disks statistics in system.",
                    &["disk", "item"],
                    &[name, item],
                    v,
                );
            }
        }
    }
    if let Some(v) = src.read("vmstat") {
        for l in v.lines() {
            if let Some((k, val)) = l.split_once(' ') {
                r.set(
                    "kata_guest_vm_stat",
                    "Guest virtual memory statistics.",
                    &["item"],
                    &[k],
                    num(val.trim()),
                );
            }
        }
    }
    if let Some(stat) = src.read("stat") {
        let ms = 1000.0 / src.ticks as f64;
        for l in stat.lines().filter(|l| l.starts_with("cpu")) {
            let f: Vec<&str> = l.split_whitespace().collect();
            let cpu = match f[0].strip_prefix("cpu") {
                Some("") => "total",
                Some(n) => n,
                None => continue,
            };
            for (i, item) in CPU_ITEMS.iter().enumerate() {
                let v = num(f.get(1 + i).unwrap_or(&"0")) * ms;
                r.set(
                    "kata_guest_cpu_time",
                    "Guest CPU statistics.",
                    &["cpu", "item"],
                    &[cpu, item],
                    v,
                );
            }
        }
    }
    if let Some(net) = src.read("net/dev") {
        for l in net.lines().skip(2) {
            let Some((name, rest)) = l.split_once(':') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            for (i, item) in NET_ITEMS.iter().enumerate() {
                let v = num(f.get(i).unwrap_or(&"0"));
                r.set(
                    "kata_guest_netdev_stat",
                    "Guest net devices statistics.",
                    &["interface", "item"],
                    &[name.trim(), item],
                    v,
                );
            }
        }
    }
    if let Some(m) = src.read("meminfo") {
        let values: BTreeMap<&str, f64> = m
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| {
                let mut it = v.split_whitespace();
                let n = num(it.next().unwrap_or("0"));
                (k, if it.next() == Some("kB") { n * 1024.0 } else { n })
            })
            .collect();
        for (key, item) in MEMINFO {
            let v = values.get(key).copied().unwrap_or(0.0);
            r.set(
                "kata_guest_meminfo",
                "Statistics about memory usage in the system.",
                &["item"],
                &[item],
                v,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> (tempfile::TempDir, Sources) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("42")).unwrap();
        std::fs::create_dir_all(p.join("net")).unwrap();
        // comm with a space and a parenthesis, as the kernel allows.
        let mut stat = String::from("42 (pith agent) S");
        for i in 4..=24 {
            let v = match i {
                14 => 300, // utime
                15 => 100, // stime
                20 => 7,   // threads
                23 => 123_456_789,
                24 => 1000, // rss pages
                _ => 0,
            };
            stat.push_str(&format!(" {v}"));
        }
        std::fs::write(p.join("42/stat"), stat + "\n").unwrap();
        std::fs::write(p.join("42/io"), "rchar: 10\nwchar: 20\nsyscr: 1\n").unwrap();
        std::fs::write(
            p.join("42/status"),
            "Name:\tpith\nVmRSS:\t  4000 kB\nvoluntary_ctxt_switches:\t9\n",
        )
        .unwrap();
        std::fs::write(p.join("loadavg"), "0.50 0.25 0.10 3/210 999\n").unwrap();
        std::fs::write(
            p.join("stat"),
            "cpu  100 0 50 1000 0 0 0 0 0 0\ncpu0 100 0 50 1000 0 0 0 0 0 0\nintr 1\n",
        )
        .unwrap();
        std::fs::write(p.join("vmstat"), "nr_free_pages 1234\npgfault 99\n").unwrap();
        std::fs::write(
            p.join("diskstats"),
            "   7       0 loop0 5 0 40 1 0 0 0 0 0 4 1 0 0 0 0 0 0\n",
        )
        .unwrap();
        std::fs::write(
            p.join("net/dev"),
            "Inter-|   Receive\n face |bytes\n  eth0: 5000 50 1 2 0 0 0 0 7000 70 3 4 0 0 0 0\n",
        )
        .unwrap();
        std::fs::write(p.join("meminfo"), "MemTotal:  2048 kB\nHugePages_Total:  4\n").unwrap();
        let s = Sources {
            proc: p.to_path_buf(),
            process: "42".into(),
            ticks: 100,
            page_size: 4096,
        };
        (d, s)
    }

    #[test]
    fn kata_families_from_proc() {
        let (_d, s) = fake();
        let text = gather(&s);
        for line in [
            "# TYPE kata_agent_scrape_count counter",
            "kata_agent_threads 7",
            "kata_agent_total_time 4",
            "kata_agent_total_vm 123456789",
            "kata_agent_total_rss 4096000",
            "kata_agent_proc_stat{item=\"utime\"} 300",
            "kata_agent_io_stat{item=\"wchar\"} 20",
            "kata_agent_proc_status{item=\"vmrss\"} 4000",
            "kata_agent_proc_status{item=\"vmswap\"} 0",
            "kata_agent_proc_status{item=\"voluntary_ctxt_switches\"} 9",
            "kata_guest_load{item=\"load1\"} 0.5",
            "kata_guest_tasks{item=\"max\"} 210",
            "kata_guest_cpu_time{cpu=\"total\",item=\"user\"} 1000",
            "kata_guest_cpu_time{cpu=\"0\",item=\"idle\"} 10000",
            "kata_guest_vm_stat{item=\"pgfault\"} 99",
            "kata_guest_diskstat{disk=\"loop0\",item=\"sectors_read\"} 40",
            "kata_guest_netdev_stat{interface=\"eth0\",item=\"sent_drop\"} 4",
            "kata_guest_meminfo{item=\"mem_total\"} 2097152",
            "kata_guest_meminfo{item=\"hugepages_total\"} 4",
            "kata_guest_meminfo{item=\"k_reclaimable\"} 0",
            "# HELP kata_guest_meminfo Statistics about memory usage in the system.",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Families in name order, each announced once.
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 15);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = Registry::default();
        r.set("m", "h", &["l"], &["a\"b\\c\nd"], 1.0);
        assert!(r.encode().contains("m{l=\"a\\\"b\\\\c\\nd\"} 1\n"));
    }
}
