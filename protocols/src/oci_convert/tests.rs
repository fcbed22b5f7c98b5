use std::collections::HashMap;
use std::path::PathBuf;

use crate::oci as grpc;
use crate::oci::linux_syscall::ErrnoRet;
use oci_spec::runtime as oci;
use protobuf::MessageField;

use super::{from_oci, to_oci, ConvertError};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn hook(path: &str, timeout: i64) -> grpc::Hook {
    grpc::Hook {
        Path: path.to_string(),
        Args: strings(&[path, "--flag"]),
        Env: strings(&["A=1"]),
        Timeout: timeout,
        ..Default::default()
    }
}

fn throttle(major: i64, minor: i64, rate: u64) -> grpc::LinuxThrottleDevice {
    grpc::LinuxThrottleDevice {
        Major: major,
        Minor: minor,
        Rate: rate,
        ..Default::default()
    }
}

fn namespace(typ: &str, path: &str) -> grpc::LinuxNamespace {
    grpc::LinuxNamespace {
        Type: typ.to_string(),
        Path: path.to_string(),
        ..Default::default()
    }
}

/// A spec as Kata's Go runtime sends it for a pod container, with every field the wire form has
/// set to a non-zero value somewhere. Capability lists are sorted (the OCI side holds sets).
fn kata_spec() -> grpc::Spec {
    let caps = strings(&["CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let process = grpc::Process {
        Terminal: true,
        ConsoleSize: MessageField::some(grpc::Box {
            Height: 40,
            Width: 120,
            ..Default::default()
        }),
        User: MessageField::some(grpc::User {
            UID: 1000,
            GID: 1001,
            AdditionalGids: vec![10, 20],
            Username: "app".to_string(),
            ..Default::default()
        }),
        Args: strings(&["/bin/sh", "-c", "sleep 1000"]),
        Env: strings(&["PATH=/usr/bin:/bin", "HOSTNAME=pod"]),
        Cwd: "/work".to_string(),
        Capabilities: MessageField::some(grpc::LinuxCapabilities {
            Bounding: caps.clone(),
            Effective: caps.clone(),
            Inheritable: strings(&["CAP_CHOWN"]),
            Permitted: caps,
            Ambient: strings(&["CAP_NET_BIND_SERVICE"]),
            ..Default::default()
        }),
        Rlimits: vec![
            grpc::POSIXRlimit {
                Type: "RLIMIT_NOFILE".to_string(),
                Hard: 1048576,
                Soft: 1024,
                ..Default::default()
            },
            grpc::POSIXRlimit {
                Type: "RLIMIT_CORE".to_string(),
                Hard: u64::MAX,
                Soft: 0,
                ..Default::default()
            },
        ],
        NoNewPrivileges: true,
        ApparmorProfile: "cri-containerd.apparmor.d".to_string(),
        OOMScoreAdj: -998,
        SelinuxLabel: "system_u:system_r:container_t:s0".to_string(),
        ..Default::default()
    };
    let resources = grpc::LinuxResources {
        Devices: vec![
            grpc::LinuxDeviceCgroup {
                Allow: false,
                Access: "rwm".to_string(),
                ..Default::default()
            },
            grpc::LinuxDeviceCgroup {
                Allow: true,
                Type: "c".to_string(),
                Major: 1,
                Minor: 3,
                Access: "rwm".to_string(),
                ..Default::default()
            },
            grpc::LinuxDeviceCgroup {
                Allow: true,
                Type: "b".to_string(),
                Major: 8,
                Minor: -1,
                Access: "r".to_string(),
                ..Default::default()
            },
        ],
        Memory: MessageField::some(grpc::LinuxMemory {
            Limit: 536870912,
            Reservation: 268435456,
            Swap: -1,
            Kernel: 67108864,
            KernelTCP: 16777216,
            Swappiness: 60,
            DisableOOMKiller: true,
            ..Default::default()
        }),
        CPU: MessageField::some(grpc::LinuxCPU {
            Shares: 1024,
            Quota: -1,
            Period: 100000,
            RealtimeRuntime: 950000,
            RealtimePeriod: 1000000,
            Cpus: "0-1".to_string(),
            Mems: "0".to_string(),
            ..Default::default()
        }),
        Pids: MessageField::some(grpc::LinuxPids {
            Limit: 4096,
            ..Default::default()
        }),
        BlockIO: MessageField::some(grpc::LinuxBlockIO {
            Weight: 500,
            LeafWeight: 300,
            WeightDevice: vec![grpc::LinuxWeightDevice {
                Major: 8,
                Minor: 0,
                Weight: 600,
                LeafWeight: 0,
                ..Default::default()
            }],
            ThrottleReadBpsDevice: vec![throttle(8, 0, 1 << 20)],
            ThrottleWriteBpsDevice: vec![throttle(8, 16, 2 << 20)],
            ThrottleReadIOPSDevice: vec![throttle(8, 0, 1000)],
            ThrottleWriteIOPSDevice: vec![throttle(8, 16, 500), throttle(8, 32, 600)],
            ..Default::default()
        }),
        HugepageLimits: vec![
            grpc::LinuxHugepageLimit {
                Pagesize: "2MB".to_string(),
                Limit: 209715200,
                ..Default::default()
            },
            grpc::LinuxHugepageLimit {
                Pagesize: "1GB".to_string(),
                Limit: u64::MAX,
                ..Default::default()
            },
        ],
        Network: MessageField::some(grpc::LinuxNetwork {
            ClassID: 0x100001,
            Priorities: vec![grpc::LinuxInterfacePriority {
                Name: "eth0".to_string(),
                Priority: 5,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let seccomp = grpc::LinuxSeccomp {
        DefaultAction: "SCMP_ACT_ERRNO".to_string(),
        Architectures: strings(&[
            "SCMP_ARCH_X86_64",
            "SCMP_ARCH_X86",
            "SCMP_ARCH_X32",
            "SCMP_ARCH_AARCH64",
        ]),
        Flags: strings(&["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]),
        Syscalls: vec![
            grpc::LinuxSyscall {
                Names: strings(&["read", "write", "exit_group"]),
                Action: "SCMP_ACT_ALLOW".to_string(),
                ..Default::default()
            },
            grpc::LinuxSyscall {
                Names: strings(&["personality"]),
                Action: "SCMP_ACT_ALLOW".to_string(),
                Args: vec![grpc::LinuxSeccompArg {
                    Index: 0,
                    Value: 0xffffffff,
                    ValueTwo: 0,
                    Op: "SCMP_CMP_EQ".to_string(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            grpc::LinuxSyscall {
                Names: strings(&["clone"]),
                Action: "SCMP_ACT_ERRNO".to_string(),
                ErrnoRet: Some(ErrnoRet::Errnoret(1)),
                Args: vec![
                    grpc::LinuxSeccompArg {
                        Index: 0,
                        Value: 0x7e020000,
                        ValueTwo: 0x10000000,
                        Op: "SCMP_CMP_MASKED_EQ".to_string(),
                        ..Default::default()
                    },
                    grpc::LinuxSeccompArg {
                        Index: 5,
                        Value: 7,
                        ValueTwo: 0,
                        Op: "SCMP_CMP_GE".to_string(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            grpc::LinuxSyscall {
                Names: strings(&["ptrace"]),
                Action: "SCMP_ACT_KILL_PROCESS".to_string(),
                ErrnoRet: Some(ErrnoRet::Errnoret(0)),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let linux = grpc::Linux {
        UIDMappings: vec![grpc::LinuxIDMapping {
            HostID: 100000,
            ContainerID: 0,
            Size: 65536,
            ..Default::default()
        }],
        GIDMappings: vec![grpc::LinuxIDMapping {
            HostID: 200000,
            ContainerID: 0,
            Size: 65536,
            ..Default::default()
        }],
        Sysctl: HashMap::from([
            ("net.ipv4.ip_forward".to_string(), "1".to_string()),
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
        ]),
        Resources: MessageField::some(resources),
        CgroupsPath: "/kubepods/besteffort/pod1234/abcdef".to_string(),
        Namespaces: vec![
            namespace("pid", ""),
            namespace("network", "/var/run/netns/cni-1234"),
            namespace("ipc", "/proc/42/ns/ipc"),
            namespace("uts", ""),
            namespace("mount", ""),
            namespace("user", ""),
            namespace("cgroup", ""),
        ],
        Devices: vec![
            grpc::LinuxDevice {
                Path: "/dev/fuse".to_string(),
                Type: "c".to_string(),
                Major: 10,
                Minor: 229,
                FileMode: 0o666,
                UID: 0,
                GID: 0,
                ..Default::default()
            },
            grpc::LinuxDevice {
                Path: "/dev/vda".to_string(),
                Type: "b".to_string(),
                Major: 254,
                Minor: 0,
                FileMode: 0o660,
                UID: 1000,
                GID: 6,
                ..Default::default()
            },
        ],
        Seccomp: MessageField::some(seccomp),
        RootfsPropagation: "rslave".to_string(),
        MaskedPaths: strings(&["/proc/acpi", "/proc/kcore", "/sys/firmware"]),
        ReadonlyPaths: strings(&["/proc/bus", "/proc/sys"]),
        MountLabel: "system_u:object_r:container_file_t:s0".to_string(),
        IntelRdt: MessageField::some(grpc::LinuxIntelRdt {
            L3CacheSchema: "L3:0=ffff".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    grpc::Spec {
        Version: "1.1.0".to_string(),
        Process: MessageField::some(process),
        Root: MessageField::some(grpc::Root {
            Path: "/run/kata-containers/shared/containers/abcdef/rootfs".to_string(),
            Readonly: true,
            ..Default::default()
        }),
        Hostname: "pod-1234".to_string(),
        Mounts: vec![
            grpc::Mount {
                destination: "/proc".to_string(),
                source: "proc".to_string(),
                type_: "proc".to_string(),
                options: strings(&["nosuid", "noexec", "nodev"]),
                ..Default::default()
            },
            grpc::Mount {
                destination: "/etc/hosts".to_string(),
                source: "/run/kata-containers/shared/containers/abcdef-hosts".to_string(),
                type_: "bind".to_string(),
                options: strings(&["rbind", "rprivate", "ro"]),
                ..Default::default()
            },
            grpc::Mount {
                destination: "/data".to_string(),
                source: "/dev/vdb".to_string(),
                type_: "ext4".to_string(),
                ..Default::default()
            },
        ],
        Hooks: MessageField::some(grpc::Hooks {
            Prestart: vec![hook("/usr/bin/prestart", 0)],
            Poststart: vec![hook("/usr/bin/poststart", 5)],
            Poststop: vec![hook("/usr/bin/poststop", 0), hook("/usr/bin/poststop2", 30)],
            CreateRuntime: vec![hook("/usr/bin/create-runtime", 10)],
            CreateContainer: vec![hook("/usr/bin/create-container", 0)],
            StartContainer: vec![hook("/usr/bin/start-container", 1)],
            ..Default::default()
        }),
        Annotations: HashMap::from([
            ("io.kubernetes.cri.container-type".to_string(), "container".to_string()),
            (
                "io.katacontainers.pkg.oci.bundle_path".to_string(),
                "/run/bundle".to_string(),
            ),
            ("empty".to_string(), String::new()),
        ]),
        Linux: MessageField::some(linux),
        ..Default::default()
    }
}

#[test]
fn full_kata_spec_round_trips() {
    let spec = kata_spec();
    let oci = to_oci(&spec).expect("converts");
    assert_eq!(from_oci(&oci), spec);
}

#[test]
#[allow(deprecated)]
fn full_kata_spec_maps_field_by_field() {
    let oci = to_oci(&kata_spec()).unwrap();

    let p = oci.process().as_ref().unwrap();
    assert_eq!(p.terminal(), Some(true));
    let size = p.console_size().unwrap();
    assert_eq!((size.height(), size.width()), (40, 120));
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1001));
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[10, 20][..]));
    assert_eq!(p.cwd(), &PathBuf::from("/work"));
    let caps = p.capabilities().as_ref().unwrap();
    assert!(caps.bounding().as_ref().unwrap().contains(&oci::Capability::Chown));
    assert_eq!(caps.ambient().as_ref().unwrap().len(), 1);
    let rl = &p.rlimits().as_ref().unwrap()[0];
    assert_eq!(
        (rl.typ(), rl.hard(), rl.soft()),
        (oci::PosixRlimitType::RlimitNofile, 1048576, 1024)
    );
    assert_eq!(p.oom_score_adj(), Some(-998));
    assert_eq!(p.no_new_privileges(), Some(true));

    let root = oci.root().as_ref().unwrap();
    assert_eq!(root.readonly(), Some(true));
    let m = &oci.mounts().as_ref().unwrap()[2];
    assert_eq!(m.typ().as_deref(), Some("ext4"));
    assert_eq!(m.options(), &None);

    let hooks = oci.hooks().as_ref().unwrap();
    assert_eq!(hooks.prestart().as_ref().unwrap()[0].timeout(), None);
    assert_eq!(hooks.poststop().as_ref().unwrap()[1].timeout(), Some(30));
    assert_eq!(
        hooks.poststop().as_ref().unwrap()[1].path(),
        &PathBuf::from("/usr/bin/poststop2")
    );

    let l = oci.linux().as_ref().unwrap();
    let ns = &l.namespaces().as_ref().unwrap()[1];
    assert_eq!(ns.typ(), oci::LinuxNamespaceType::Network);
    assert_eq!(
        ns.path().as_deref(),
        Some(std::path::Path::new("/var/run/netns/cni-1234"))
    );
    assert_eq!(
        l.namespaces().as_ref().unwrap()[4].typ(),
        oci::LinuxNamespaceType::Mount
    );
    assert_eq!(
        l.cgroups_path().as_deref(),
        Some(std::path::Path::new("/kubepods/besteffort/pod1234/abcdef"))
    );
    let dev = &l.devices().as_ref().unwrap()[0];
    assert_eq!(dev.typ(), oci::LinuxDeviceType::C);
    assert_eq!((dev.file_mode(), dev.uid(), dev.gid()), (Some(0o666), None, None));

    let r = l.resources().as_ref().unwrap();
    let rules = r.devices().as_ref().unwrap();
    assert_eq!(
        (rules[0].typ(), rules[0].major(), rules[0].access().as_deref()),
        (None, None, Some("rwm"))
    );
    assert_eq!(
        (rules[2].typ(), rules[2].major(), rules[2].minor()),
        (Some(oci::LinuxDeviceType::B), Some(8), Some(-1))
    );
    let mem = r.memory().unwrap();
    assert_eq!(
        (mem.limit(), mem.swap(), mem.kernel()),
        (Some(536870912), Some(-1), Some(67108864))
    );
    assert_eq!(mem.disable_oom_killer(), Some(true));
    assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(-1));
    assert_eq!(r.pids().unwrap().limit(), 4096);
    let bio = r.block_io().as_ref().unwrap();
    assert_eq!((bio.weight(), bio.leaf_weight()), (Some(500), Some(300)));
    assert_eq!(bio.weight_device().as_ref().unwrap()[0].leaf_weight(), None);
    assert_eq!(bio.throttle_write_iops_device().as_ref().unwrap()[1].rate(), 600);
    let huge = r.hugepage_limits().as_ref().unwrap();
    assert_eq!((huge[0].page_size().as_str(), huge[0].limit()), ("2MB", 209715200));
    assert_eq!(huge[1].limit(), -1, "u64::MAX is unlimited");
    assert_eq!(r.network().as_ref().unwrap().class_id(), Some(0x100001));

    let sc = l.seccomp().as_ref().unwrap();
    assert_eq!(sc.default_action(), oci::LinuxSeccompAction::ScmpActErrno);
    assert_eq!(sc.architectures().as_ref().unwrap()[2], oci::Arch::ScmpArchX32);
    let calls = sc.syscalls().as_ref().unwrap();
    assert_eq!(calls[0].errno_ret(), None);
    assert_eq!(calls[0].args(), &None);
    assert_eq!(calls[2].errno_ret(), Some(1));
    assert_eq!(calls[3].errno_ret(), Some(0));
    let arg = calls[2].args().as_ref().unwrap()[0];
    assert_eq!(
        (arg.index(), arg.op(), arg.value_two()),
        (0, oci::LinuxSeccompOperator::ScmpCmpMaskedEq, Some(0x10000000))
    );
    assert_eq!(calls[2].args().as_ref().unwrap()[1].index(), 5);
    assert_eq!(calls[1].args().as_ref().unwrap()[0].value_two(), None);

    assert_eq!(
        l.intel_rdt().as_ref().unwrap().l3_cache_schema().as_deref(),
        Some("L3:0=ffff")
    );
    assert_eq!(l.rootfs_propagation().as_deref(), Some("rslave"));
    assert_eq!(oci.hostname().as_deref(), Some("pod-1234"));
    assert_eq!(oci.annotations().as_ref().unwrap()["empty"], "");
}

#[test]
fn zero_values_are_absent() {
    let spec = grpc::Spec {
        Process: MessageField::some(grpc::Process {
            Capabilities: MessageField::some(grpc::LinuxCapabilities::default()),
            ConsoleSize: MessageField::none(),
            ..Default::default()
        }),
        Root: MessageField::some(grpc::Root::default()),
        Mounts: vec![grpc::Mount {
            destination: "/tmp".to_string(),
            ..Default::default()
        }],
        Hooks: MessageField::some(grpc::Hooks {
            Poststop: vec![grpc::Hook {
                Path: "/bin/true".to_string(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        Linux: MessageField::some(grpc::Linux {
            Resources: MessageField::some(grpc::LinuxResources {
                Memory: MessageField::some(grpc::LinuxMemory::default()),
                CPU: MessageField::some(grpc::LinuxCPU::default()),
                BlockIO: MessageField::some(grpc::LinuxBlockIO::default()),
                Network: MessageField::some(grpc::LinuxNetwork::default()),
                ..Default::default()
            }),
            Namespaces: vec![namespace("pid", "")],
            Devices: vec![grpc::LinuxDevice {
                Path: "/dev/null".to_string(),
                Type: "c".to_string(),
                Major: 1,
                Minor: 3,
                ..Default::default()
            }],
            Seccomp: MessageField::some(grpc::LinuxSeccomp {
                DefaultAction: "SCMP_ACT_ALLOW".to_string(),
                ..Default::default()
            }),
            IntelRdt: MessageField::some(grpc::LinuxIntelRdt::default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let oci = to_oci(&spec).unwrap();
    assert_eq!(oci.version(), "");
    assert_eq!(oci.hostname(), &None);
    assert_eq!(oci.domainname(), &None);
    assert_eq!(oci.annotations(), &None);
    assert_eq!(oci.solaris(), &None);
    assert_eq!(oci.windows(), &None);

    let p = oci.process().as_ref().unwrap();
    assert_eq!(p.args().as_deref(), Some(&[][..]), "process.args is kept, even empty");
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.no_new_privileges(), Some(false));
    assert_eq!(p.console_size(), None);
    assert_eq!(p.env(), &None);
    assert_eq!(p.rlimits(), &None);
    assert_eq!(p.apparmor_profile(), &None);
    assert_eq!(p.selinux_label(), &None);
    assert_eq!(p.oom_score_adj(), None);
    assert_eq!(p.user(), &oci::User::default());
    let caps = p.capabilities().as_ref().unwrap();
    assert_eq!((caps.bounding(), caps.ambient()), (&None, &None));

    assert_eq!(oci.root().as_ref().unwrap().readonly(), Some(false));
    let m = &oci.mounts().as_ref().unwrap()[0];
    assert_eq!((m.typ(), m.source(), m.options()), (&None, &None, &None));

    let h = &oci.hooks().as_ref().unwrap().poststop().as_ref().unwrap()[0];
    assert_eq!((h.args(), h.env(), h.timeout()), (&None, &None, None));
    assert_eq!(oci.hooks().as_ref().unwrap().poststart(), &None);

    let l = oci.linux().as_ref().unwrap();
    assert_eq!(l.cgroups_path(), &None);
    assert_eq!(l.uid_mappings(), &None);
    assert_eq!(l.sysctl(), &None);
    assert_eq!(l.masked_paths(), &None);
    assert_eq!(l.readonly_paths(), &None);
    assert_eq!(l.rootfs_propagation(), &None);
    assert_eq!(l.mount_label(), &None);
    assert_eq!(l.namespaces().as_ref().unwrap()[0].path(), &None);
    let d = &l.devices().as_ref().unwrap()[0];
    assert_eq!((d.file_mode(), d.uid(), d.gid()), (None, None, None));
    assert_eq!(l.intel_rdt().as_ref().unwrap().l3_cache_schema(), &None);
    let sc = l.seccomp().as_ref().unwrap();
    assert_eq!((sc.architectures(), sc.flags(), sc.syscalls()), (&None, &None, &None));

    let r = l.resources().as_ref().unwrap();
    assert_eq!(r.devices(), &None, "an empty device rule list is absent");
    assert_eq!(r.pids(), &None);
    assert_eq!(r.hugepage_limits(), &None);
    assert_eq!(
        r.memory(),
        &Some(oci::LinuxMemory::default()),
        "all zero: present, every value absent"
    );
    assert_eq!(r.cpu(), &Some(oci::LinuxCpu::default()));
    assert_eq!(r.block_io(), &Some(oci::LinuxBlockIo::default()));
    assert_eq!(r.network(), &Some(oci::LinuxNetwork::default()));

    // And back: the same message, but for `process.user`, which OCI always has.
    let mut expected = spec.clone();
    expected.Process.as_mut().unwrap().User = MessageField::some(grpc::User::default());
    assert_eq!(from_oci(&oci), expected);
}

#[test]
fn spec_without_process_or_linux() {
    let spec = grpc::Spec {
        Version: "1.0.2".to_string(),
        Root: MessageField::some(grpc::Root {
            Path: "rootfs".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let oci = to_oci(&spec).unwrap();
    assert_eq!(oci.process(), &None);
    assert_eq!(oci.linux(), &None);
    assert_eq!(oci.hooks(), &None);
    assert_eq!(oci.mounts(), &None);
    assert_eq!(from_oci(&oci), spec);

    let empty = grpc::Spec::default();
    let oci = to_oci(&empty).unwrap();
    assert_eq!(oci.root(), &None);
    assert_eq!(from_oci(&oci), empty);
}

fn err_of(edit: impl FnOnce(&mut grpc::Spec)) -> String {
    let mut spec = kata_spec();
    edit(&mut spec);
    to_oci(&spec).expect_err("must not convert").to_string()
}

/// A change to [`kata_spec`] that makes it invalid.
type Edit = Box<dyn FnOnce(&mut grpc::Spec)>;

fn linux(s: &mut grpc::Spec) -> &mut grpc::Linux {
    s.Linux.as_mut().unwrap()
}

#[test]
fn unknown_enum_values_name_field_and_value() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|s| linux(s).Namespaces[2].Type = "bogus".into()),
            r#"linux.namespaces[2].type: unknown namespace type "bogus""#,
        ),
        (
            Box::new(|s| linux(s).Namespaces[0].Type = String::new()),
            r#"linux.namespaces[0].type: unknown namespace type """#,
        ),
        (
            Box::new(|s| linux(s).Devices[1].Type = "x".into()),
            r#"linux.devices[1].type: unknown device type "x""#,
        ),
        (
            Box::new(|s| linux(s).Resources.as_mut().unwrap().Devices[2].Type = "q".into()),
            r#"linux.resources.devices[2].type: unknown device type "q""#,
        ),
        (
            Box::new(|s| linux(s).Seccomp.as_mut().unwrap().DefaultAction = "SCMP_ACT_MAYBE".into()),
            r#"linux.seccomp.defaultAction: unknown seccomp action "SCMP_ACT_MAYBE""#,
        ),
        (
            Box::new(|s| linux(s).Seccomp.as_mut().unwrap().Syscalls[3].Action = "allow".into()),
            r#"linux.seccomp.syscalls[3].action: unknown seccomp action "allow""#,
        ),
        (
            Box::new(|s| linux(s).Seccomp.as_mut().unwrap().Syscalls[2].Args[1].Op = "SCMP_CMP_ABOUT".into()),
            r#"linux.seccomp.syscalls[2].args[1].op: unknown seccomp operator "SCMP_CMP_ABOUT""#,
        ),
        (
            Box::new(|s| linux(s).Seccomp.as_mut().unwrap().Architectures[1] = "SCMP_ARCH_Z80".into()),
            r#"linux.seccomp.architectures[1]: unknown seccomp architecture "SCMP_ARCH_Z80""#,
        ),
        (
            Box::new(|s| linux(s).Seccomp.as_mut().unwrap().Flags[0] = "SECCOMP_FILTER_FLAG_FAST".into()),
            r#"linux.seccomp.flags[0]: unknown seccomp flag "SECCOMP_FILTER_FLAG_FAST""#,
        ),
        (
            Box::new(|s| s.Process.as_mut().unwrap().Rlimits[1].Type = "RLIMIT_BOGUS".into()),
            r#"process.rlimits[1].type: unknown rlimit type "RLIMIT_BOGUS""#,
        ),
        (
            Box::new(|s| s.Process.as_mut().unwrap().Capabilities.as_mut().unwrap().Bounding[3] = "CAP_FLY".into()),
            r#"process.capabilities.bounding[3]: unknown capability "CAP_FLY""#,
        ),
        (
            Box::new(|s| s.Process.as_mut().unwrap().Capabilities.as_mut().unwrap().Ambient[0] = "CAP_".into()),
            r#"process.capabilities.ambient[0]: unknown capability "CAP_""#,
        ),
    ];
    for (edit, want) in cases {
        assert_eq!(err_of(edit), want);
    }
}

#[test]
fn values_the_oci_types_cannot_hold_are_errors() {
    assert_eq!(
        err_of(|s| s.Hooks.as_mut().unwrap().Poststop[1].Timeout = -5),
        "hooks.poststop[1].timeout: -5 is negative (seconds; 0 means no timeout)"
    );
    assert_eq!(
        err_of(|s| s.Process.as_mut().unwrap().OOMScoreAdj = 1 << 40),
        "process.oomScoreAdj: 1099511627776 is out of range for i32"
    );
    assert_eq!(
        err_of(|s| linux(s).Resources.as_mut().unwrap().BlockIO.as_mut().unwrap().Weight = 70000),
        "linux.resources.blockIO.weight: 70000 is out of range for u16"
    );
    assert_eq!(
        err_of(|s| linux(s)
            .Resources
            .as_mut()
            .unwrap()
            .BlockIO
            .as_mut()
            .unwrap()
            .WeightDevice[0]
            .LeafWeight = 65536),
        "linux.resources.blockIO.weightDevice[0].leafWeight: 65536 is out of range for u16"
    );
    assert_eq!(
        err_of(|s| linux(s).Resources.as_mut().unwrap().HugepageLimits[0].Limit = u64::MAX - 1),
        "linux.resources.hugepageLimits[0].limit: 18446744073709551614 is out of range for i64"
    );
}

#[test]
fn errors_carry_their_path() {
    let mut spec = kata_spec();
    linux(&mut spec).Namespaces[2].Type = "bogus".into();
    let e = to_oci(&spec).unwrap_err();
    assert_eq!(e.path(), "linux.namespaces[2].type");
    assert!(matches!(
        e,
        ConvertError::Unknown {
            what: "namespace type",
            ..
        }
    ));
}

#[test]
fn capability_spellings() {
    let caps = grpc::LinuxCapabilities {
        Bounding: strings(&[
            "CAP_SYS_ADMIN",
            "sys_admin",
            "cap_net_raw",
            "\"CAP_MKNOD\"",
            "SYS_TTY_CONFIG",
        ]),
        ..Default::default()
    };
    let spec = grpc::Spec {
        Process: MessageField::some(grpc::Process {
            Capabilities: MessageField::some(caps),
            ..Default::default()
        }),
        ..Default::default()
    };
    let oci = to_oci(&spec).unwrap();
    let set = oci
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .clone()
        .unwrap();
    let want = [
        oci::Capability::SysAdmin,
        oci::Capability::NetRaw,
        oci::Capability::Mknod,
        oci::Capability::SysTtyConfig,
    ];
    assert_eq!(set, want.into_iter().collect());
    // Back: canonical names, sorted, each once.
    let back = from_oci(&oci).Process.unwrap().Capabilities.unwrap().Bounding;
    assert_eq!(
        back,
        strings(&["CAP_MKNOD", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_SYS_TTY_CONFIG"])
    );
}

#[test]
fn namespace_short_names_are_accepted() {
    let spec = grpc::Spec {
        Linux: MessageField::some(grpc::Linux {
            Namespaces: vec![namespace("net", ""), namespace("mnt", ""), namespace("time", "")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let oci = to_oci(&spec).unwrap();
    let types: Vec<_> = oci
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    use oci::LinuxNamespaceType as T;
    assert_eq!(types, [T::Network, T::Mount, T::Time]);
    let back: Vec<_> = from_oci(&oci)
        .Linux
        .unwrap()
        .Namespaces
        .into_iter()
        .map(|n| n.Type)
        .collect();
    assert_eq!(back, ["network", "mount", "time"]);
}

/// `runc spec` output (runc 1.1), as a runtime would hand it over.
const RUNC_CONFIG: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "process": {
    "terminal": true,
    "user": { "uid": 0, "gid": 0 },
    "args": ["sh"],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
    "noNewPrivileges": true
  },
  "root": { "path": "rootfs", "readonly": true },
  "hostname": "runc",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
    { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
      "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
  ],
  "linux": {
    "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
    "namespaces": [
      { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
      { "type": "cgroup" }
    ],
    "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
      "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}"#;

#[test]
fn json_config_round_trips_through_the_wire_form() {
    let original: oci::Spec = serde_json::from_str(RUNC_CONFIG).expect("valid config.json");
    let back = to_oci(&from_oci(&original)).unwrap();
    assert_eq!(back, original);

    // The wire form also survives its own protobuf encoding.
    let wire = from_oci(&original);
    let bytes = protobuf::Message::write_to_bytes(&wire).unwrap();
    let decoded: grpc::Spec = protobuf::Message::parse_from_bytes(&bytes).unwrap();
    assert_eq!(to_oci(&decoded).unwrap(), original);
}

#[test]
fn default_oci_spec_round_trips_but_for_empty_lists() {
    let json = serde_json::to_string(&oci::Spec::default()).unwrap();
    let original: oci::Spec = serde_json::from_str(&json).unwrap();
    let back = to_oci(&from_oci(&original)).unwrap();

    // oci-spec's default has `"annotations": {}` and `"resources": {"devices": []}`: on the wire
    // an empty map or list is "not set", so they come back absent. Everything else is equal.
    let mut expected = original.clone();
    expected.set_annotations(None);
    let resources = expected.linux_mut().as_mut().unwrap().resources_mut().as_mut().unwrap();
    assert_eq!(resources.devices(), &Some(vec![]));
    resources.set_devices(None);
    assert_eq!(back, expected);
}
