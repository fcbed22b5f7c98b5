//! Writes the seed corpora under `corpus/<target>/` (committed; run again only
//! when a message or format changes): `cargo run --example make_seeds`.

use std::path::Path;

use oci_spec::runtime as oci;
use protobuf::Message;

fn frame(stream_id: u32, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(&[kind, 0]);
    f.extend_from_slice(body);
    f
}

fn request(service: &str, method: &str, payload: Vec<u8>) -> Vec<u8> {
    let mut r = ttrpc::proto::Request::new();
    r.service = service.into();
    r.method = method.into();
    r.payload = payload;
    r.timeout_nano = 1_000_000_000;
    r.write_to_bytes().unwrap()
}

fn spec() -> oci::Spec {
    let mut s = oci::Spec::default();
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(vec!["sh".into(), "-c".into(), "echo hi".into()]));
    p.set_env(Some(vec!["PATH=/bin".into()]));
    s.set_process(Some(p));
    let mut root = s.root().clone().unwrap();
    root.set_path("/run/kata-containers/shared/c1/rootfs".into());
    s.set_root(Some(root));
    let mut linux = s.linux().clone().unwrap();
    linux.set_sysctl(Some([("net.ipv4.ip_forward".to_string(), "1".to_string())].into()));
    let mut d = oci::LinuxDevice::default();
    d.set_path("/dev/vdb".into());
    d.set_typ(oci::LinuxDeviceType::B);
    d.set_major(254);
    d.set_minor(16);
    linux.set_devices(Some(vec![d]));
    s.set_linux(Some(linux));
    s
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden");
    let check = protocols::health::CheckRequest::new().write_to_bytes().unwrap();
    let hello = std::fs::read(golden.join("hello/new.bin")).unwrap();
    let sandbox = std::fs::read(golden.join("create_sandbox/new.bin")).unwrap();
    let wire = protocols::oci_convert::from_oci(&spec());
    let mut create = protocols::agent::CreateContainerRequest::new();
    create.container_id = "c1".into();
    create.exec_id = "c1".into();
    create.OCI = protobuf::MessageField::some(wire.clone());
    let mut dev = protocols::agent::Device::new();
    dev.type_ = "scsi".into();
    dev.id = "0:1".into();
    dev.container_path = "/dev/vdb".into();
    create.devices.push(dev.clone());
    let create = create.write_to_bytes().unwrap();
    let mut exec = protocols::agent::ExecProcessRequest::new();
    exec.container_id = "c1".into();
    exec.exec_id = "e1".into();
    exec.process = wire.Process.clone();
    let exec = exec.write_to_bytes().unwrap();

    // Frames and whole connections.
    let check_frame = frame(1, 1, &request("grpc.Health", "Check", check.clone()));
    let hello_frame = frame(3, 1, &request("pith.Negotiation", "Hello", hello.clone()));
    let two = [check_frame.clone(), hello_frame.clone()].concat();
    let mut oversized = frame(5, 1, &[]);
    oversized[..4].copy_from_slice(&((4u32 << 20) + 1).to_be_bytes());
    for target in ["frame", "connection"] {
        write(&dir, target, "check", &check_frame);
        write(&dir, target, "check-hello", &two);
        write(
            &dir,
            target,
            "even-stream",
            &frame(2, 1, &request("grpc.Health", "Check", check.clone())),
        );
        write(
            &dir,
            target,
            "data-response",
            &[frame(7, 3, b"abc"), frame(9, 2, b"de")].concat(),
        );
        write(&dir, target, "oversized-header", &oversized);
        write(
            &dir,
            target,
            "create",
            &frame(11, 1, &request("grpc.AgentService", "CreateContainer", create.clone())),
        );
    }

    // Requests through the dispatcher.
    for (name, service, method, payload) in [
        ("check", "grpc.Health", "Check", check.clone()),
        ("version", "grpc.Health", "Version", check.clone()),
        ("hello", "pith.Negotiation", "Hello", hello.clone()),
        ("status", "pith.Introspection", "Status", Vec::new()),
        ("create-sandbox", "grpc.AgentService", "CreateSandbox", sandbox.clone()),
        (
            "create-container",
            "grpc.AgentService",
            "CreateContainer",
            create.clone(),
        ),
        ("exec", "grpc.AgentService", "ExecProcess", exec.clone()),
    ] {
        let input = pith_fuzz::request_input(service, method, &payload).expect("declared method");
        write(&dir, "requests", name, &input);
    }

    write(&dir, "oci_spec", "busybox", &wire.write_to_bytes().unwrap());
    write(
        &dir,
        "oci_spec",
        "default",
        &protocols::oci_convert::from_oci(&oci::Spec::default())
            .write_to_bytes()
            .unwrap(),
    );

    write(
        &dir,
        "config",
        "kata",
        b"console=hvc0 agent.log=debug agent.server_addr=vsock://-1:1024 agent.hotplug_timeout=5 \
          agent.debug_console agent.max_connections=64 agent.frame_timeout=3 agent.kernel_modules=virtio_scsi,vsock\0\
          log_level = \"info\"\nserver_addr = [\"vsock://-1:1024\", \"unix:///run/a.sock\"]\ndev_mode = true\n",
    );

    write(
        &dir,
        "uevent",
        "scsi-disk",
        b"add@/devices/pci0000:00/0000:00:02.0/virtio1/host0/target0:0:0/0:0:0:1/block/sda\0ACTION=add\0\
          DEVPATH=/devices/pci0000:00/0000:00:02.0/virtio1/host0/target0:0:0/0:0:0:1/block/sda\0SUBSYSTEM=block\0\
          DEVNAME=sda\0DEVTYPE=disk\0MAJOR=8\0MINOR=0\0",
    );

    write(&dir, "device_addr", "scsi", b"0:1");
    write(&dir, "device_addr", "pci", b"02/03.1");
    write(&dir, "device_addr", "device", &dev.write_to_bytes().unwrap());

    let mut st = protocols::agent::Storage::new();
    st.driver = "local".into();
    st.source = "local".into();
    st.fstype = "local".into();
    st.mount_point = "/run/kata-containers/shared/containers/c1/vol".into();
    st.options = ["rw", "nosuid,nodev", "mode=0755", "fsgid=1000", "size=10m", "rshared"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    write(&dir, "mount_options", "local", &st.write_to_bytes().unwrap());
    // The committed golden state files of every persist version.
    let persist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/persist");
    for v in ["v1", "v2"] {
        write(
            &dir,
            "persist_state",
            v,
            &std::fs::read(persist.join(format!("{v}.json"))).unwrap(),
        );
    }
    println!("seeds written under {}", dir.display());
}
