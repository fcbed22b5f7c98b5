//! GetGuestDetails: the memory hot-plug facts from sysfs and what this agent can do.

use std::path::Path;

use super::{io, Guest, GuestError};

/// `block_size_bytes` under the sysfs root: memory block size, hex.
pub const BLOCK_SIZE_FILE: &str = "devices/system/memory/block_size_bytes";
/// `probe` under the sysfs root: present when memory is hot-plugged by probing.
pub const PROBE_FILE: &str = "devices/system/memory/probe";

/// Device kinds of CreateContainer's `devices` this agent waits for (`device::spec`).
pub const DEVICE_HANDLERS: &[&str] = &["blk", "mmioblk", "scsi"];

/// What GetGuestDetails answers, before it becomes a protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDetails {
    /// Memory block size in bytes, 0 when not asked for or unknown.
    pub mem_block_size_bytes: u64,
    /// Whether `/sys/devices/system/memory/probe` exists (false when not asked).
    pub support_mem_hotplug_probe: bool,
    /// Agent version.
    pub version: String,
    /// Whether the agent is the VM's init.
    pub init_daemon: bool,
    /// Device handlers this agent has.
    pub device_handlers: Vec<String>,
    /// Storage drivers this agent has.
    pub storage_handlers: Vec<String>,
    /// Whether containers can have seccomp filters.
    pub supports_seccomp: bool,
}

/// The details, reading sysfs only for what was asked.
pub fn guest_details(g: &Guest, mem_block_size: bool, mem_hotplug_probe: bool) -> Result<GuestDetails, GuestError> {
    let mem_block_size_bytes = if mem_block_size {
        read_block_size(&g.sysfs_path(BLOCK_SIZE_FILE))?
    } else {
        0
    };
    let support_mem_hotplug_probe = if mem_hotplug_probe {
        let probe = g.sysfs_path(PROBE_FILE);
        match std::fs::symlink_metadata(&probe) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io("stat", probe.display())(e)),
        }
    } else {
        false
    };
    Ok(GuestDetails {
        mem_block_size_bytes,
        support_mem_hotplug_probe,
        version: crate::AGENT_VERSION.to_string(),
        init_daemon: std::process::id() == 1,
        // The device kinds CreateContainer's `devices` may name.
        device_handlers: DEVICE_HANDLERS.iter().map(|s| s.to_string()).collect(),
        storage_handlers: crate::storage::DRIVERS.iter().map(|s| s.to_string()).collect(),
        supports_seccomp: true,
    })
}

/// The block size from `path` (hex, with or without `0x`); 0 when the file is
/// missing (a kernel without memory hot-plug), as Kata's agent answers.
fn read_block_size(path: &Path) -> Result<u64, GuestError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("read", path.display())(e)),
    };
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    u64::from_str_radix(t, 16).map_err(|_| {
        GuestError::InvalidArgument(format!("{}: not a hex block size: {:?}", path.display(), text.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path) -> Guest {
        Guest {
            sysfs: dir.to_path_buf(),
            ..Guest::default()
        }
    }

    #[test]
    fn reads_block_size_and_probe_only_when_asked() {
        let d = tempfile::tempdir().unwrap();
        let mem = d.path().join("devices/system/memory");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("block_size_bytes"), "8000000\n").unwrap();
        std::fs::write(mem.join("probe"), "").unwrap();
        let g = fake(d.path());

        let all = guest_details(&g, true, true).unwrap();
        assert_eq!(all.mem_block_size_bytes, 0x800_0000);
        assert!(all.support_mem_hotplug_probe);
        assert_eq!(all.version, crate::AGENT_VERSION);
        assert!(all.supports_seccomp);
        assert_eq!(all.device_handlers, ["blk", "mmioblk", "scsi"]);
        for d in ["ephemeral", "blk", "scsi", "nvdimm", "overlayfs", "watchable-bind"] {
            assert!(all.storage_handlers.contains(&d.to_string()), "{d}");
        }

        let none = guest_details(&g, false, false).unwrap();
        assert_eq!(none.mem_block_size_bytes, 0);
        assert!(!none.support_mem_hotplug_probe);
    }

    #[test]
    fn missing_files_are_zero_and_false_garbage_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let g = fake(d.path());
        let r = guest_details(&g, true, true).unwrap();
        assert_eq!(r.mem_block_size_bytes, 0);
        assert!(!r.support_mem_hotplug_probe);

        let mem = d.path().join("devices/system/memory");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("block_size_bytes"), "zz").unwrap();
        let e = guest_details(&g, true, false).unwrap_err();
        assert!(e.to_string().contains("not a hex block size"), "{e}");
    }
}
