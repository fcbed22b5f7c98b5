//! Sets `cfg(pith_root)` when built as root (the build script of rustjail and
//! of the agent): tests that need root (containers, mounts, cgroups, loop
//! devices) carry
//! `#[cfg_attr(not(pith_root), ignore = "needs root")]`, so that without root
//! the test runner reports them as ignored instead of passing them unrun.
//! `cargo test -- --include-ignored` runs them anyway (and they fail).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pith_root)");
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
}
