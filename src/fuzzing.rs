//! What the fuzz targets in `fuzz/` reach inside the agent. Not an API: the
//! module exists only with the `fuzzing` feature (which only `fuzz/` turns
//! on) and is hidden from the docs. Each item is here because a target feeds
//! it outside input; the rest of the agent stays private.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ttrpc::r#async::Service;

use crate::context::AgentContext;
use crate::device::uevent::Hub;
use crate::device::Devices;
use crate::rpc::{health, introspection, negotiation, Rpc};
use crate::sandbox::fake_engine::FakeEngine;
use crate::sandbox::{Sandbox, SandboxConfig};

/// The kernel command line and the TOML file, and the layered load over both.
pub mod config {
    pub use crate::config::{cmdline, file, AgentConfig, FlagOverrides, Sources};
}

/// Device addresses and uevents, as the host and the kernel send them.
pub mod device {
    pub use crate::device::pci::{under_device, PciPath};
    pub use crate::device::scsi::ScsiAddr;
    pub use crate::device::spec::device_addr;
    pub use crate::device::uevent::Uevent;
    pub use crate::device::DeviceAddr;
}

/// A storage's options (mount flags and data, `mode=`, `fsgid=`).
pub use crate::storage::options as storage_options;

/// The ttrpc front: frames, a connection, the dispatcher.
pub mod server {
    pub use crate::server::conn::serve;
    pub use crate::server::dispatch::Dispatcher;
    pub use crate::server::frame;
}

/// The services that need no container engine, real, as the agent serves
/// them (`grpc.Health`, `pith.Negotiation`, `pith.Introspection`), over a
/// sandbox on the unit tests' fake engine whose files go under `dir`.
/// `grpc.AgentService` and `pith.Devices` are not among them: their handlers
/// over the fake engine are the next fuzz targets to write (a `WaitProcess` on
/// the fake waits until a test says the process exited, so those targets must
/// end such calls themselves).
pub fn engine_free_services(dir: &Path) -> HashMap<String, Service> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let devices = Devices::new(Arc::new(Hub::new()), &dir.join("sys"), Duration::from_millis(100));
    let cfg = SandboxConfig {
        state_dir: dir.join("state"),
        pipe_size: 0,
        dns: crate::sandbox::dns::DnsFiles {
            sandbox: dir.join("sandbox/resolv.conf"),
            guest: dir.join("resolv.conf"),
        },
        storage_roots: vec![dir.to_path_buf()],
    };
    let guest = crate::guest::Guest {
        sysfs: dir.join("sys"),
        ..Default::default()
    };
    let sandbox = Sandbox::new(cfg, Arc::new(FakeEngine::new()), Arc::new(devices), guest, &log)
        .expect("a sandbox under the fuzzing directory");
    let ctx = Arc::new(AgentContext::new(vec!["unix:///fuzz.sock".into()], false));
    let rpc = Arc::new(Rpc::new(Arc::new(sandbox), ctx, &log));
    let mut all = HashMap::new();
    all.extend(protocols::health_ttrpc::create_health(Arc::new(
        health::HealthService::new(rpc.clone()),
    )));
    all.extend(protocols::pith_ttrpc::create_negotiation(Arc::new(
        negotiation::NegotiationService::new(rpc.clone()),
    )));
    all.extend(protocols::pith_ttrpc::create_introspection(Arc::new(
        introspection::IntrospectionService::new(rpc),
    )));
    all
}

/// The persisted state's loader, as a restarted agent runs it on the file it
/// finds: the bytes to the sandbox's view (every version, migrated).
pub mod persist {
    use std::path::Path;

    use crate::persist::{convert, decode, encode};
    use crate::sandbox::view::{GuestView, SandboxView};

    fn load(bytes: &[u8]) -> Result<SandboxView, String> {
        let path = Path::new("/run/pith/sandbox.json");
        let guest = GuestView {
            sysfs: "/sys".into(),
            copy_roots: Vec::new(),
            random_dev: "/dev/random".into(),
        };
        let saved = decode(path, bytes).map_err(|e| e.to_string())?;
        convert::to_view(saved, guest, path).map_err(|e| e.to_string())
    }

    /// Loads `bytes` as a state file; a file that loads is written again in
    /// today's format and loaded back. Returns whether both loads hold the
    /// same sandbox (the bytes may differ: the OCI types keep some lists in
    /// hash sets), or why the file was refused.
    pub fn round_trips(bytes: &[u8]) -> Result<bool, String> {
        let once = load(bytes)?;
        let twice =
            load(&encode(convert::from_view(&once))).map_err(|e| format!("a file this agent wrote is refused: {e}"))?;
        Ok(once == twice)
    }
}
