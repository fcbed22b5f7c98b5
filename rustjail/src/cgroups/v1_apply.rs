//! Writing OCI `LinuxResources` to cgroup v1 files.

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxNetwork, LinuxResources};

use super::convert::{dev_pair, limit_str, opt_limit, pids_str, rdma_lines};
use super::error::{Error, Result};
use super::fs;
use super::v1::V1Manager;

impl V1Manager {
    /// Writes every resource in `r`. Returns notes about settings that were ignored (e.g. kernel
    /// memory limits). `unified` is refused: it only exists on cgroup v2. `devices: Some(list)`
    /// replaces the device rules (an empty list denies every device); pass `None` to keep them.
    pub fn apply(&self, r: &LinuxResources) -> Result<Vec<String>> {
        self.apply_as(r, false)
    }

    /// [`V1Manager::apply`] for a cgroup no process has joined yet: the
    /// device rules are set without reading the current ones
    /// ([`V1Manager::set_devices_unjoined`]).
    pub fn apply_unjoined(&self, r: &LinuxResources) -> Result<Vec<String>> {
        self.apply_as(r, true)
    }

    fn apply_as(&self, r: &LinuxResources, unjoined: bool) -> Result<Vec<String>> {
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(Error::Unsupported {
                what: "linux.resources.unified (cgroup v2 key/value files)".into(),
                version: "v1",
            });
        }
        let mut notes = Vec::new();
        self.make_on_demand(r)?;
        match r.devices() {
            Some(d) if unjoined => self.set_devices_unjoined(d)?,
            Some(d) => self.update_devices(d)?,
            None => {}
        }
        if let Some(c) = r.cpu() {
            self.apply_cpuset(c)?;
            self.apply_cpu(c)?;
        }
        if let Some(m) = r.memory() {
            self.apply_memory(m, &mut notes)?;
        }
        if let Some(limit) = r.pids().and_then(|p| pids_str(p.limit())) {
            fs::write(self.need("pids", "pids.limit")?, "pids.max", &limit)?;
        }
        if let Some(b) = r.block_io() {
            self.apply_blkio(b, &mut notes)?;
        }
        if let Some(h) = r.hugepage_limits() {
            self.apply_hugetlb(h)?;
        }
        if let Some(n) = r.network() {
            self.apply_network(n)?;
        }
        if let Some(rdma) = r.rdma() {
            for line in rdma_lines(rdma)? {
                fs::write(self.need("rdma", "rdma")?, "rdma.max", &line)?;
            }
        }
        Ok(notes)
    }

    fn apply_cpuset(&self, c: &LinuxCpu) -> Result<()> {
        for (file, value) in [("cpuset.cpus", c.cpus()), ("cpuset.mems", c.mems())] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                fs::write(self.need("cpuset", file)?, file, v)?;
            }
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &LinuxCpu) -> Result<()> {
        let shares = c.shares().filter(|&s| s != 0);
        let quota = opt_limit("cpu.quota", c.quota(), "-1")?;
        let period = c.period().filter(|&p| p != 0);
        let rt_runtime = opt_limit("cpu.realtimeRuntime", c.realtime_runtime(), "-1")?;
        let rt_period = c.realtime_period().filter(|&p| p != 0);
        let any = shares.is_some()
            || quota.is_some()
            || period.is_some()
            || rt_runtime.is_some()
            || rt_period.is_some()
            || c.burst().is_some()
            || c.idle().is_some();
        if !any {
            return Ok(());
        }
        let dir = self.need("cpu", "cpu")?;
        if let Some(s) = shares {
            fs::write(dir, "cpu.shares", &s.to_string())?;
        }
        // Real-time bandwidth: period before runtime, so the runtime fits the new period.
        if let Some(p) = rt_period {
            fs::write(dir, "cpu.rt_period_us", &p.to_string())?;
        }
        if let Some(rt) = rt_runtime {
            fs::write(dir, "cpu.rt_runtime_us", &rt)?;
        }
        // A shorter period can be refused (EINVAL) until the quota is lowered: retry it after the quota.
        let mut retry_period = None;
        if let Some(p) = period {
            match fs::write(dir, "cpu.cfs_period_us", &p.to_string()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && quota.is_some() => retry_period = Some(p),
                Err(e) => return Err(e),
            }
        }
        if let Some(q) = &quota {
            fs::write(dir, "cpu.cfs_quota_us", q)?;
            if let Some(p) = retry_period {
                fs::write(dir, "cpu.cfs_period_us", &p.to_string())?;
            }
        }
        if let Some(b) = c.burst() {
            fs::write(dir, "cpu.cfs_burst_us", &b.to_string())?;
        }
        if let Some(i) = c.idle() {
            fs::write(dir, "cpu.idle", &i.to_string())?;
        }
        Ok(())
    }

    fn apply_memory(&self, m: &LinuxMemory, notes: &mut Vec<String>) -> Result<()> {
        let limit = opt_limit("memory.limit", m.limit(), "-1")?;
        let mut swap = opt_limit("memory.swap", m.swap(), "-1")?;
        if limit.as_deref() == Some("-1") && swap.is_none() {
            swap = Some("-1".into());
        }
        let reservation = opt_limit("memory.reservation", m.reservation(), "-1")?;
        if let Some(s) = m.swappiness().filter(|&s| s > 100) {
            return Err(Error::invalid("memory.swappiness", s, "must be between 0 and 100"));
        }
        if m.kernel().is_some_and(|k| k != 0) {
            notes.push("memory.kernel ignored: kernel memory limits are deprecated (as runc)".into());
        }
        let kernel_tcp = opt_limit("memory.kernelTCP", m.kernel_tcp(), "-1")?;
        let any = kernel_tcp.is_some()
            || limit.is_some()
            || swap.is_some()
            || reservation.is_some()
            || m.swappiness().is_some()
            || m.disable_oom_killer() == Some(true);
        if !any {
            return Ok(());
        }
        let dir = self.need("memory", "memory")?;
        if m.check_before_update() == Some(true) {
            if let Some(l) = m.limit().filter(|&l| l > 0) {
                let usage = fs::read_u64(dir, "memory.usage_in_bytes")?;
                if usage > l as u64 {
                    return Err(Error::invalid(
                        "memory.limit",
                        l,
                        &format!("below the current usage {usage}"),
                    ));
                }
            }
        }
        let memsw = "memory.memsw.limit_in_bytes";
        if swap.is_some() && !fs::exists(dir, memsw) {
            if swap.as_deref() != Some("-1") {
                return Err(Error::MissingController {
                    resource: "memory.swap".into(),
                    controller: "memory (swap accounting)".into(),
                    detail: format!("{} is missing; boot with swapaccount=1", dir.join(memsw).display()),
                });
            }
            swap = None;
        }
        // memory.limit must stay <= memsw.limit at every step: raise memsw first when growing.
        let swap_first = match (&limit, &swap) {
            (Some(_), Some(s)) => {
                s == "-1" || fs::read_u64(dir, "memory.limit_in_bytes")? < s.parse::<u64>().unwrap_or(0)
            }
            _ => false,
        };
        if swap_first {
            fs::write(dir, memsw, swap.as_deref().unwrap_or("-1"))?;
        }
        if let Some(l) = &limit {
            fs::write(dir, "memory.limit_in_bytes", l)?;
        }
        if let (false, Some(s)) = (swap_first, &swap) {
            fs::write(dir, memsw, s)?;
        }
        if let Some(r) = &reservation {
            fs::write(dir, "memory.soft_limit_in_bytes", r)?;
        }
        if let Some(s) = m.swappiness() {
            fs::write(dir, "memory.swappiness", &s.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            fs::write(dir, "memory.oom_control", "1")?;
        }
        if let Some(t) = &kernel_tcp {
            // The TCP buffer limit still works on v1 (crun writes it too).
            let file = "memory.kmem.tcp.limit_in_bytes";
            if !fs::exists(dir, file) {
                return Err(Error::MissingController {
                    resource: "memory.kernelTCP".into(),
                    controller: "memory (kmem accounting)".into(),
                    detail: format!("{} is missing", dir.join(file).display()),
                });
            }
            fs::write(dir, file, t)?;
        }
        Ok(())
    }

    fn apply_blkio(&self, b: &LinuxBlockIo, notes: &mut Vec<String>) -> Result<()> {
        let wants_weight =
            b.weight().is_some_and(|w| w != 0) || b.weight_device().as_ref().is_some_and(|v| !v.is_empty());
        let throttles = [
            ("blkio.throttle.read_bps_device", b.throttle_read_bps_device()),
            ("blkio.throttle.write_bps_device", b.throttle_write_bps_device()),
            ("blkio.throttle.read_iops_device", b.throttle_read_iops_device()),
            ("blkio.throttle.write_iops_device", b.throttle_write_iops_device()),
        ];
        let wants_throttle = throttles.iter().any(|(_, v)| v.as_ref().is_some_and(|v| !v.is_empty()));
        let wants_leaf = b.leaf_weight().is_some_and(|w| w != 0);
        if !wants_weight && !wants_throttle && !wants_leaf {
            return Ok(());
        }
        let dir = self.need("blkio", "blockIO")?;
        // CFQ files when present, else BFQ's (kernels >= 5.0 have no CFQ).
        // With neither (no proportional-weight I/O scheduler built in) a
        // weight is refused, as runc refuses it, but saying why.
        let (wfile, wdfile) = if fs::exists(dir, "blkio.weight") {
            ("blkio.weight", "blkio.weight_device")
        } else if !wants_weight || fs::exists(dir, "blkio.bfq.weight") {
            ("blkio.bfq.weight", "blkio.bfq.weight_device")
        } else {
            return Err(Error::MissingController {
                resource: "blockIO.weight".into(),
                controller: "blkio".into(),
                detail: format!(
                    "{} has neither blkio.weight (CFQ) nor blkio.bfq.weight (BFQ): this kernel has no \
                     proportional-weight I/O scheduler",
                    dir.display()
                ),
            });
        };
        if let Some(w) = b.weight().filter(|&w| w != 0) {
            fs::write(dir, wfile, &w.to_string())?;
        }
        let leaf_ok = fs::exists(dir, "blkio.leaf_weight");
        if wants_leaf && !leaf_ok {
            notes.push("blockIO.leafWeight ignored: this kernel has no blkio.leaf_weight (CFQ)".into());
        }
        if let Some(l) = b.leaf_weight().filter(|&l| l != 0 && leaf_ok) {
            fs::write(dir, "blkio.leaf_weight", &l.to_string())?;
        }
        for wd in b.weight_device().iter().flatten() {
            let dev = dev_pair("blockIO.weightDevice", wd.major(), wd.minor())?;
            if let Some(w) = wd.weight().filter(|&w| w != 0) {
                fs::write(dir, wdfile, &format!("{dev} {w}"))?;
            }
            if let Some(l) = wd.leaf_weight().filter(|&l| l != 0) {
                if leaf_ok {
                    fs::write(dir, "blkio.leaf_weight_device", &format!("{dev} {l}"))?;
                } else {
                    notes.push(format!("blockIO.weightDevice {dev} leafWeight ignored: no CFQ"));
                }
            }
        }
        for (file, list) in throttles {
            for t in list.iter().flatten() {
                let dev = dev_pair(file, t.major(), t.minor())?;
                fs::write(dir, file, &format!("{dev} {}", t.rate()))?;
            }
        }
        Ok(())
    }

    fn apply_hugetlb(&self, limits: &[LinuxHugepageLimit]) -> Result<()> {
        for l in limits {
            fs::check_page_size(l.page_size())?;
            let Some(v) = limit_str("hugepageLimits.limit", l.limit(), "-1")? else {
                continue;
            };
            let dir = self.need("hugetlb", "hugepageLimits")?;
            let file = format!("hugetlb.{}.limit_in_bytes", l.page_size());
            if !fs::exists(dir, &file) {
                return Err(Error::invalid(
                    "hugepageLimits.pageSize",
                    l.page_size(),
                    "page size not supported by the kernel",
                ));
            }
            fs::write(dir, &file, &v)?;
            let rsvd = format!("hugetlb.{}.rsvd.limit_in_bytes", l.page_size());
            if fs::exists(dir, &rsvd) {
                fs::write(dir, &rsvd, &v)?;
            }
        }
        Ok(())
    }

    fn apply_network(&self, n: &LinuxNetwork) -> Result<()> {
        if let Some(id) = n.class_id() {
            fs::write(
                self.need("net_cls", "network.classID")?,
                "net_cls.classid",
                &id.to_string(),
            )?;
        }
        for p in n.priorities().iter().flatten() {
            let dir = self.need("net_prio", "network.priorities")?;
            fs::write(dir, "net_prio.ifpriomap", &format!("{} {}", p.name(), p.priority()))?;
        }
        Ok(())
    }
}
