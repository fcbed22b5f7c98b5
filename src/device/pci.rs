//! PCI paths (virtio-blk): the host names a device by the slots leading to it
//! from the root complex, `bb/dd` in hex, one element a bridge level (Kata's
//! format; an element may carry a function, `dd.f`). The agent resolves the
//! bridges' secondary buses from sysfs and waits for a block device under
//! the resulting sysfs directory.

use std::fmt;
use std::path::Path;

use super::uevent::Uevent;
use super::DeviceError;

/// The root complex the paths start from.
const ROOT_BUS: &str = "0000:00";

/// One hop: slot (0..=0x1f) and function (0..=7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotFn {
    /// Device slot.
    pub slot: u8,
    /// Function.
    pub func: u8,
}

/// A PCI path from the root complex to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciPath(pub Vec<SlotFn>);

impl PciPath {
    /// Parses `bb/dd[.f]` (hex slots, at most 0x1f; functions 0-7).
    pub fn parse(s: &str) -> Result<PciPath, DeviceError> {
        let bad = |why: String| DeviceError::BadAddress {
            kind: "pci",
            addr: s.to_string(),
            why,
        };
        if s.is_empty() {
            return Err(bad("empty PCI path".into()));
        }
        let mut hops = Vec::new();
        for el in s.split('/') {
            let (slot, func) = match el.split_once('.') {
                Some((a, b)) => (a, b),
                None => (el, "0"),
            };
            let hex = |x: &str| !x.is_empty() && x.len() <= 2 && x.bytes().all(|c| c.is_ascii_hexdigit());
            if !hex(slot) || !hex(func) {
                return Err(bad(format!("element {el:?} is not a hex slot[.function]")));
            }
            let slot = u8::from_str_radix(slot, 16).expect("checked hex");
            let func = u8::from_str_radix(func, 16).expect("checked hex");
            if slot > 0x1f || func > 7 {
                return Err(bad(format!("element {el:?} out of range (slot <= 1f, function <= 7)")));
            }
            hops.push(SlotFn { slot, func });
        }
        Ok(PciPath(hops))
    }

    /// The device's directory relative to the sysfs root (`/devices/pci0000:00/0000:00:02.0/0000:01:03.0`),
    /// reading each bridge's secondary bus from `<sysfs>/devices/.../<bridge>/pci_bus/`.
    pub fn sysfs_dir(&self, sysfs: &Path) -> Result<String, DeviceError> {
        let mut rel = format!("/devices/pci{ROOT_BUS}");
        let mut bus = ROOT_BUS.to_string();
        for (i, hop) in self.0.iter().enumerate() {
            rel.push_str(&format!("/{bus}:{:02x}.{:x}", hop.slot, hop.func));
            if i + 1 == self.0.len() {
                break;
            }
            let dir = sysfs.join(rel.trim_start_matches('/')).join("pci_bus");
            let mut buses: Vec<String> = std::fs::read_dir(&dir)
                .map_err(|e| DeviceError::io("readdir (PCI bridge's secondary bus)", &dir, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            buses.sort();
            bus = match buses.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(DeviceError::BadAddress {
                        kind: "pci",
                        addr: self.to_string(),
                        why: format!("{} holds {} buses, want exactly one", dir.display(), buses.len()),
                    })
                }
            };
        }
        Ok(rel)
    }
}

impl fmt::Display for PciPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{:02x}", h.slot)?;
            if h.func != 0 {
                write!(f, ".{:x}", h.func)?;
            }
        }
        Ok(())
    }
}

/// Whether a block uevent is a whole disk somewhere under the PCI device at `dir`.
pub fn under_device(dir: &str, ev: &Uevent) -> bool {
    if ev.subsystem != "block" || ev.devname.is_empty() || ev.action == "remove" {
        return false;
    }
    let Some(rest) = ev.devpath.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    // Below the PCI function only virtio/host nodes, never another PCI function.
    match rest.rsplit_once("/block/") {
        Some((mid, name)) => !name.contains('/') && !mid.split('/').any(|c| c.contains(':') && c.contains('.')),
        None => rest.strip_prefix("block/").is_some_and(|n| !n.contains('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p = PciPath::parse("02/1f.3").unwrap();
        assert_eq!(p.0, vec![SlotFn { slot: 2, func: 0 }, SlotFn { slot: 0x1f, func: 3 }]);
        assert_eq!(p.to_string(), "02/1f.3");
        for bad in ["", "/", "02/", "20", "1g", "02.8", "123", "02//03"] {
            assert!(PciPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// A fake sysfs: root bridges at 00:02.0 (→ bus 01) and 00:03.0 (→ bus 05),
    /// and a bridge at 01:04.0 (→ bus 02).
    fn fake_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let d = |p: &str| std::fs::create_dir_all(t.path().join(p)).unwrap();
        d("devices/pci0000:00/0000:00:02.0/pci_bus/0000:01");
        d("devices/pci0000:00/0000:00:03.0/pci_bus/0000:05");
        d("devices/pci0000:00/0000:00:02.0/0000:01:04.0/pci_bus/0000:02");
        t
    }

    #[test]
    fn resolves_through_bridges() {
        let t = fake_tree();
        let s = t.path();
        assert_eq!(
            PciPath::parse("05").unwrap().sysfs_dir(s).unwrap(),
            "/devices/pci0000:00/0000:00:05.0"
        );
        assert_eq!(
            PciPath::parse("02/01").unwrap().sysfs_dir(s).unwrap(),
            "/devices/pci0000:00/0000:00:02.0/0000:01:01.0"
        );
        assert_eq!(
            PciPath::parse("03/00.2").unwrap().sysfs_dir(s).unwrap(),
            "/devices/pci0000:00/0000:00:03.0/0000:05:00.2"
        );
        assert_eq!(
            PciPath::parse("02/04/1e").unwrap().sysfs_dir(s).unwrap(),
            "/devices/pci0000:00/0000:00:02.0/0000:01:04.0/0000:02:1e.0"
        );
        let e = PciPath::parse("07/01").unwrap().sysfs_dir(s).unwrap_err().to_string();
        assert!(e.contains("0000:00:07.0/pci_bus"), "{e}");
    }

    #[test]
    fn matches_disks_under_the_device_only() {
        let dir = "/devices/pci0000:00/0000:00:02.0/0000:01:01.0";
        let ev = |p: &str| Uevent {
            action: "add".into(),
            subsystem: "block".into(),
            devname: "vda".into(),
            devpath: p.into(),
            ..Default::default()
        };
        assert!(under_device(dir, &ev(&format!("{dir}/virtio3/block/vda"))));
        assert!(!under_device(dir, &ev(&format!("{dir}/virtio3/block/vda/vda1"))));
        assert!(
            !under_device(dir, &ev(&format!("{dir}0/virtio3/block/vda"))),
            "slot 10 is not slot 1"
        );
        assert!(!under_device(
            dir,
            &ev(&format!("{dir}/0000:02:01.0/virtio3/block/vda"))
        ));
        assert!(!under_device(
            dir,
            &ev("/devices/pci0000:00/0000:00:05.0/virtio3/block/vda")
        ));
    }
}
