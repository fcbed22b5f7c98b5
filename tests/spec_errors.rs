//! Bad specs and a full state directory through the whole agent (issue 15 item
//! 10): each is refused with the right code and a message naming the field or
//! the reason, before anything is created.

mod common;

use common::{busybox_rootfs, call, container_request, Agent};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::{CreateContainerRequest, ExecProcessRequest};
use ttrpc::proto::Code;

async fn create(agent: &Agent, req: &CreateContainerRequest) -> Result<Empty, (Code, String)> {
    let c = agent.client().await;
    call(&c, "grpc.AgentService", "CreateContainer", req).await
}

/// A request for a container on the agent's busybox rootfs (made on first use).
fn request(agent: &Agent, id: &str, args: &[&str]) -> CreateContainerRequest {
    let rootfs = agent.dir.path().join("rootfs");
    if !rootfs.exists() {
        busybox_rootfs(agent.dir.path());
    }
    container_request(rootfs, id, args)
}

#[tokio::test]
async fn invalid_specs_are_invalid_argument_naming_the_field() {
    let agent = Agent::start(&[]);
    let mut cases: Vec<(&str, CreateContainerRequest, &str)> = Vec::new();

    let mut r = request(&agent, "dotdot-mount", &["true"]);
    let mut m = protocols::oci::Mount::new();
    m.destination = "/data/../../etc".into();
    m.type_ = "tmpfs".into();
    m.source = "tmpfs".into();
    r.OCI.as_mut().unwrap().Mounts.push(m);
    let n = r.OCI.Mounts.len() - 1;
    cases.push(("'..' in a mount destination", r, "destination"));
    let want_mount = format!("mounts[{n}].destination: /data/../../etc contains '..'");

    let mut r = request(&agent, "dotdot-device", &["true"]);
    let mut d = protocols::oci::LinuxDevice::new();
    d.Path = "/dev/../etc/evil".into();
    d.Type = "c".into();
    d.Major = 1;
    d.Minor = 3;
    r.OCI.as_mut().unwrap().Linux.mut_or_insert_default().Devices.push(d);
    cases.push((
        "'..' in a device path",
        r,
        "linux.devices[0].path: /dev/../etc/evil contains '..'",
    ));

    let mut r = request(&agent, "bad-sysctl", &["true"]);
    r.OCI
        .as_mut()
        .unwrap()
        .Linux
        .mut_or_insert_default()
        .Sysctl
        .insert("net..ipv4".into(), "1".into());
    cases.push((
        "a bad sysctl name",
        r,
        "linux.sysctl[\"net..ipv4\"]: invalid sysctl name",
    ));

    let r = request(&agent, "no-args", &[]);
    cases.push(("empty args", r, "process.args: empty"));

    for (what, req, needle) in cases {
        let (code, msg) = create(&agent, &req).await.unwrap_err();
        assert_eq!(code, Code::INVALID_ARGUMENT, "{what}: {msg}");
        let needle = if needle == "destination" { &want_mount } else { needle };
        assert!(msg.contains(needle), "{what}: {msg}");
    }

    // ExecProcess with nothing to run: refused before the container is looked up.
    let mut e = ExecProcessRequest::new();
    e.container_id = "whatever".into();
    e.exec_id = "e1".into();
    e.process = protobuf::MessageField::some(protocols::oci::Process::new());
    let c = agent.client().await;
    let (code, msg) = call::<_, Empty>(&c, "grpc.AgentService", "ExecProcess", &e)
        .await
        .unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("process.args: empty"), "{msg}");
}

/// A small tmpfs over a directory, detached on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mounts a tmpfs over the agent's bundle directory.
#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_full_state_directory_is_reported_with_the_reason() {
    let agent = Agent::start(&[]);
    let bundles = agent.dir.path().join("state").join("bundles");
    nix::mount::mount(
        Some("tmpfs"),
        &bundles,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .expect("mount tmpfs");
    let _mounted = Tmpfs(bundles.clone());
    // Fill it.
    let filler = vec![0u8; 4096];
    let mut f = std::fs::File::create(bundles.join("filler")).unwrap();
    while std::io::Write::write_all(&mut f, &filler).is_ok() {}
    drop(f);

    let req = request(&agent, "full", &["true"]);
    let (code, msg) = create(&agent, &req).await.unwrap_err();
    assert_eq!(code, Code::INTERNAL, "{msg}");
    assert!(
        msg.contains("config.json") && msg.contains("No space left on device"),
        "the reason is missing: {msg}"
    );
}
