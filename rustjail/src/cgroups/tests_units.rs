//! Unit tests without a cgroup filesystem: mountinfo parsing, device rule emulation, the BPF program
//! (run through a small interpreter and compared with the emulated kernel semantics), stats parsers.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType};

use super::bpf::{device_program, Insn};
use super::devices::{DevKind, DeviceState, ACC_ALL, ACC_MKNOD, ACC_READ, ACC_WRITE};
use super::mode::{own_cgroups, own_v1_dir, CgroupMode, Hierarchies, SysRoot};
use super::stats::{parse_blkio_v1, parse_io_stat_v2};

pub(crate) const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// Builds an OCI device rule.
pub(crate) fn rule(
    allow: bool,
    t: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    acc: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).access(acc.to_string());
    if let Some(t) = t {
        b = b.typ(t);
    }
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().unwrap()
}

#[test]
fn detects_hybrid_legacy_unified_and_none() {
    let root = SysRoot::under(Path::new("/fake"));
    let h = Hierarchies::parse(&root, HYBRID_MOUNTINFO).unwrap();
    assert_eq!(h.mode, CgroupMode::Hybrid);
    assert_eq!(
        h.v2.as_ref().unwrap().mount_point,
        PathBuf::from("/fake/sys/fs/cgroup/unified")
    );
    assert_eq!(
        h.v1_mount("memory").unwrap().mount_point,
        PathBuf::from("/fake/sys/fs/cgroup/memory")
    );
    assert_eq!(
        h.v1_mount("name=systemd").unwrap().controllers,
        vec!["name=systemd".to_string()]
    );
    assert!(h.v1_mount("pids").is_none());

    let legacy: String = HYBRID_MOUNTINFO
        .lines()
        .filter(|l| !l.contains("cgroup2"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(Hierarchies::parse(&root, &legacy).unwrap().mode, CgroupMode::Legacy);

    let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    let h = Hierarchies::parse(&root, unified).unwrap();
    assert_eq!(h.mode, CgroupMode::Unified);
    assert_eq!(h.v2.unwrap().mount_point, PathBuf::from("/fake/sys/fs/cgroup"));

    let e = Hierarchies::parse(&root, "22 1 0:21 / /proc rw - proc proc rw\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no cgroup filesystem") && e.contains("/fake/proc/self/mountinfo"),
        "{e}"
    );
}

#[test]
fn mountinfo_escapes_and_mount_roots() {
    let root = SysRoot::host();
    let text = "40 31 0:37 /nested /mnt/my\\040cg rw - cgroup cgroup rw,memory\n";
    let h = Hierarchies::parse(&root, text).unwrap();
    let m = h.v1_mount("memory").unwrap();
    assert_eq!(m.mount_point, PathBuf::from("/mnt/my cg"));
    assert_eq!(m.root, PathBuf::from("/nested"));
}

#[test]
fn own_cgroup_maps_to_nested_memory_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = SysRoot::under(dir.path());
    std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
    std::fs::write(&root.self_cgroup, "4:memory:/process_api/abc\n3:cpu:/\n0::/\n").unwrap();
    let own = own_cgroups(&root).unwrap();
    let h = Hierarchies::parse(&root, HYBRID_MOUNTINFO).unwrap();
    let mem = own_v1_dir(&own, h.v1_mount("memory").unwrap()).unwrap();
    assert_eq!(mem, dir.path().join("sys/fs/cgroup/memory/process_api/abc"));
    let cpu = own_v1_dir(&own, h.v1_mount("cpu").unwrap()).unwrap();
    assert_eq!(cpu, dir.path().join("sys/fs/cgroup/cpu"));
}

/// The usual container list: deny all, then a few allows.
pub(crate) fn default_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    vec![
        rule(false, None, None, None, "rwm"),
        rule(true, Some(C), None, None, "m"),
        rule(true, Some(B), None, None, "m"),
        rule(true, Some(C), Some(1), Some(3), "rwm"),
        rule(true, Some(C), Some(1), Some(5), "rwm"),
        rule(true, Some(C), Some(136), None, "rwm"),
    ]
}

#[test]
fn emulator_builds_allow_list_and_v1_writes() {
    let st = DeviceState::from_spec(&default_rules()).unwrap();
    assert!(!st.default_allow);
    let lines: Vec<String> = st.exceptions().iter().map(|r| r.to_string()).collect();
    // In the rules' order, as devices.list shows them after the writes (crun's order).
    assert_eq!(lines, ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 136:* rwm"]);
    assert!(st.allows(DevKind::Char, 1, 3, ACC_READ | ACC_WRITE));
    assert!(st.allows(DevKind::Char, 7, 7, ACC_MKNOD));
    assert!(!st.allows(DevKind::Char, 7, 7, ACC_READ));

    // From a fresh v1 cgroup ("a *:* rwm") the transition starts with a disruptive deny-all.
    let fresh = DeviceState::from_v1_list("a *:* rwm\n").unwrap();
    let w = fresh.transition(&st);
    assert_eq!((w[0].file(), w[0].line.as_str()), ("devices.deny", "a"));
    assert!(w[1..].iter().all(|x| x.allow));
    assert_eq!(w.len(), 6);
    // A list not read is taken as that fresh one: the same writes.
    assert_eq!(DeviceState::unread(), fresh);
    assert_eq!(DeviceState::unread().transition(&st), w);
    // Whatever the target, they start with the reset.
    let allow_all = DeviceState::from_spec(&[rule(true, None, None, None, "rwm")]).unwrap();
    let w = DeviceState::unread().transition(&allow_all);
    assert_eq!((w[0].file(), w[0].line.as_str()), ("devices.allow", "a"));

    // Hot-plug: from the applied list, adding one device writes exactly one allow line.
    let current = DeviceState::from_v1_list("b *:* m\nc *:* m\nc 1:3 rwm\nc 1:5 rwm\nc 136:* rwm\n").unwrap();
    let mut more = default_rules();
    more.push(rule(true, Some(LinuxDeviceType::B), Some(7), Some(0), "rw"));
    let w = current.transition(&DeviceState::from_spec(&more).unwrap());
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].file(), w[0].line.as_str()), ("devices.allow", "b 7:0 rw"));
    // ... and removing it again writes one deny line.
    let w = DeviceState::from_spec(&more).unwrap().transition(&st);
    assert_eq!((w[0].file(), w[0].line.as_str()), ("devices.deny", "b 7:0 rw"));
}

#[test]
fn emulator_refuses_holes_and_expands_typeless_rules() {
    use LinuxDeviceType::C;
    let holes = [
        rule(false, None, None, None, "rwm"),
        rule(true, Some(C), Some(1), None, "rwm"),
        rule(false, Some(C), Some(1), Some(3), "w"),
    ];
    let e = DeviceState::from_spec(&holes).unwrap_err().to_string();
    assert!(e.contains("punch a hole") && e.contains("c 1:* rwm"), "{e}");

    // Type "a" with a major applies to b and c, never "all devices".
    let st = DeviceState::from_spec(&[
        rule(false, None, None, None, "rwm"),
        rule(true, None, Some(8), None, "r"),
    ])
    .unwrap();
    assert!(st.allows(DevKind::Block, 8, 1, ACC_READ) && st.allows(DevKind::Char, 8, 1, ACC_READ));
    assert!(!st.allows(DevKind::Block, 9, 1, ACC_READ) && !st.allows(DevKind::Block, 8, 1, ACC_WRITE));

    // A broader deny cancels narrower allows.
    let st = DeviceState::from_spec(&[
        rule(true, Some(C), Some(1), Some(3), "rwm"),
        rule(false, Some(C), Some(1), None, "rwm"),
    ]);
    assert!(
        !st.unwrap().allows(DevKind::Char, 1, 3, ACC_READ),
        "deny c 1:* drops the earlier allow c 1:3"
    );
    let st = DeviceState::from_spec(&[
        rule(false, None, None, None, "rwm"),
        rule(true, Some(C), Some(1), Some(3), "rwm"),
        rule(false, Some(C), Some(1), None, "w"),
    ])
    .unwrap();
    assert!(st.allows(DevKind::Char, 1, 3, ACC_READ) && !st.allows(DevKind::Char, 1, 3, ACC_WRITE));

    for bad in [
        rule(true, Some(C), Some(-5), None, "r"),
        rule(true, Some(C), Some(1), Some(1), "rx"),
    ] {
        assert!(DeviceState::from_spec(&[bad]).is_err());
    }
    // FIFO rules do nothing; -1 means any.
    let st = DeviceState::from_spec(&[rule(true, Some(LinuxDeviceType::P), None, None, "rwm")]).unwrap();
    assert!(st.exceptions().is_empty() && !st.default_allow);
    let st = DeviceState::from_spec(&[rule(true, Some(C), Some(-1), Some(-1), "")]).unwrap();
    assert_eq!(st.exceptions()[0].to_string(), "c *:* rwm");
}

/// Runs a device program on (type, access, major, minor); only the opcodes we emit are supported.
fn run(prog: &[Insn], kind: DevKind, access: u8, major: u32, minor: u32) -> u64 {
    let ty = if kind == DevKind::Block { 1u32 } else { 2 };
    let ctx = [(u32::from(access) << 16) | ty, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
        let imm = i.imm as i64 as u64;
        let mut next = pc + 1;
        match i.code {
            0x61 => r[dst] = u64::from(ctx[i.off as usize / 4]),
            0x54 => r[dst] = u64::from(r[dst] as u32 & i.imm as u32),
            0x74 => r[dst] = u64::from((r[dst] as u32) >> i.imm),
            0xb4 => r[dst] = u64::from(i.imm as u32),
            0xbc => r[dst] = u64::from(r[src] as u32),
            0x55 if r[dst] != imm => next += i.off as usize,
            0x5d if r[dst] != r[src] => next += i.off as usize,
            0x15 if r[dst] == imm => next += i.off as usize,
            0x55 | 0x5d | 0x15 => {}
            0x95 => return r[0],
            c => panic!("unexpected opcode {c:#x}"),
        }
        assert!(next < prog.len(), "jump out of the program at {pc}");
        pc = next;
    }
}

#[test]
fn bpf_program_matches_emulated_semantics() {
    use LinuxDeviceType::{B, C};
    let lists = vec![
        default_rules(),
        vec![
            rule(true, None, None, None, "rwm"),
            rule(false, Some(C), Some(1), Some(5), "w"),
            rule(false, Some(B), Some(8), None, "rwm"),
        ],
        vec![rule(false, None, None, None, "rwm")],
        vec![
            rule(false, None, None, None, "rwm"),
            rule(true, Some(C), Some(1), Some(3), "r"),
            rule(true, Some(B), None, Some(0), "wm"),
        ],
    ];
    let accesses: Vec<u8> = (1..=ACC_ALL).collect();
    for rules in lists {
        let st = DeviceState::from_spec(&rules).unwrap();
        let prog = device_program(&st);
        for kind in [DevKind::Block, DevKind::Char] {
            for (major, minor) in [(1, 3), (1, 5), (8, 0), (8, 1), (136, 4), (7, 0)] {
                for &acc in &accesses {
                    let want = u64::from(st.allows(kind, major, minor, acc));
                    assert_eq!(
                        run(&prog, kind, acc, major, minor),
                        want,
                        "{rules:?} {kind:?} {major}:{minor} {acc}"
                    );
                }
            }
        }
    }
}

#[test]
fn stats_parsers() {
    let v1 = "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n";
    let e = parse_blkio_v1(v1);
    assert_eq!(e.len(), 3);
    assert_eq!(
        (e[1].major, e[1].minor, e[1].op.as_str(), e[1].value),
        (8, 0, "Write", 8192)
    );
    let (bytes, ios) = parse_io_stat_v2("254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
    assert_eq!(bytes.iter().map(|b| b.value).collect::<Vec<_>>(), [10, 20, 0]);
    assert_eq!(ios[1].op, "Write");
    assert_eq!(ios[1].value, 2);
}
