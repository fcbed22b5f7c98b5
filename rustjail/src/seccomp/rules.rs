//! From an OCI `LinuxSeccomp` to a per-ABI plan: which syscall numbers get which action under
//! which argument conditions. Semantics follow runc + libseccomp:
//!
//! * a rule whose action (with its errno) equals the default action is dropped;
//! * names unknown on an ABI are skipped there; a name unknown on every ABI of the filter is
//!   reported in the warnings;
//! * the conditions of one rule are ANDed; when one argument index appears more than once in
//!   a rule, each condition becomes a rule of its own (ORed), as runc does;
//! * the first unconditional rule for a syscall wins over every other rule for it; otherwise
//!   its conditional rules are tried in profile order and the first that matches decides;
//! * an ABI in `architectures` that the kernel running this binary cannot report (aarch64 on
//!   x86_64, ...) is left out, as its section could never run; names are then looked up on
//!   the remaining ABIs only;
//! * when `architectures` is given and the default action is not ALLOW/LOG/TRACE, syscall
//!   numbers above the highest number the profile names on an ABI return ENOSYS (runc's stub),
//!   so libc falls back from syscalls newer than the profile (clone3, ...).

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompArg, LinuxSeccompOperator, LinuxSyscall};

use super::action::{action_value, flag_bits, is_permissive};
use super::arch::Abi;
use super::error::SeccompError;

/// Syscalls have at most six arguments.
const MAX_ARGS: usize = 6;

/// One comparison of a syscall argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0..=5.
    pub index: u32,
    /// Operator.
    pub op: LinuxSeccompOperator,
    /// Operand (the mask, for MASKED_EQ).
    pub value: u64,
    /// Second operand (the expected masked value, for MASKED_EQ).
    pub value_two: u64,
}

/// A rule with conditions: when all hold, return `action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CondRule {
    /// ANDed conditions (never empty).
    pub conds: Vec<Cond>,
    /// `SECCOMP_RET_*` value.
    pub action: u32,
}

/// What the filter does for one syscall number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyscallPlan {
    /// Always this action.
    Always(u32),
    /// The first matching rule's action, else the default action.
    When(Vec<CondRule>),
}

/// The filter for one ABI.
#[derive(Debug)]
pub struct AbiPlan {
    /// The ABI.
    pub abi: Abi,
    /// Rules by syscall number (as seen in `seccomp_data.nr`).
    pub syscalls: BTreeMap<u32, SyscallPlan>,
    /// Return ENOSYS for syscall numbers above this one.
    pub enosys_above: Option<u32>,
}

/// The whole filter, before code generation.
#[derive(Debug)]
pub struct Plan {
    /// `SECCOMP_RET_*` value when no rule matches.
    pub default_action: u32,
    /// One entry per covered ABI, the native one first.
    pub abis: Vec<AbiPlan>,
    /// `SECCOMP_FILTER_FLAG_*` bits.
    pub flags: u32,
    /// Things a person may want to know (ignored names, ignored rules, ...).
    pub warnings: Vec<String>,
}

/// A rule's candidate entry for one syscall number, before precedence is applied.
struct Entry {
    rule: usize,
    conds: Vec<Cond>,
    action: u32,
}

/// `syscalls[N] (name, name, ...)`, shortened for rules with many names.
fn describe(index: usize, rule: &LinuxSyscall) -> String {
    const SHOWN: usize = 4;
    let names = rule.names();
    let mut list = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        list.push_str(&format!(", ... {} more", names.len() - SHOWN));
    }
    format!("syscalls[{index}] ({list})")
}

/// The OR of AND-sets a rule's args stand for (one empty set when unconditional).
fn cond_sets(location: &str, args: &[LinuxSeccompArg]) -> Result<Vec<Vec<Cond>>, SeccompError> {
    let mut seen = [0usize; MAX_ARGS];
    let mut conds = Vec::with_capacity(args.len());
    for (i, arg) in args.iter().enumerate() {
        if arg.index() >= MAX_ARGS {
            return Err(SeccompError::ArgIndexOutOfRange {
                rule: location.to_string(),
                arg: i,
                index: arg.index(),
            });
        }
        seen[arg.index()] += 1;
        conds.push(Cond {
            index: arg.index() as u32,
            op: arg.op(),
            value: arg.value(),
            value_two: arg.value_two().unwrap_or(0),
        });
    }
    if conds.is_empty() {
        Ok(vec![Vec::new()])
    } else if seen.iter().any(|&n| n > 1) {
        Ok(conds.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conds])
    }
}

/// Applies precedence to the entries of one syscall number.
fn resolve_entries(name_of: &dyn Fn(usize) -> String, entries: Vec<Entry>, warnings: &mut Vec<String>) -> SyscallPlan {
    if let Some(winner) = entries.iter().find(|e| e.conds.is_empty()) {
        for other in entries
            .iter()
            .filter(|e| e.rule != winner.rule && e.action != winner.action)
        {
            warnings.push(format!(
                "{}: ignored for this syscall, {} already matches it unconditionally",
                name_of(other.rule),
                name_of(winner.rule)
            ));
        }
        return SyscallPlan::Always(winner.action);
    }
    SyscallPlan::When(
        entries
            .into_iter()
            .map(|e| CondRule {
                conds: e.conds,
                action: e.action,
            })
            .collect(),
    )
}

/// Builds the plan for `profile` on this host.
pub fn plan(profile: &LinuxSeccomp) -> Result<Plan, SeccompError> {
    let mut warnings = Vec::new();
    let default_action = action_value(
        profile.default_action(),
        profile.default_errno_ret(),
        "defaultAction",
        "defaultErrnoRet",
        &mut warnings,
    )?;
    let flags = flag_bits(profile.flags().as_deref().unwrap_or_default())?;

    let native = Abi::native().ok_or(SeccompError::UnsupportedNativeArch(std::env::consts::ARCH))?;
    let mut abis = vec![native];
    let mut listed = Vec::new();
    for arch in profile.architectures().iter().flatten() {
        match Abi::from_oci(*arch) {
            // This kernel never reports it, so its section could never run: leaving it out
            // changes nothing at runtime (and its syscall table is not in the build).
            Some(abi) if !abi.can_occur_here() => {}
            Some(abi) => {
                if !abis.contains(&abi) {
                    abis.push(abi);
                }
                if !listed.contains(&abi) {
                    listed.push(abi);
                }
            }
            None => warnings.push(format!(
                "architectures: {arch} is not supported; its syscalls get the bad-architecture action (kill)"
            )),
        }
    }

    let rules: &[LinuxSyscall] = profile.syscalls().as_deref().unwrap_or_default();
    let mut entries: Vec<BTreeMap<u32, Vec<Entry>>> = abis.iter().map(|_| BTreeMap::new()).collect();
    let mut highest: Vec<Option<u32>> = vec![None; abis.len()];
    for (index, rule) in rules.iter().enumerate() {
        let location = describe(index, rule);
        let errno_field = format!("{location}.errnoRet");
        let action = action_value(rule.action(), rule.errno_ret(), &location, &errno_field, &mut warnings)?;
        let sets = cond_sets(&location, rule.args().as_deref().unwrap_or_default())?;
        let redundant = action == default_action;
        for (name_index, name) in rule.names().iter().enumerate() {
            if name.is_empty() {
                return Err(SeccompError::EmptySyscallName {
                    rule: location,
                    index: name_index,
                });
            }
            let mut known = false;
            for (slot, abi) in abis.iter().enumerate() {
                let Some(nr) = abi.resolve(name) else { continue };
                known = true;
                highest[slot] = highest[slot].max(Some(nr));
                if redundant {
                    continue;
                }
                let list = entries[slot].entry(nr).or_default();
                for conds in &sets {
                    list.push(Entry {
                        rule: index,
                        conds: conds.clone(),
                        action,
                    });
                }
            }
            if !known {
                let names: Vec<&str> = abis.iter().map(|a| a.oci_name()).collect();
                warnings.push(format!(
                    "{location}: unknown syscall \"{name}\" ignored (not a syscall on {})",
                    names.join(", ")
                ));
            }
        }
    }

    let stub = profile.architectures().is_some() && !is_permissive(profile.default_action());
    let name_of = |i: usize| describe(i, &rules[i]);
    let mut plans = Vec::with_capacity(abis.len());
    for ((abi, by_nr), top) in abis.iter().zip(entries).zip(highest) {
        let syscalls = by_nr
            .into_iter()
            .map(|(nr, list)| (nr, resolve_entries(&name_of, list, &mut warnings)))
            .collect();
        let enosys_above = if stub && listed.contains(abi) { top } else { None };
        plans.push(AbiPlan {
            abi: *abi,
            syscalls,
            enosys_above,
        });
    }
    let mut unique = Vec::with_capacity(warnings.len());
    for w in warnings {
        if !unique.contains(&w) {
            unique.push(w);
        }
    }
    Ok(Plan {
        default_action,
        abis: plans,
        flags,
        warnings: unique,
    })
}
