//! Real filters: the test binary re-executes itself to run [`seccomp_install_child`] as a
//! child that installs a profile and makes one syscall (no Rust code after fork in a
//! multi-threaded test harness).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use super::profile;
use crate::seccomp::{compile, install};

const CHILD_ENV: &str = "PITH_SECCOMP_TEST_CHILD";
const PROFILE_ENV: &str = "PITH_SECCOMP_TEST_PROFILE";
const OP_ENV: &str = "PITH_SECCOMP_TEST_OP";
const CHILD_TEST: &str = "seccomp::tests::install::seccomp_install_child";

/// Exit code of the child when setting up failed (not an errno of the syscall under test).
const SETUP_FAILED: i32 = 200;

/// Runs `op` in a child after installing `json`; returns how the child ended.
fn run_child(json: &str, op: &str) -> ExitStatus {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(PROFILE_ENV, json)
        .env(OP_ENV, op)
        .output()
        .expect("spawn test child");
    if out.status.code() == Some(SETUP_FAILED) {
        panic!("child setup failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status
}

/// The child: a no-op in a normal test run.
#[test]
fn seccomp_install_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let json = std::env::var(PROFILE_ENV).expect("profile env");
    let op = std::env::var(OP_ENV).expect("op env");
    let dir = std::env::temp_dir().join(format!("pith-seccomp-{}", std::process::id()));
    let path = std::ffi::CString::new(dir.into_os_string().into_encoded_bytes()).unwrap();
    let program = match compile(&profile(&json)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("compile: {e}");
            std::process::exit(SETUP_FAILED);
        }
    };
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid rlimit; no core dump from the SIGSYS test.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        eprintln!("no_new_privs: {}", std::io::Error::last_os_error());
        std::process::exit(SETUP_FAILED);
    }
    if let Err(e) = install(&program) {
        eprintln!("install: {e}");
        std::process::exit(SETUP_FAILED);
    }
    // From here on only raw syscalls, then _exit: nothing else may be filtered by surprise.
    // SAFETY: plain syscalls on integers and a NUL-terminated path that outlives them.
    let ret = unsafe {
        match op.as_str() {
            "mkdir" => {
                let r = libc::mkdir(path.as_ptr(), 0o700);
                if r == 0 {
                    libc::rmdir(path.as_ptr());
                }
                r as libc::c_long
            }
            "getpid" => libc::syscall(libc::SYS_getpid),
            "lseek_low" => libc::syscall(
                libc::SYS_lseek,
                -1 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
            ),
            "lseek_high" => libc::syscall(libc::SYS_lseek, -1 as libc::c_long, 1i64 << 32, 0 as libc::c_long),
            _ => libc::_exit(SETUP_FAILED),
        }
    };
    let code = if ret < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(SETUP_FAILED)
    } else {
        0
    };
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(code) }
}

const MKDIR_ENOSYS: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
    {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#;

#[test]
fn seccomp_install_errno_blocks_mkdir_but_not_getpid() {
    assert_eq!(run_child(MKDIR_ENOSYS, "mkdir").code(), Some(libc::ENOSYS));
    assert_eq!(run_child(MKDIR_ENOSYS, "getpid").code(), Some(0));
    // Without a filter mkdir works: the 38 above came from the filter.
    assert_eq!(
        run_child(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#, "mkdir").code(),
        Some(0)
    );
}

#[test]
fn seccomp_install_kill_default_kills_with_sigsys() {
    let json = r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[
        {"names":["exit_group","exit"],"action":"SCMP_ACT_ALLOW"}]}"#;
    let status = run_child(json, "getpid");
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
    let allowed = r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[
        {"names":["exit_group","exit","getpid"],"action":"SCMP_ACT_ALLOW"}]}"#;
    assert_eq!(run_child(allowed, "getpid").code(), Some(0));
}

#[test]
fn seccomp_install_compares_the_high_half_of_64_bit_args() {
    let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["lseek"],"action":"SCMP_ACT_ERRNO",
        "errnoRet":77,"args":[{"index":1,"value":4294967296,"op":"SCMP_CMP_EQ"}]}]}"#;
    assert_eq!(run_child(json, "lseek_high").code(), Some(77));
    assert_eq!(run_child(json, "lseek_low").code(), Some(libc::EBADF));
}

#[test]
fn seccomp_install_with_flags_uses_seccomp_syscall() {
    let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG"],
        "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#;
    assert_eq!(run_child(json, "mkdir").code(), Some(libc::ENOSYS));
}
