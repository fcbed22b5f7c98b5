//! OnlineCPUMem: bring hot-added CPUs and memory blocks online through sysfs.
//!
//! CPUs, with Kata's meaning: `nb_cpus` is how many CPUs should be online in
//! all (what Kata's runtimes send after a vCPU hot-plug). When that many
//! already are, nothing is done (the call is idempotent; some VMMs online
//! CPUs themselves). Otherwise offline CPUs
//! (`<sysfs>/devices/system/cpu/cpuN/online` `0` -> `1`) are onlined; they may
//! appear in sysfs a little after the request, so the agent retries (as Kata:
//! up to 100 passes, 50 ms apart) and answers DEADLINE_EXCEEDED naming the
//! counts otherwise. `wait` changes nothing: like kata-agent, the call always
//! returns once the CPUs are online (Kata's Go runtime sends `wait: false`
//! and relies on that).
//! Memory: `<sysfs>/devices/system/memory/memoryN/state` goes `offline` ->
//! `online`, once over every block (a block the kernel refuses is reported,
//! not fatal).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{io, Guest, GuestError};

/// CPU directory under the sysfs root.
pub const CPU_DIR: &str = "devices/system/cpu";
/// Memory directory under the sysfs root.
pub const MEMORY_DIR: &str = "devices/system/memory";

/// How long to keep looking for hot-added CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Passes over the CPU directory.
    pub attempts: u32,
    /// Pause between passes.
    pub interval: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 100,
            interval: Duration::from_millis(50),
        }
    }
}

/// What OnlineCPUMem did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Onlined {
    /// CPUs brought online (paths of their `online` files).
    pub cpus: Vec<PathBuf>,
    /// Every CPU online afterwards (numbers, ascending); empty when CPUs were not asked for.
    pub online: Vec<u32>,
    /// Memory blocks brought online (paths of their `state` files).
    pub memory: Vec<PathBuf>,
    /// Memory blocks the kernel refused to online, with the reason.
    pub memory_failed: Vec<(PathBuf, String)>,
}

/// Makes `nb_cpus` CPUs online in all (waiting for hot-added ones), then,
/// unless `cpu_only`, every offline memory block.
pub fn online_cpu_mem(g: &Guest, nb_cpus: u32, cpu_only: bool) -> Result<Onlined, GuestError> {
    let mut done = Onlined::default();
    if nb_cpus > 0 {
        let dir = g.sysfs_path(CPU_DIR);
        done.cpus = online_cpus(&dir, nb_cpus as usize, g.online_retry)?;
        done.online = online_cpu_numbers(&dir)?;
    }
    if !cpu_only {
        let (ok, failed) = online_memory(&g.sysfs_path(MEMORY_DIR))?;
        done.memory = ok;
        done.memory_failed = failed;
    }
    Ok(done)
}

/// `dir/<prefix>N` entries with their numbers, in numeric order.
fn numbered(dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>, GuestError> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io("opendir", dir.display()))? {
        let e = e.map_err(io("getdents", dir.display()))?;
        let name = e.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if let Ok(i) = n.parse::<u64>() {
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                found.push((i, e.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The CPUs online under `dir`: those whose `online` file says 1, and those
/// without one (the boot CPU cannot go offline).
pub fn online_cpu_numbers(dir: &Path) -> Result<Vec<u32>, GuestError> {
    Ok(numbered(dir, "cpu")?
        .into_iter()
        .filter(|(_, p)| {
            std::fs::read_to_string(p.join("online"))
                .map(|s| s.trim() == "1")
                .unwrap_or(true)
        })
        .map(|(n, _)| n as u32)
        .collect())
}

/// A CPU list as the kernel writes one (`0-3,6`).
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// One pass: flips `file` of each entry from `from` to `to`, at most `max`
/// times; returns the files flipped and those that refused.
type Pass = (Vec<PathBuf>, Vec<(PathBuf, String)>);

fn pass(dir: &Path, prefix: &str, file: &str, from: &str, to: &str, max: usize) -> Result<Pass, GuestError> {
    let mut flipped = Vec::new();
    let mut refused = Vec::new();
    for (_, entry) in numbered(dir, prefix)? {
        if flipped.len() >= max {
            break;
        }
        let f = entry.join(file);
        // cpu0 and some blocks have no such file: nothing to do for them.
        let Ok(now) = std::fs::read_to_string(&f) else {
            continue;
        };
        if now.trim() != from {
            continue;
        }
        match std::fs::write(&f, to) {
            Ok(()) => flipped.push(f),
            Err(e) => refused.push((f.clone(), io("write", f.display())(e).to_string())),
        }
    }
    Ok((flipped, refused))
}

fn online_cpus(dir: &Path, want: usize, retry: Retry) -> Result<Vec<PathBuf>, GuestError> {
    let mut onlined = Vec::new();
    let mut online = online_cpu_numbers(dir)?.len();
    for attempt in 0..retry.attempts.max(1) {
        if online >= want {
            return Ok(onlined);
        }
        if attempt > 0 {
            std::thread::sleep(retry.interval);
        }
        let (flipped, _) = pass(dir, "cpu", "online", "0", "1", want - online)?;
        onlined.extend(flipped);
        online = online_cpu_numbers(dir)?.len();
    }
    if online >= want {
        return Ok(onlined);
    }
    Err(GuestError::DeadlineExceeded(format!(
        "OnlineCPUMem: failed to online {want} CPU(s): {online} online under {} after {} attempts {:?} apart",
        dir.display(),
        retry.attempts.max(1),
        retry.interval
    )))
}

fn online_memory(dir: &Path) -> Result<Pass, GuestError> {
    if !dir.exists() {
        // A kernel without memory hot-plug: nothing can be offline.
        return Ok((Vec::new(), Vec::new()));
    }
    pass(dir, "memory", "state", "offline", "online", usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(cpus: &[Option<&str>], mem: &[&str]) -> (tempfile::TempDir, Guest) {
        let d = tempfile::tempdir().unwrap();
        let cpu = d.path().join(CPU_DIR);
        std::fs::create_dir_all(&cpu).unwrap();
        for (i, state) in cpus.iter().enumerate() {
            let c = cpu.join(format!("cpu{i}"));
            std::fs::create_dir(&c).unwrap();
            if let Some(s) = state {
                std::fs::write(c.join("online"), format!("{s}\n")).unwrap();
            }
        }
        // Entries that are not CPUs.
        std::fs::create_dir(cpu.join("cpufreq")).unwrap();
        std::fs::write(cpu.join("online"), "0-3\n").unwrap();
        let m = d.path().join(MEMORY_DIR);
        std::fs::create_dir_all(&m).unwrap();
        for (i, state) in mem.iter().enumerate() {
            let b = m.join(format!("memory{i}"));
            std::fs::create_dir(&b).unwrap();
            std::fs::write(b.join("state"), format!("{state}\n")).unwrap();
        }
        let g = Guest {
            sysfs: d.path().to_path_buf(),
            online_retry: Retry {
                attempts: 5,
                interval: Duration::from_millis(10),
            },
            ..Guest::default()
        };
        (d, g)
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap().trim().to_string()
    }

    #[test]
    fn onlines_cpus_and_memory() {
        let (d, g) = fake_sysfs(
            &[None, Some("1"), Some("0"), Some("0")],
            &["online", "offline", "offline"],
        );
        // cpu0 (no online file) and cpu1 are online: 4 in all means two more.
        let r = online_cpu_mem(&g, 4, false).unwrap();
        assert_eq!(r.cpus.len(), 2);
        assert_eq!(r.online, vec![0, 1, 2, 3]);
        assert_eq!(r.memory.len(), 2);
        let cpu = d.path().join(CPU_DIR);
        assert_eq!(read(cpu.join("cpu2/online")), "1");
        assert_eq!(read(cpu.join("cpu3/online")), "1");
        let mem = d.path().join(MEMORY_DIR);
        for i in 0..3 {
            assert_eq!(read(mem.join(format!("memory{i}/state"))), "online");
        }
    }

    #[test]
    fn onlines_no_more_cpus_than_asked_and_cpu_only_leaves_memory() {
        let (d, g) = fake_sysfs(&[None, Some("0"), Some("0"), Some("0")], &["offline"]);
        let r = online_cpu_mem(&g, 2, true).unwrap();
        assert_eq!(r.cpus, vec![d.path().join(CPU_DIR).join("cpu1/online")]);
        assert_eq!(cpu_list(&r.online), "0-1");
        assert!(r.memory.is_empty());
        assert_eq!(read(d.path().join(CPU_DIR).join("cpu2/online")), "0");
        assert_eq!(read(d.path().join(MEMORY_DIR).join("memory0/state")), "offline");
    }

    #[test]
    fn waits_for_cpus_that_appear_late() {
        let (d, mut g) = fake_sysfs(&[None], &[]);
        g.online_retry = Retry {
            attempts: 100,
            interval: Duration::from_millis(10),
        };
        let late = d.path().join(CPU_DIR).join("cpu1");
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            // Written whole before the directory gets its name, so the agent
            // never sees a half-made CPU.
            let tmp = late.with_file_name(".cpu1");
            std::fs::create_dir(&tmp).unwrap();
            std::fs::write(tmp.join("online"), "0\n").unwrap();
            std::fs::rename(&tmp, &late).unwrap();
        });
        let r = online_cpu_mem(&g, 2, true).unwrap();
        t.join().unwrap();
        assert_eq!(r.cpus.len(), 1);
        assert_eq!(read(d.path().join(CPU_DIR).join("cpu1/online")), "1");
    }

    #[test]
    fn gives_up_with_deadline_exceeded() {
        let (_d, g) = fake_sysfs(&[None, Some("0")], &[]);
        let e = online_cpu_mem(&g, 3, true).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::DeadlineExceeded);
        assert!(e.to_string().contains("failed to online 3 CPU(s): 2 online"), "{e}");
    }

    #[test]
    fn missing_cpu_dir_is_an_error_missing_memory_dir_is_not() {
        let d = tempfile::tempdir().unwrap();
        let g = Guest {
            sysfs: d.path().to_path_buf(),
            ..Guest::default()
        };
        assert_eq!(online_cpu_mem(&g, 0, false).unwrap(), Onlined::default());
        let e = online_cpu_mem(&g, 1, true).unwrap_err();
        assert!(e.to_string().starts_with("opendir("), "{e}");
    }

    #[test]
    fn the_total_already_online_is_a_no_op() {
        let (d, g) = fake_sysfs(&[None, Some("1"), Some("0")], &[]);
        for n in [1, 2] {
            let r = online_cpu_mem(&g, n, true).unwrap();
            assert!(r.cpus.is_empty(), "{n}: {r:?}");
            assert_eq!(r.online, vec![0, 1]);
        }
        assert_eq!(read(d.path().join(CPU_DIR).join("cpu2/online")), "0");
        // Twice the same total after a hot-plug: the second changes nothing.
        assert_eq!(online_cpu_mem(&g, 3, true).unwrap().cpus.len(), 1);
        assert!(online_cpu_mem(&g, 3, true).unwrap().cpus.is_empty());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list(&[]), "");
        assert_eq!(cpu_list(&[0]), "0");
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
    }

    #[test]
    fn blocks_without_a_readable_state_are_skipped() {
        let (d, g) = fake_sysfs(&[None], &["offline", "offline"]);
        let state = d.path().join(MEMORY_DIR).join("memory0/state");
        // A directory where the file should be: writing fails.
        std::fs::remove_file(&state).unwrap();
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join("x"), "").unwrap();
        let r = online_cpu_mem(&g, 0, false).unwrap();
        // memory0/state cannot be read as a file: skipped; memory1 is onlined.
        assert_eq!(r.memory.len(), 1);
        assert!(r.memory_failed.is_empty());
    }
}
