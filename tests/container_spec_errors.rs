//! Specs the agent must refuse, and container failures it must report, as a
//! Kata runtime sees them: sysctls that would change the guest, and an init
//! that fails after CreateContainer. Real busybox containers; root only.

mod common;

use common::containers::*;
use common::{call, Agent};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use ttrpc::proto::Code;

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn sysctls_outside_the_containers_namespaces_are_invalid_arguments() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    for (i, (key, value)) in [
        ("kernel.printk_ratelimit", "17"),
        ("kernel.core_pattern", "|/tmp/escape %p"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let before = std::fs::read_to_string(&path).unwrap();
        let id = unique("sysctl");
        let mut req = create_req(&dir.path().join(i.to_string()), &id, &["true"]);
        req.OCI
            .as_mut()
            .unwrap()
            .Linux
            .as_mut()
            .unwrap()
            .Sysctl
            .insert(key.into(), value.into());
        let (code, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &req).await.unwrap_err();
        assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains(&format!("linux.sysctl \"{key}\"")), "{msg}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            before,
            "{key} changed on the machine"
        );
    }
    // net.* is the guest's (the pod's) network, as kata-agent allows it.
    let id = unique("netsysctl");
    let mut req = create_req(
        &dir.path().join("net"),
        &id,
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    let linux = req.OCI.as_mut().unwrap().Linux.as_mut().unwrap();
    linux.Namespaces.retain(|n| n.Type != "network");
    // The value the guest has: the test must not change the machine.
    let current = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    linux
        .Sysctl
        .insert("net.ipv4.ip_unprivileged_port_start".into(), current.trim().into());
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.clone();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0);
    remove(&c, &id).await;
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn an_init_that_cannot_exec_fails_start_container_with_its_error() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("enoexec");
    let req = create_req(dir.path(), &id, &["/bin/not-a-program"]);
    let prog = dir.path().join("rootfs/bin/not-a-program");
    std::fs::write(&prog, b"\x7fnot an ELF").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.clone();
    let (code, msg) = call::<_, Empty>(&c, SVC, "StartContainer", &s).await.unwrap_err();
    assert_ne!(code, Code::OK);
    assert!(
        msg.contains("execve /bin/not-a-program") && msg.contains("ENOEXEC"),
        "{msg}"
    );
    // The agent logs the failed call (a warning) with the init's error.
    let log = agent.wait_log("ENOEXEC");
    let line = log
        .lines()
        .find(|l| l.contains("\"rpc failed\"") && l.contains("grpc.AgentService/StartContainer"))
        .unwrap_or_else(|| panic!("no warning for the failed StartContainer in the log:\n{log}"));
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
    assert!(line.contains(&id) && line.contains("ENOEXEC"), "{line}");
    remove(&c, &id).await;

    // A spec without a /proc mount runs (as with crun).
    let id = unique("noproc");
    let mut req = create_req(&dir.path().join("noproc"), &id, &["sh", "-c", "echo ran"]);
    let oci = req.OCI.as_mut().unwrap();
    oci.Mounts.retain(|m| m.destination != "/proc");
    let linux = oci.Linux.as_mut().unwrap();
    linux.MaskedPaths.clear();
    linux.ReadonlyPaths.clear();
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let _: Empty = call(&c, SVC, "StartContainer", &{
        let mut s = StartContainerRequest::new();
        s.container_id = id.clone();
        s
    })
    .await
    .unwrap();
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0);
    assert_eq!(read_all(&c, &id, &id, "ReadStdout").await, b"ran\n");
    remove(&c, &id).await;
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_missing_program_is_named_with_the_rootfs_it_was_looked_up_in() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("noprog");
    let req = create_req(dir.path(), &id, &["no-such-program"]);
    let rootfs = req.OCI.Root.Path.clone();
    let (code, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &req).await.unwrap_err();
    assert_eq!(code, Code::INTERNAL, "{msg}");
    // Each layer says its part once.
    assert!(
        msg.starts_with("container init: executable \"no-such-program\" not found in $PATH (")
            && msg.ends_with(&format!(") in rootfs {rootfs}")),
        "{msg}"
    );
    assert_eq!(msg.matches("container init").count(), 1, "{msg}");

    // A symlink to the host's path of a program (what `busybox --install -s`
    // makes) does not resolve in the container: the message says so.
    let id = unique("hostlink");
    let sub = dir.path().join("hostlink");
    let req = create_req(&sub, &id, &["hostsh"]);
    let rootfs = std::path::PathBuf::from(&req.OCI.Root.Path);
    std::os::unix::fs::symlink(rootfs.join("bin/busybox"), rootfs.join("bin/hostsh")).unwrap();
    let (_, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &req).await.unwrap_err();
    assert!(
        msg.ends_with(&format!(
            "/bin/hostsh is a symlink to {}/bin/busybox, which does not exist in the container",
            rootfs.display()
        )),
        "{msg}"
    );
}
