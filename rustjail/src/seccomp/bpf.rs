//! Classic BPF instructions and a back-to-front assembler with automatic long jumps.
//!
//! Conditional jumps in classic BPF have 8-bit offsets (at most 255 instructions forward).
//! The program is therefore built from its last instruction to its first: every jump target
//! is already placed when the jump is emitted, so its distance is known. When a target is
//! out of reach, a trampoline is placed right after the jump: a copy of the target when it
//! is a `ret` (cheapest), otherwise an unconditional `ja` whose offset is 32 bits. Later
//! jumps to the same far target reuse the nearest trampoline.

use std::collections::HashMap;

/// `BPF_LD | BPF_W | BPF_ABS`: load the 32-bit word at offset `k` of `seccomp_data`.
pub const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`: `A &= k`.
pub const ALU_AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JA`: jump forward `k` instructions.
pub const JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`: `A == k`.
pub const JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K`: `A > k` (unsigned).
pub const JMP_JGT_K: u16 = 0x25;
/// `BPF_JMP | BPF_JGE | BPF_K`: `A >= k` (unsigned).
pub const JMP_JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K`: return `k` as the seccomp action.
pub const RET_K: u16 = 0x06;

/// The kernel's limit on the length of a classic BPF program (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

/// Offset of `seccomp_data.nr`.
pub const OFF_NR: u32 = 0;
/// Offset of `seccomp_data.arch`.
pub const OFF_ARCH: u32 = 4;
/// Offset of `seccomp_data.args[0]`; each argument is a 64-bit word.
const OFF_ARGS: u32 = 16;

/// Offsets of the (low, high) 32-bit halves of `seccomp_data.args[index]` on this host.
pub fn arg_offsets(index: u32) -> (u32, u32) {
    let base = OFF_ARGS + 8 * index;
    if cfg!(target_endian = "little") {
        (base, base + 4)
    } else {
        (base + 4, base)
    }
}

/// One classic BPF instruction, laid out like the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instruction {
    /// Opcode.
    pub code: u16,
    /// Forward offset when the condition holds.
    pub jt: u8,
    /// Forward offset when the condition does not hold.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

impl Instruction {
    /// Whether this instruction is a `ret`.
    pub fn is_ret(&self) -> bool {
        self.code == RET_K
    }
}

/// A position in a program under construction, counted from its end (stable while building).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Back-to-front program builder: each method places one instruction *before* all the
/// instructions placed so far and returns its label.
#[derive(Default)]
pub struct Builder {
    /// Instructions in reverse program order: `rev[0]` is the last instruction.
    rev: Vec<Instruction>,
    /// For a far jump target, the nearest trampoline placed for it so far.
    trampolines: HashMap<usize, usize>,
}

impl Builder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, insn: Instruction) -> Label {
        self.rev.push(insn);
        Label(self.rev.len() - 1)
    }

    /// Forward distance from an instruction about to be placed to `target`.
    fn distance(&self, target: Label) -> usize {
        self.rev.len() - target.0 - 1
    }

    fn reachable(&self, target: Label) -> bool {
        self.distance(target) <= u8::MAX as usize
    }

    /// A label equivalent to `target` within reach of a conditional jump placed next.
    fn reach(&mut self, target: Label, current: Label) -> Label {
        if self.reachable(current) {
            return current;
        }
        if let Some(&copy) = self.trampolines.get(&target.0) {
            if self.reachable(Label(copy)) {
                return Label(copy);
            }
        }
        let copy = self.goto(target);
        self.trampolines.insert(target.0, copy.0);
        copy
    }

    /// Places `ret k`.
    pub fn ret(&mut self, k: u32) -> Label {
        self.push(Instruction {
            code: RET_K,
            jt: 0,
            jf: 0,
            k,
        })
    }

    /// Places `ld [off]` (32-bit word of `seccomp_data`).
    pub fn load(&mut self, off: u32) -> Label {
        self.push(Instruction {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: off,
        })
    }

    /// Places `A &= k`.
    pub fn and(&mut self, k: u32) -> Label {
        self.push(Instruction {
            code: ALU_AND_K,
            jt: 0,
            jf: 0,
            k,
        })
    }

    /// Places an unconditional jump to `target` (or a copy of it when it is a `ret`).
    pub fn goto(&mut self, target: Label) -> Label {
        let insn = self.rev[target.0];
        if insn.is_ret() {
            return self.push(insn);
        }
        let k = u32::try_from(self.distance(target)).expect("BPF program larger than 4G instructions");
        self.push(Instruction {
            code: JMP_JA,
            jt: 0,
            jf: 0,
            k,
        })
    }

    /// Places a conditional jump `code k` going to `jt` when true and `jf` when false,
    /// inserting trampolines after it when a target is more than 255 instructions away.
    pub fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) -> Label {
        let (mut t, mut f) = (jt, jf);
        loop {
            t = self.reach(jt, t);
            f = self.reach(jf, f);
            if self.reachable(t) && self.reachable(f) {
                break;
            }
        }
        let (dt, df) = (self.distance(t) as u8, self.distance(f) as u8);
        self.push(Instruction {
            code,
            jt: dt,
            jf: df,
            k,
        })
    }

    /// Makes execution continue at `target` from an instruction placed next (which falls
    /// through): places a jump unless `target` is the instruction placed last.
    pub fn fall_into(&mut self, target: Label) {
        if target.0 + 1 != self.rev.len() {
            self.goto(target);
        }
    }

    /// Number of instructions placed so far.
    pub fn placed(&self) -> usize {
        self.rev.len()
    }

    /// The program in execution order.
    pub fn finish(mut self) -> Vec<Instruction> {
        self.rev.reverse();
        self.rev
    }
}
