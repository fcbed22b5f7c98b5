//! What a container can and cannot see or do.

mod common;

use common::{stderr, stdout, Bundle};

use std::path::Path;

fn run_sh(script: &str, edit: impl FnOnce(&mut serde_json::Value)) -> (i32, String, String) {
    let b = Bundle::new(&["sh", "-c", script]);
    b.edit(edit);
    // Ids are unique: the default cgroup path is named after the id.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "iso-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let out = b.run(&id);
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn namespaces_are_separate() {
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let (code, out, err) = run_sh(
        "echo pid=$$; hostname; readlink /proc/self/ns/uts; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; \
         readlink /proc/self/ns/mnt; readlink /proc/self/ns/cgroup; grep ^0:: /proc/self/cgroup; ls /sys/class/net",
        |c| c["hostname"] = "jailed".into(),
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out}");
    assert_eq!(lines[1], "jailed");
    assert_ne!(lines[2], host_uts.to_str().unwrap());
    assert_ne!(lines[3], host_net.to_str().unwrap());
    for (i, ns) in [(4, "ipc"), (5, "mnt"), (6, "cgroup")] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(lines[i], host.to_str().unwrap(), "{ns} namespace shared with the host");
    }
    // The cgroup namespace is rooted at the container's own cgroup.
    assert_eq!(lines[7], "0::/", "{out}");
    // A new network namespace has only loopback.
    assert_eq!(lines[8..].to_vec(), vec!["lo"], "{out}");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn joins_a_namespace_given_by_path() {
    // Join this test's network namespace.
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let me = format!("/proc/{}/ns/net", std::process::id());
    let (code, out, err) = run_sh("readlink /proc/self/ns/net", |c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        for n in ns.iter_mut() {
            if n["type"] == "network" {
                n["path"] = me.clone().into();
            }
        }
    });
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), host_net.to_str().unwrap());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn capabilities_are_dropped() {
    let (code, out, err) = run_sh(
        "grep CapEff /proc/self/status; mount -t tmpfs x /mnt 2>&1; echo mount=$?",
        |_| {},
    );
    assert_eq!(code, 0, "{err}");
    let eff = out.lines().next().unwrap().split_whitespace().nth(1).unwrap();
    let eff = u64::from_str_radix(eff, 16).unwrap();
    const CAP_SYS_ADMIN: u64 = 21;
    assert_eq!(eff & (1 << CAP_SYS_ADMIN), 0, "CAP_SYS_ADMIN still effective: {eff:#x}");
    assert!(
        out.contains("mount=1") || out.contains("mount=255"),
        "mount succeeded without CAP_SYS_ADMIN: {out}"
    );
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn readonly_rootfs_is_unwritable() {
    let (code, out, err) = run_sh("touch /newfile 2>&1; echo touch=$?", |c| {
        c["root"]["readonly"] = true.into()
    });
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Read-only file system") && out.contains("touch=1"),
        "{out}"
    );
}

/// The spec's `cgroup` mount is "ro": neither /sys/fs/cgroup nor a hierarchy
/// in it (bound from the host on a v1 host) can be written, with or without a
/// cgroup namespace.
#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn the_cgroup_mount_is_read_only() {
    let script = "touch /sys/fs/cgroup/x; echo t=$?; \
        for d in /sys/fs/cgroup/*/; do mkdir ${d}x 2>/dev/null && echo made $d; done; echo done";
    for keep_cgroupns in [true, false] {
        let (code, out, err) = run_sh(script, |c| {
            if !keep_cgroupns {
                let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
                ns.retain(|n| n["type"] != "cgroup");
            }
        });
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("t=1") && out.contains("done"),
            "cgroupns {keep_cgroupns}: {out} {err}"
        );
        assert!(!out.contains("made"), "cgroupns {keep_cgroupns}: writable: {out}");
    }
}

/// The v1 view shows what the host's /sys/fs/cgroup holds (each hierarchy,
/// each symlink), read-only or, when the spec asks for it writable, on a
/// tmpfs of the container's own: nothing written there reaches the host.
#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn the_cgroup_view_shows_the_host_hierarchies_and_writes_stay_inside() {
    let host = Path::new("/sys/fs/cgroup");
    if nix::sys::statfs::statfs(host).unwrap().filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        eprintln!("skipped: a cgroup v2 host has no v1 view");
        return;
    }
    let mut want: Vec<String> = std::fs::read_dir(host)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().unwrap();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                Some(format!("{name}->{}", std::fs::read_link(e.path()).unwrap().display()))
            } else {
                t.is_dir().then_some(name)
            }
        })
        .collect();
    want.sort();
    let script = "for e in /sys/fs/cgroup/*; do n=${e##*/}; \
        if [ -L $e ]; then echo \"$n->$(readlink $e)\"; elif [ -d $e ]; then echo $n; fi; done; \
        ls /sys/fs/cgroup/memory/memory.limit_in_bytes >/dev/null && echo files; \
        mkdir /sys/fs/cgroup/pith-view-probe && echo made";
    for ro in [true, false] {
        let (code, out, err) = run_sh(script, |c| {
            let m = c["mounts"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|m| m["destination"] == "/sys/fs/cgroup")
                .unwrap();
            let opts = m["options"].as_array_mut().unwrap();
            opts.retain(|o| o != "ro" && o != "rw");
            opts.push(if ro { "ro" } else { "rw" }.into());
        });
        let mut got: Vec<String> = out
            .lines()
            .filter(|l| *l != "files" && *l != "made")
            .map(String::from)
            .collect();
        got.sort();
        assert_eq!(got, want, "ro {ro}: {out} {err}");
        assert!(out.contains("files"), "ro {ro}: no hierarchy's files: {out} {err}");
        assert_eq!(out.contains("made"), !ro, "ro {ro}: {out} {err}");
        assert_eq!(code == 0, !ro, "ro {ro}: {err}");
        assert!(
            !host.join("pith-view-probe").exists(),
            "ro {ro}: a write reached the host"
        );
    }
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn masked_paths_are_unreadable() {
    let (code, out, err) = run_sh(
        "cat /proc/kcore | wc -c; ls /proc/acpi | wc -l; echo x > /proc/sys/kernel/domainname; echo w=$?; \
         ls -A /sys/firmware | wc -l; touch /sys/firmware/x /proc/acpi/x; echo t=$?",
        |_| {},
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "0", "/proc/kcore readable: {out}");
    assert_eq!(lines[1].trim(), "0", "/proc/acpi not empty: {out}");
    assert!(out.contains("w=1"), "read-only /proc/sys writable: {out}");
    // Masked directories share one empty read-only tmpfs.
    assert_eq!(lines[3].trim(), "0", "/sys/firmware not empty: {out}");
    assert!(out.contains("t=1"), "a masked directory writable: {out}");
}

/// A read-only path is read-only with everything mounted under it (a bind
/// remount only reaches its top mount).
#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn a_read_only_path_covers_what_is_mounted_under_it() {
    let (code, out, err) = run_sh(
        "touch /proc/sys/fs/binfmt_misc/x; echo t=$?; grep ' /proc/sys/fs/binfmt_misc ' /proc/self/mountinfo",
        |c| {
            c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
                "destination": "/proc/sys/fs/binfmt_misc", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]
            }));
            c["linux"]["readonlyPaths"] = serde_json::json!(["/proc/sys"]);
        },
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("t=1"),
        "a mount under a read-only path is writable: {out} {err}"
    );
    assert!(out.contains(" ro,"), "{out}");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn the_container_gets_no_runtime_descriptor() {
    // ls opens the directory itself as fd 3; nothing else may be there.
    let (code, out, err) = run_sh("ls /proc/self/fd", |_| {});
    assert_eq!(code, 0, "{err}");
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fds, vec!["0", "1", "2", "3"], "{out}");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn init_binary_is_a_sealed_copy_that_cannot_be_overwritten() {
    // CVE-2019-5736: /proc/self/exe of the container's init (before exec) and of
    // anything the runtime leaves must not be the runtime binary on disk. The
    // user process replaced init, so check the runtime binary is untouched
    // after a container tries to write through /proc/1/exe.
    let before = std::fs::read(env!("CARGO_BIN_EXE_rustjail")).unwrap();
    let (code, out, _) = run_sh("echo pwned > /proc/1/exe 2>&1; echo rc=$?", |_| {});
    assert_eq!(code, 0);
    assert!(out.contains("rc=1"), "{out}");
    assert_eq!(std::fs::read(env!("CARGO_BIN_EXE_rustjail")).unwrap(), before);
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn symlinks_in_the_rootfs_cannot_redirect_mounts_outside() {
    let b = Bundle::new(&["sh", "-c", "ls /escape/tmp/pith-escape-probe && echo inside"]);
    // rootfs/escape -> / on the host; a tmpfs mount at /escape/tmp/... must land
    // in the rootfs, not on the host's /tmp.
    std::os::unix::fs::symlink("/", b.rootfs().join("escape")).unwrap();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/escape/tmp/pith-escape-probe", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]
        }));
    });
    let out = b.run("esc");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !std::path::Path::new("/tmp/pith-escape-probe").exists(),
        "mount escaped to the host's /tmp"
    );
    assert!(b.rootfs().join("tmp/pith-escape-probe").exists());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn seccomp_denies_a_syscall_with_the_configured_errno() {
    for nnp in [true, false] {
        let (code, out, err) = run_sh("mkdir /tmp/x 2>&1; echo rc=$?; echo still running", |c| {
            c["process"]["noNewPrivileges"] = nnp.into();
            c["linux"]["seccomp"] = serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
            });
        });
        assert_eq!(code, 0, "nnp={nnp}: {err}");
        assert!(
            out.contains("Function not implemented") && out.contains("rc=1"),
            "nnp={nnp}: {out}"
        );
        assert!(out.contains("still running"), "{out}");
    }
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn user_namespace_with_id_maps() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "id; cat /proc/self/uid_map; cat /proc/self/gid_map; readlink /proc/self/ns/user",
    ]);
    // The container's root is host uid 100000: it cannot create mount points in
    // a rootfs owned by the host's root, so they exist beforehand (as with runc).
    for d in ["proc", "dev", "sys"] {
        std::fs::create_dir_all(b.rootfs().join(d)).unwrap();
    }
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        c["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    });
    let out = b.run("userns");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = stdout(&out);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(out.starts_with("uid=0"), "{out}");
    assert_eq!(lines[1], vec!["0", "100000", "65536"], "{out}");
    assert_eq!(lines[2], vec!["0", "200000", "65536"], "{out}");
    assert_ne!(
        lines[3][0],
        std::fs::read_link("/proc/self/ns/user").unwrap().to_str().unwrap()
    );
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn no_pivot_uses_move_and_chroot() {
    let b = Bundle::new(&["sh", "-c", "ls /; cat /proc/1/comm"]);
    let out = b.rustjail(&["run", "--no-pivot", "--bundle", b.path().to_str().unwrap(), "np"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("bin") && text.contains("proc"), "{text}");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn joins_another_containers_pid_namespace() {
    // A sandbox-wide PID namespace: the second container joins the first's.
    let a = Bundle::new(&["sleep", "60"]);
    let id_a = format!("pidns-a-{}", std::process::id());
    assert!(a
        .rustjail(&["create", "--bundle", a.path().to_str().unwrap(), &id_a])
        .status
        .success());
    assert!(a.rustjail(&["start", &id_a]).status.success());
    let s: serde_json::Value = serde_json::from_slice(&a.rustjail(&["state", &id_a]).stdout).unwrap();
    let pid_a = s["pid"].as_i64().unwrap();

    let b = Bundle::new(&["sh", "-c", "cat /proc/1/comm; echo self=$$"]);
    b.edit(|c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "pid" {
                n["path"] = format!("/proc/{pid_a}/ns/pid").into();
            }
        }
    });
    let out = b.run(&format!("pidns-b-{}", std::process::id()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("sleep\n"), "{text}");
    assert!(!text.contains("self=1\n"), "{text}");
    assert!(a.rustjail(&["delete", "--force", &id_a]).status.success());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn a_created_containers_init_runs_from_a_sealed_memfd() {
    // CVE-2019-5736: before start, the container's init is the runtime's code.
    // Its /proc/PID/exe must be a sealed memfd copy, not the runtime binary,
    // and must refuse writes.
    let b = Bundle::new(&["true"]);
    let id = format!("memfd-{}", std::process::id());
    assert!(b
        .rustjail(&["create", "--bundle", b.path().to_str().unwrap(), &id])
        .status
        .success());
    let s: serde_json::Value = serde_json::from_slice(&b.rustjail(&["state", &id]).stdout).unwrap();
    let exe = format!("/proc/{}/exe", s["pid"]);
    let target = std::fs::read_link(&exe).unwrap();
    assert!(
        target.to_str().unwrap().starts_with("/memfd:rustjail-init"),
        "{}",
        target.display()
    );
    let w = std::fs::OpenOptions::new().write(true).open(&exe);
    assert!(w.is_err(), "opened the init's executable for writing");
    let before = std::fs::read(env!("CARGO_BIN_EXE_rustjail")).unwrap();
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());
    assert_eq!(std::fs::read(env!("CARGO_BIN_EXE_rustjail")).unwrap(), before);
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn time_namespace_with_offsets() {
    // A new time namespace with the monotonic clock a day ahead.
    let b = Bundle::new(&["sh", "-c", "echo pid=$$; readlink /proc/self/ns/time; cat /proc/uptime"]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "time"}));
        c["linux"]["timeOffsets"] = serde_json::json!({"boottime": {"secs": 86400, "nanosecs": 0}});
    });
    let out = b.run(&format!("time-{}", std::process::id()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "pid=1", "the process is still PID 1 of its namespace: {text}");
    assert_ne!(
        lines[1],
        std::fs::read_link("/proc/self/ns/time").unwrap().to_str().unwrap()
    );
    let host_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let uptime: f64 = lines[2].split(' ').next().unwrap().parse().unwrap();
    assert!(uptime - host_uptime > 86000.0, "uptime {uptime} vs host {host_uptime}");
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn process_user_groups_umask_rlimits_oom_sysctl_domainname() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "id; umask; ulimit -n; cat /proc/self/oom_score_adj; cat /proc/sys/net/ipv4/ip_forward; \
         cat /proc/sys/kernel/domainname; pwd",
    ]);
    b.edit(|c| {
        c["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63});
        c["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 123}]);
        c["process"]["oomScoreAdj"] = 345.into();
        c["process"]["cwd"] = "/proc".into();
        c["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        c["domainname"] = "example.test".into();
    });
    let out = b.run(&format!("attrs-{}", std::process::id()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "uid=1000 gid=1000 groups=10,20", "{text}");
    assert_eq!(lines[1], "0077", "{text}");
    assert_eq!(lines[2], "123", "{text}");
    assert_eq!(lines[3], "345", "{text}");
    assert_eq!(lines[4], "1", "{text}");
    assert_eq!(lines[5], "example.test", "{text}");
    assert_eq!(lines[6], "/proc", "{text}");

    let b = Bundle::new(&["true"]);
    b.edit(|c| c["linux"]["sysctl"] = serde_json::json!({"kernel/../../etc/x": "1"}));
    let out = b.run(&format!("badsysctl-{}", std::process::id()));
    assert!(
        !out.status.success() && stderr(&out).contains("invalid sysctl name"),
        "{}",
        stderr(&out)
    );
}
