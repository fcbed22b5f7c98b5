//! Compiler tests: actions, rule precedence, architectures, ENOSYS stub, errors.

use super::*;
use crate::seccomp::arch::{ALL, AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386};
use crate::seccomp::{supported_actions, supported_archs, supported_flags, supported_operators, SeccompError};

const NONE: [u64; 6] = [0; 6];

#[test]
fn seccomp_default_action_applies_to_unlisted_syscalls() {
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    assert_eq!(eval(&p, native(), "getpid", NONE), ALLOW);
    assert_eq!(eval(&p, native(), "mkdirat", NONE), KILL_PROCESS);
    assert_eq!(eval(&p, native(), "read", NONE), KILL_PROCESS);
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());

    let empty = build(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
    assert_eq!(eval(&empty, native(), "mkdirat", NONE), ALLOW);
}

#[test]
fn seccomp_errno_uses_errno_ret_and_defaults_to_eperm() {
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
            {"names":["getpid"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(eval(&p, native(), "mkdirat", NONE), errno(38));
    assert_eq!(eval(&p, native(), "getpid", NONE), errno(libc::EPERM as u32));
    assert_eq!(eval(&p, native(), "read", NONE), ALLOW);

    let d = build(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":12}"#);
    assert_eq!(eval(&d, native(), "read", NONE), errno(12));
}

#[test]
fn seccomp_every_action_maps_to_its_kernel_value() {
    let cases = [
        ("SCMP_ACT_KILL", KILL_THREAD),
        ("SCMP_ACT_KILL_THREAD", KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", KILL_PROCESS),
        ("SCMP_ACT_TRAP", libc::SECCOMP_RET_TRAP),
        ("SCMP_ACT_LOG", libc::SECCOMP_RET_LOG),
        ("SCMP_ACT_TRACE", libc::SECCOMP_RET_TRACE | 1),
        ("SCMP_ACT_ALLOW", ALLOW),
    ];
    for (action, value) in cases {
        let json =
            format!(r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["getpid"],"action":"{action}"}}]}}"#);
        assert_eq!(eval(&build(&json), native(), "getpid", NONE), value, "{action}");
        let json = format!(r#"{{"defaultAction":"{action}"}}"#);
        assert_eq!(eval(&build(&json), native(), "getpid", NONE), value, "default {action}");
    }
    let trace = build(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_TRACE","errnoRet":5}]}"#,
    );
    assert_eq!(eval(&trace, native(), "getpid", NONE), libc::SECCOMP_RET_TRACE | 5);
}

#[test]
fn seccomp_errno_ret_on_other_actions_is_ignored_with_a_warning() {
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW","errnoRet":3}]}"#,
    );
    assert_eq!(eval(&p, native(), "getpid", NONE), ALLOW);
    assert!(
        p.warnings()[0].contains("errnoRet is ignored with action SCMP_ACT_ALLOW"),
        "{:?}",
        p.warnings()
    );
}

#[test]
fn seccomp_first_unconditional_rule_wins() {
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
            {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":2},
            {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":3}]}"#,
    );
    assert_eq!(eval(&p, native(), "getpid", [1, 0, 0, 0, 0, 0]), errno(2));
    assert_eq!(eval(&p, native(), "getpid", NONE), errno(2));
    assert_eq!(p.warnings().len(), 2, "{:?}", p.warnings());
    assert!(
        p.warnings()[0].starts_with("syscalls[0] (getpid): ignored"),
        "{:?}",
        p.warnings()
    );
}

#[test]
fn seccomp_rule_with_the_default_action_is_dropped_like_runc() {
    // runc never adds it, so the later conditional ALLOW is what decides.
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_ERRNO"},
            {"names":["getpid"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":7,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    assert_eq!(eval(&p, native(), "getpid", [7, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(eval(&p, native(), "getpid", NONE), errno(1));
}

#[test]
fn seccomp_unknown_names_are_ignored_and_reported() {
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["getpid","no_such_syscall"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    assert_eq!(eval(&p, native(), "getpid", NONE), ALLOW);
    assert_eq!(p.warnings().len(), 1, "{:?}", p.warnings());
    assert!(
        p.warnings()[0].contains("unknown syscall \"no_such_syscall\""),
        "{:?}",
        p.warnings()
    );
}

#[test]
fn seccomp_foreign_architectures_get_killed() {
    let p = build(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#);
    let foreign = if cfg!(target_arch = "aarch64") {
        AUDIT_ARCH_I386
    } else {
        AUDIT_ARCH_AARCH64
    };
    assert_eq!(eval_nr(&p, foreign, 1, NONE), KILL_THREAD);
    assert_eq!(eval_nr(&p, 0xdead_beef, 1, NONE), KILL_THREAD);
}

#[test]
fn seccomp_listed_foreign_abis_compile_to_the_same_program() {
    // This kernel never reports them, so their sections could never run: they are left out.
    let (here, foreign): (Vec<Abi>, Vec<Abi>) = ALL.into_iter().partition(|a| a.can_occur_here());
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        assert!(!foreign.is_empty());
    }
    let json = |arches: &[&str]| {
        let rules = serde_json::json!([
            {"names": ["read", "getpid", "set_tls", "set_thread_area"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
             "args": [{"index": 2, "value": 0o700, "op": "SCMP_CMP_EQ"}]},
        ]);
        serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "architectures": arches, "syscalls": rules}).to_string()
    };
    let names = |abis: &[Abi]| abis.iter().map(|a| a.oci_name()).collect::<Vec<_>>();
    let (here, foreign) = (names(&here), names(&foreign));
    let all_listed = [here.clone(), foreign.clone()].concat();
    let foreign_first = [foreign.clone(), here.clone()].concat();
    let native_and_foreign = [vec!["SCMP_ARCH_NATIVE"], foreign.clone()].concat();

    let want = build(&json(&here));
    assert_eq!(eval(&want, native(), "getpid", NONE), ALLOW);
    assert_eq!(eval(&want, native(), "mkdirat", [0, 0, 0o700, 0, 0, 0]), errno(38));
    assert_eq!(build(&json(&all_listed)), want);
    assert_eq!(build(&json(&foreign_first)), want);
    assert_eq!(build(&json(&native_and_foreign)), build(&json(&["SCMP_ARCH_NATIVE"])));
    for abi in ALL.into_iter().filter(|a| !a.can_occur_here()) {
        // Had this kernel reported it anyway, it would meet the bad-architecture action.
        assert_eq!(eval_nr(&want, abi.audit_arch(), 1, NONE), KILL_THREAD, "{abi:?}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_x86_and_x32_are_killed_unless_listed() {
    use crate::seccomp::arch::X32_SYSCALL_BIT;

    let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#;
    let p = build(json);
    assert_eq!(eval(&p, Abi::X86_64, "mkdir", NONE), errno(38));
    // int 0x80 from a 64-bit process: i386 mkdir is 39 (getpid on x86_64).
    assert_eq!(eval_nr(&p, AUDIT_ARCH_I386, 39, NONE), KILL_THREAD);
    // x32 mkdir reports AUDIT_ARCH_X86_64 with the x32 bit.
    assert_eq!(eval_nr(&p, AUDIT_ARCH_X86_64, 83 | X32_SYSCALL_BIT, NONE), KILL_THREAD);
    assert_eq!(
        eval_nr(&p, AUDIT_ARCH_X86_64, u32::MAX, NONE),
        ALLOW,
        "-1 (tracer skip) is not foreign"
    );

    let both = build(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[{"names":["mkdir","socketcall"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
    );
    assert_eq!(eval(&both, Abi::X86_64, "mkdir", NONE), errno(38));
    assert_eq!(eval(&both, Abi::X86, "mkdir", NONE), errno(38));
    assert_eq!(eval(&both, Abi::X86, "socketcall", NONE), errno(38));
    assert_eq!(eval(&both, Abi::X86, "getpid", NONE), ALLOW);
    assert_eq!(eval(&both, Abi::X32, "mkdir", NONE), errno(38));
    assert_eq!(eval(&both, Abi::X32, "getpid", NONE), ALLOW);
    assert!(both.warnings().is_empty(), "{:?}", both.warnings());
}

#[test]
fn seccomp_enosys_for_syscalls_newer_than_the_profile() {
    let json = |default: &str, arches: &str| {
        format!(
            r#"{{"defaultAction":"{default}"{arches},"syscalls":[{{"names":["read","getpid"],"action":"SCMP_ACT_ALLOW"}}]}}"#
        )
    };
    let listed = r#","architectures":["SCMP_ARCH_NATIVE"]"#;
    let p = build(&json("SCMP_ACT_ERRNO", listed));
    let top = native()
        .resolve("getpid")
        .unwrap()
        .max(native().resolve("read").unwrap());
    let arch = native().audit_arch();
    assert_eq!(eval_nr(&p, arch, top + 1, NONE), errno(libc::ENOSYS as u32));
    assert_eq!(eval_nr(&p, arch, 1000, NONE), errno(libc::ENOSYS as u32));
    assert_eq!(eval_nr(&p, arch, top - 1, NONE), errno(1));
    assert_eq!(eval(&p, native(), "getpid", NONE), ALLOW);
    // Not without `architectures` (runc), nor with a permissive default.
    assert_eq!(eval_nr(&build(&json("SCMP_ACT_ERRNO", "")), arch, 1000, NONE), errno(1));
    assert_eq!(
        eval_nr(&build(&json("SCMP_ACT_LOG", listed)), arch, 1000, NONE),
        libc::SECCOMP_RET_LOG
    );
}

#[test]
fn seccomp_errors_name_the_field() {
    let err = |json: &str| compile(&profile(json)).unwrap_err().to_string();
    let e = err(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
    assert!(e.contains("defaultAction") && e.contains("SCMP_ACT_NOTIFY"), "{e}");
    let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_NOTIFY"}]}"#);
    assert!(
        e.contains("syscalls[0] (getpid)") && e.contains("SCMP_ACT_NOTIFY"),
        "{e}"
    );
    let e = err(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO",
            "args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    assert!(e.contains("syscalls[0] (getpid): args[0].index is 6"), "{e}");
    let e = err(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":70000}]}"#,
    );
    assert!(e.contains("syscalls[0] (getpid).errnoRet is 70000"), "{e}");
    let e = err(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":65536}"#);
    assert!(e.contains("seccomp defaultErrnoRet is 65536"), "{e}");
    let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid",""],"action":"SCMP_ACT_ERRNO"}]}"#);
    assert!(e.contains("names[1] is an empty string"), "{e}");
    let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}"#);
    assert!(e.contains("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"), "{e}");
}

#[test]
fn seccomp_flags_and_unsupported_architectures() {
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_S390X"],
            "flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#,
    );
    let want = libc::SECCOMP_FILTER_FLAG_TSYNC | libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
    assert_eq!(libc::c_ulong::from(p.flags()), want);
    assert!(
        p.warnings()[0].contains("SCMP_ARCH_S390X is not supported"),
        "{:?}",
        p.warnings()
    );
    assert_eq!(eval_nr(&p, 0x8000_0016, 1, NONE), KILL_THREAD);
}

#[test]
fn seccomp_large_profiles_use_long_jumps_correctly() {
    // Every native syscall allowed except a few, plus conditional rules on many syscalls so
    // that jump targets lie far away: checks trampolines and the search tree.
    let all: Vec<String> = syscalls::Sysno::iter().map(|s| s.name().to_string()).collect();
    let (conditional, plain) = all.split_at(all.len() / 2);
    let mut rules = vec![serde_json::json!({"names": plain, "action": "SCMP_ACT_ALLOW"})];
    for (i, name) in conditional.iter().enumerate() {
        rules.push(
            serde_json::json!({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": i + 100,
            "args": [{"index": i % 6, "value": i as u64 * 0x1_0000_0001, "op": "SCMP_CMP_EQ"}]}),
        );
        rules.push(serde_json::json!({"names": [name], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0xffff, "op": "SCMP_CMP_GT"}]}));
    }
    let json = serde_json::json!({"defaultAction": "SCMP_ACT_KILL_PROCESS", "syscalls": rules}).to_string();
    let p = build(&json);
    assert!(
        p.instructions().len() > 1000,
        "expected a large program, got {}",
        p.instructions().len()
    );
    for name in plain {
        assert_eq!(eval(&p, native(), name, NONE), ALLOW, "{name}");
    }
    for (i, name) in conditional.iter().enumerate() {
        let mut args = [1u64; 6];
        args[i % 6] = i as u64 * 0x1_0000_0001;
        assert_eq!(eval(&p, native(), name, args), errno(i as u32 + 100), "{name} matching");
        assert_eq!(
            eval(&p, native(), name, [0x1_0000, 0, 0, 0, 0, 0]),
            ALLOW,
            "{name} second rule"
        );
        assert_eq!(
            eval(&p, native(), name, [7, 7, 7, 7, 7, 7]),
            KILL_PROCESS,
            "{name} no rule"
        );
    }
}

#[test]
fn seccomp_features_are_truthful() {
    assert!(!supported_actions().contains(&"SCMP_ACT_NOTIFY"));
    assert_eq!(supported_actions().len(), 8);
    assert!(supported_operators().contains(&"SCMP_CMP_MASKED_EQ"));
    assert!(supported_archs().contains(&"SCMP_ARCH_X86_64") && supported_archs().contains(&"SCMP_ARCH_X32"));
    assert_eq!(supported_flags().len(), 3);
    for action in supported_actions() {
        let json = format!(r#"{{"defaultAction":"{action}"}}"#);
        assert!(compile(&profile(&json)).is_ok(), "{action}");
    }
    assert!(matches!(
        compile(&profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#)),
        Err(SeccompError::NotifyUnsupported { .. })
    ));
}
