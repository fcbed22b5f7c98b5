//! What the agent benchmarks share.

// Each bench uses some of these.
#![allow(dead_code)]

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

/// What a bench of the agent under root starts with: the agent binary
/// (`PITH_AGENT_BIN`, or this build's) and a two-worker runtime; None, with
/// `<what>: skipped (needs root)` printed, when not root.
pub fn root_bench(what: &str) -> Option<(String, tokio::runtime::Runtime)> {
    if !nix::unistd::geteuid().is_root() {
        println!("{what}: skipped (needs root)");
        return None;
    }
    let bin = std::env::var("PITH_AGENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pith-agent").to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Some((bin, rt))
}

/// A root filesystem with busybox and `sleep` under `dir`; returns its path.
pub fn sleeper_rootfs(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox (apt-get install busybox-static)");
    std::os::unix::fs::symlink("busybox", root.join("bin/sleep")).unwrap();
    root
}

/// A CreateContainerRequest for a container on `rootfs` that sleeps (idle).
pub fn sleeper_request(rootfs: &Path, id: &str) -> protocols::agent::CreateContainerRequest {
    let spec = oci_default_spec(rootfs, &["sleep", "100000"]);
    let mut req = protocols::agent::CreateContainerRequest::new();
    req.container_id = id.into();
    req.exec_id = id.into();
    req.OCI = protobuf::MessageField::some(protocols::oci_convert::from_oci(&spec));
    req
}

/// The KiB figure of the line starting `field` in `/proc/<pid>/<file>` (0 once it is gone).
fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of process `pid`, in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}

/// Proportional set size of process `pid`, in KiB (0 once it is gone): its
/// resident pages, each shared one divided among the processes that map it
/// (two processes running one binary share its text, which RSS counts twice).
pub fn pss_kib(pid: u32) -> u64 {
    proc_kib(pid, "smaps_rollup", "Pss:")
}

/// A temporary directory for an agent's `--state-dir` on tmpfs (`/dev/shm`)
/// where the machine has one, else in the usual temporary directory. The
/// guest agent's state directory (`/run/pith`) is on tmpfs, where the state
/// written after each call is a memory copy; on this machine's disk every
/// write waits for two fsyncs (0.5 ms to over 10 ms while other work writes),
/// which the agent in the guest never pays.
pub fn state_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = nix::sys::statfs::statfs(shm).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    let dir = if on_tmpfs {
        tempfile::Builder::new().prefix("pith-bench-state").tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    dir.expect("temporary state directory")
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
