//! The guest's init duties. The keeper, which is PID 1 (`crate::keeper`),
//! mounts the basic filesystems, gives itself a console, reaps orphans and
//! powers the VM off at the end; the agent, its child, loads kernel modules
//! and serves the debug console.

pub mod debug_console;
pub mod modules;
pub mod mounts;
pub mod poweroff;

use std::os::fd::AsRawFd;

use std::path::Path;

use slog::{info, warn, Logger};

/// PATH for the agent and its children when the kernel gave none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What early init did, kept to be logged once logging is up.
#[derive(Debug, Default)]
pub struct EarlyReport {
    /// Mount points mounted, in order.
    pub mounted: Vec<String>,
    /// Failures that did not stop the agent.
    pub warnings: Vec<String>,
    /// Whether the cgroup v2 hierarchy was chosen.
    pub cgroup_v2: bool,
}

/// PID 1's first steps, before configuration and logging: mounts, cgroups,
/// stdio on `/dev/console`, a PATH. Never fails: what goes wrong is reported.
pub fn early_setup() -> EarlyReport {
    let mut report = EarlyReport::default();
    let mut already = Vec::new();
    for (i, m) in mounts::base_mounts().iter().enumerate() {
        match mounts::apply(m, &already) {
            Ok(true) => report.mounted.push(m.target.clone()),
            Ok(false) => {}
            Err(e) => report.warnings.push(e.to_string()),
        }
        if i == 0 {
            // /proc is up: from now on skip what the kernel or a previous init mounted.
            already = mounts::mounted(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default());
        }
    }
    console_stdio(&mut report.warnings);

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    report.cgroup_v2 = mounts::wants_cgroup_v2(&cmdline);
    let proc_cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let cgroups = mounts::cgroup_mounts(report.cgroup_v2, &proc_cgroups);
    for m in &cgroups {
        match mounts::apply(m, &already) {
            Ok(true) => report.mounted.push(m.target.clone()),
            Ok(false) => {}
            Err(e) => report.warnings.push(e.to_string()),
        }
    }
    for (link, target) in mounts::cgroup_v1_links(&cgroups) {
        if let Err(e) = std::os::unix::fs::symlink(&target, &link) {
            report
                .warnings
                .push(format!("symlink {} -> {target}: {e}", link.display()));
        }
    }
    if std::env::var_os("PATH").is_none() {
        // Still single-threaded: nothing reads the environment concurrently.
        std::env::set_var("PATH", DEFAULT_PATH);
    }
    report
}

/// Points stdin, stdout and stderr at `/dev/console` where they are not open
/// (the kernel opens them only when the initramfs has a `/dev/console` node).
fn console_stdio(warnings: &mut Vec<String>) {
    // SAFETY: fcntl(F_GETFD) only inspects the descriptor.
    let closed: Vec<i32> = (0..3)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0)
        .collect();
    if closed.is_empty() {
        return;
    }
    let console = match std::fs::OpenOptions::new().read(true).write(true).open("/dev/console") {
        Ok(f) => f,
        Err(e) => {
            warnings.push(format!("open /dev/console: {e}; stdio {closed:?} stays closed"));
            return;
        }
    };
    for fd in closed {
        // SAFETY: dup2 onto a standard descriptor number that is not open.
        if unsafe { libc::dup2(console.as_raw_fd(), fd) } < 0 {
            warnings.push(format!(
                "dup2 /dev/console -> {fd}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // `console` may itself have landed on 0..2 when those were closed: keep it open.
    if console.as_raw_fd() <= 2 {
        std::mem::forget(console);
    }
}

/// Loads each named module (with its dependencies) from the running kernel's
/// modules directory, logging each result. Returns how many failed.
pub fn load_modules(names: &[String], log: &Logger) -> usize {
    // Loaded already (by the agent before a restart): nothing to read.
    let names: Vec<&String> = names
        .iter()
        .filter(|n| !Path::new("/sys/module").join(modules::normalize(n)).exists())
        .collect();
    if names.is_empty() {
        return 0;
    }
    let root = modules::running_kernel_root();
    let start = std::time::Instant::now();
    let index = match modules::ModuleIndex::scan(&root) {
        Ok(i) => i,
        Err(e) => {
            warn!(log, "kernel modules: {e}"; "subsystem" => "init");
            return names.len();
        }
    };
    let mut failed = 0;
    for name in &names {
        if let Err(e) = modules::load_with(&index, name, &[]) {
            warn!(log, "{e}"; "subsystem" => "init");
            failed += 1;
        }
    }
    info!(log, "kernel modules loaded";
          "subsystem" => "init",
          "modules" => names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(","),
          "failed" => failed,
          "ms" => start.elapsed().as_millis() as u64);
    failed
}
