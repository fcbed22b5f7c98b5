//! Writing OCI `LinuxResources` to cgroup v2 files.

use std::collections::HashMap;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::convert::{
    blkio_weight_to_io_weight, dev_pair, limit_str, opt_limit, pids_str, rdma_lines, shares_to_weight, swap_v2,
};
use super::error::{Error, Result};
use super::fs;
use super::v2::V2Manager;

impl V2Manager {
    /// Writes every resource in `r`, then the `unified` key/values. Returns notes about settings v2
    /// cannot express and that were ignored (swappiness, kernel memory, disableOOMKiller, network).
    /// `devices: Some(list)` replaces the device program (an empty list denies every device).
    pub fn apply(&self, r: &LinuxResources) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if let Some(u) = r.unified() {
            check_unified_keys(u)?;
        }
        let enabled = self.controllers()?;
        if let Some(d) = r.devices() {
            self.update_devices(d)?;
        }
        if let Some(c) = r.cpu() {
            self.apply_cpu(c, &enabled)?;
        }
        if let Some(m) = r.memory() {
            self.apply_memory(m, &enabled, &mut notes)?;
        }
        if let Some(limit) = r.pids().and_then(|p| pids_str(p.limit())) {
            self.need(&enabled, "pids", "pids.limit")?;
            fs::write(self.path(), "pids.max", &limit)?;
        }
        if let Some(b) = r.block_io() {
            self.apply_io(b, &enabled, &mut notes)?;
        }
        if let Some(h) = r.hugepage_limits() {
            self.apply_hugetlb(h, &enabled)?;
        }
        if r.network()
            .as_ref()
            .is_some_and(|n| n.class_id().is_some() || n.priorities().is_some())
        {
            notes.push("network.classID/priorities ignored: cgroup v2 has no net_cls/net_prio".into());
        }
        if let Some(rdma) = r.rdma() {
            for line in rdma_lines(rdma)? {
                self.need(&enabled, "rdma", "rdma")?;
                fs::write(self.path(), "rdma.max", &line)?;
            }
        }
        if let Some(u) = r.unified() {
            self.apply_unified(u, &enabled)?;
        }
        Ok(notes)
    }

    fn apply_cpu(&self, c: &LinuxCpu, enabled: &[String]) -> Result<()> {
        if c.realtime_runtime().is_some_and(|v| v != 0) || c.realtime_period().is_some_and(|v| v != 0) {
            return Err(Error::Unsupported {
                what: "cpu.realtimeRuntime/realtimePeriod".into(),
                version: "v2",
            });
        }
        for (file, value) in [("cpuset.cpus", c.cpus()), ("cpuset.mems", c.mems())] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                self.need(enabled, "cpuset", file)?;
                fs::write(self.path(), file, v)?;
            }
        }
        let dir = self.path();
        let weight = shares_to_weight(c.shares().unwrap_or(0));
        let quota = opt_limit("cpu.quota", c.quota(), "max")?;
        let period = c.period().filter(|&p| p != 0);
        if weight == 0 && quota.is_none() && period.is_none() && c.burst().is_none() && c.idle().is_none() {
            return Ok(());
        }
        self.need(enabled, "cpu", "cpu")?;
        if weight != 0 {
            fs::write(dir, "cpu.weight", &weight.to_string())?;
        }
        if quota.is_some() || period.is_some() {
            // cpu.max is "<quota> <period>"; keep the current quota when only the period changes.
            let quota = match quota {
                Some(q) => q,
                None => fs::read_trim(dir, "cpu.max")?
                    .split_whitespace()
                    .next()
                    .unwrap_or("max")
                    .to_string(),
            };
            let line = period.map_or(quota.clone(), |p| format!("{quota} {p}"));
            fs::write(dir, "cpu.max", &line)?;
        }
        if let Some(b) = c.burst() {
            fs::write(dir, "cpu.max.burst", &b.to_string())?;
        }
        if let Some(i) = c.idle() {
            fs::write(dir, "cpu.idle", &i.to_string())?;
        }
        Ok(())
    }

    fn apply_memory(&self, m: &LinuxMemory, enabled: &[String], notes: &mut Vec<String>) -> Result<()> {
        let limit = opt_limit("memory.limit", m.limit(), "max")?;
        let swap = swap_v2(m.swap(), m.limit())?;
        let low = opt_limit("memory.reservation", m.reservation(), "max")?;
        if m.swappiness().is_some() {
            notes.push("memory.swappiness ignored: cgroup v2 has no per-cgroup swappiness".into());
        }
        if m.kernel().is_some_and(|k| k != 0) || m.kernel_tcp().is_some_and(|k| k != 0) {
            notes.push("memory.kernel/kernelTCP ignored: kernel memory is part of memory.max on cgroup v2".into());
        }
        if m.disable_oom_killer() == Some(true) {
            notes.push("memory.disableOOMKiller ignored: cgroup v2 cannot disable the OOM killer".into());
        }
        if limit.is_none() && swap.is_none() && low.is_none() {
            return Ok(());
        }
        self.need(enabled, "memory", "memory")?;
        let dir = self.path();
        if m.check_before_update() == Some(true) {
            if let Some(l) = m.limit().filter(|&l| l > 0) {
                let usage = fs::read_u64(dir, "memory.current")?;
                if usage > l as u64 {
                    return Err(Error::invalid(
                        "memory.limit",
                        l,
                        &format!("below the current usage {usage}"),
                    ));
                }
            }
        }
        if let Some(s) = &swap {
            match fs::write(dir, "memory.swap.max", s) {
                // Without swap accounting there is nothing to limit: "max" and "0" are no-ops then.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && (s == "max" || s == "0") => {}
                other => other?,
            }
        }
        if let Some(l) = &limit {
            fs::write(dir, "memory.max", l)?;
        }
        if let Some(l) = &low {
            fs::write(dir, "memory.low", l)?;
        }
        Ok(())
    }

    fn apply_io(&self, b: &LinuxBlockIo, enabled: &[String], notes: &mut Vec<String>) -> Result<()> {
        let throttles = [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ];
        let weight = b.weight().filter(|&w| w != 0);
        let devs = b.weight_device().as_deref().unwrap_or_default();
        let any = weight.is_some()
            || devs.iter().any(|d| d.weight().is_some_and(|w| w != 0))
            || throttles.iter().any(|(_, v)| v.as_ref().is_some_and(|v| !v.is_empty()));
        if b.leaf_weight().is_some_and(|w| w != 0) || devs.iter().any(|d| d.leaf_weight().is_some_and(|w| w != 0)) {
            notes.push("blockIO leafWeight ignored: cgroup v2 has no leaf weights".into());
        }
        if !any {
            return Ok(());
        }
        self.need(enabled, "io", "blockIO")?;
        let dir = self.path();
        // BFQ takes the v1 weight scale as is; io.weight (iocost) needs the conversion.
        let bfq = fs::exists(dir, "io.bfq.weight");
        let (file, conv): (&str, fn(u64) -> u64) = if bfq {
            ("io.bfq.weight", |w| w)
        } else {
            ("io.weight", blkio_weight_to_io_weight)
        };
        if let Some(w) = weight {
            let line = if bfq {
                conv(w.into()).to_string()
            } else {
                format!("default {}", conv(w.into()))
            };
            fs::write(dir, file, &line)?;
        }
        for d in devs {
            if let Some(w) = d.weight().filter(|&w| w != 0) {
                let dev = dev_pair("blockIO.weightDevice", d.major(), d.minor())?;
                fs::write(dir, file, &format!("{dev} {}", conv(w.into())))?;
            }
        }
        for (key, list) in throttles {
            for t in list.iter().flatten() {
                let dev = dev_pair("blockIO.throttle", t.major(), t.minor())?;
                let rate = if t.rate() == 0 {
                    "max".to_string()
                } else {
                    t.rate().to_string()
                };
                fs::write(dir, "io.max", &format!("{dev} {key}={rate}"))?;
            }
        }
        Ok(())
    }

    fn apply_hugetlb(&self, limits: &[LinuxHugepageLimit], enabled: &[String]) -> Result<()> {
        for l in limits {
            fs::check_page_size(l.page_size())?;
            let Some(v) = limit_str("hugepageLimits.limit", l.limit(), "max")? else {
                continue;
            };
            self.need(enabled, "hugetlb", "hugepageLimits")?;
            let file = format!("hugetlb.{}.max", l.page_size());
            if !fs::exists(self.path(), &file) {
                return Err(Error::invalid(
                    "hugepageLimits.pageSize",
                    l.page_size(),
                    "page size not supported by the kernel",
                ));
            }
            fs::write(self.path(), &file, &v)?;
            let rsvd = format!("hugetlb.{}.rsvd.max", l.page_size());
            if fs::exists(self.path(), &rsvd) {
                fs::write(self.path(), &rsvd, &v)?;
            }
        }
        Ok(())
    }

    fn apply_unified(&self, u: &HashMap<String, String>, enabled: &[String]) -> Result<()> {
        let mut keys: Vec<&String> = u.keys().collect();
        keys.sort();
        for k in keys {
            if !fs::exists(self.path(), k) {
                let controller = k.split('.').next().unwrap_or_default();
                if controller != "cgroup" {
                    self.need(enabled, controller, &format!("unified {k}"))?;
                }
            }
            fs::write(self.path(), k, &u[k])?;
        }
        Ok(())
    }
}

/// Unified keys must be plain file names of the form "<controller>.<name>".
fn check_unified_keys(u: &HashMap<String, String>) -> Result<()> {
    for k in u.keys() {
        let plain = !k.is_empty() && !k.contains('/') && !k.starts_with('.') && k.contains('.') && k != "..";
        if !plain {
            return Err(Error::invalid(
                "linux.resources.unified key",
                k,
                "must be a cgroup file name like memory.high",
            ));
        }
        if k == "cgroup.procs" || k == "cgroup.threads" || k == "cgroup.subtree_control" {
            return Err(Error::invalid(
                "linux.resources.unified key",
                k,
                "this file is managed by the runtime",
            ));
        }
    }
    Ok(())
}
