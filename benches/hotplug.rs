//! `make bench`: block device hot-plug into a running container (root only).
//!
//! A loop device over a small file stands in for the disk. Measured over a Unix
//! socket against the release agent: `pith.Devices/AddBlockDevice` (device
//! lookup, node made by the helper in the container's mount namespace, device
//! cgroup rule) and `RemoveBlockDevice`, median and p90 of 20 after 3 warm-up
//! rounds. The device is already present, so this is the agent's own cost, not
//! the VMM's or the guest kernel's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;
use protocols::agent::*;
use protocols::pith::{
    AddBlockDeviceRequest, BlockDeviceResponse, HelloRequest, HelloResponse, RemoveBlockDeviceRequest,
};
use ttrpc::proto::Request;
use ttrpc::r#async::Client;

const ROUNDS: usize = 20;
const WARMUP: usize = 3;

type Empty = protobuf::well_known_types::empty::Empty;

async fn call<Req: Message, Resp: Message>(c: &Client, service: &str, method: &str, req: &Req) -> Resp {
    let mut r = Request::new();
    r.service = service.into();
    r.method = method.into();
    r.payload = req.write_to_bytes().unwrap();
    let resp = c.request(r).await.unwrap_or_else(|e| panic!("{method}: {e}"));
    Resp::parse_from_bytes(&resp.payload).unwrap()
}

struct Fixture {
    agent: Child,
    dir: tempfile::TempDir,
    loop_dev: Option<String>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Containers outlive a killed agent: let it remove them first.
        common::destroy_sandbox(&self.dir.path().join("agent.sock"));
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        if let Some(d) = &self.loop_dev {
            let _ = Command::new("losetup").arg("-d").arg(d).status();
        }
    }
}

fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox (apt-get install busybox-static)");
    std::os::unix::fs::symlink("busybox", root.join("bin/sleep")).unwrap();
    root
}

fn create_req(rootfs: &Path, id: &str) -> CreateContainerRequest {
    let spec = common::oci_default_spec(rootfs, &["sleep", "100000"]);
    let mut req = CreateContainerRequest::new();
    req.container_id = id.into();
    req.exec_id = id.into();
    req.OCI = protobuf::MessageField::some(protocols::oci_convert::from_oci(&spec));
    req
}

fn summary(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.9))
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED hot-plug bench: containers and loop devices need root");
        return;
    }
    let bin = std::env::var("PITH_AGENT_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().unwrap();
        let target = exe.parent().unwrap().parent().unwrap();
        target.join("pith-agent").display().to_string()
    });
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loop_dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let sock = dir.path().join("agent.sock");
    std::fs::write(dir.path().join("cmdline"), "").unwrap();
    let agent = Command::new(&bin)
        .arg("--server-addr")
        .arg(format!("unix://{}", sock.display()))
        .arg("--cmdline")
        .arg(dir.path().join("cmdline"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agent");
    let fx = Fixture {
        agent,
        dir,
        loop_dev: Some(loop_dev.clone()),
    };
    let rootfs = rootfs(fx.dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("block device hot-plug into a running container ({bin}, {loop_dev})");
    rt.block_on(async {
        let addr = protocols::addr::Address::Unix(sock);
        let c = pithctl::client::connect(&addr, Duration::from_secs(10)).await.unwrap();
        let mut h = HelloRequest::new();
        (h.min_level, h.max_level) = (3, 3);
        let _: HelloResponse = call(&c, "pith.Negotiation", "Hello", &h).await;
        let id = format!("hotplug-bench-{}", std::process::id());
        let _: Empty = call(&c, "grpc.AgentService", "CreateContainer", &create_req(&rootfs, &id)).await;
        let mut s = StartContainerRequest::new();
        s.container_id = id.clone();
        let _: Empty = call(&c, "grpc.AgentService", "StartContainer", &s).await;

        let (mut add, mut del) = (Vec::new(), Vec::new());
        for i in 0..WARMUP + ROUNDS {
            let mut a = AddBlockDeviceRequest::new();
            a.container_id = id.clone();
            (a.type_, a.address) = ("path".into(), loop_dev.clone());
            a.container_path = "/dev/xvdb".into();
            let t = Instant::now();
            let r: BlockDeviceResponse = call(&c, "pith.Devices", "AddBlockDevice", &a).await;
            let t_add = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(r.guest_path, loop_dev);
            let mut d = RemoveBlockDeviceRequest::new();
            d.container_id = id.clone();
            d.container_path = "/dev/xvdb".into();
            let t = Instant::now();
            let _: BlockDeviceResponse = call(&c, "pith.Devices", "RemoveBlockDevice", &d).await;
            let t_del = t.elapsed().as_secs_f64() * 1e3;
            if i >= WARMUP {
                add.push(t_add);
                del.push(t_del);
            }
        }
        let (m, p90) = summary(add);
        println!("  AddBlockDevice:    median {m:.2} ms, p90 {p90:.2} ms ({ROUNDS} rounds)");
        let (m, p90) = summary(del);
        println!("  RemoveBlockDevice: median {m:.2} ms, p90 {p90:.2} ms ({ROUNDS} rounds)");

        let mut k = SignalProcessRequest::new();
        (k.container_id, k.exec_id, k.signal) = (id.clone(), id.clone(), 9);
        let _: Empty = call(&c, "grpc.AgentService", "SignalProcess", &k).await;
        let mut w = WaitProcessRequest::new();
        (w.container_id, w.exec_id) = (id.clone(), id.clone());
        let _: WaitProcessResponse = call(&c, "grpc.AgentService", "WaitProcess", &w).await;
        let mut r = RemoveContainerRequest::new();
        r.container_id = id.clone();
        let _: Empty = call(&c, "grpc.AgentService", "RemoveContainer", &r).await;
    });
    drop(fx);
}
