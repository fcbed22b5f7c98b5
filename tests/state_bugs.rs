//! Three bugs of the agent's sandbox state, each through the real agent (root):
//! two concurrent CreateSandbox calls both succeeding and leaking a namespace
//! holder; an UpdateContainer with device rules dropping hot-plugged devices
//! from the device cgroup; RemoveContainer keeping the container's hot-plug
//! records for a later container with the same id. (The sandbox's unit tests
//! cover the same logic through the fake engine.)

mod common;

use common::containers::*;
use common::loopdev::Loop;
use common::{call, Agent};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use protocols::pith::{AddBlockDeviceRequest, BlockDeviceResponse, HelloRequest, HelloResponse};
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

const DEV: &str = "pith.Devices";

/// AddBlockDevice of `disk` into container `id` at `path`.
fn plug(disk: &Loop, id: &str, path: &str) -> AddBlockDeviceRequest {
    let mut r = AddBlockDeviceRequest::new();
    r.container_id = id.into();
    r.type_ = "path".into();
    r.address = disk.dev.display().to_string();
    r.container_path = path.into();
    r
}

async fn level3(c: &Client) {
    let mut h = HelloRequest::new();
    h.min_level = 1;
    h.max_level = 3;
    let r: HelloResponse = call(c, "pith.Negotiation", "Hello", &h).await.unwrap();
    assert_eq!(r.level, 3);
}

/// The children of `pid` in a UTS namespace other than its own: namespace
/// holders (before any container exists).
fn children_in_other_uts(pid: u32) -> Vec<i32> {
    let ours = std::fs::read_link(format!("/proc/{pid}/ns/uts")).unwrap();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        let uts = std::fs::read_link(e.path().join("ns/uts")).ok();
        if ppid == Some(pid) && uts.is_some_and(|u| u != ours) {
            found.push(child);
        }
    }
    found
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn concurrent_create_sandbox_one_succeeds_one_holder() {
    let agent = Agent::start(&[]);
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(agent.client().await);
    }
    let calls = clients.iter().enumerate().map(|(i, c)| async move {
        let mut r = CreateSandboxRequest::new();
        r.sandbox_id = format!("sb{i}");
        r.hostname = format!("pod{i}");
        call::<_, Empty>(c, SVC, "CreateSandbox", &r).await
    });
    let results = futures_join(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one CreateSandbox succeeds: {results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.0, Code::ALREADY_EXISTS, "{r:?}");
    }
    let pid = agent.child.as_ref().unwrap().id();
    let holders = children_in_other_uts(pid);
    assert_eq!(holders.len(), 1, "one namespace holder: {holders:?}");
}

/// Runs the futures concurrently on this task; their results in order.
async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in pinned.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn update_with_device_rules_keeps_hotplugged_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Loop::new(tmp.path());
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    level3(&c).await;
    let id = unique("upd");
    let dir = tmp.path().join(&id);
    create_and_start(&c, &dir, &id, &["sleep", "120"]).await;
    let _: BlockDeviceResponse = call(&c, DEV, "AddBlockDevice", &plug(&disk, &id, "/dev/hotdisk"))
        .await
        .unwrap();
    let read = "dd if=/dev/hotdisk of=/dev/null bs=512 count=1";
    let (st, out) = sh(&c, &dir, &id, read).await;
    assert_eq!(st, 0, "readable once plugged: {out}");
    // The host updates the container's device rules (here: /dev/null only).
    let mut rule = protocols::oci::LinuxDeviceCgroup::new();
    rule.Allow = true;
    rule.Type = "c".into();
    rule.Major = 1;
    rule.Minor = 3;
    rule.Access = "rwm".into();
    let mut res = protocols::oci::LinuxResources::new();
    res.Devices = vec![rule];
    let mut u = UpdateContainerRequest::new();
    u.container_id = id.clone();
    u.resources = protobuf::MessageField::some(res);
    let _: Empty = call(&c, SVC, "UpdateContainer", &u).await.unwrap();
    let (st, out) = sh(&c, &dir, &id, read).await;
    assert_eq!(
        st, 0,
        "the hot-plugged device stays allowed after UpdateContainer: {out}"
    );
    remove(&c, &id).await;
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn remove_container_drops_its_hotplug_records() {
    let tmp = tempfile::tempdir().unwrap();
    let old = Loop::new(tmp.path());
    let new = Loop::new(tmp.path());
    let (major, minor) = old.numbers();
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    level3(&c).await;
    let id = unique("reuse");
    let dir = tmp.path().join(&id);
    create_and_start(&c, &dir, &id, &["sleep", "120"]).await;
    let _: BlockDeviceResponse = call(&c, DEV, "AddBlockDevice", &plug(&old, &id, "/dev/old"))
        .await
        .unwrap();
    remove(&c, &id).await;
    // A new container with the same id, given another device.
    let dir2 = tmp.path().join(format!("{id}-2"));
    create_and_start(&c, &dir2, &id, &["sleep", "120"]).await;
    let _: BlockDeviceResponse = call(&c, DEV, "AddBlockDevice", &plug(&new, &id, "/dev/new"))
        .await
        .unwrap();
    // The old container's device is not allowed in the new one: a node made
    // for it from the host (in the rootfs) cannot be opened.
    nix::sys::stat::mknod(
        &dir2.join("rootfs/old-disk"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(major.into(), minor.into()),
    )
    .unwrap();
    let (st, out) = sh(&c, &dir2, &id, "dd if=/old-disk of=/dev/null bs=512 count=1").await;
    assert_ne!(st, 0, "the old device must be denied: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let (st, out) = sh(&c, &dir2, &id, "dd if=/dev/new of=/dev/null bs=512 count=1").await;
    assert_eq!(st, 0, "the new device is allowed: {out}");
    remove(&c, &id).await;
}
