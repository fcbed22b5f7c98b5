//! Block devices already in sysfs: what `class/block` lists, in the shape of
//! an `add` uevent, so that devices that came before the listener (or whose
//! event was lost) are matched like the ones that come later.

use std::path::Path;

use super::uevent::Uevent;

/// Every block device under `<sysfs>/class/block`, as synthetic `add` events.
pub fn scan(sysfs: &Path) -> Vec<Uevent> {
    let dir = sysfs.join("class/block");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        // ../../devices/pci0000:00/.../block/sda -> /devices/pci0000:00/.../block/sda
        let t = target.to_string_lossy();
        let Some(idx) = t.find("devices/") else { continue };
        let devpath = format!("/{}", &t[idx..]);
        let mut ev = Uevent {
            action: "add".into(),
            subsystem: "block".into(),
            devname: name.clone(),
            devpath,
            ..Default::default()
        };
        if let Ok(dev) = std::fs::read_to_string(e.path().join("dev")) {
            if let Some((ma, mi)) = dev.trim().split_once(':') {
                ev.major = ma.parse().ok();
                ev.minor = mi.parse().ok();
            }
        }
        if let Ok(text) = std::fs::read_to_string(e.path().join("uevent")) {
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("DEVTYPE", v)) => ev.devtype = v.to_string(),
                    Some(("DEVNAME", v)) => ev.devname = v.to_string(),
                    _ => {}
                }
            }
        }
        out.push(ev);
    }
    out.sort_by(|a, b| a.devname.cmp(&b.devname));
    out
}

/// Reads `<sysfs><devpath>/dev` (`MAJOR:MINOR`), for events that lack the numbers.
pub fn dev_numbers(sysfs: &Path, devpath: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(sysfs.join(devpath.trim_start_matches('/')).join("dev")).ok()?;
    let (ma, mi) = text.trim().split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}
