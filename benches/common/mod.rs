//! What the agent benchmarks share.

use std::path::Path;
use std::time::Duration;

use protobuf::Message;
use protocols::agent::DestroySandboxRequest;
use ttrpc::proto::Request;

/// Asks the agent on `sock` to end its sandbox (every container killed and
/// removed), on a connection and runtime of its own; errors are ignored (the
/// agent may be gone already).
pub fn destroy_sandbox(sock: &Path) {
    let addr = protocols::addr::Address::Unix(sock.to_path_buf());
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let c = pithctl::client::connect(&addr, Duration::from_secs(2)).await.ok()?;
            let mut r = Request::new();
            r.service = "grpc.AgentService".into();
            r.method = "DestroySandbox".into();
            r.payload = DestroySandboxRequest::new().write_to_bytes().ok()?;
            r.timeout_nano = Duration::from_secs(20).as_nanos() as i64;
            c.request(r).await.ok()
        })
    })
    .join();
}

/// oci-spec's default spec (new network and cgroup namespaces included) on `rootfs`.
pub fn oci_default_spec(rootfs: &Path, args: &[&str]) -> oci_spec::runtime::Spec {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut root = spec.root().clone().unwrap();
    root.set_path(rootfs.to_path_buf());
    spec.set_root(Some(root));
    spec.set_hostname(None);
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p.set_terminal(Some(false));
    spec.set_process(Some(p));
    spec
}
