//! Network interfaces of PCI devices (virtio-net NICs the host hot-plugs, named
//! by PCI path in UpdateInterface's `devicePath`): the `net` uevent under the
//! device, or the interface already in `/sys/class/net`.

use std::path::Path;

use super::uevent::Uevent;

/// Whether `ev` adds a network interface below the PCI device at `dir`
/// (`/devices/pci0000:00/0000:00:05.0/virtio2/net/eth0` for `.../0000:00:05.0`).
pub fn is_nic_under(dir: &str, ev: &Uevent) -> bool {
    if ev.subsystem != "net" || ev.action != "add" {
        return false;
    }
    let Some(rest) = ev.devpath.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    // Only virtio/net nodes below the function, never a further PCI function.
    match rest.rsplit_once("net/") {
        Some((mid, name)) => !name.is_empty() && !name.contains('/') && !mid.split('/').any(|c| c.contains(':')),
        None => false,
    }
}

/// The interface name of a `net` event (the last element of its path).
pub fn ifname(ev: &Uevent) -> String {
    ev.devpath.rsplit('/').next().unwrap_or_default().to_string()
}

/// An interface under `dir` that `<sysfs>/class/net` already lists (a NIC
/// plugged before the listener started), as the event its arrival would have sent.
pub fn probe(sysfs: &Path, dir: &str) -> Option<Uevent> {
    let class = sysfs.join("class/net");
    for entry in std::fs::read_dir(&class).ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        // `../../devices/...` relative to class/net.
        let t = target.to_string_lossy();
        let Some(idx) = t.find("/devices/") else { continue };
        let ev = Uevent {
            action: "add".into(),
            subsystem: "net".into(),
            devpath: t[idx..].to_string(),
            ..Default::default()
        };
        if is_nic_under(dir, &ev) {
            return Some(ev);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::pci::PciPath;
    use crate::device::uevent::Hub;
    use crate::device::{DeviceError, Devices};
    use std::sync::Arc;
    use std::time::Duration;

    const DIR: &str = "/devices/pci0000:00/0000:00:02.0/0000:01:03.0";

    fn ev(action: &str, subsystem: &str, devpath: &str) -> Uevent {
        Uevent {
            action: action.into(),
            subsystem: subsystem.into(),
            devpath: devpath.into(),
            ..Default::default()
        }
    }

    #[test]
    fn matches_the_nic_of_the_device_only() {
        assert!(is_nic_under(DIR, &ev("add", "net", &format!("{DIR}/virtio3/net/eth1"))));
        assert_eq!(ifname(&ev("add", "net", &format!("{DIR}/virtio3/net/eth1"))), "eth1");
        assert!(!is_nic_under(
            DIR,
            &ev("remove", "net", &format!("{DIR}/virtio3/net/eth1"))
        ));
        assert!(!is_nic_under(
            DIR,
            &ev("add", "block", &format!("{DIR}/virtio3/block/vda"))
        ));
        assert!(
            !is_nic_under(DIR, &ev("add", "net", &format!("{DIR}0/virtio3/net/eth1"))),
            "slot 30 is not slot 3"
        );
        assert!(!is_nic_under(
            DIR,
            &ev("add", "net", &format!("{DIR}/0000:02:01.0/virtio3/net/eth1"))
        ));
        assert!(!is_nic_under(DIR, &ev("add", "net", "/devices/virtual/net/veth0")));
    }

    /// A fake sysfs with a bridge at 00:02.0 (secondary bus 01).
    fn sysfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("devices/pci0000:00/0000:00:02.0/pci_bus/0000:01")).unwrap();
        std::fs::create_dir_all(t.path().join("class/net")).unwrap();
        t
    }

    #[tokio::test]
    async fn present_nic_is_found_in_class_net() {
        let t = sysfs();
        std::os::unix::fs::symlink(format!("../..{DIR}/virtio3/net/eth1"), t.path().join("class/net/eth1")).unwrap();
        std::os::unix::fs::symlink("../../devices/virtual/net/lo", t.path().join("class/net/lo")).unwrap();
        let d = Devices::new(Arc::new(Hub::new()), t.path(), Duration::from_millis(100));
        let name = d.wait_net(&PciPath::parse("02/03").unwrap()).await.unwrap();
        assert_eq!(name, "eth1");
    }

    #[tokio::test]
    async fn late_nic_arrives_through_the_hub_and_absent_one_times_out() {
        let t = sysfs();
        let hub = Arc::new(Hub::new());
        let d = Devices::new(hub.clone(), t.path(), Duration::from_secs(5));
        let path = PciPath::parse("02/03").unwrap();
        let plug = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            hub.deliver(ev("add", "pci", DIR));
            hub.deliver(ev("add", "net", &format!("{DIR}/virtio3/net/eth7")));
        };
        let (got, ()) = tokio::join!(d.wait_net(&path), plug);
        assert_eq!(got.unwrap(), "eth7");

        let d = Devices::new(hub.clone(), t.path(), Duration::from_millis(100));
        let e = d.wait_net(&PciPath::parse("02/04").unwrap()).await.unwrap_err();
        assert!(matches!(e, DeviceError::Timeout { .. }));
        assert_eq!(
            e.to_string(),
            "network interface at PCI path 02/04 did not appear within 100ms"
        );
        assert_eq!(hub.waiting(), 0);
    }
}
