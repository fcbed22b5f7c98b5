//! MemHotplugByProbe: tell the kernel where hot-added memory is, for VMMs
//! whose memory hot-plug needs probing (`<sysfs>/devices/system/memory/probe`).

use super::details::PROBE_FILE;
use super::{Guest, GuestError};

/// Writes each address to the probe file, as Kata does (`0x` and upper-case hex).
pub fn probe(g: &Guest, addrs: &[u64]) -> Result<(), GuestError> {
    let f = g.sysfs_path(PROBE_FILE);
    for a in addrs {
        std::fs::write(&f, format!("{a:#X}")).map_err(super::io("write", format!("{}, {a:#X}", f.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_each_address_to_the_probe_file() {
        let d = tempfile::tempdir().unwrap();
        let mem = d.path().join("devices/system/memory");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("probe"), "").unwrap();
        let g = Guest {
            sysfs: d.path().to_path_buf(),
            ..Guest::default()
        };
        probe(&g, &[0x1_0000_0000, 0x1_0800_0000]).unwrap();
        // A regular file keeps the last write (the kernel's file takes each).
        assert_eq!(std::fs::read_to_string(mem.join("probe")).unwrap(), "0x108000000");
        std::fs::remove_file(mem.join("probe")).unwrap();
        std::fs::remove_dir(&mem).unwrap();
        let e = probe(&g, &[0x1000]).unwrap_err();
        assert!(e.to_string().contains("probe, 0x1000"), "{e}");
    }
}
