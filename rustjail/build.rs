//! Sets cfgs for what the build host offers (the build script of rustjail and
//! of the agent), so that a test needing it is reported as ignored where it
//! is missing instead of passing unrun:
//!
//! * `pith_root` when built as root: tests that need root (containers,
//!   mounts, cgroups, loop devices) carry
//!   `#[cfg_attr(not(pith_root), ignore = "needs root")]`;
//! * `pith_cgroup_v1` / `pith_cgroup2` when a cgroup v1 hierarchy with a
//!   controller / a cgroup2 mount is there (the real-cgroup tests of each);
//! * `pith_vsock` when the kernel has AF_VSOCK.
//!
//! `cargo test -- --include-ignored` runs them anyway (and they fail).

fn main() {
    for cfg in ["pith_root", "pith_cgroup_v1", "pith_cgroup2", "pith_vsock"] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    // Runs again when it changes (a new binary) and when the user may have:
    // sudo and su change these.
    for v in ["USER", "SUDO_UID", "UID"] {
        println!("cargo::rerun-if-env-changed={v}");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid:\treal\teffective\tsaved\tfs"
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string));
    if euid.as_deref() == Some("0") {
        println!("cargo::rustc-cfg=pith_root");
    }
    // mountinfo: "... - FSTYPE SOURCE SUPER_OPTIONS".
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let fs = |l: &str| {
        let after = l.split_once(" - ")?.1;
        let mut f = after.split(' ');
        Some((f.next()?.to_string(), f.nth(1).unwrap_or_default().to_string()))
    };
    let mounts: Vec<(String, String)> = mountinfo.lines().filter_map(fs).collect();
    if mounts.iter().any(|(t, opts)| {
        t == "cgroup"
            && opts
                .split(',')
                .any(|o| matches!(o, "cpu" | "memory" | "pids" | "devices" | "freezer"))
    }) {
        println!("cargo::rustc-cfg=pith_cgroup_v1");
    }
    if mounts.iter().any(|(t, _)| t == "cgroup2") {
        println!("cargo::rustc-cfg=pith_cgroup2");
    }
    let protocols = std::fs::read_to_string("/proc/net/protocols").unwrap_or_default();
    if protocols.contains("AF_VSOCK") || std::path::Path::new("/dev/vsock").exists() {
        println!("cargo::rustc-cfg=pith_vsock");
    }
}
