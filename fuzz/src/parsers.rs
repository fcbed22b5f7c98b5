//! Parsers of what reaches the agent from outside the ttrpc frame: OCI specs,
//! the kernel command line and TOML config, uevents, device addresses, storage
//! mount options.

use std::io::Write;
use std::sync::OnceLock;

use pith_agent::fuzzing::config::{self, AgentConfig, FlagOverrides, Sources};
use pith_agent::fuzzing::device::{self, PciPath, ScsiAddr, Uevent};
use pith_agent::fuzzing::storage_options as options;
use protobuf::Message;
use protocols::oci_convert;

/// A wire spec through conversion and validation. Property: a converted spec
/// converts back and forth to itself, and serializes.
pub fn oci_spec(data: &[u8]) {
    let Ok(wire) = protocols::oci::Spec::parse_from_bytes(data) else {
        return;
    };
    if let Some(p) = wire.Process.as_ref() {
        let _ = oci_convert::exec_process_to_oci(p);
    }
    if let Some(r) = wire.Linux.as_ref().and_then(|l| l.Resources.as_ref()) {
        let _ = oci_convert::resources_to_oci(r);
    }
    let _ = oci_convert::container_to_oci(&wire).map_err(|e| e.to_string());
    let Ok(spec) = oci_convert::to_oci(&wire) else { return };
    let back = oci_convert::to_oci(&oci_convert::from_oci(&spec)).expect("a converted spec converts again");
    assert_eq!(back, spec, "conversion is not stable");
    serde_json::to_vec(&spec).expect("a converted spec serializes");
}

/// The temporary TOML file [`config`] writes to.
fn toml_path() -> &'static std::path::Path {
    static P: OnceLock<std::path::PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("pith-fuzz-config-{}.toml", std::process::id())))
}

/// Kernel command line, then (after the first NUL) a TOML file, through the
/// whole layered load. Property: it never fails; bad values become warnings.
pub fn config(data: &[u8]) {
    let (cmdline, toml) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let cmdline = String::from_utf8_lossy(cmdline);
    let _ = config::cmdline::parse(&cmdline);
    // The file comes from the fuzzer below, not from a path it names.
    let cmdline: String = cmdline
        .split_whitespace()
        .filter(|w| !w.contains("config_file"))
        .collect::<Vec<_>>()
        .join(" ");
    let toml = String::from_utf8_lossy(toml);
    let _ = config::file::parse(&toml);
    let path = toml_path();
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(toml.as_bytes()))
        .expect("write the temporary config file");
    let flags = FlagOverrides {
        config_file: Some(path.to_path_buf()),
        ..Default::default()
    };
    let env = |_: &str| None;
    let loaded = AgentConfig::load(&Sources {
        cmdline: &cmdline,
        env: &env,
        flags: &flags,
    });
    assert!(!loaded.config.server_addrs.is_empty());
}

/// A netlink uevent datagram, and the device matchers over it.
pub fn uevent(data: &[u8]) {
    let Some(ev) = Uevent::parse(data) else { return };
    assert!(!ev.action.is_empty() && !ev.devpath.is_empty());
    let _ = ScsiAddr { target: 0, lun: 1 }.matches(&ev);
    let _ = device::under_device("/devices/pci0000:00/0000:00:02.0", &ev);
}

/// Device addresses as text (SCSI `id:lun`, PCI paths), then as a `Device`
/// message. Property: a parsed address prints as text that parses to itself.
pub fn device_addr(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(a) = ScsiAddr::parse(&text) {
        assert_eq!(ScsiAddr::parse(&format!("{}:{}", a.target, a.lun)).ok(), Some(a));
    }
    if let Ok(p) = PciPath::parse(&text) {
        assert_eq!(PciPath::parse(&p.to_string()).ok(), Some(p));
    }
    for kind in ["scsi", "blk", "mmioblk", "dev"] {
        let _ = device::DeviceAddr::parse(kind, &text);
    }
    if let Ok(d) = protocols::agent::Device::parse_from_bytes(data) {
        let _ = device::device_addr(&d);
    }
}

/// A storage's options: mount flags and data, `mode=`, `fsgid=`.
pub fn mount_options(data: &[u8]) {
    let Ok(s) = protocols::agent::Storage::parse_from_bytes(data) else {
        return;
    };
    let m = options::mount_options(&s.options, &[options::FSGID_OPTION]);
    assert!(
        !m.data.split(',').any(|o| o.starts_with("fsgid=")),
        "skipped option in data"
    );
    let _ = options::mode(&s);
    let _ = options::fs_gid(&s);
    let _ = options::value(&s.options, "size");
}

/// A state file as a restarted agent finds it (any version, damaged,
/// truncated, wrong types). Properties: the loader never panics; what it
/// takes back, written again, reads back to the same sandbox.
pub fn persist_state(data: &[u8]) {
    if let Ok(same) = pith_agent::fuzzing::persist::round_trips(data) {
        assert!(same, "a state file does not round-trip");
    }
}
