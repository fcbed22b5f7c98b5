//! From a [`Plan`] to classic BPF.
//!
//! Layout, in execution order:
//!
//! ```text
//!   ld arch; jeq AUDIT_ARCH_<a> -> section a; ...; ret BAD_ARCH
//! section (one per AUDIT_ARCH):
//!   ld nr
//!   [x86_64 only] jge X32_SYSCALL_BIT -> x32 part (or: nr == -1 ? default : BAD_ARCH)
//!   per ABI: [jgt highest -> ret ENOSYS]
//!            binary search tree on nr, leaves of <= 4 `jeq nr -> target`, misses -> default
//!            bodies of syscalls with argument rules (each rule: conditions ANDed -> ret action;
//!            failing one tries the next rule; the last one fails to the default)
//!            one `ret` per action of unconditional syscalls; ret DEFAULT
//! ```
//!
//! 64-bit arguments are compared as two 32-bit halves (high half first); on 32-bit ABIs only
//! the low half is compared, against the low 32 bits of the profile's value (as libseccomp).

use std::collections::BTreeMap;

use oci_spec::runtime::LinuxSeccompOperator as Op;

use super::action::{BAD_ARCH_ACTION, ENOSYS_ACTION};
use super::arch::{Abi, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
use super::bpf::{
    arg_offsets, Builder, Instruction, Label, JMP_JEQ_K, JMP_JGE_K, JMP_JGT_K, MAX_INSNS, OFF_ARCH, OFF_NR,
};
use super::error::SeccompError;
use super::rules::{AbiPlan, Cond, Plan, SyscallPlan};

/// Leaves of the syscall-number search tree hold at most this many `jeq`s.
const LEAF_SIZE: usize = 4;

/// Generates the program for `plan`.
pub fn generate(plan: &Plan) -> Result<Vec<Instruction>, SeccompError> {
    // Group ABIs by the `seccomp_data.arch` value they report, keeping the native one first.
    let mut groups: Vec<(u32, Vec<&AbiPlan>)> = Vec::new();
    for abi in &plan.abis {
        let audit = abi.abi.audit_arch();
        match groups.iter_mut().find(|(a, _)| *a == audit) {
            Some((_, list)) => list.push(abi),
            None => groups.push((audit, vec![abi])),
        }
    }

    let mut b = Builder::new();
    let mut entries = Vec::with_capacity(groups.len());
    for (audit, abis) in groups.iter().rev() {
        let entry = if *audit == AUDIT_ARCH_X86_64 {
            x86_64_section(&mut b, abis, plan.default_action)
        } else {
            let entry = abi_code(&mut b, abis[0], plan.default_action);
            b.fall_into(entry);
            b.load(OFF_NR)
        };
        entries.push((*audit, entry));
    }
    let mut next = b.ret(BAD_ARCH_ACTION);
    for (audit, entry) in entries {
        next = b.jump(JMP_JEQ_K, audit, entry, next);
    }
    b.load(OFF_ARCH);

    if b.placed() > MAX_INSNS {
        return Err(SeccompError::ProgramTooLarge {
            len: b.placed(),
            max: MAX_INSNS,
        });
    }
    Ok(b.finish())
}

/// The section for `AUDIT_ARCH_X86_64`, which carries both x86_64 and x32 syscalls.
fn x86_64_section(b: &mut Builder, abis: &[&AbiPlan], default_action: u32) -> Label {
    let find = |abi: Abi| abis.iter().copied().find(|p| p.abi == abi);
    let x32 = match find(Abi::X32) {
        Some(plan) => abi_code(b, plan, default_action),
        None => {
            // libseccomp: -1 (a tracer skipping the syscall) is not a foreign ABI.
            let bad = b.ret(BAD_ARCH_ACTION);
            let default = b.ret(default_action);
            b.jump(JMP_JEQ_K, u32::MAX, default, bad)
        }
    };
    let x86_64 = match find(Abi::X86_64) {
        Some(plan) => abi_code(b, plan, default_action),
        None => b.ret(BAD_ARCH_ACTION),
    };
    b.jump(JMP_JGE_K, X32_SYSCALL_BIT, x32, x86_64);
    b.load(OFF_NR)
}

/// The code for one ABI; expects the syscall number in the accumulator.
fn abi_code(b: &mut Builder, plan: &AbiPlan, default_action: u32) -> Label {
    let default = b.ret(default_action);

    let mut rets: BTreeMap<u32, Label> = BTreeMap::new();
    for sys in plan.syscalls.values() {
        if let SyscallPlan::Always(action) = sys {
            if *action != default_action && !rets.contains_key(action) {
                rets.insert(*action, b.ret(*action));
            }
        }
    }

    let mut targets: Vec<(u32, Label)> = Vec::with_capacity(plan.syscalls.len());
    for (nr, sys) in plan.syscalls.iter().rev() {
        let target = match sys {
            SyscallPlan::Always(action) => rets.get(action).copied().unwrap_or(default),
            SyscallPlan::When(rules) => {
                let mut fail = default;
                for rule in rules.iter().rev() {
                    let mut entry = b.ret(rule.action);
                    for cond in rule.conds.iter().rev() {
                        entry = condition(b, plan.abi.is_32bit(), cond, entry, fail);
                    }
                    fail = entry;
                }
                fail
            }
        };
        targets.push((*nr, target));
    }
    targets.reverse();

    let mut entry = search_tree(b, &targets, default);
    if let Some(highest) = plan.enosys_above {
        let enosys = b.ret(ENOSYS_ACTION);
        entry = b.jump(JMP_JGT_K, highest, enosys, entry);
    }
    entry
}

/// Dispatch on the syscall number in the accumulator; `items` is sorted by number.
fn search_tree(b: &mut Builder, items: &[(u32, Label)], miss: Label) -> Label {
    if items.len() <= LEAF_SIZE {
        let mut next = miss;
        for (nr, target) in items.iter().rev() {
            next = b.jump(JMP_JEQ_K, *nr, *target, next);
        }
        return next;
    }
    let mid = items.len() / 2;
    let upper = search_tree(b, &items[mid..], miss);
    let lower = search_tree(b, &items[..mid], miss);
    b.jump(JMP_JGE_K, items[mid].0, upper, lower)
}

/// Code testing one argument condition: goes to `ok` when it holds, to `fail` otherwise.
fn condition(b: &mut Builder, half_only: bool, cond: &Cond, ok: Label, fail: Label) -> Label {
    let (lo_off, hi_off) = arg_offsets(cond.index);
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    let (v, v2) = (cond.value, cond.value_two);

    // The low half decides once the high halves are equal (or when only it exists).
    match cond.op {
        Op::ScmpCmpEq => b.jump(JMP_JEQ_K, lo(v), ok, fail),
        Op::ScmpCmpNe => b.jump(JMP_JEQ_K, lo(v), fail, ok),
        Op::ScmpCmpGt => b.jump(JMP_JGT_K, lo(v), ok, fail),
        Op::ScmpCmpGe => b.jump(JMP_JGE_K, lo(v), ok, fail),
        Op::ScmpCmpLt => b.jump(JMP_JGE_K, lo(v), fail, ok),
        Op::ScmpCmpLe => b.jump(JMP_JGT_K, lo(v), fail, ok),
        Op::ScmpCmpMaskedEq => {
            b.jump(JMP_JEQ_K, lo(v2), ok, fail);
            b.and(lo(v))
        }
    };
    let low = b.load(lo_off);
    if half_only {
        return low;
    }
    match cond.op {
        Op::ScmpCmpEq => {
            b.jump(JMP_JEQ_K, hi(v), low, fail);
        }
        Op::ScmpCmpNe => {
            b.jump(JMP_JEQ_K, hi(v), low, ok);
        }
        Op::ScmpCmpGt | Op::ScmpCmpGe => {
            let eq = b.jump(JMP_JEQ_K, hi(v), low, fail);
            b.jump(JMP_JGT_K, hi(v), ok, eq);
        }
        Op::ScmpCmpLt | Op::ScmpCmpLe => {
            let eq = b.jump(JMP_JEQ_K, hi(v), low, ok);
            b.jump(JMP_JGT_K, hi(v), fail, eq);
        }
        Op::ScmpCmpMaskedEq => {
            b.jump(JMP_JEQ_K, hi(v2), low, fail);
            b.and(hi(v));
        }
    }
    b.load(hi_off)
}
