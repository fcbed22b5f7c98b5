//! The cgroup v2 code path with real containers. This host is hybrid (v1
//! controllers plus a cgroup2 mount), so the test runs rustjail in a private
//! mount namespace whose /sys/fs/cgroup is a plain cgroup2 mount: rustjail then
//! sees a unified host. Only controllers free of v1 work there (no memory or
//! pids), but the v2 device filter (eBPF), freezer, membership and cleanup
//! are exercised for real; limits on v2 run in the VM test.

mod common;

use std::process::Command;

use common::Bundle;

#[test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
fn container_lifecycle_on_a_unified_hierarchy() {
    let b = Bundle::new(&["sleep", "60"]);
    b.add_caps(&["CAP_MKNOD"]);
    let id = format!("v2-{}", std::process::id());
    let script = r#"
set -u
umount -R /sys/fs/cgroup || umount -l /sys/fs/cgroup || exit 90
mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 91
R="$RJ --root $ROOT"
$R create --bundle "$BUNDLE" "$ID" </dev/null >/dev/null 2>"$ROOT/create.err" || { cat "$ROOT/create.err"; exit 92; }
$R start "$ID" || exit 93
pid=$($R state "$ID" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
echo "cgroup=$(grep "^0::" /proc/$pid/cgroup)"
dir=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$pid/cgroup)
echo "dir_exists=$(test -d "$dir" && echo yes)"
echo "bpf=$(ls /sys/fs/cgroup 2>/dev/null | wc -l)"
$R exec "$ID" sh -c 'mknod /dev/mymem c 1 1; head -c1 /dev/mymem >/dev/null 2>&1; echo mem=$?; echo x > /dev/null; echo null=$?'
$R pause "$ID" && echo "paused=$($R state "$ID" | grep -c '"status": "paused"')"
echo "frozen=$(grep -c 'frozen 1' "$dir/cgroup.events")"
$R resume "$ID" && echo "resumed=$($R state "$ID" | grep -c '"status": "running"')"
$R delete --force "$ID" || exit 94
echo "dir_gone=$(test -d "$dir" || echo yes)"
"#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("RJ", env!("CARGO_BIN_EXE_rustjail"))
        .env("ROOT", b.state_root.path())
        .env("BUNDLE", b.path())
        .env("ID", &id)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{text}\n{err}", out.status.code());
    let line = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("cgroup").starts_with("0::/") && line("cgroup").ends_with(&id),
        "{text}"
    );
    assert_eq!(line("dir_exists"), "yes", "{text}");
    assert_eq!(line("mem"), "1", "eBPF device filter let /dev/mem through: {text}");
    assert_eq!(line("null"), "0", "{text}");
    assert_eq!(line("paused"), "1", "{text}");
    assert_eq!(line("frozen"), "1", "{text}");
    assert_eq!(line("resumed"), "1", "{text}");
    assert_eq!(line("dir_gone"), "yes", "{text}");
}
