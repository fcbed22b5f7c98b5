//! Real mounts (root only). Each test first moves its thread into a private
//! mount namespace, so nothing it mounts is seen outside, and everything it
//! mounted goes away with the thread even if it fails half-way.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::*;

#[allow(dead_code, reason = "the whole-agent tests use the rest")]
#[path = "../../tests/common/loopdev.rs"]
mod loopdev;
use loopdev::Loop;

fn private_mount_ns() {
    nix::sched::unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / private");
}

/// The filesystem type mounted at `mp` in this thread's namespace, if any.
fn mounted_fstype(mp: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (Path::new(f[4]) == mp).then(|| f[sep + 1].to_string())
    })
}

fn storage(driver: &str, source: &str, mp: &Path, options: &[&str]) -> Storage {
    let mut s = Storage::new();
    s.driver = driver.into();
    s.source = source.into();
    s.mount_point = mp.display().to_string();
    s.options = options.iter().map(|o| o.to_string()).collect();
    s
}

/// A manager confined to the test's directory.
fn manager(root: &Path) -> StorageManager {
    StorageManager::new().with_roots(vec![root.to_path_buf()])
}

fn tmpfs(mp: &Path) -> Storage {
    storage("ephemeral", "tmpfs", mp, &["size=1m", "mode=0777"])
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn ephemeral_is_a_tmpfs_until_released() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let mp = d.path().join("sandbox/ephemeral/vol");
    let m = manager(d.path());
    let paths = m.add("c1", &[tmpfs(&mp)]).unwrap();
    assert_eq!(paths, vec![mp.clone()]);
    assert_eq!(mounted_fstype(&mp).as_deref(), Some("tmpfs"));
    assert_eq!(std::fs::metadata(&mp).unwrap().permissions().mode() & 0o7777, 0o777);
    std::fs::write(mp.join("f"), "data").unwrap();
    assert_eq!(m.mount_points_of("c1"), vec![mp.clone()]);

    m.release("c1").unwrap();
    assert_eq!(mounted_fstype(&mp), None);
    assert!(!d.path().join("sandbox").exists(), "created directories removed");
    assert!(m.snapshot().entries.is_empty());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn ephemeral_fsgid_gives_the_root_to_the_group() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let mp = d.path().join("e");
    let m = manager(d.path());
    m.add("c1", &[storage("ephemeral", "", &mp, &["fsgid=4321"])]).unwrap();
    let meta = std::fs::metadata(&mp).unwrap();
    assert_eq!(meta.gid(), 4321);
    assert_ne!(meta.mode() & libc::S_ISGID, 0);
    m.release_all().unwrap();
    assert_eq!(mounted_fstype(&mp), None);
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn bind_ro_refuses_writes() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello"), "hi").unwrap();
    let mp = d.path().join("dst");
    let m = manager(d.path());
    m.add("c1", &[storage("bind", src.to_str().unwrap(), &mp, &["bind", "ro"])])
        .unwrap();
    assert_eq!(std::fs::read_to_string(mp.join("hello")).unwrap(), "hi");
    let e = std::fs::write(mp.join("new"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    // The source itself stays writable.
    std::fs::write(src.join("new"), "x").unwrap();
    m.release("c1").unwrap();
    assert!(!mp.exists());
    assert!(src.join("hello").exists(), "release never touches the source");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn bind_of_a_file() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("resolv.conf");
    std::fs::write(&src, "nameserver 10.0.0.1\n").unwrap();
    let mp = d.path().join("etc/resolv.conf");
    let m = manager(d.path());
    m.add("sandbox", &[storage("bind", src.to_str().unwrap(), &mp, &[])])
        .unwrap();
    assert_eq!(std::fs::read_to_string(&mp).unwrap(), "nameserver 10.0.0.1\n");
    m.release("sandbox").unwrap();
    assert!(!d.path().join("etc").exists());
    assert!(src.exists());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn local_dir_has_mode_and_group_and_goes_with_its_data() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let mp = d.path().join("local/vol");
    let m = manager(d.path());
    m.add("c1", &[storage("local", "", &mp, &["mode=0750", "fsgid=1234"])])
        .unwrap();
    let meta = std::fs::metadata(&mp).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o750 | libc::S_ISGID);
    assert_eq!(meta.gid(), 1234);
    std::fs::write(mp.join("data"), "x").unwrap();
    m.release("c1").unwrap();
    assert!(!d.path().join("local").exists());

    let plain = d.path().join("plain");
    m.add("c1", &[storage("local", "", &plain, &["mode=0700"])]).unwrap();
    assert_eq!(std::fs::metadata(&plain).unwrap().mode() & 0o7777, 0o700);
    m.release("c1").unwrap();
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn two_owners_share_one_storage() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let mp = d.path().join("shm");
    let m = manager(d.path());
    m.add("c1", &[tmpfs(&mp)]).unwrap();
    std::fs::write(mp.join("from-c1"), "1").unwrap();
    // Same storage, spelled with a trailing slash: the same mount point.
    let mut again = tmpfs(&mp);
    again.mount_point.push('/');
    m.add("c2", &[again]).unwrap();
    assert!(mp.join("from-c1").exists(), "not mounted a second time");
    let snap = m.snapshot();
    assert_eq!(snap.entries.len(), 1);
    assert_eq!(
        snap.entries[0].owners.iter().cloned().collect::<Vec<_>>(),
        vec!["c1".to_string(), "c2".to_string()]
    );

    // A different storage at the same place is refused.
    let e = m
        .add("c3", &[storage("ephemeral", "tmpfs", &mp, &["size=2m"])])
        .unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::AlreadyExists, "{e}");
    assert!(m.mount_points_of("c3").is_empty());

    // What must let go of a filesystem first runs only before a teardown,
    // while the storage is still mounted.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, at) = (seen.clone(), mp.clone());
    m.before_teardown(Box::new(move || s.lock().unwrap().push(mounted_fstype(&at))));
    m.release("c1").unwrap();
    assert_eq!(mounted_fstype(&mp).as_deref(), Some("tmpfs"));
    assert!(mp.join("from-c1").exists());
    assert!(seen.lock().unwrap().is_empty(), "ran with an owner left");
    m.release("c2").unwrap();
    assert_eq!(mounted_fstype(&mp), None);
    assert!(!mp.exists());
    assert_eq!(*seen.lock().unwrap(), [Some("tmpfs".to_string())]);
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn a_failing_storage_rolls_back_the_call() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let kept = d.path().join("kept");
    let first = d.path().join("first");
    let m = manager(d.path());
    m.add("c1", &[tmpfs(&kept)]).unwrap();

    let missing = d.path().join("nonexistent/source");
    let bad = storage("bind", missing.to_str().unwrap(), &d.path().join("bad"), &[]);
    let e = m.add("c2", &[tmpfs(&kept), tmpfs(&first), bad]).unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("storage 2 (bind"), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert_eq!(mounted_fstype(&first), None, "first storage unmounted");
    assert!(!first.exists());
    assert!(!d.path().join("bad").exists());
    // The storage c1 had is untouched, and c2 holds nothing.
    assert_eq!(mounted_fstype(&kept).as_deref(), Some("tmpfs"));
    assert_eq!(m.mount_points_of("c1"), vec![kept.clone()]);
    assert!(m.mount_points_of("c2").is_empty());
    m.release_all().unwrap();
    assert_eq!(mounted_fstype(&kept), None);
}

#[test]
fn unknown_drivers_and_bad_block_sources_are_invalid() {
    let d = tempfile::tempdir().unwrap();
    let m = manager(d.path());
    let mp = d.path().join("x");
    let e = m.add("c1", &[storage("nosuchdriver", "x", &mp, &[])]).unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("unknown storage driver \"nosuchdriver\""), "{e}");
    for driver in ["blk", "scsi", "nvdimm", "mmioblk"] {
        let mut s = storage(driver, "/dev/null", &mp, &[]);
        s.fstype = "ext4".into();
        let e = m.add("c1", &[s]).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("is not a block device"), "{e}");
        assert!(!mp.exists());
    }
    let e = m
        .add("c1", &[storage("local", "", Path::new("rel/path"), &[])])
        .unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
    assert!(m.snapshot().entries.is_empty());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn blk_storage_mounts_the_disk_with_its_fs_group() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let disk = Loop::ext4_with(d.path(), 16 << 20, &[("hello", "from the disk\n")]);
    let mp = d.path().join("sandbox/storage/vol");
    let m = manager(d.path());
    let mut s = storage("blk", disk.path(), &mp, &["rw", "noatime"]);
    s.fstype = "ext4".into();
    let mut g = protocols::agent::FSGroup::new();
    g.group_id = 2000;
    s.fs_group = protobuf::MessageField::some(g);
    m.add("c1", &[s]).unwrap();
    assert_eq!(mounted_fstype(&mp).as_deref(), Some("ext4"));
    assert_eq!(std::fs::read_to_string(mp.join("hello")).unwrap(), "from the disk\n");
    let meta = std::fs::metadata(mp.join("hello")).unwrap();
    assert_eq!(meta.gid(), 2000);
    assert_eq!(meta.mode() & 0o660, 0o660);
    m.release("c1").unwrap();
    assert_eq!(mounted_fstype(&mp), None);
    assert!(!d.path().join("sandbox").exists());

    // A filesystem the kernel does not have: a clear error, nothing left.
    let mut s = storage("blk", disk.path(), &mp, &[]);
    s.fstype = "pithnosuchfs".into();
    let e = m.add("c1", &[s]).unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
    assert!(
        e.to_string()
            .contains("fstype \"pithnosuchfs\" is not supported by this kernel"),
        "{e}"
    );
    assert!(!d.path().join("sandbox").exists());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn erofs_image_on_a_block_device_mounts_read_only() {
    private_mount_ns();
    if !block::filesystem_available("erofs") {
        eprintln!("NOTE: this kernel has no erofs (built in or module): only the error path is checked");
    }
    let imgdir = tempfile::tempdir().unwrap();
    let tree = imgdir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("layer"), "read-only layer\n").unwrap();
    let img = imgdir.path().join("layer.erofs");
    let ok = std::process::Command::new("mkfs.erofs")
        .arg(&img)
        .arg(&tree)
        .output()
        .expect("mkfs.erofs (apt-get install erofs-utils)");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let disk = Loop::attach(img);
    let dev = disk.path().to_string();
    let d = tempfile::tempdir().unwrap();
    let mp = d.path().join("c1/layer0");
    let m = manager(d.path());
    let mut s = storage("blk", &dev, &mp, &[]);
    s.fstype = "erofs".into();
    match m.add("c1", &[s]) {
        Ok(_) => {
            assert_eq!(mounted_fstype(&mp).as_deref(), Some("erofs"));
            assert_eq!(std::fs::read_to_string(mp.join("layer")).unwrap(), "read-only layer\n");
            assert_eq!(
                std::fs::write(mp.join("x"), "").unwrap_err().raw_os_error(),
                Some(libc::EROFS)
            );
            m.release("c1").unwrap();
        }
        Err(e) => {
            assert!(!block::filesystem_available("erofs"), "{e}");
            assert!(
                e.to_string()
                    .contains("fstype \"erofs\" is not supported by this kernel"),
                "{e}"
            );
        }
    }
    assert!(!d.path().join("c1").exists());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn overlayfs_storage_with_a_writable_layer() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let lower = d.path().join("lower");
    std::fs::create_dir(&lower).unwrap();
    std::fs::write(lower.join("base"), "lower\n").unwrap();
    let mp = d.path().join("c1/rootfs");
    let m = manager(d.path());
    let mut s = storage(
        "overlayfs",
        "overlay",
        &mp,
        &[&format!("lowerdir={}", lower.display()), overlay::OVERLAY_RW_OPTION],
    );
    s.fstype = "overlay".into();
    m.add("c1", &[s]).unwrap();
    assert_eq!(mounted_fstype(&mp).as_deref(), Some("overlay"));
    assert_eq!(m.snapshot().entries[0].layer, Some(d.path().join("c1/rootfs.rw")));
    std::fs::write(mp.join("new"), "upper").unwrap();
    assert!(d.path().join("c1/rootfs.rw/upper/new").exists());
    assert!(!lower.join("new").exists());
    m.release("c1").unwrap();
    assert_eq!(mounted_fstype(&mp), None);
    assert!(!d.path().join("c1").exists(), "rootfs and its writable layer removed");
    assert!(lower.join("base").exists());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn virtio_fs_without_the_device_fails_cleanly() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let mp = d.path().join("shared/containers");
    let m = manager(d.path());
    for (driver, tag) in [("virtio-fs", "pithNoSuchTag"), ("9p", "pithNoSuchTag")] {
        let mut s = storage(driver, tag, &mp, &["nodev"]);
        if driver == "9p" {
            s.options.push("trans=virtio,version=9p2000.L".into());
        }
        let e = m.add("sandbox", &[s]).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Internal, "{e}");
        let msg = e.to_string();
        let prefix = format!(
            "storage 0 ({driver} at {:?}): mount(\"pithNoSuchTag\" -> ",
            mp.display().to_string()
        );
        assert!(msg.starts_with(&prefix), "{msg}");
        assert!(
            msg.contains(if driver == "9p" { ", 9p)" } else { ", virtiofs)" }),
            "{msg}"
        );
        assert!(!d.path().join("shared").exists(), "mount point removed again");
    }
    assert!(m.snapshot().entries.is_empty());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn state_survives_a_round_trip_and_can_be_released() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let mp = d.path().join("a/b");
    let m = manager(d.path());
    let mut s = tmpfs(&mp);
    s.shared = true;
    m.add("c1", &[s]).unwrap();
    let json = serde_json::to_string(&m.snapshot()).unwrap();
    let state: StorageState = serde_json::from_str(&json).unwrap();
    assert_eq!(state, m.snapshot());
    assert_eq!(state.entries[0].created, vec![d.path().join("a"), d.path().join("a/b")]);

    let restored = StorageManager::from_state(state)
        .unwrap()
        .with_roots(vec![d.path().to_path_buf()]);
    // Shared: the last owner leaving does not unmount it ...
    restored.release("c1").unwrap();
    assert_eq!(mounted_fstype(&mp).as_deref(), Some("tmpfs"));
    // ... the sandbox going away does.
    restored.release_all().unwrap();
    assert_eq!(mounted_fstype(&mp), None);
    assert!(!d.path().join("a").exists());
}

#[test]
fn mount_points_and_bind_sources_are_confined_to_the_roots() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let outside = d.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    let m = manager(&root);
    let cases = [
        // (storage, field named in the error)
        (
            storage("ephemeral", "tmpfs", Path::new("/etc"), &[]),
            "mount_point: /etc is not under",
        ),
        (storage("local", "", &outside.join("vol"), &[]), "mount_point:"),
        (
            storage("local", "", &root.join("escape/vol"), &[]),
            "a symlink leads out of",
        ),
        (
            storage("ephemeral", "tmpfs", &root, &[]),
            "is not under an allowed directory",
        ),
        (
            storage("bind", outside.to_str().unwrap(), &root.join("b"), &[]),
            "source: ",
        ),
        (
            storage("bind", root.join("escape").to_str().unwrap(), &root.join("b"), &[]),
            "source: ",
        ),
    ];
    for (s, want) in cases {
        let e = m.add("c1", std::slice::from_ref(&s)).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains(want), "{}: {e}", s.mount_point);
    }
    // Nothing was made anywhere.
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
    assert!(m.snapshot().entries.is_empty());
    let dflt = StorageManager::new();
    assert_eq!(dflt.roots(), &[PathBuf::from("/run/kata-containers")]);
    let roots = roots_for(Path::new("/run/pith"), &|k| {
        (k == ROOTS_ENV).then(|| "/a:rel:/b".into())
    });
    assert_eq!(
        roots,
        ["/run/kata-containers", "/run/pith", "/a", "/b"].map(PathBuf::from)
    );
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn a_symlink_inside_the_root_is_followed_and_keyed_by_its_target() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
    let m = manager(d.path());
    let got = m.add("c1", &[tmpfs(&d.path().join("link/vol"))]).unwrap();
    assert_eq!(got, vec![d.path().join("real/vol")]);
    assert_eq!(mounted_fstype(&d.path().join("real/vol")).as_deref(), Some("tmpfs"));
    m.release("c1").unwrap();
    assert!(!d.path().join("real/vol").exists());
}

/// Polls `f` every 50 ms for up to 10 s (the watcher scans every 100 ms here).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "{what}: not seen within 10 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn watchable_bind_copies_onto_its_tmpfs_follows_updates_then_falls_back_to_a_bind() {
    private_mount_ns();
    let d = tempfile::tempdir().unwrap();
    let shared = d.path().join("shared/containers");
    let src = shared.join("cid-1234-config");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.conf"), "v1").unwrap();
    let tmpfs_dir = shared.join("watchable");
    let m = manager(d.path()).with_watcher(watch::Watcher::new(&tmpfs_dir, std::time::Duration::from_millis(100)));
    // As Kata's Go runtime sends it.
    let mp = tmpfs_dir.join("cid-1234-config");
    let s = storage(
        "watchable-bind",
        src.to_str().unwrap(),
        &mp,
        &["rbind", "rprivate", "ro"],
    );
    m.add("c1", &[s]).unwrap();
    assert_eq!(mounted_fstype(&tmpfs_dir).as_deref(), Some("tmpfs"));
    assert_eq!(std::fs::read_to_string(mp.join("app.conf")).unwrap(), "v1");
    assert_eq!(m.watcher().is_copied(&mp), Some(true));
    let w = m.snapshot().watch;
    assert_eq!(
        w.entries,
        [watch::Watched {
            source: src.clone(),
            target: mp.clone(),
            copied: true,
        }]
    );
    assert!(w.tmpfs.is_some_and(|t| t.mounted));

    std::fs::write(src.join("app.conf"), "v2, from the host").unwrap();
    std::fs::write(src.join("new.conf"), "n").unwrap();
    eventually("update copied", || {
        std::fs::read_to_string(mp.join("app.conf")).ok().as_deref() == Some("v2, from the host")
            && mp.join("new.conf").exists()
    });
    std::fs::remove_file(src.join("new.conf")).unwrap();
    eventually("removal copied", || !mp.join("new.conf").exists());

    // Past Kata's limit of 16 entries: the mount point becomes a bind mount.
    for i in 0..watch::MAX_ENTRIES {
        std::fs::write(src.join(format!("f{i}")), "x").unwrap();
    }
    eventually("bind fallback", || m.watcher().is_copied(&mp) == Some(false));
    assert!(!m.snapshot().watch.entries[0].copied);
    assert!(mp.join("f15").exists());
    std::fs::write(src.join("after-bind"), "direct").unwrap();
    assert_eq!(std::fs::read_to_string(mp.join("after-bind")).unwrap(), "direct");

    m.release("c1").unwrap();
    assert_eq!(mounted_fstype(&mp), None);
    assert_eq!(
        mounted_fstype(&tmpfs_dir),
        None,
        "the watcher's tmpfs goes with its last storage"
    );
    assert!(!tmpfs_dir.exists());
    assert_eq!(m.snapshot().watch, watch::WatchState::default());
    assert!(src.join("app.conf").exists(), "the source is never touched");
}
