//! Compiler tests: argument conditions, checked against a reference evaluation.

use super::*;

/// Values around the 32-bit boundary, so that high and low halves disagree.
const VALUES: [u64; 12] = [
    0,
    1,
    5,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0005,
    0x1_ffff_ffff,
    0x2_0000_0000,
    0x8000_0000_0000_0000,
    0xffff_ffff_ffff_ff9c,
    u64::MAX,
];

const OPS: [&str; 6] = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_GT",
    "SCMP_CMP_GE",
];

fn reference(op: &str, arg: u64, value: u64) -> bool {
    match op {
        "SCMP_CMP_EQ" => arg == value,
        "SCMP_CMP_NE" => arg != value,
        "SCMP_CMP_LT" => arg < value,
        "SCMP_CMP_LE" => arg <= value,
        "SCMP_CMP_GT" => arg > value,
        "SCMP_CMP_GE" => arg >= value,
        _ => unreachable!(),
    }
}

fn one_arg_profile(index: usize, op: &str, value: u64, value_two: u64) -> String {
    format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],"syscalls":[{{"names":["getpid"],
            "action":"SCMP_ACT_ERRNO","errnoRet":77,
            "args":[{{"index":{index},"value":{value},"valueTwo":{value_two},"op":"{op}"}}]}}]}}"#
    )
}

fn args_with(index: usize, value: u64) -> [u64; 6] {
    let mut args = [0x5555_5555_5555_5555u64; 6];
    args[index] = value;
    args
}

#[test]
fn seccomp_each_operator_compares_64_bit_values() {
    for op in OPS {
        for (n, value) in VALUES.iter().enumerate() {
            let index = n % 6;
            let p = build(&one_arg_profile(index, op, *value, 0));
            for arg in VALUES {
                let want = if reference(op, arg, *value) { errno(77) } else { ALLOW };
                let got = eval(&p, native(), "getpid", args_with(index, arg));
                assert_eq!(got, want, "arg{index}={arg:#x} {op} {value:#x}");
            }
        }
    }
}

#[test]
fn seccomp_masked_eq_uses_value_as_mask_and_value_two_as_datum() {
    let cases: [(u64, u64); 5] = [
        (0xff, 0x12),
        (0xffff_0000_0000_00ff, 0x1234_0000_0000_0012),
        (0x1_0000_0000, 0x1_0000_0000),
        (0x1_0000_0000, 0),
        (0xf0, 0x0f), // datum outside the mask: never matches
    ];
    for (mask, datum) in cases {
        let p = build(&one_arg_profile(2, "SCMP_CMP_MASKED_EQ", mask, datum));
        let samples = VALUES
            .iter()
            .copied()
            .chain([datum, datum | !mask, datum ^ 1, datum ^ (1 << 40)]);
        for arg in samples {
            let want = if arg & mask == datum { errno(77) } else { ALLOW };
            let got = eval(&p, native(), "getpid", args_with(2, arg));
            assert_eq!(got, want, "arg={arg:#x} & {mask:#x} == {datum:#x}");
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_32_bit_abis_compare_the_low_half_only() {
    // -100 (AT_FDCWD) as a 64-bit profile value matches the 32-bit -100 of an i386 process.
    let p = build(&one_arg_profile(0, "SCMP_CMP_EQ", 0xffff_ffff_ffff_ff9c, 0));
    assert_eq!(eval(&p, Abi::X86, "getpid", args_with(0, 0xffff_ff9c)), errno(77));
    assert_eq!(eval(&p, Abi::X86_64, "getpid", args_with(0, 0xffff_ff9c)), ALLOW);
    assert_eq!(
        eval(&p, Abi::X86_64, "getpid", args_with(0, 0xffff_ffff_ffff_ff9c)),
        errno(77)
    );
    let gt = build(&one_arg_profile(1, "SCMP_CMP_GT", 0x1_0000_0005, 0));
    assert_eq!(eval(&gt, Abi::X86, "getpid", args_with(1, 6)), errno(77));
    assert_eq!(eval(&gt, Abi::X86, "getpid", args_with(1, 5)), ALLOW);
    let masked = build(&one_arg_profile(3, "SCMP_CMP_MASKED_EQ", 0xffff_ffff_0000_00f0, 0x30));
    assert_eq!(eval(&masked, Abi::X86, "getpid", args_with(3, 0x3f)), errno(77));
}

#[test]
fn seccomp_args_of_one_rule_are_anded() {
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":9,
            "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":2,"op":"SCMP_CMP_EQ"},
                    {"index":5,"value":4294967296,"op":"SCMP_CMP_GE"}]}]}"#,
    );
    let check = |a0, a1, a5, want| {
        assert_eq!(
            eval(&p, native(), "getpid", [a0, a1, 0, 0, 0, a5]),
            want,
            "({a0}, {a1}, {a5:#x})"
        );
    };
    check(1, 2, 1 << 32, errno(9));
    check(1, 2, u64::MAX, errno(9));
    check(1, 2, 0xffff_ffff, ALLOW);
    check(1, 3, 1 << 32, ALLOW);
    check(0, 2, 1 << 32, ALLOW);
}

#[test]
fn seccomp_same_index_twice_becomes_separate_rules_like_runc() {
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":9,
            "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    assert_eq!(eval(&p, native(), "getpid", [1, 0, 0, 0, 0, 0]), errno(9));
    assert_eq!(eval(&p, native(), "getpid", [2, 0, 0, 0, 0, 0]), errno(9));
    assert_eq!(eval(&p, native(), "getpid", [3, 0, 0, 0, 0, 0]), ALLOW);
}

#[test]
fn seccomp_several_rules_for_one_syscall_are_ored_in_order() {
    let p = build(
        r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[
            {"names":["getpid","read"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
            {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":2,"args":[{"index":0,"value":1,"op":"SCMP_CMP_LE"}]},
            {"names":["getpid"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":10,"op":"SCMP_CMP_GT"}]}]}"#,
    );
    let at = |a0, a1| eval(&p, native(), "getpid", [a0, a1, 0, 0, 0, 0]);
    assert_eq!(at(1, 0), errno(1), "first rule matches first");
    assert_eq!(at(0, 0), errno(2));
    assert_eq!(at(5, 11), ALLOW);
    assert_eq!(at(5, 10), KILL_PROCESS);
    assert_eq!(eval(&p, native(), "read", [1, 0, 0, 0, 0, 0]), errno(1));
    assert_eq!(eval(&p, native(), "read", [0, 0, 0, 0, 0, 0]), KILL_PROCESS);
}
