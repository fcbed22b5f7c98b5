//! virtio-scsi: the host names a disk by `SCSI-ID:LUN`. The agent asks every
//! SCSI host to scan that address (`0 <id> <lun>` to `class/scsi_host/*/scan`)
//! and waits for the block device whose sysfs path ends in
//! `/<host>:0:<id>:<lun>/block/<name>`.

use std::path::Path;

use super::uevent::Uevent;
use super::DeviceError;

/// A SCSI target id and LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiAddr {
    /// Target (SCSI id).
    pub target: u32,
    /// Logical unit.
    pub lun: u32,
}

impl ScsiAddr {
    /// Parses `SCSI-ID:LUN`, both decimal (Kata's format, e.g. `0:1`).
    pub fn parse(s: &str) -> Result<ScsiAddr, DeviceError> {
        let bad = |why: &str| DeviceError::BadAddress {
            kind: "scsi",
            addr: s.to_string(),
            why: why.to_string(),
        };
        let (target, lun) = scan_fmt::scan_fmt!(s, "{d}:{d}", u32, u32).map_err(|_| bad("want SCSI-ID:LUN"))?;
        // scan_fmt stops at the last conversion: refuse trailing text and signs.
        if !canonical(s, target, lun) {
            return Err(bad("want SCSI-ID:LUN, decimal"));
        }
        Ok(ScsiAddr { target, lun })
    }

    /// Whether a block uevent is this address's whole disk, on any host, channel 0.
    pub fn matches(&self, ev: &Uevent) -> bool {
        if ev.subsystem != "block" || ev.devname.is_empty() || ev.action == "remove" {
            return false;
        }
        let parts: Vec<&str> = ev.devpath.split('/').collect();
        // .../<h>:<c>:<t>:<l>/block/<name>, and <name> is the last component (not a partition).
        let n = parts.len();
        if n < 3 || parts[n - 2] != "block" {
            return false;
        }
        match scan_fmt::scan_fmt!(parts[n - 3], "{d}:{d}:{d}:{d}", u32, u32, u32, u32) {
            Ok((_host, channel, target, lun)) => channel == 0 && target == self.target && lun == self.lun,
            Err(_) => false,
        }
    }
}

fn canonical(s: &str, target: u32, lun: u32) -> bool {
    let Some((a, b)) = s.split_once(':') else { return false };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    digits(a) && digits(b) && a.parse() == Ok(target) && b.parse() == Ok(lun)
}

/// Asks every SCSI host under `sysfs` to scan `0 <target> <lun>`; returns how
/// many hosts were asked. No host at all is not an error here (the wait times out).
pub fn scan_hosts(sysfs: &Path, addr: ScsiAddr) -> Result<usize, DeviceError> {
    let dir = sysfs.join("class/scsi_host");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(DeviceError::io("readdir", &dir, e)),
    };
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names.sort();
    let line = format!("0 {} {}", addr.target, addr.lun);
    for name in &names {
        let scan = dir.join(name).join("scan");
        std::fs::write(&scan, &line).map_err(|e| DeviceError::io("write", &scan, e))?;
    }
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(devpath: &str) -> Uevent {
        Uevent {
            action: "add".into(),
            subsystem: "block".into(),
            devname: devpath.rsplit('/').next().unwrap().into(),
            devpath: devpath.into(),
            ..Default::default()
        }
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(ScsiAddr::parse("0:1").unwrap(), ScsiAddr { target: 0, lun: 1 });
        assert_eq!(ScsiAddr::parse("12:300").unwrap(), ScsiAddr { target: 12, lun: 300 });
        for bad in ["", "1", "1:", ":1", "a:1", "1:2:3", "1:2x", "-1:2", "1 :2"] {
            let e = ScsiAddr::parse(bad).unwrap_err().to_string();
            assert!(e.contains("scsi") && e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn matches_whole_disk_on_any_host_channel_zero() {
        let a = ScsiAddr { target: 0, lun: 1 };
        let p = "/devices/pci0000:00/0000:00:03.0/virtio1/host2/target2:0:0/2:0:0:1/block/sdb";
        assert!(a.matches(&ev(p)));
        assert!(!a.matches(&ev(&format!("{p}/sdb1"))), "partition");
        assert!(!a.matches(&ev(&p.replace("2:0:0:1", "2:0:0:10"))));
        assert!(!a.matches(&ev(&p.replace("2:0:0:1", "2:1:0:1"))), "channel 1");
        assert!(!a.matches(&ev(&p.replace("2:0:0:1", "2:0:1:1"))));
        let mut scsi = ev(p);
        scsi.subsystem = "scsi".into();
        assert!(!a.matches(&scsi));
        let mut gone = ev(p);
        gone.action = "remove".into();
        assert!(!a.matches(&gone));
    }

    #[test]
    fn scan_writes_every_host() {
        let t = tempfile::tempdir().unwrap();
        for h in ["host0", "host1", "host7"] {
            std::fs::create_dir_all(t.path().join("class/scsi_host").join(h)).unwrap();
        }
        assert_eq!(scan_hosts(t.path(), ScsiAddr { target: 3, lun: 4 }).unwrap(), 3);
        for h in ["host0", "host1", "host7"] {
            let s = std::fs::read_to_string(t.path().join("class/scsi_host").join(h).join("scan")).unwrap();
            assert_eq!(s, "0 3 4");
        }
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(scan_hosts(empty.path(), ScsiAddr { target: 0, lun: 0 }).unwrap(), 0);
    }
}
