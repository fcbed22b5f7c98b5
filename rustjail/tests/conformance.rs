//! OCI runtime spec behaviours that runc or crun get right, checked the way the
//! spec's conformance tests look at them: real containers, real kernel state.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{stderr, stdout, Bundle};

/// An edit of config.json.
type Edit = fn(&mut serde_json::Value);

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn create(b: &Bundle, id: &str) -> std::process::Output {
    b.rustjail(&["create", "--bundle", b.path().to_str().unwrap(), id])
}

fn status(b: &Bundle, id: &str) -> String {
    let s: serde_json::Value = serde_json::from_slice(&b.rustjail(&["state", id]).stdout).unwrap_or_default();
    s["status"].as_str().unwrap_or_default().to_string()
}

/// Exactly what `execve` of a static busybox and its `echo` need.
const BUSYBOX_SYSCALLS: &[&str] = &[
    "execve",
    "arch_prctl",
    "brk",
    "exit_group",
    "getrandom",
    "getuid",
    "mprotect",
    "prctl",
    "prlimit64",
    "readlink",
    "rseq",
    "set_robust_list",
    "set_tid_address",
    "write",
];

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn an_allow_list_with_only_what_busybox_needs_runs_it() {
    // Nothing but execve may run after the filter is loaded: with or without
    // no_new_privs (without it, the filter needs CAP_SYS_ADMIN until execve).
    for nnp in [true, false] {
        let b = Bundle::new(&["echo", "allowed"]);
        b.edit(|c| {
            c["process"]["noNewPrivileges"] = nnp.into();
            c["linux"]["seccomp"] = serde_json::json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": BUSYBOX_SYSCALLS, "action": "SCMP_ACT_ALLOW"}],
            });
        });
        let out = b.run(&unique("seccomp-min"));
        assert_eq!(out.status.code(), Some(0), "noNewPrivileges {nnp}: {}", stderr(&out));
        assert_eq!(stdout(&out), "allowed\n", "noNewPrivileges {nnp}");
    }
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn a_container_without_proc_runs_as_with_crun() {
    // runc refuses at create ("open /proc/self/fd"); crun runs it. Nothing in
    // the spec makes /proc required, so rustjail runs it too.
    let b = Bundle::new(&["sh", "-c", "echo no proc; ls /proc | wc -l"]);
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| m["destination"] != "/proc");
        c["linux"]["maskedPaths"] = serde_json::json!([]);
        c["linux"]["readonlyPaths"] = serde_json::json!([]);
        c["process"]["oomScoreAdj"] = 100.into();
    });
    let out = b.run(&unique("noproc"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "no proc\n0\n");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn an_exec_failure_after_create_fails_start_with_the_inits_error() {
    // Executable bits, but not a program: execve fails with ENOEXEC after `start`.
    let b = Bundle::new(&["/bin/not-a-program"]);
    std::fs::write(b.rootfs().join("bin/not-a-program"), b"\x7fnot an ELF").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        b.rootfs().join("bin/not-a-program"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let id = unique("enoexec");
    let out = create(&b, &id);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = b.rustjail(&["start", &id]);
    assert!(!out.status.success(), "start succeeded for a program that cannot run");
    let err = stderr(&out);
    assert!(
        err.contains("execve /bin/not-a-program") && err.contains("ENOEXEC"),
        "{err}"
    );
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());

    // A failing startContainer hook is the init's error too.
    let b = Bundle::new(&["true"]);
    b.edit(|c| c["hooks"] = serde_json::json!({"startContainer": [{"path": "/bin/false", "args": ["false"]}]}));
    let id = unique("starthook");
    assert!(create(&b, &id).status.success());
    let out = b.rustjail(&["start", &id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("startContainer hook /bin/false failed"),
        "{}",
        stderr(&out)
    );
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());
}

/// A hook appending one line to `log` (a host path).
fn log_hook(line: &str, log: &Path) -> serde_json::Value {
    serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("echo {line} >> {}", log.display())],
    })
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn poststart_and_poststop_hooks_all_run_after_one_fails() {
    let b = Bundle::new(&["sleep", "60"]);
    let log = b.path().join("hooks.log");
    b.edit(|c| {
        c["hooks"] = serde_json::json!({
            "poststart": [{"path": "/bin/false", "args": ["false"]}, log_hook("poststart-2", &log)],
            "poststop": [{"path": "/bin/false", "args": ["false"]}, log_hook("poststop-2", &log)],
        })
    });
    let id = unique("hooks-cont");
    assert!(create(&b, &id).status.success());
    let out = b.rustjail(&["start", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: poststart hook /bin/false failed"),
        "{}",
        stderr(&out)
    );
    let out = b.rustjail(&["delete", "--force", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: poststop hook /bin/false failed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "poststart-2\npoststop-2\n");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn poststart_runs_once_the_users_program_runs() {
    // A slow startContainer hook holds the init before its execve: poststart
    // must still see the user's program, not the init.
    let b = Bundle::new(&["sleep", "60"]);
    let log = b.path().join("comm.log");
    b.edit(|c| {
        c["hooks"] = serde_json::json!({
            "startContainer": [{"path": "/bin/sleep", "args": ["sleep", "0.3"]}],
            "poststart": [{
                "path": "/bin/sh",
                "args": ["sh", "-c", format!(
                    "pid=$(sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/'); cat /proc/$pid/comm >> {}", log.display())],
            }],
        });
    });
    let id = unique("poststart");
    b.create_and_start(&id);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "sleep\n");
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn hook_state_pid_is_the_containers_after_joining_a_pid_namespace() {
    let holder = Bundle::new(&["sleep", "60"]);
    let hid = unique("pidns-holder");
    holder.create_and_start(&hid);
    let s: serde_json::Value = serde_json::from_slice(&holder.rustjail(&["state", &hid]).stdout).unwrap();
    let holder_pid = s["pid"].as_i64().unwrap();

    let b = Bundle::new(&["sleep", "60"]);
    let log = b.path().join("state.log");
    let hook = serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("cat >> {}; echo >> {}", log.display(), log.display())],
    });
    b.edit(|c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "pid" {
                n["path"] = format!("/proc/{holder_pid}/ns/pid").into();
            }
        }
        c["hooks"] = serde_json::json!({
            "prestart": [hook.clone()], "createContainer": [hook.clone()], "poststart": [hook],
        });
    });
    let id = unique("pidns-join");
    b.create_and_start(&id);
    let s: serde_json::Value = serde_json::from_slice(&b.rustjail(&["state", &id]).stdout).unwrap();
    let pid = s["pid"].as_i64().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let pids: Vec<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["pid"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(pids, vec![pid, pid, pid], "{text}");
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());
    assert!(holder.rustjail(&["delete", "--force", &hid]).status.success());
}

/// The optional fields of the container's "/" in its mountinfo.
fn root_propagation(value: &str) -> String {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "while read a b c d e f g; do [ \"$e\" = / ] && echo $g; done < /proc/self/mountinfo; true",
    ]);
    b.edit(|c| c["linux"]["rootfsPropagation"] = value.into());
    let out = b.run(&unique("prop"));
    assert_eq!(out.status.code(), Some(0), "{value}: {}", stderr(&out));
    stdout(&out)
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn rootfs_propagation_shared_and_unbindable_as_crun() {
    assert!(
        root_propagation("shared").contains("shared:"),
        "{}",
        root_propagation("shared")
    );
    assert!(root_propagation("unbindable").contains("unbindable"));
    let private = root_propagation("private");
    assert!(
        !private.contains("shared:") && !private.contains("unbindable"),
        "{private}"
    );
    let b = Bundle::new(&["true"]);
    b.edit(|c| c["linux"]["rootfsPropagation"] = "sideways".into());
    let out = b.run(&unique("prop-bad"));
    assert!(
        stderr(&out).contains("linux.rootfsPropagation \"sideways\""),
        "{}",
        stderr(&out)
    );
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn create_without_process_then_start_is_refused() {
    let b = Bundle::new(&["true"]);
    b.edit(|c| {
        c.as_object_mut().unwrap().remove("process");
    });
    let id = unique("noprocess");
    let out = create(&b, &id);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status(&b, &id), "created");
    let out = b.rustjail(&["start", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("process is required"), "{}", stderr(&out));
    assert_eq!(status(&b, &id), "created");
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());
}

/// Creates a `sleep 60` container in a cgroup of its own (absolute path) with
/// `resources`; returns the bundle, the id and the cgroup's v1 `controller` directory.
fn created_in_cgroup(name: &str, controller: &str, resources: serde_json::Value) -> (Bundle, String, PathBuf) {
    let b = Bundle::new(&["sleep", "60"]);
    let cg = unique(&format!("rustjail-{name}"));
    b.edit(|c| {
        c["linux"]["cgroupsPath"] = format!("/{cg}").into();
        c["linux"]["resources"] = resources;
    });
    let id = unique(name);
    let out = create(&b, &id);
    assert!(out.status.success(), "{}", stderr(&out));
    (b, id, Path::new("/sys/fs/cgroup").join(controller).join(cg))
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn device_rules_are_listed_in_the_specs_order() {
    let devices = Path::new("/sys/fs/cgroup/devices");
    if !devices.join("devices.list").exists() {
        eprintln!("no v1 devices controller here: devices.list order is a v1 matter");
        return;
    }
    let (b, id, dir) = created_in_cgroup(
        "devorder",
        "devices",
        serde_json::json!({"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "minor": 20, "access": "rw"},
            {"allow": true, "type": "b", "major": 10, "minor": 200, "access": "r"},
        ]}),
    );
    let list = std::fs::read_to_string(dir.join("devices.list")).unwrap();
    let first: Vec<&str> = list.lines().take(3).collect();
    assert_eq!(first, ["c 10:229 rwm", "b 8:20 rw", "b 10:200 r"], "{list}");
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn unknown_capabilities_and_rlimits_are_named() {
    let b = Bundle::new(&["true"]);
    b.edit(|c| {
        c["process"]["capabilities"]["bounding"]
            .as_array_mut()
            .unwrap()
            .push("CAP_TEST".into())
    });
    let out = create(&b, &unique("cap"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("process.capabilities.bounding[3]: unknown capability \"CAP_TEST\""),
        "{}",
        stderr(&out)
    );
    let b = Bundle::new(&["true"]);
    b.edit(|c| c["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_TEST", "hard": 1, "soft": 1}]));
    let out = create(&b, &unique("rlimit"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("process.rlimits[0].type: unknown rlimit \"RLIMIT_TEST\""),
        "{}",
        stderr(&out)
    );
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn security_labels_are_applied_or_refused_never_ignored() {
    let cases: [(&str, Edit, bool); 3] = [
        (
            "process.apparmorProfile",
            |c| c["process"]["apparmorProfile"] = "rustjail-test-no-such-profile".into(),
            rustjail::labels::apparmor_enabled(),
        ),
        (
            "process.selinuxLabel",
            |c| c["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into(),
            rustjail::labels::selinux_enabled(),
        ),
        (
            "linux.mountLabel",
            |c| c["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0".into(),
            rustjail::labels::selinux_enabled(),
        ),
    ];
    for (field, edit, supported) in cases {
        let b = Bundle::new(&["true"]);
        b.edit(edit);
        let out = b.run(&unique("label"));
        if supported {
            // A profile that is not loaded (or a label the policy refuses) must stop the container.
            assert!(!out.status.success(), "{field}: ran with a label that cannot apply");
        } else {
            assert!(!out.status.success(), "{field}: ran unconfined");
            assert!(
                stderr(&out).contains(field) && stderr(&out).contains("not enabled in this kernel"),
                "{field}: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn memory_kernel_tcp_is_written_on_v1() {
    let memory = Path::new("/sys/fs/cgroup/memory");
    if !memory.join("memory.kmem.tcp.limit_in_bytes").exists() {
        eprintln!("no v1 memory.kmem.tcp here: kernelTCP is a v1 setting");
        return;
    }
    let (b, id, dir) = created_in_cgroup(
        "kmemtcp",
        "memory",
        serde_json::json!({"memory": {"limit": 64 << 20, "kernelTCP": 10 << 20}}),
    );
    let v = std::fs::read_to_string(dir.join("memory.kmem.tcp.limit_in_bytes")).unwrap();
    assert_eq!(v.trim(), (10u64 << 20).to_string());
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn sysctls_outside_the_containers_namespaces_are_refused() {
    for (key, value) in [
        ("kernel.printk_ratelimit", "17"),
        ("kernel.core_pattern", "|/tmp/escape %p"),
    ] {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let before = std::fs::read_to_string(&path).unwrap();
        let b = Bundle::new(&["true"]);
        b.edit(|c| c["linux"]["sysctl"] = serde_json::json!({ key: value }));
        let out = b.run(&unique("sysctl"));
        assert!(!out.status.success(), "{key} accepted");
        assert!(
            stderr(&out).contains(&format!("linux.sysctl \"{key}\"")),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            before,
            "{key} changed on the machine"
        );
    }
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn personality_and_io_priority_are_applied() {
    let b = Bundle::new(&["sh", "-c", "uname -m; exec sleep 60"]);
    b.edit(|c| {
        c["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
        c["process"]["ioPriority"] = serde_json::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    });
    let id = unique("persona");
    b.create_and_start(&id);
    let s: serde_json::Value = serde_json::from_slice(&b.rustjail(&["state", &id]).stdout).unwrap();
    let pid = s["pid"].as_i64().unwrap();
    // SAFETY: ioprio_get(IOPRIO_WHO_PROCESS, pid) only reads.
    let prio = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, pid as libc::c_int) };
    assert_eq!(
        prio >> 13,
        3,
        "I/O class of the container's process (3: idle), raw {prio}"
    );
    let persona = std::fs::read_to_string(format!("/proc/{pid}/personality")).unwrap();
    assert_eq!(persona.trim(), "00000008", "PER_LINUX32");
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn settings_rustjail_cannot_apply_are_refused_by_name() {
    let cases: [(&str, Edit); 4] = [
        ("mounts[1] (/dev): mount option \"tmpcopyup\"", |c| {
            c["mounts"][1]["options"]
                .as_array_mut()
                .unwrap()
                .push("tmpcopyup".into())
        }),
        ("process.scheduler", |c| {
            c["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_BATCH"})
        }),
        ("linux.intelRdt", |c| {
            c["linux"]["intelRdt"] = serde_json::json!({"closID": "x"})
        }),
        ("mounts[0] (/proc)", |c| {
            c["mounts"][0]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
            c["mounts"][0]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        }),
    ];
    for (field, edit) in cases {
        let b = Bundle::new(&["true"]);
        b.edit(edit);
        let out = create(&b, &unique("unsupported"));
        assert!(!out.status.success(), "{field} accepted");
        assert!(stderr(&out).contains(field), "{field}: {}", stderr(&out));
    }
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn specs_the_runtime_must_refuse_are_refused_by_field() {
    let cases: [(&str, Edit); 4] = [
        ("linux.namespaces[6]: type pid is listed twice", |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": "pid"}))
        }),
        ("hostname \"h\": needs a UTS namespace", |c| {
            c["hostname"] = "h".into();
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "uts");
        }),
        ("process.rlimits[1].type: \"RLIMIT_NOFILE\" is listed twice", |c| {
            c["process"]["rlimits"] = serde_json::json!([
                {"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10},
                {"type": "RLIMIT_NOFILE", "hard": 20, "soft": 20},
            ])
        }),
        (
            "a different file exists there",
            |c| c["linux"]["devices"] = serde_json::json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 5}]),
        ),
    ];
    for (want, edit) in cases {
        let b = Bundle::new(&["true"]);
        b.edit(edit);
        let out = create(&b, &unique("refused"));
        assert!(!out.status.success(), "accepted; wanted {want}");
        assert!(stderr(&out).contains(want), "wanted {want}: {}", stderr(&out));
    }
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn recursive_mount_attributes_reach_submounts() {
    // A bind source with a submount (a tmpfs of the test's own, removed below):
    // `rro` makes the submount read-only too.
    let b = Bundle::new(&[
        "sh",
        "-c",
        "touch /mnt/f || echo top ro; touch /mnt/sub/f || echo sub ro",
    ]);
    let src = b.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &src.join("sub"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/mnt", "type": "bind", "source": src, "options": ["rbind", "rro"],
        }));
    });
    let out = b.run(&unique("rro"));
    let written = src.join("sub/f").exists();
    nix::mount::umount(&src.join("sub")).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "top ro\nsub ro\n");
    assert!(!written);
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn device_nodes_get_the_specs_mode_and_owner_whatever_the_umask() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "umask && stat -c '%n %a %u %g' /dev/null /dev/tty /dev/pith-node",
    ]);
    b.edit(|c| {
        c["linux"]["devices"] = serde_json::json!([{
            "path": "/dev/pith-node", "type": "c", "major": 1, "minor": 3,
            "fileMode": 0o640, "uid": 1000, "gid": 1001,
        }]);
    });
    // The runtime's umask reaches the init, which makes the nodes, and the
    // container's process (the spec sets none).
    let out = Command::new("sh")
        .args([
            "-c",
            "umask 077 && exec \"$@\"",
            "sh",
            env!("CARGO_BIN_EXE_rustjail"),
            "--root",
        ])
        .arg(b.state_root.path())
        .args(["run", "--bundle", b.path().to_str().unwrap(), &unique("devmode")])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "0077\n/dev/null 666 0 0\n/dev/tty 666 0 0\n/dev/pith-node 640 1000 1001\n"
    );
}
