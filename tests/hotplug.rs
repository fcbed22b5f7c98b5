//! Block device hot-plug into a running container through `pith.Devices`, on the
//! real agent (root). A loop device stands in for the disk the host plugs.

mod common;

use std::time::{Duration, Instant};

use common::containers::*;
use common::loopdev::Loop;
use common::{call, Agent};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use protocols::pith::{
    AddBlockDeviceRequest, BlockDeviceResponse, HelloRequest, HelloResponse, RemoveBlockDeviceRequest,
};
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

const DEV: &str = "pith.Devices";

fn add_req(id: &str, kind: &str, address: &str, path: &str) -> AddBlockDeviceRequest {
    let mut r = AddBlockDeviceRequest::new();
    r.container_id = id.into();
    r.type_ = kind.into();
    r.address = address.into();
    r.container_path = path.into();
    r.mode = 0o640;
    r.uid = 0;
    r.gid = 5678;
    r.access = "rwm".into();
    r
}

fn remove_req(id: &str, path: &str) -> RemoveBlockDeviceRequest {
    let mut r = RemoveBlockDeviceRequest::new();
    r.container_id = id.into();
    r.container_path = path.into();
    r
}

/// The v1 devices cgroup's devices.list of container `id`'s init.
/// The v1 devices cgroup's list of container `id` (None on cgroup v2), found
/// from a pid of the container (ListProcesses).
async fn devices_list(c: &Client, id: &str) -> Option<String> {
    let pid = *pids_of(c, id).await.first()?;
    std::fs::read_to_string(v1_cgroup_dir(pid, "devices")?.join("devices.list")).ok()
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn hotplug_into_running_container() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Loop::new(tmp.path());
    let (major, minor) = disk.numbers();
    let agent = Agent::start(&["--hotplug-timeout", "1"]);
    let c = agent.client().await;
    let id = unique("hotplug");
    let dir = tmp.path().join(&id);
    create_and_start(&c, &dir, &id, &["sleep", "120"]).await;

    // Level 1 (no negotiation): refused, naming the level it needs.
    let (code, msg) = call::<_, BlockDeviceResponse>(&c, DEV, "AddBlockDevice", &add_req(&id, "dev", "7:0", "/dev/x"))
        .await
        .unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(msg.contains("needs API level 3"), "{msg}");
    let mut h = HelloRequest::new();
    h.min_level = 1;
    h.max_level = 3;
    h.wanted_features = vec!["block-hotplug".into()];
    let hr: HelloResponse = call(&c, "pith.Negotiation", "Hello", &h).await.unwrap();
    assert_eq!(hr.level, 3);
    assert!(hr.missing_features.is_empty());

    // Before: a node for the disk (made from the host in the rootfs) cannot be opened.
    let pre = dir.join("rootfs/pre-disk");
    nix::sys::stat::mknod(
        &pre,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(major.into(), minor.into()),
    )
    .unwrap();
    let (st, out) = sh(&c, &dir, &id, "dd if=/pre-disk of=/dev/null bs=512 count=1").await;
    assert_ne!(st, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let (st, _) = sh(&c, &dir, &id, "test -e /dev/hotdisk").await;
    assert_ne!(st, 0);

    // Plug it in.
    let path = disk.dev.to_string_lossy().into_owned();
    let t = Instant::now();
    let r: BlockDeviceResponse = call(&c, DEV, "AddBlockDevice", &add_req(&id, "path", &path, "/dev/hotdisk"))
        .await
        .unwrap();
    eprintln!("AddBlockDevice took {:?}", t.elapsed());
    assert_eq!((r.major, r.minor), (major, minor));
    assert_eq!(r.guest_path, path);
    assert_eq!(r.container_path, "/dev/hotdisk");
    let (st, out) = sh(&c, &dir, &id, "busybox stat -c '%F %t:%T %u:%g %a' /dev/hotdisk").await;
    assert_eq!(st, 0, "{out}");
    assert_eq!(out.trim(), format!("block special file {major:x}:{minor:x} 0:5678 640"));
    // A second node for the same device, owned by another user.
    let mut other = add_req(&id, "path", &path, "/dev/sub/userdisk");
    (other.uid, other.gid, other.mode) = (1234, 4321, 0o600);
    let _: BlockDeviceResponse = call(&c, DEV, "AddBlockDevice", &other).await.unwrap();
    let (st, out) = sh(&c, &dir, &id, "busybox stat -c '%u:%g %a' /dev/sub/userdisk").await;
    assert_eq!((st, out.trim()), (0, "1234:4321 600"));
    let _: BlockDeviceResponse = call(&c, DEV, "RemoveBlockDevice", &remove_req(&id, "/dev/sub/userdisk"))
        .await
        .unwrap();
    let list = devices_list(&c, &id).await.expect("v1 devices cgroup of the container");
    assert!(list.lines().any(|l| l == format!("b {major}:{minor} rwm")), "{list}");

    // The container can write and read it now (both nodes: the cgroup allows the device).
    let (st, out) = sh(
        &c,
        &dir,
        &id,
        "echo pith-hotplug | dd of=/dev/hotdisk conv=fsync && dd if=/pre-disk bs=12 count=1",
    )
    .await;
    assert_eq!(st, 0, "{out}");
    assert!(out.contains("pith-hotplug"), "{out}");
    assert_eq!(&std::fs::read(&disk.file).unwrap()[..13], b"pith-hotplug\n");

    // The same request again succeeds: idempotent.
    let again: BlockDeviceResponse = call(
        &c,
        DEV,
        "AddBlockDevice",
        &add_req(&id, "dev", &format!("{major}:{minor}"), "/dev/hotdisk"),
    )
    .await
    .unwrap();
    assert_eq!((again.major, again.minor), (major, minor));
    // A path that holds something else is refused and left alone.
    let (code, msg) = call::<_, BlockDeviceResponse>(
        &c,
        DEV,
        "AddBlockDevice",
        &add_req(&id, "dev", &format!("{major}:{minor}"), "/bin/busybox"),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::ALREADY_EXISTS, "{msg}");
    assert!(
        msg.contains("/bin/busybox") && msg.contains("not a block device"),
        "{msg}"
    );

    // Removal: node gone, device denied again.
    let r: BlockDeviceResponse = call(&c, DEV, "RemoveBlockDevice", &remove_req(&id, "/dev/hotdisk"))
        .await
        .unwrap();
    assert_eq!((r.major, r.minor), (major, minor));
    let (st, _) = sh(&c, &dir, &id, "test -e /dev/hotdisk").await;
    assert_ne!(st, 0, "node removed");
    let (st, out) = sh(&c, &dir, &id, "dd if=/pre-disk of=/dev/null bs=512 count=1").await;
    assert_ne!(st, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let list = devices_list(&c, &id).await.unwrap();
    assert!(
        !list.lines().any(|l| l.starts_with(&format!("b {major}:{minor} "))),
        "{list}"
    );
    // Removing again is a no-op.
    let r: BlockDeviceResponse = call(&c, DEV, "RemoveBlockDevice", &remove_req(&id, "/dev/hotdisk"))
        .await
        .unwrap();
    assert!(r.guest_path.is_empty());

    // A device that never appears: DEADLINE_EXCEEDED naming it, within the timeout (1 s).
    for (kind, addr, name) in [
        ("dev", "7:1000000", "block device 7:1000000"),
        ("blk", "1e", "PCI path 1e"),
    ] {
        let t = Instant::now();
        let (code, msg) =
            call::<_, BlockDeviceResponse>(&c, DEV, "AddBlockDevice", &add_req(&id, kind, addr, "/dev/never"))
                .await
                .unwrap_err();
        let took = t.elapsed();
        assert_eq!(code, Code::DEADLINE_EXCEEDED, "{msg}");
        assert!(msg.contains(name) && msg.contains(&id), "{msg}");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_millis(2500),
            "{took:?}"
        );
    }
    // ... and the container keeps running.
    let (st, out) = sh(&c, &dir, &id, "test ! -e /dev/never && echo alive").await;
    assert_eq!((st, out.trim()), (0, "alive"));

    // A container that is not running is refused.
    let idle = unique("hotplug-idle");
    let _: Empty = call(
        &c,
        SVC,
        "CreateContainer",
        &create_req(&tmp.path().join(&idle), &idle, &["true"]),
    )
    .await
    .unwrap();
    let (code, msg) =
        call::<_, BlockDeviceResponse>(&c, DEV, "AddBlockDevice", &add_req(&idle, "path", &path, "/dev/x"))
            .await
            .unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("not running"), "{msg}");
    let (code, _) =
        call::<_, BlockDeviceResponse>(&c, DEV, "AddBlockDevice", &add_req("no-such", "path", &path, "/dev/x"))
            .await
            .unwrap_err();
    assert_eq!(code, Code::NOT_FOUND);
    remove(&c, &idle).await;

    let mut s = SignalProcessRequest::new();
    s.container_id = id.clone();
    s.exec_id = id.clone();
    s.signal = 9;
    let _: Empty = call(&c, SVC, "SignalProcess", &s).await.unwrap();
    wait(&c, &id, &id).await.unwrap();
    remove(&c, &id).await;
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn create_container_rewrites_devices_to_the_guest() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Loop::new(tmp.path());
    let (major, minor) = disk.numbers();
    std::fs::write(&disk.file, b"from-the-host\n").unwrap();
    let agent = Agent::start(&["--hotplug-timeout", "1"]);
    let c = agent.client().await;

    // The host's spec names the disk by its own numbers (8:99); the agent finds the guest's.
    let with_device = |id: &str, vm_path: &str| {
        let mut req = create_req(&tmp.path().join(id), id, &["dd", "if=/dev/xvdc", "bs=14", "count=1"]);
        let linux = req.OCI.as_mut().unwrap().Linux.as_mut().unwrap();
        let mut d = protocols::oci::LinuxDevice::new();
        (d.Path, d.Type, d.Major, d.Minor, d.FileMode) = ("/dev/xvdc".into(), "b".into(), 8, 99, 0o660);
        linux.Devices.push(d);
        let mut r = protocols::oci::LinuxDeviceCgroup::new();
        (r.Allow, r.Type, r.Major, r.Minor, r.Access) = (true, "b".into(), 8, 99, "rwm".into());
        linux.Resources.mut_or_insert_default().Devices.push(r);
        let mut dev = Device::new();
        dev.type_ = "mmioblk".into();
        dev.vm_path = vm_path.into();
        dev.container_path = "/dev/xvdc".into();
        req.devices.push(dev);
        req
    };
    let id = unique("create-dev");
    let req = with_device(&id, &disk.dev.to_string_lossy());
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.clone();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();
    let out = String::from_utf8_lossy(&read_all(&c, &id, &id, "ReadStdout").await).into_owned();
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0, "{out}");
    assert_eq!(out, "from-the-host\n");
    let spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(agent.dir.path().join("state/bundles").join(&id).join("config.json")).unwrap(),
    )
    .unwrap();
    let d = &spec["linux"]["devices"][0];
    assert_eq!(
        (d["major"].as_u64(), d["minor"].as_u64()),
        (Some(major.into()), Some(minor.into()))
    );
    remove(&c, &id).await;

    // A device that never appears: DEADLINE_EXCEEDED, no container.
    let id2 = unique("create-dev");
    let t = Instant::now();
    let (code, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &with_device(&id2, "/dev/vdzz"))
        .await
        .unwrap_err();
    assert_eq!(code, Code::DEADLINE_EXCEEDED, "{msg}");
    assert!(
        msg.contains("mmio block device vdzz") && msg.contains("/dev/xvdc"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn hotplug_mounts_a_filesystem_in_the_container() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Loop::with_size(tmp.path(), 8 << 20, true);
    let agent = Agent::start(&["--hotplug-timeout", "1"]);
    let c = agent.client().await;
    let mut h = HelloRequest::new();
    (h.min_level, h.max_level) = (3, 3);
    let _: HelloResponse = call(&c, "pith.Negotiation", "Hello", &h).await.unwrap();
    let id = unique("hotplug-mount");
    let dir = tmp.path().join(&id);
    create_and_start(&c, &dir, &id, &["sleep", "120"]).await;
    // The rootfs is read-only: the mount point comes with the image.
    std::fs::create_dir_all(dir.join("rootfs/mnt/data")).unwrap();

    let path = disk.dev.to_string_lossy().into_owned();
    let mut add = add_req(&id, "path", &path, "/dev/data");
    add.mount_path = "/mnt/data".into();
    add.fstype = "ext4".into();
    add.mount_options = vec!["noatime".into()];
    for round in 0..2 {
        let r: BlockDeviceResponse = call(&c, DEV, "AddBlockDevice", &add).await.unwrap();
        assert_eq!(r.mount_path, "/mnt/data");
        if round == 0 {
            let (st, out) = sh(
                &c,
                &dir,
                &id,
                "echo kept > /mnt/data/f && grep ' /mnt/data ' /proc/mounts",
            )
            .await;
            assert_eq!(st, 0, "{out}");
            assert!(out.contains("ext4") && out.contains("noatime"), "{out}");
            // Adding again leaves the one mount alone.
            let _: BlockDeviceResponse = call(&c, DEV, "AddBlockDevice", &add).await.unwrap();
            let (_, out) = sh(&c, &dir, &id, "grep -c ' /mnt/data ' /proc/mounts").await;
            assert_eq!(out.trim(), "1");
        } else {
            // Written through the first mount, read back through a new one.
            let (st, out) = sh(&c, &dir, &id, "cat /mnt/data/f").await;
            assert_eq!((st, out.as_str()), (0, "kept\n"));
        }
        let _: BlockDeviceResponse = call(&c, DEV, "RemoveBlockDevice", &remove_req(&id, "/dev/data"))
            .await
            .unwrap();
        let (st, out) = sh(
            &c,
            &dir,
            &id,
            "grep ' /mnt/data ' /proc/mounts; test -e /mnt/data/f || test -e /dev/data",
        )
        .await;
        assert_ne!(st, 0, "unmounted and node gone: {out}");
    }
    remove(&c, &id).await;
}

/// A loop device that does not exist yet, created (and removed on drop) through
/// /dev/loop-control, so that the kernel sends a real `add block` uevent.
struct NewLoop {
    ctl: std::fs::File,
    index: u32,
}

const LOOP_CTL_ADD: libc::c_ulong = 0x4C80;
const LOOP_CTL_REMOVE: libc::c_ulong = 0x4C81;

impl NewLoop {
    /// Picks an index above every existing loop device; nothing is created yet.
    fn unused() -> NewLoop {
        let ctl = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .unwrap();
        let top = std::fs::read_dir("/sys/class/block")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("loop")?.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        NewLoop { ctl, index: top + 40 }
    }

    fn add(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: ioctl on an open /dev/loop-control with an integer argument.
        let r = unsafe { libc::ioctl(self.ctl.as_raw_fd(), LOOP_CTL_ADD, self.index as libc::c_ulong) };
        assert!(
            r >= 0,
            "ioctl(LOOP_CTL_ADD, {}): {}",
            self.index,
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for NewLoop {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in add(); failure (never added) is fine.
        unsafe { libc::ioctl(self.ctl.as_raw_fd(), LOOP_CTL_REMOVE, self.index as libc::c_ulong) };
    }
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn device_that_appears_after_the_request_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start(&["--hotplug-timeout", "3", "--log-level", "trace"]);
    let c = agent.client().await;
    let mut h = HelloRequest::new();
    (h.min_level, h.max_level) = (3, 3);
    let _: HelloResponse = call(&c, "pith.Negotiation", "Hello", &h).await.unwrap();
    let id = unique("hotplug-late");
    let dir = tmp.path().join(&id);
    create_and_start(&c, &dir, &id, &["sleep", "120"]).await;

    let late = NewLoop::unused();
    let name = format!("loop{}", late.index);
    let req = add_req(&id, "mmioblk", &name, "/dev/late");
    let t = Instant::now();
    let (res, ()) = tokio::join!(call::<_, BlockDeviceResponse>(&c, DEV, "AddBlockDevice", &req), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        late.add();
    });
    let took = t.elapsed();
    let r = res.unwrap();
    assert_eq!((r.guest_path.as_str(), r.major), (format!("/dev/{name}").as_str(), 7));
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    eprintln!("device plugged 500 ms after the request; AddBlockDevice returned after {took:?}");
    // The listener saw the kernel's event for it.
    let log = agent.wait_log(&format!("\"devname\":\"{name}\""));
    assert!(
        log.lines()
            .any(|l| l.contains("\"msg\":\"uevent\"") && l.contains(&format!("/block/{name}\""))),
        "{log}"
    );
    let (st, out) = sh(&c, &dir, &id, "test -b /dev/late && echo ok").await;
    assert_eq!((st, out.trim()), (0, "ok"));
    let _: BlockDeviceResponse = call(&c, DEV, "RemoveBlockDevice", &remove_req(&id, "/dev/late"))
        .await
        .unwrap();
    remove(&c, &id).await;
}
