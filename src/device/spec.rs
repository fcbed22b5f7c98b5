//! CreateContainer's `devices`: each names a block device the host plugged
//! and the spec entry (`linux.devices[].path == container_path`) that stands
//! for it. The sandbox waits for the device and [`rewrite`]s that entry, and
//! the device cgroup rules that named the host's numbers, to the guest's major
//! and minor (as Kata does).

use oci_spec::runtime::{LinuxDeviceType, Spec};

use super::{BlockDev, DeviceAddr, DeviceError};

/// The address a Kata `Device` gives for its type: `id` (SCSI address, PCI path),
/// or `vm_path` for `mmioblk` (and for `blk` from hosts that send no PCI path).
pub fn device_addr(d: &protocols::agent::Device) -> Result<DeviceAddr, DeviceError> {
    match d.type_.as_str() {
        "scsi" => DeviceAddr::parse("scsi", &d.id),
        "blk" if d.id.is_empty() => DeviceAddr::parse("mmioblk", &d.vm_path),
        "blk" => DeviceAddr::parse("blk", &d.id),
        "mmioblk" => DeviceAddr::parse("mmioblk", if d.vm_path.is_empty() { &d.id } else { &d.vm_path }),
        other => Err(DeviceError::BadType(other.to_string())),
    }
}

/// Points the spec's device at `container_path` to `dev`, and moves the block
/// device cgroup rules that named its old numbers to the new ones.
pub fn rewrite(spec: &mut Spec, container_path: &str, dev: &BlockDev) -> Result<(), String> {
    let linux = spec
        .linux_mut()
        .as_mut()
        .ok_or_else(|| format!("device {container_path}: the spec has no linux section"))?;
    let devices = linux.devices_mut().get_or_insert_with(Vec::new);
    let entry = devices
        .iter_mut()
        .find(|d| d.path().to_str() == Some(container_path))
        .ok_or_else(|| format!("device {container_path}: no linux.devices entry with that path in the spec"))?;
    let (old_major, old_minor) = (entry.major(), entry.minor());
    entry.set_major(i64::from(dev.major));
    entry.set_minor(i64::from(dev.minor));
    if let Some(res) = linux.resources_mut().as_mut() {
        if let Some(rules) = res.devices_mut().as_mut() {
            for r in rules.iter_mut() {
                let block = matches!(r.typ(), Some(LinuxDeviceType::B) | None | Some(LinuxDeviceType::A));
                if block && r.major() == Some(old_major) && r.minor() == Some(old_minor) {
                    r.set_typ(Some(LinuxDeviceType::B));
                    r.set_major(Some(i64::from(dev.major)));
                    r.set_minor(Some(i64::from(dev.minor)));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxResourcesBuilder};

    fn spec() -> Spec {
        let mut s = Spec::default();
        let mut linux = s.linux().clone().unwrap();
        let dev = |p: &str, ma, mi| {
            LinuxDeviceBuilder::default()
                .path(p)
                .typ(LinuxDeviceType::B)
                .major(ma)
                .minor(mi)
                .build()
                .unwrap()
        };
        linux.set_devices(Some(vec![dev("/dev/xvda", 8, 16), dev("/dev/other", 8, 32)]));
        let rule = |ma, mi| {
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::B)
                .major(ma)
                .minor(mi)
                .access("rwm")
                .build()
                .unwrap()
        };
        linux.set_resources(Some(
            LinuxResourcesBuilder::default()
                .devices(vec![rule(8, 16), rule(8, 32)])
                .build()
                .unwrap(),
        ));
        s.set_linux(Some(linux));
        s
    }

    #[test]
    fn rewrites_the_entry_and_its_cgroup_rule_only() {
        let mut s = spec();
        let dev = BlockDev {
            name: "sdb".into(),
            major: 8,
            minor: 48,
        };
        rewrite(&mut s, "/dev/xvda", &dev).unwrap();
        let linux = s.linux().as_ref().unwrap();
        let devs = linux.devices().as_ref().unwrap();
        assert_eq!((devs[0].major(), devs[0].minor()), (8, 48));
        assert_eq!((devs[1].major(), devs[1].minor()), (8, 32));
        let rules = linux.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert_eq!((rules[0].major(), rules[0].minor()), (Some(8), Some(48)));
        assert_eq!((rules[1].major(), rules[1].minor()), (Some(8), Some(32)));
        let e = rewrite(&mut s, "/dev/nope", &dev).unwrap_err();
        assert!(e.contains("/dev/nope"), "{e}");
    }

    #[test]
    fn kata_device_types() {
        let d = |t: &str, id: &str, vm: &str| {
            let mut d = protocols::agent::Device::new();
            d.type_ = t.into();
            d.id = id.into();
            d.vm_path = vm.into();
            d
        };
        assert!(matches!(device_addr(&d("scsi", "0:1", "")), Ok(DeviceAddr::Scsi(_))));
        assert!(matches!(device_addr(&d("blk", "02/03", "")), Ok(DeviceAddr::Pci(_))));
        assert_eq!(
            device_addr(&d("mmioblk", "x", "/dev/vdb")).unwrap(),
            DeviceAddr::Mmio("vdb".into())
        );
        assert!(matches!(device_addr(&d("vfio", "1", "")), Err(DeviceError::BadType(_))));
    }
}
