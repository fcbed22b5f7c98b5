//! Resource limits really written and effective, through real containers.

mod common;

use std::time::{Duration, Instant};

use common::{stderr, stdout, Bundle};

fn state(b: &Bundle, id: &str) -> serde_json::Value {
    serde_json::from_slice(&b.rustjail(&["state", id]).stdout).unwrap_or_default()
}

fn started(args: &[&str], id: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Bundle {
    let b = Bundle::new(args);
    b.edit(edit);
    b.create_and_start(id);
    b
}

/// The line of a v1 `controller` in a /proc/PID/cgroup text.
fn cgroup_line<'a>(text: &'a str, controller: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == controller))
        })
        .unwrap_or_else(|| panic!("no {controller} in {text}"))
}

/// The container init's cgroup directory for a v1 controller.
fn cgroup_dir(pid: i64, controller: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = cgroup_line(&text, controller);
    let rel = line.splitn(3, ':').nth(2).unwrap();
    let mount = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .split(',')
                .any(|c| c == controller)
        })
        .unwrap();
    mount.join(rel.trim_start_matches('/'))
}

fn utime(pid: i64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(11).unwrap().parse().unwrap()
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn memory_limit_oom_kills() {
    let b = Bundle::new(&["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]);
    b.edit(|c| c["linux"]["resources"]["memory"] = serde_json::json!({"limit": 32 << 20, "swap": 32 << 20}));
    let out = b.run(&format!("oom-{}", std::process::id()));
    assert_eq!(
        out.status.code(),
        Some(137),
        "not OOM-killed: {} {}",
        stdout(&out),
        stderr(&out)
    );

    // Without the limit the same process succeeds.
    let b = Bundle::new(&["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]);
    let out = b.run(&format!("nooom-{}", std::process::id()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn pids_limit_stops_a_fork_bomb() {
    let id = format!("pids-{}", std::process::id());
    let b = started(&["sleep", "60"], &id, |c| {
        c["linux"]["resources"]["pids"] = serde_json::json!({"limit": 10})
    });
    // The shell gives up at the first fork the limit refuses; what it started stays.
    let out = b.rustjail(&["exec", &id, "sh", "-c", "for i in $(seq 40); do sleep 30 & done"]);
    assert!(!out.status.success(), "40 forks succeeded under pids.max 10");
    assert!(
        stdout(&out).contains("fork") || stderr(&out).contains("fork"),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let pids: Vec<i64> = serde_json::from_slice(&b.rustjail(&["ps", "--format", "json", &id]).stdout).unwrap();
    assert!(
        pids.len() <= 10 && pids.len() >= 5,
        "{} processes with pids.max 10",
        pids.len()
    );
    assert!(b.rustjail(&["delete", "--force", &id]).status.success());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn pause_freezes_and_resume_thaws() {
    let id = format!("pause-{}", std::process::id());
    let b = started(&["sh", "-c", "while :; do :; done"], &id, |_| {});
    let pid = state(&b, &id)["pid"].as_i64().unwrap();
    let out = b.rustjail(&["pause", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(state(&b, &id)["status"], "paused");
    let t0 = utime(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(utime(pid), t0, "a paused process kept running");
    let out = b.rustjail(&["pause", &id]);
    assert!(
        !out.status.success() && stderr(&out).contains("paused"),
        "{}",
        stderr(&out)
    );

    assert!(b.rustjail(&["resume", &id]).status.success());
    assert_eq!(state(&b, &id)["status"], "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    while utime(pid) == t0 {
        assert!(Instant::now() < deadline, "resumed process does not run");
        std::thread::sleep(Duration::from_millis(20));
    }
    // delete --force works on a paused container too.
    assert!(b.rustjail(&["pause", &id]).status.success());
    let out = b.rustjail(&["delete", "--force", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn update_changes_limits_and_ps_lists_processes() {
    let id = format!("upd-{}", std::process::id());
    let b = started(&["sh", "-c", "sleep 60 & sleep 60 & wait"], &id, |c| {
        c["linux"]["resources"]["pids"] = serde_json::json!({"limit": 50});
    });
    let pid = state(&b, &id)["pid"].as_i64().unwrap();
    let pids_dir = cgroup_dir(pid, "pids");
    assert_eq!(std::fs::read_to_string(pids_dir.join("pids.max")).unwrap().trim(), "50");
    let out = b.rustjail(&["update", "--pids-limit", "20", "--memory", "67108864", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(pids_dir.join("pids.max")).unwrap().trim(), "20");
    let mem = cgroup_dir(pid, "memory");
    assert_eq!(
        std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        "67108864"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let pids: Vec<i64> = loop {
        let p: Vec<i64> = serde_json::from_slice(&b.rustjail(&["ps", "--format", "json", &id]).stdout).unwrap();
        if p.len() == 3 || Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert!(pids.contains(&pid));
    let table = stdout(&b.rustjail(&["ps", &id]));
    assert!(table.contains("sleep 60") && table.contains("PID"), "{table}");

    // kill --all reaches every process, not only the init.
    let out = b.rustjail(&["kill", "--all", &id, "KILL"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&b, &id)["status"] != "stopped" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(b.rustjail(&["delete", &id]).status.success());
    assert!(!pids_dir.exists(), "cgroup {} left behind", pids_dir.display());
}

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn device_cgroup_denies_what_the_rules_do_not_allow() {
    // CAP_MKNOD lets the node be made; the device cgroup still refuses to open
    // /dev/mem (1:1), while /dev/null (1:3), allowed by default, works.
    let b = Bundle::new(&[
        "sh",
        "-c",
        "mknod /dev/mymem c 1 1; head -c1 /dev/mymem; echo mem=$?; echo hi > /dev/null; echo null=$?",
    ]);
    b.add_caps(&["CAP_MKNOD"]);
    let out = b.run(&format!("dev-{}", std::process::id()));
    let text = stdout(&out);
    assert!(
        text.contains("mem=1") && text.contains("null=0"),
        "{text} {}",
        stderr(&out)
    );
}

/// Without a cgroup namespace (a Kata host strips it) the runtime makes the
/// cgroup while the init builds the root, and the init joins it before it
/// enters the root: the process runs in it, in every hierarchy, under its limits.
#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn an_init_without_a_cgroup_namespace_runs_in_its_cgroup() {
    let id = format!("nocgns-{}", std::process::id());
    let b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/self/cgroup; dd if=/dev/zero of=/dev/null bs=256M count=1",
    ]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "cgroup");
        c["linux"]["resources"]["memory"] = serde_json::json!({"limit": 32 << 20, "swap": 32 << 20});
    });
    let out = b.run(&id);
    assert_eq!(out.status.code(), Some(137), "not OOM-killed: {}", stderr(&out));
    let text = stdout(&out);
    for controller in ["memory", "pids", "cpu", "devices", "freezer"] {
        let line = cgroup_line(&text, controller);
        assert!(line.ends_with(&format!("/{id}")), "{controller} not joined: {text}");
    }
}
