//! The persist format: round trips, golden files of every version, versions
//! this agent must refuse, damaged files, the lock, atomic writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, RootBuilder, Spec};

use super::file::StateFile;
use super::*;
use crate::device::node::NodeMount;
use crate::reaper::Exit;
use crate::sandbox::hotplug::{BlockDevView, Plugged};
use crate::sandbox::session::Session;
use crate::sandbox::view::{ContainerView, GuestView, PodView, ProcessView, SandboxView, SpecJson, StdioView};
use crate::sandbox::PodState;
use crate::storage::mount::Record;
use crate::storage::watch::{WatchState, Watched};
use crate::storage::{StorageEntry, StorageState};

fn guest() -> GuestView {
    GuestView {
        sysfs: "/sys".into(),
        copy_roots: vec!["/run/kata-containers".into()],
        random_dev: "/dev/random".into(),
    }
}

fn proc_view(exec_id: &str, pid: i32, exit: Option<Exit>, terminal: bool) -> ProcessView {
    // A restored view says "open" as -1 (descriptor numbers are not kept).
    let open = |b: bool| b.then_some(-1);
    ProcessView {
        exec_id: exec_id.into(),
        pid,
        start_time: 0,
        exit,
        waited: false,
        stdio: StdioView {
            terminal,
            stdin: open(exit.is_none()),
            stdout: open(true),
            stderr: open(!terminal),
            terminal_master: open(terminal),
        },
    }
}

/// The sample as v3 knows it: v2's, with the DNS mounted over the guest's
/// resolv.conf.
pub(crate) fn sample_view() -> SandboxView {
    let mut v = sample_view_v2();
    v.pod.dns_mounted = true;
    v
}

/// The sample as v2 knew it: v1's, with processes' start times and an
/// exec killed by a signal.
fn sample_view_v2() -> SandboxView {
    let mut v = sample_view_v1();
    let c = &mut v.containers[0];
    c.init.start_time = 123456;
    c.execs[0].start_time = 123470;
    c.execs
        .insert(1, proc_view("killed", 4012, Some(Exit::Signal(9)), false));
    c.execs[1].start_time = 123480;
    c.execs[2].start_time = 123490;
    v
}

/// The sample as v1 knew it (what `v1.json` holds, taken back by today's
/// agent): a sandbox with something in every field: a pod, a negotiated
/// session, storages (one shared by two owners), a watched storage, and a
/// container with replaced device rules, a hot-plugged device with a mount,
/// an init and two execs (one exited).
fn sample_view_v1() -> SandboxView {
    let mut spec = Spec::default();
    spec.set_root(Some(
        RootBuilder::default().path("/run/pith/c1/rootfs").build().unwrap(),
    ));
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(true);
    rule.set_typ(Some(LinuxDeviceType::C));
    rule.set_major(Some(1));
    rule.set_minor(Some(3));
    rule.set_access(Some("rw".into()));
    SandboxView {
        pod: PodView {
            state: PodState::Created,
            id: "sandbox-1".into(),
            hostname: "pod-host".into(),
            dns: vec!["nameserver 10.0.0.2".into()],
            dns_mounted: false,
            sandbox_pidns: true,
            pidns_container: Some("c1".into()),
            ns_holder: Some(4000),
            guest_hook_path: Some("/usr/share/oci/hooks".into()),
        },
        session: Session {
            level: 2,
            features: vec!["hotplug".into(), "introspection".into()],
            host_name: "pithctl".into(),
            host_version: "0.1.0".into(),
        },
        guest: guest(),
        storages: StorageState {
            entries: vec![StorageEntry {
                mount_point: "/run/kata-containers/shared/vol".into(),
                driver: "local".into(),
                source: "local".into(),
                fstype: "local".into(),
                options: vec!["mode=0777".into()],
                shared: false,
                owners: BTreeSet::from(["/sandbox".to_string(), "c1".to_string()]),
                mounted: false,
                created: vec!["/run/kata-containers/shared/vol".into()],
                layer: None,
            }],
            watch: WatchState {
                entries: vec![Watched {
                    source: "/run/kata-containers/shared/cfg".into(),
                    target: "/run/kata-containers/watch/cfg".into(),
                    copied: true,
                }],
                tmpfs: Some(Record {
                    mounted: true,
                    created: vec!["/run/kata-containers/watch".into()],
                }),
            },
        },
        containers: vec![ContainerView {
            id: "c1".into(),
            bundle: "/run/pith/bundles/c1".into(),
            rootfs: "/run/pith/c1/rootfs".into(),
            created: "2026-12-02T04:00:00.000000000Z".into(),
            start_time: 123456,
            status: String::new(),
            cgroup: BTreeMap::from([
                ("devices".to_string(), PathBuf::from("/sys/fs/cgroup/devices/c1")),
                ("memory".to_string(), PathBuf::from("/sys/fs/cgroup/memory/c1")),
            ]),
            spec: SpecJson::of(&spec),
            device_rules: Some(vec![rule]),
            devices: vec![Plugged {
                path: "/dev/xvdb".into(),
                dev: BlockDevView {
                    name: "sdb".into(),
                    major: 8,
                    minor: 16,
                },
                access: "rw".into(),
                mode: 0o660,
                uid: 0,
                gid: 6,
                mount: Some(NodeMount {
                    target: "/mnt/data".into(),
                    fstype: "ext4".into(),
                    flags: 0,
                    data: "errors=remount-ro".into(),
                }),
            }],
            oom_watch: true,
            init: proc_view("c1", 4001, None, false),
            execs: vec![
                proc_view("e1", 4010, Some(Exit::Code(3)), false),
                proc_view("tty", 4011, None, true),
            ],
        }],
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/persist")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn roundtrip(v: &SandboxView) -> SandboxView {
    let path = Path::new("/run/pith/sandbox.json");
    let bytes = encode(convert::from_view(v));
    convert::to_view(decode(path, &bytes).unwrap(), guest(), path).unwrap()
}

#[test]
fn the_view_survives_a_round_trip() {
    let v = sample_view();
    assert_eq!(roundtrip(&v), v);
}

#[test]
fn an_unfinished_create_sandbox_is_not_kept() {
    let mut v = sample_view();
    v.pod.state = PodState::Creating;
    assert_eq!(roundtrip(&v).pod.state, PodState::Absent);
}

#[test]
fn the_file_carries_both_versions() {
    let bytes = encode(convert::from_view(&sample_view()));
    let j: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(j["persist_version"], PERSIST_VERSION);
    assert_eq!(j["min_reader_version"], MIN_READER_VERSION);
    assert_eq!(j["agent_version"], crate::AGENT_VERSION);
}

fn load_golden(name: &str) -> SandboxView {
    let path = fixture(name);
    convert::to_view(decode(&path, &read_fixture(name)).unwrap(), guest(), &path).unwrap()
}

/// Every committed version loads (migrated) and equals the sample as that
/// version knew it.
#[test]
fn golden_files_load() {
    assert_eq!(load_golden("v1.json"), sample_view_v1());
    assert_eq!(load_golden("v2.json"), sample_view_v2());
    assert_eq!(load_golden("v3.json"), sample_view());
}

/// What every committed version loads as is written again (in today's
/// version) and read back the same.
#[test]
fn golden_files_round_trip() {
    for name in ["v1.json", "v2.json", "v3.json"] {
        let v = load_golden(name);
        assert_eq!(roundtrip(&v), v, "{name}");
    }
}

/// A v1 agent (its types, frozen in v1.rs) reads what today's agent writes,
/// as the file's min_reader_version 1 promises: a rollback keeps the exits.
#[test]
fn a_v1_agent_reads_a_v2_or_v3_file() {
    for name in ["v2.json", "v3.json"] {
        let bytes = read_fixture(name);
        let old: v1::FileV1 = serde_json::from_slice(&bytes).unwrap();
        assert!(old.min_reader_version <= 1, "{name}");
        let statuses: Vec<(String, Option<i32>)> = old.sandbox.containers[0]
            .execs
            .iter()
            .map(|p| (p.exec_id.clone(), p.exit_status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("e1".into(), Some(3)),
                ("killed".into(), Some(137)),
                ("tty".into(), None)
            ],
            "{name}"
        );
    }
}

/// A v2 agent (its types, frozen in v2.rs) reads a v3 file: everything but
/// the DNS mount, which it never made (it leaves the mount in place).
#[test]
fn a_v2_agent_reads_a_v3_file() {
    let old: v2::FileV2 = serde_json::from_slice(&read_fixture("v3.json")).unwrap();
    assert!(old.min_reader_version <= 2);
    let v2_sample = convert::from_view(&sample_view_v2());
    let mut migrated = v3::SandboxV3::from(old.sandbox);
    assert!(!migrated.pod.dns_mounted);
    migrated.pod.dns_mounted = v2_sample.pod.dns_mounted;
    let path = Path::new("/x/sandbox.json");
    assert_eq!(convert::to_view(migrated, guest(), path).unwrap(), sample_view_v2());
}

/// A v2 process with only the legacy `exit_status` (no `exit`) still ends.
#[test]
fn the_legacy_exit_status_is_still_read() {
    let path = Path::new("/x/sandbox.json");
    let mut j: serde_json::Value = serde_json::from_slice(&read_fixture("v2.json")).unwrap();
    let e1 = j
        .pointer_mut("/sandbox/containers/0/execs/0")
        .unwrap()
        .as_object_mut()
        .unwrap();
    e1.remove("exit");
    let s = decode(path, &serde_json::to_vec(&j).unwrap()).unwrap();
    let v = convert::to_view(s, guest(), path).unwrap();
    assert_eq!(v.containers[0].execs[0].exit, Some(Exit::Code(3)));
}

fn with_versions(version: u32, min_reader: u32) -> Vec<u8> {
    let mut j: serde_json::Value = serde_json::from_slice(&encode(convert::from_view(&sample_view()))).unwrap();
    j["persist_version"] = version.into();
    j["min_reader_version"] = min_reader.into();
    j["sandbox"]["a_field_from_the_future"] = "ignored".into();
    serde_json::to_vec(&j).unwrap()
}

#[test]
fn a_newer_file_is_read_when_its_min_reader_version_allows() {
    let path = Path::new("/x/sandbox.json");
    let s = decode(path, &with_versions(PERSIST_VERSION + 5, PERSIST_VERSION)).unwrap();
    assert_eq!(convert::to_view(s, guest(), path).unwrap(), sample_view());
}

#[test]
fn a_newer_file_is_refused_naming_both_versions() {
    let path = Path::new("/x/sandbox.json");
    let v = PERSIST_VERSION + 5;
    let e = decode(path, &with_versions(v, PERSIST_VERSION + 1)).unwrap_err();
    assert!(matches!(e, PersistError::TooNew { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("/x/sandbox.json"), "{msg}");
    assert!(msg.contains(&format!("persist_version {v}")), "{msg}");
    assert!(
        msg.contains(&format!("at least version {}", PERSIST_VERSION + 1)),
        "{msg}"
    );
    assert!(msg.contains(&format!("versions 1 to {PERSIST_VERSION}")), "{msg}");
}

#[test]
fn damaged_files_are_refused_with_the_fault() {
    let path = Path::new("/x/sandbox.json");
    let good = encode(convert::from_view(&sample_view()));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("not json", b"\x00\x01garbage".to_vec()),
        (
            "wrong type",
            with_field(&good, "/sandbox/containers/0/init/pid", "\"four\"".into()),
        ),
        (
            "no version",
            with_field(&good, "/persist_version", serde_json::Value::Null),
        ),
        ("version 0", with_versions(0, 0)),
        ("min above version", with_versions(1, 2)),
    ];
    for (what, bytes) in cases {
        let e = decode(path, &bytes).unwrap_err();
        assert!(matches!(e, PersistError::Damaged { .. }), "{what}: {e:?}");
        assert!(e.to_string().contains("/x/sandbox.json is damaged"), "{what}: {e}");
    }
}

fn with_field(bytes: &[u8], pointer: &str, v: serde_json::Value) -> Vec<u8> {
    let mut j: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    *j.pointer_mut(pointer).unwrap() = v;
    serde_json::to_vec(&j).unwrap()
}

#[test]
fn a_spec_the_oci_types_refuse_is_invalid_not_a_panic() {
    let path = Path::new("/x/sandbox.json");
    let mut p = convert::from_view(&sample_view());
    p.containers[0].spec = v3::RawJson(
        serde_json::value::to_raw_value(&serde_json::json!({"ociVersion": 7}))
            .unwrap()
            .into(),
    );
    let e = convert::to_view(p, guest(), path).unwrap_err();
    assert!(e.to_string().contains("container \"c1\": spec"), "{e}");
}

#[test]
fn a_second_agent_on_the_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let first = StateFile::lock(d.path()).unwrap();
    let e = StateFile::lock(d.path()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    assert!(msg.contains("sandbox.lock"), "{msg}");
    drop(first);
    StateFile::lock(d.path()).expect("free again once the first is gone");
}

/// Each write replaces the file whole, a shorter one included (the
/// temporary it fills is the previous file, written over); the temporary
/// is left holding the state before, whole; nothing else is left.
#[test]
fn writes_replace_the_file_whole_and_keep_the_previous_one_whole() {
    let d = tempfile::tempdir().unwrap();
    let f = StateFile::lock(d.path()).unwrap();
    let tmp = d.path().join(super::file::TEMP_FILE);
    assert_eq!(f.read().unwrap(), None);
    f.write(b"first, the longest").unwrap();
    assert!(!tmp.exists(), "a first write renames its temporary");
    f.write(b"second").unwrap();
    assert_eq!(f.read().unwrap().as_deref(), Some(&b"second"[..]));
    assert_eq!(std::fs::read(&tmp).unwrap(), b"first, the longest");
    f.write(b"third, longer than the second").unwrap();
    assert_eq!(
        f.read().unwrap().as_deref(),
        Some(&b"third, longer than the second"[..])
    );
    assert_eq!(std::fs::read(&tmp).unwrap(), b"second");
    f.write(b"4").unwrap();
    assert_eq!(f.read().unwrap().as_deref(), Some(&b"4"[..]));
    let mut names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [super::file::TEMP_FILE, "sandbox.json", "sandbox.lock"]);
}

/// A write that keeps the start the temporary already holds (the file two
/// writes ago) leaves the same files as a whole write; a start it claims but
/// does not hold is written anyway (never a hole).
#[test]
fn a_write_keeping_the_temporarys_start_leaves_the_whole_file() {
    use super::file::{Replaced, TEMP_FILE};
    let d = tempfile::tempdir().unwrap();
    let f = StateFile::lock(d.path()).unwrap();
    let tmp = d.path().join(TEMP_FILE);
    let states = [
        "head|aaaa|bbbb|tail",
        "head|aaaa|BBBB|tail",
        "head|aaaa|bbbb|cccc|tail",
        "head|aa|tail",
    ];
    assert_eq!(f.write(states[0].as_bytes()).unwrap(), Replaced::Renamed);
    assert_eq!(f.write(states[1].as_bytes()).unwrap(), Replaced::Exchanged);
    // The temporary holds states[0]: "head|aaaa|bbbb|" is kept.
    let third: Vec<&[u8]> = vec![b"head|", b"aaaa|", b"bbbb|", b"cccc|", b"tail"];
    assert_eq!(f.write_pieces(&third, 15).unwrap(), Replaced::Exchanged);
    assert_eq!(f.read().unwrap().unwrap(), states[2].as_bytes());
    assert_eq!(std::fs::read(&tmp).unwrap(), states[1].as_bytes());
    // The temporary holds states[1]: "head|aa" is kept; the rest is shorter.
    let fourth: Vec<&[u8]> = vec![b"head|", b"aa|", b"tail"];
    assert_eq!(f.write_pieces(&fourth, 7).unwrap(), Replaced::Exchanged);
    assert_eq!(f.read().unwrap().unwrap(), states[3].as_bytes());
    // A claim beyond what the temporary holds (states[2], 24 bytes): written whole.
    std::fs::write(&tmp, b"head").unwrap();
    let fifth: Vec<&[u8]> = vec![b"head|", b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz|", b"tail"];
    f.write_pieces(&fifth, 30).unwrap();
    assert_eq!(f.read().unwrap().unwrap(), fifth.concat());
}

/// More pieces than one writev takes (1024) all reach the file, in order.
#[test]
fn a_write_of_many_pieces_keeps_them_all_in_order() {
    let d = tempfile::tempdir().unwrap();
    let f = StateFile::lock(d.path()).unwrap();
    let texts: Vec<String> = (0..2500).map(|i| format!("{i},")).collect();
    let pieces: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    f.write_pieces(&pieces, 0).unwrap();
    assert_eq!(f.read().unwrap().unwrap(), texts.concat().into_bytes());
}

/// Writes `tests/fixtures/persist/v<PERSIST_VERSION>.json` with today's code,
/// once: run by hand when a version is released (`cargo test -- --ignored
/// write_golden`). It never overwrites a committed golden file.
#[test]
#[ignore = "writes a golden file; run by hand once per released version"]
fn write_golden() {
    let path = fixture(&format!("v{PERSIST_VERSION}.json"));
    assert!(!path.exists(), "{} is committed: never regenerate it", path.display());
    std::fs::write(&path, encode(convert::from_view(&sample_view()))).unwrap();
}
