//! Device cgroup rules: an emulation of the v1 devices controller (default policy plus exceptions),
//! shared by v1 (written to devices.allow/deny) and v2 (compiled to an eBPF program), so a rule list
//! means the same on both.
//!
//! Differences from the raw v1 kernel, all on the safe side (like runc's emulator):
//! * a type "a" rule with a major, minor or partial access applies to both "b" and "c" instead of
//!   silently meaning "all devices";
//! * a rule that would punch a hole in a broader earlier rule of the opposite kind (deny "c 1:3" after
//!   allow "c 1:*") is refused, since v1 would ignore it;
//! * a rule also cancels the narrower earlier rules it covers (deny "c 1:*" drops allow "c 1:3").
//!
//! FIFO ("p") rules are skipped: the device cgroup does not check FIFOs.

use std::fmt;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::error::{Error, Result};
use super::fs::dev_num;

/// mknod access bit (same value as BPF_DEVCG_ACC_MKNOD).
pub const ACC_MKNOD: u8 = 1;
/// read access bit (same value as BPF_DEVCG_ACC_READ).
pub const ACC_READ: u8 = 2;
/// write access bit (same value as BPF_DEVCG_ACC_WRITE).
pub const ACC_WRITE: u8 = 4;
/// All access bits.
pub const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// The kind of device a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DevKind {
    /// Block device ("b").
    Block,
    /// Character device ("c").
    Char,
}

/// One exception to the default policy: kind, major and minor (`None` is "*") and access bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevRule {
    /// Block or char.
    pub kind: DevKind,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// Access bits ([`ACC_READ`] | [`ACC_WRITE`] | [`ACC_MKNOD`]).
    pub access: u8,
}

/// Formats access bits as "rwm".
pub fn access_str(access: u8) -> String {
    [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')]
        .iter()
        .filter(|(b, _)| access & b != 0)
        .map(|(_, c)| *c)
        .collect()
}

fn num_str(n: Option<u32>) -> String {
    n.map_or_else(|| "*".to_string(), |n| n.to_string())
}

impl fmt::Display for DevRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = if self.kind == DevKind::Block { 'b' } else { 'c' };
        write!(
            f,
            "{t} {}:{} {}",
            num_str(self.major),
            num_str(self.minor),
            access_str(self.access)
        )
    }
}

type Meta = (DevKind, Option<u32>, Option<u32>);

/// Exceptions in the order they were first added: a v1 cgroup lists them in
/// that order (`devices.list`), and crun writes a spec's rules so that the
/// list shows them in the spec's order.
#[derive(Debug, Clone, Default)]
struct Exceptions(Vec<(Meta, u8)>);

impl Exceptions {
    fn get(&self, meta: &Meta) -> Option<u8> {
        self.0.iter().find(|(m, _)| m == meta).map(|(_, a)| *a)
    }

    fn add(&mut self, meta: Meta, access: u8) {
        match self.0.iter_mut().find(|(m, _)| *m == meta) {
            Some((_, a)) => *a |= access,
            None => self.0.push((meta, access)),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(Meta, u8)> {
        self.0.iter()
    }

    fn sorted(&self) -> Vec<(Meta, u8)> {
        let mut v = self.0.clone();
        v.sort();
        v
    }
}

/// The emulated state of a device cgroup: a default policy and exceptions of the opposite kind.
#[derive(Debug, Clone, Default)]
pub struct DeviceState {
    /// True: everything is allowed except the exceptions (deny list). False: allow list.
    pub default_allow: bool,
    exceptions: Exceptions,
}

/// Two states are equal when they allow the same accesses, whatever the order.
impl PartialEq for DeviceState {
    fn eq(&self, other: &Self) -> bool {
        self.default_allow == other.default_allow && self.exceptions.sorted() == other.exceptions.sorted()
    }
}

impl Eq for DeviceState {}

/// One line to write to a v1 `devices.allow` (allow) or `devices.deny` (deny) file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1DeviceWrite {
    /// True for devices.allow, false for devices.deny.
    pub allow: bool,
    /// The rule in kernel syntax, e.g. "c 1:3 rwm" or "a".
    pub line: String,
}

impl V1DeviceWrite {
    /// The file this line goes to.
    pub fn file(&self) -> &'static str {
        if self.allow {
            "devices.allow"
        } else {
            "devices.deny"
        }
    }
}

fn parse_access(rule: &str, s: Option<&str>) -> Result<u8> {
    let s = s.unwrap_or("");
    if s.is_empty() {
        return Ok(ACC_ALL);
    }
    s.chars().try_fold(0u8, |acc, c| match c {
        'r' => Ok(acc | ACC_READ),
        'w' => Ok(acc | ACC_WRITE),
        'm' => Ok(acc | ACC_MKNOD),
        _ => Err(Error::DeviceRule {
            rule: rule.to_string(),
            reason: format!("unknown access {c:?} (use r, w, m)"),
        }),
    })
}

fn parse_num(what: &str, n: Option<i64>) -> Result<Option<u32>> {
    match n {
        None | Some(-1) => Ok(None),
        Some(v) => dev_num(what, v).map(Some),
    }
}

impl DeviceState {
    /// The state after applying `rules` in order to a cgroup that denies everything.
    pub fn from_spec(rules: &[LinuxDeviceCgroup]) -> Result<Self> {
        let mut st = DeviceState::default();
        for r in rules {
            st.apply(r)?;
        }
        Ok(st)
    }

    /// What a cgroup whose devices.list is not read is taken to hold: allow
    /// everything. The transition from it starts with a reset ("a"), so its
    /// writes give the target whatever the cgroup held.
    pub fn unread() -> Self {
        DeviceState {
            default_allow: true,
            exceptions: Exceptions::default(),
        }
    }

    /// The exceptions, in the order they were first added.
    pub fn exceptions(&self) -> Vec<DevRule> {
        self.exceptions
            .iter()
            .map(|&((kind, major, minor), access)| DevRule {
                kind,
                major,
                minor,
                access,
            })
            .collect()
    }

    /// Applies one OCI rule, like a write to devices.allow or devices.deny.
    pub fn apply(&mut self, r: &LinuxDeviceCgroup) -> Result<()> {
        let text = r.to_string();
        let kinds: &[DevKind] = match r.typ() {
            None | Some(LinuxDeviceType::A) => &[DevKind::Block, DevKind::Char],
            Some(LinuxDeviceType::B) => &[DevKind::Block],
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => &[DevKind::Char],
            Some(LinuxDeviceType::P) => return Ok(()),
        };
        let major = parse_num("devices.major", r.major())?;
        let minor = parse_num("devices.minor", r.minor())?;
        let access = parse_access(&text, r.access().as_deref())?;
        if kinds.len() == 2 && major.is_none() && minor.is_none() && access == ACC_ALL {
            self.default_allow = r.allow();
            self.exceptions = Exceptions::default();
            return Ok(());
        }
        for &kind in kinds {
            let rule = DevRule {
                kind,
                major,
                minor,
                access,
            };
            if r.allow() == self.default_allow {
                self.remove(rule)?;
            } else {
                self.exceptions.add((kind, major, minor), access);
            }
        }
        Ok(())
    }

    /// Removes `rule`'s access from the exceptions it covers; refuses holes in broader exceptions.
    fn remove(&mut self, rule: DevRule) -> Result<()> {
        let covers = |outer: (Option<u32>, Option<u32>), inner: (Option<u32>, Option<u32>)| {
            (outer.0.is_none() || outer.0 == inner.0) && (outer.1.is_none() || outer.1 == inner.1)
        };
        for &((kind, major, minor), acc) in self.exceptions.iter() {
            let broader =
                covers((major, minor), (rule.major, rule.minor)) && (major, minor) != (rule.major, rule.minor);
            if kind == rule.kind && broader && acc & rule.access != 0 {
                let existing = DevRule {
                    kind,
                    major,
                    minor,
                    access: acc,
                };
                return Err(Error::DeviceRule {
                    rule: rule.to_string(),
                    reason: format!("it would punch a hole in the earlier, broader rule {existing}, which the device cgroup cannot do"),
                });
            }
        }
        self.exceptions.0.retain_mut(|((kind, major, minor), acc)| {
            if *kind == rule.kind && covers((rule.major, rule.minor), (*major, *minor)) {
                *acc &= !rule.access;
            }
            *acc != 0
        });
        Ok(())
    }

    /// Reads a v1 `devices.list` (an allow list; "a *:* rwm" means the cgroup allows everything).
    pub fn from_v1_list(text: &str) -> Result<Self> {
        let mut st = DeviceState::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let bad = || Error::DeviceRule {
                rule: line.to_string(),
                reason: "unexpected devices.list line".into(),
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [t, nums, acc] = parts[..] else { return Err(bad()) };
            let kind = match t {
                "a" => {
                    return Ok(DeviceState {
                        default_allow: true,
                        exceptions: Exceptions::default(),
                    })
                }
                "b" => DevKind::Block,
                "c" => DevKind::Char,
                _ => return Err(bad()),
            };
            let (ma, mi) = nums.split_once(':').ok_or_else(bad)?;
            let num = |s: &str| {
                if s == "*" {
                    Ok(None)
                } else {
                    s.parse::<u32>().map(Some).map_err(|_| bad())
                }
            };
            let access = parse_access(line, Some(acc))?;
            st.exceptions.add((kind, num(ma)?, num(mi)?), access);
        }
        Ok(st)
    }

    /// The v1 writes that take a cgroup from `self` to `target`, disrupting running processes as little
    /// as possible: a reset ("a") only when the policy changes or the current state is a deny list
    /// (whose exceptions devices.list does not show). New exceptions are written in `target`'s order.
    pub fn transition(&self, target: &DeviceState) -> Vec<V1DeviceWrite> {
        let mut out = Vec::new();
        let mut old = &self.exceptions;
        let empty = Exceptions::default();
        if self.default_allow || self.default_allow != target.default_allow {
            out.push(V1DeviceWrite {
                allow: target.default_allow,
                line: "a".into(),
            });
            old = &empty;
        }
        for (meta, acc) in old.iter() {
            let dropped = acc & !target.exceptions.get(meta).unwrap_or(0);
            if dropped != 0 {
                let r = DevRule {
                    kind: meta.0,
                    major: meta.1,
                    minor: meta.2,
                    access: dropped,
                };
                out.push(V1DeviceWrite {
                    allow: target.default_allow,
                    line: r.to_string(),
                });
            }
        }
        for (meta, acc) in target.exceptions.iter() {
            let gained = acc & !old.get(meta).unwrap_or(0);
            if gained != 0 {
                let r = DevRule {
                    kind: meta.0,
                    major: meta.1,
                    minor: meta.2,
                    access: gained,
                };
                out.push(V1DeviceWrite {
                    allow: !target.default_allow,
                    line: r.to_string(),
                });
            }
        }
        out
    }

    /// Whether an access is allowed: the kernel's v1 matching (subset for allow exceptions, any
    /// overlap for deny exceptions). Used by tests and to check a BPF program against the model.
    pub fn allows(&self, kind: DevKind, major: u32, minor: u32, access: u8) -> bool {
        let matches =
            |r: &DevRule| r.kind == kind && r.major.is_none_or(|m| m == major) && r.minor.is_none_or(|m| m == minor);
        if self.default_allow {
            !self.exceptions().iter().any(|r| matches(r) && r.access & access != 0)
        } else {
            self.exceptions().iter().any(|r| matches(r) && access & !r.access == 0)
        }
    }
}
