//! Block devices the host hot-plugs: where they show up in the guest, and
//! waiting for them. See DESIGN.md, "Devices and hot-plug".
//!
//! * [`uevent`]: the netlink listener and the hub that keeps events and waiters;
//! * [`scsi`]: `SCSI-ID:LUN` addresses, host scans, sysfs matching;
//! * [`pci`]: PCI paths through bridges (virtio-blk);
//! * [`blk`]: block devices already present in sysfs;
//! * [`net`]: network interfaces of hot-plugged PCI NICs;
//! * [`wait`]: a device kind and address in, the guest's block device out;
//! * [`spec`]: CreateContainer's devices, rewritten to the guest's numbers;
//! * [`node`]: the single-threaded helper that makes and removes device nodes
//!   inside a running container's mount namespace.

pub mod blk;
// Used by the networking requests only (feature `net`).
#[cfg_attr(not(feature = "net"), allow(dead_code))]
pub mod net;
pub mod node;
pub mod pci;
pub mod scsi;
pub mod spec;
pub mod uevent;
pub mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use wait::Devices;

/// What went wrong finding a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The host's address for the device does not parse or resolve.
    #[error("invalid {kind} device address {addr:?}: {why}")]
    BadAddress {
        /// Device kind (`scsi`, `pci`, ...).
        kind: &'static str,
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        why: String,
    },
    /// An unknown device type.
    #[error("unknown block device type {0:?} (want scsi, blk, mmioblk, dev or path)")]
    BadType(String),
    /// The device did not show up in time.
    #[error("{what} did not appear within {timeout:?}")]
    Timeout {
        /// The device, as the host named it.
        what: String,
        /// How long the agent waited.
        timeout: Duration,
    },
    /// A system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The call (`write`, `readdir`, `stat`, ...).
        op: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl DeviceError {
    /// An I/O error of `op` on `path`.
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        DeviceError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the host names a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAddr {
    /// virtio-scsi `SCSI-ID:LUN` (Kata type `scsi`).
    Scsi(scsi::ScsiAddr),
    /// virtio-blk PCI path (Kata type `blk`).
    Pci(pci::PciPath),
    /// virtio-mmio block device by guest name, `vda` or `/dev/vda` (Kata type `mmioblk`).
    Mmio(String),
    /// A block device by `MAJOR:MINOR` (type `dev`; tests and hosts that already know it).
    Dev(u32, u32),
}

impl DeviceAddr {
    /// Parses a device type and address: `scsi` + `0:1`, `blk` + `02/03`, `mmioblk` + `vda`,
    /// `dev` + `7:3`. Type `path` + `/dev/loop3` is read with `stat` and becomes `dev`.
    pub fn parse(kind: &str, addr: &str) -> Result<DeviceAddr, DeviceError> {
        match kind {
            "scsi" => Ok(DeviceAddr::Scsi(scsi::ScsiAddr::parse(addr)?)),
            "blk" => Ok(DeviceAddr::Pci(pci::PciPath::parse(addr)?)),
            "mmioblk" => {
                let name = addr.strip_prefix("/dev/").unwrap_or(addr);
                if name.is_empty() || name.contains('/') {
                    return Err(DeviceError::BadAddress {
                        kind: "mmioblk",
                        addr: addr.into(),
                        why: "want a device name such as vda".into(),
                    });
                }
                Ok(DeviceAddr::Mmio(name.to_string()))
            }
            "dev" => {
                let bad = || DeviceError::BadAddress {
                    kind: "dev",
                    addr: addr.into(),
                    why: "want MAJOR:MINOR, decimal".into(),
                };
                let (ma, mi) = addr.split_once(':').ok_or_else(bad)?;
                let num = |s: &str| -> Result<u32, DeviceError> {
                    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                        return Err(bad());
                    }
                    s.parse().map_err(|_| bad())
                };
                Ok(DeviceAddr::Dev(num(ma)?, num(mi)?))
            }
            "path" => {
                use std::os::unix::fs::FileTypeExt;
                use std::os::unix::fs::MetadataExt;
                let md = std::fs::metadata(addr).map_err(|e| DeviceError::io("stat", Path::new(addr), e))?;
                if !md.file_type().is_block_device() {
                    return Err(DeviceError::BadAddress {
                        kind: "path",
                        addr: addr.into(),
                        why: "not a block device".into(),
                    });
                }
                let rdev = md.rdev();
                Ok(DeviceAddr::Dev(libc::major(rdev), libc::minor(rdev)))
            }
            other => Err(DeviceError::BadType(other.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceAddr::Scsi(a) => write!(f, "scsi device {}:{}", a.target, a.lun),
            DeviceAddr::Pci(p) => write!(f, "virtio-blk device at PCI path {p}"),
            DeviceAddr::Mmio(n) => write!(f, "mmio block device {n}"),
            DeviceAddr::Dev(ma, mi) => write!(f, "block device {ma}:{mi}"),
        }
    }
}

/// A block device as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDev {
    /// Node name (`sda`); the guest path is `/dev/<name>`.
    pub name: String,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl BlockDev {
    /// `/dev/<name>`.
    pub fn guest_path(&self) -> String {
        format!("/dev/{}", self.name)
    }
}
