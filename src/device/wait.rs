//! Waiting for a block device: the hub's events, then sysfs, then the
//! listener, until `agent.hotplug_timeout`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::pci::PciPath;
use super::uevent::{Hub, Matcher, Registration, Uevent};
use super::{blk, net, scsi, BlockDev, DeviceAddr, DeviceError};

/// How often sysfs is looked at again while waiting (in case an event was lost).
const REPROBE: Duration = Duration::from_millis(100);

/// The agent's device state: uevent hub, sysfs root and timeout.
pub struct Devices {
    hub: Arc<Hub>,
    sysfs: PathBuf,
    timeout: Duration,
}

impl Devices {
    /// Devices found through `hub` and the sysfs tree at `sysfs`, waited for at most `timeout`.
    pub fn new(hub: Arc<Hub>, sysfs: &Path, timeout: Duration) -> Devices {
        Devices {
            hub,
            sysfs: sysfs.to_path_buf(),
            timeout,
        }
    }

    /// Starts the uevent listener on `/sys` (call before the server accepts requests).
    /// A listener that cannot start is logged; waits then rely on sysfs alone.
    pub fn start(timeout: Duration, log: &slog::Logger) -> Devices {
        let hub = Arc::new(Hub::new());
        if let Err(e) = super::uevent::start_listener(hub.clone(), log.clone()) {
            slog::warn!(log, "uevent listener not started, hot-plug waits poll sysfs: {e}");
        }
        Devices::new(hub, Path::new("/sys"), timeout)
    }

    fn matcher(&self, addr: &DeviceAddr) -> Result<Matcher, DeviceError> {
        Ok(match addr {
            DeviceAddr::Scsi(a) => {
                let a = *a;
                Arc::new(move |e: &Uevent| a.matches(e))
            }
            DeviceAddr::Pci(p) => {
                let dir = p.sysfs_dir(&self.sysfs)?;
                Arc::new(move |e: &Uevent| super::pci::under_device(&dir, e))
            }
            DeviceAddr::Mmio(name) => {
                let name = name.clone();
                Arc::new(move |e: &Uevent| e.subsystem == "block" && e.action != "remove" && e.devname == name)
            }
            DeviceAddr::Dev(ma, mi) => {
                let (ma, mi) = (*ma, *mi);
                Arc::new(move |e: &Uevent| {
                    e.subsystem == "block" && e.action != "remove" && e.major == Some(ma) && e.minor == Some(mi)
                })
            }
        })
    }

    fn probe(&self, m: &Matcher) -> Option<Uevent> {
        blk::scan(&self.sysfs).into_iter().find(|e| m(e))
    }

    fn block_dev(&self, ev: Uevent) -> BlockDev {
        let (major, minor) = match (ev.major, ev.minor) {
            (Some(a), Some(b)) => (a, b),
            _ => blk::dev_numbers(&self.sysfs, &ev.devpath).unwrap_or((0, 0)),
        };
        let name = if ev.devname.is_empty() {
            ev.devpath.rsplit('/').next().unwrap_or_default().to_string()
        } else {
            ev.devname
        };
        BlockDev { name, major, minor }
    }

    /// Waits for the block device the host calls `addr` (asking the SCSI hosts to
    /// scan first when it is a SCSI address); [`DeviceError::Timeout`] after the timeout.
    pub async fn wait_block(&self, addr: &DeviceAddr) -> Result<BlockDev, DeviceError> {
        let m = self.matcher(addr)?;
        let scan = || match addr {
            DeviceAddr::Scsi(a) => scsi::scan_hosts(&self.sysfs, *a).map(drop),
            _ => Ok(()),
        };
        let ev = self.wait_for(&m, || self.probe(&m), scan, addr.to_string()).await?;
        Ok(self.block_dev(ev))
    }

    /// Waits for the network interface of the PCI device at `path` (a
    /// hot-plugged virtio-net NIC); returns its name.
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub async fn wait_net(&self, path: &PciPath) -> Result<String, DeviceError> {
        let dir = path.sysfs_dir(&self.sysfs)?;
        let m: Matcher = {
            let dir = dir.clone();
            Arc::new(move |e: &Uevent| net::is_nic_under(&dir, e))
        };
        let ev = self
            .wait_for(
                &m,
                || net::probe(&self.sysfs, &dir),
                || Ok(()),
                format!("network interface at PCI path {path}"),
            )
            .await?;
        Ok(net::ifname(&ev))
    }

    /// Registers `m` with the hub (taking `probe`'s answer for what is already
    /// there), runs `kick` (a bus rescan), then waits for the listener or a
    /// later probe until the timeout; `what` names the device in the error.
    async fn wait_for(
        &self,
        m: &Matcher,
        probe: impl Fn() -> Option<Uevent>,
        kick: impl FnOnce() -> Result<(), DeviceError>,
        what: String,
    ) -> Result<Uevent, DeviceError> {
        let (id, mut rx) = match self.hub.register(m.clone(), &probe) {
            Registration::Found(ev) => return Ok(ev),
            Registration::Waiting { id, rx } => (id, rx),
        };
        if let Err(e) = kick() {
            self.hub.cancel(id);
            return Err(e);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            tokio::select! {
                got = &mut rx => {
                    if let Ok(ev) = got {
                        return Ok(ev);
                    }
                    break;
                }
                _ = tokio::time::sleep(REPROBE) => {
                    if let Some(ev) = probe() {
                        self.hub.cancel(id);
                        return Ok(ev);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.hub.cancel(id);
        Err(DeviceError::Timeout {
            what,
            timeout: self.timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake sysfs with two SCSI hosts (host0 on one virtio-scsi controller, host2 on another
    /// behind a bridge) and a virtio-blk disk behind a bridge.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let f = Fake {
                dir: tempfile::tempdir().unwrap(),
            };
            for h in ["host0", "host2"] {
                f.mkdir(&format!("class/scsi_host/{h}"));
            }
            f.mkdir("devices/pci0000:00/0000:00:02.0/pci_bus/0000:01");
            f.mkdir("devices/pci0000:00/0000:00:02.0/0000:01:04.0/pci_bus/0000:02");
            f.mkdir("class/block");
            f
        }
        fn root(&self) -> &Path {
            self.dir.path()
        }
        fn mkdir(&self, p: &str) {
            std::fs::create_dir_all(self.root().join(p)).unwrap();
        }
        /// Adds a disk at `devpath` as sysfs shows it: the device directory with `dev` and
        /// `uevent`, and the class/block link.
        fn add_disk(&self, devpath: &str, major: u32, minor: u32) {
            let name = devpath.rsplit('/').next().unwrap();
            let d = devpath.trim_start_matches('/');
            self.mkdir(d);
            std::fs::write(self.root().join(d).join("dev"), format!("{major}:{minor}\n")).unwrap();
            std::fs::write(
                self.root().join(d).join("uevent"),
                format!("MAJOR={major}\nMINOR={minor}\nDEVNAME={name}\nDEVTYPE=disk\n"),
            )
            .unwrap();
            symlink(format!("../../{d}"), self.root().join("class/block").join(name)).unwrap();
        }
        fn devices(&self, hub: Arc<Hub>, ms: u64) -> Devices {
            Devices::new(hub, self.root(), Duration::from_millis(ms))
        }
    }

    const SCSI0: &str = "/devices/pci0000:00/0000:00:03.0/virtio1/host0/target0:0:0/0:0:0:1/block/sda";
    const SCSI2: &str = "/devices/pci0000:00/0000:00:02.0/0000:01:05.0/virtio4/host2/target2:0:3/2:0:3:7/block/sdc";
    const VDA: &str = "/devices/pci0000:00/0000:00:02.0/0000:01:04.0/0000:02:01.0/virtio5/block/vda";

    #[tokio::test]
    async fn finds_present_devices_through_sysfs() {
        let f = Fake::new();
        f.add_disk(SCSI0, 8, 0);
        f.add_disk(SCSI2, 8, 32);
        f.add_disk(VDA, 254, 0);
        f.add_disk("/devices/virtual/block/loop3", 7, 3);
        let d = f.devices(Arc::new(Hub::new()), 200);
        let got = |k: &str, a: &str| {
            let d = &d;
            let addr = DeviceAddr::parse(k, a).unwrap();
            async move { d.wait_block(&addr).await }
        };
        let sda = got("scsi", "0:1").await.unwrap();
        assert_eq!((sda.name.as_str(), sda.major, sda.minor), ("sda", 8, 0));
        assert_eq!(sda.guest_path(), "/dev/sda");
        assert_eq!(got("scsi", "3:7").await.unwrap().name, "sdc");
        assert_eq!(got("blk", "02/04/01").await.unwrap().name, "vda");
        assert_eq!(got("mmioblk", "/dev/vda").await.unwrap().major, 254);
        assert_eq!(got("dev", "7:3").await.unwrap().name, "loop3");
        // Present devices need no scan.
        assert!(!f.root().join("class/scsi_host/host0/scan").exists());
    }

    #[tokio::test]
    async fn late_device_arrives_through_the_hub() {
        let f = Fake::new();
        let hub = Arc::new(Hub::new());
        let d = f.devices(hub.clone(), 3000);
        let addr = DeviceAddr::parse("blk", "02/04/01").unwrap();
        let start = std::time::Instant::now();
        let waiter = async { d.wait_block(&addr).await };
        let plug = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // An unrelated disk first, then a partition, then the disk.
            for (path, name) in [(SCSI0, "sda"), (&*format!("{VDA}/vda1"), "vda1"), (VDA, "vda")] {
                hub.deliver(Uevent {
                    action: "add".into(),
                    subsystem: "block".into(),
                    devpath: path.to_string(),
                    devname: name.into(),
                    devtype: "disk".into(),
                    major: Some(254),
                    minor: Some(if name == "vda1" { 1 } else { 0 }),
                });
            }
        };
        let (got, ()) = tokio::join!(waiter, plug);
        let got = got.unwrap();
        assert_eq!((got.name.as_str(), got.minor), ("vda", 0));
        assert!(start.elapsed() < Duration::from_millis(1000));
        assert_eq!(hub.waiting(), 0);
    }

    #[tokio::test]
    async fn absent_device_times_out_naming_it() {
        let f = Fake::new();
        let hub = Arc::new(Hub::new());
        let d = f.devices(hub.clone(), 150);
        let start = std::time::Instant::now();
        let e = d
            .wait_block(&DeviceAddr::parse("scsi", "9:9").unwrap())
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_millis(1000),
            "{took:?}"
        );
        assert_eq!(e.to_string(), "scsi device 9:9 did not appear within 150ms");
        assert_eq!(hub.waiting(), 0, "the waiter is dropped on timeout");
        // Every SCSI host was asked to scan the address.
        for h in ["host0", "host2"] {
            let s = std::fs::read_to_string(f.root().join("class/scsi_host").join(h).join("scan")).unwrap();
            assert_eq!(s, "0 9 9");
        }
        // A PCI path through a bridge that does not exist fails at once, naming the bridge.
        let e = d
            .wait_block(&DeviceAddr::parse("blk", "06/01").unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("0000:00:06.0/pci_bus"), "{e}");
    }

    #[test]
    fn parses_device_addresses() {
        assert_eq!(DeviceAddr::parse("dev", "7:3").unwrap(), DeviceAddr::Dev(7, 3));
        assert_eq!(
            DeviceAddr::parse("mmioblk", "vdb").unwrap(),
            DeviceAddr::Mmio("vdb".into())
        );
        for (k, a) in [
            ("dev", "7"),
            ("dev", "7:x"),
            ("dev", "-1:2"),
            ("mmioblk", "a/b"),
            ("scsi", "x"),
        ] {
            assert!(DeviceAddr::parse(k, a).is_err(), "{k} {a}");
        }
        assert!(matches!(DeviceAddr::parse("nvme", "1"), Err(DeviceError::BadType(_))));
        assert!(matches!(
            DeviceAddr::parse("path", "/dev/null"),
            Err(DeviceError::BadAddress { .. })
        ));
    }
}
