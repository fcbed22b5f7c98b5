//! A classic BPF interpreter for the subset the compiler emits, with the kernel's checks.

use crate::seccomp::bpf::{
    Instruction, ALU_AND_K, JMP_JA, JMP_JEQ_K, JMP_JGE_K, JMP_JGT_K, LD_W_ABS, MAX_INSNS, RET_K,
};

/// `BPF_JMP | BPF_JSET | BPF_K` (the compiler does not emit it; interpreted for completeness).
const JMP_JSET_K: u16 = 0x45;

/// `struct seccomp_data`: what the filter sees of a syscall.
#[derive(Clone, Copy, Debug)]
pub struct Data {
    /// Syscall number.
    pub nr: u32,
    /// `AUDIT_ARCH_*`.
    pub arch: u32,
    /// Arguments.
    pub args: [u64; 6],
}

impl Data {
    /// The 64 bytes of `struct seccomp_data`, in host byte order.
    fn bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        out[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        out[8..16].copy_from_slice(&0x7f00_dead_beefu64.to_ne_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            out[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        out
    }
}

/// Checks what the kernel checks before accepting a program (the subset we emit).
pub fn validate(prog: &[Instruction]) {
    assert!(!prog.is_empty() && prog.len() <= MAX_INSNS, "bad length {}", prog.len());
    assert!(prog.last().unwrap().is_ret(), "program must end with ret");
    for (pc, i) in prog.iter().enumerate() {
        let in_range = |off: usize| pc + 1 + off < prog.len();
        match i.code {
            LD_W_ABS => assert!(i.k % 4 == 0 && i.k < 64, "pc {pc}: bad load offset {}", i.k),
            ALU_AND_K | RET_K => {}
            JMP_JA => assert!(in_range(i.k as usize), "pc {pc}: ja out of range"),
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K => {
                assert!(
                    in_range(i.jt as usize) && in_range(i.jf as usize),
                    "pc {pc}: jump out of range"
                )
            }
            code => panic!("pc {pc}: opcode {code:#x} not in the emitted subset"),
        }
    }
}

/// Runs `prog` on `data` and returns the `SECCOMP_RET_*` value.
pub fn run(prog: &[Instruction], data: &Data) -> u32 {
    let bytes = data.bytes();
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        let cond = |taken: bool| pc + 1 + if taken { i.jt as usize } else { i.jf as usize };
        pc = match i.code {
            LD_W_ABS => {
                let k = i.k as usize;
                acc = u32::from_ne_bytes(bytes[k..k + 4].try_into().unwrap());
                pc + 1
            }
            ALU_AND_K => {
                acc &= i.k;
                pc + 1
            }
            JMP_JA => pc + 1 + i.k as usize,
            JMP_JEQ_K => cond(acc == i.k),
            JMP_JGT_K => cond(acc > i.k),
            JMP_JGE_K => cond(acc >= i.k),
            JMP_JSET_K => cond(acc & i.k != 0),
            RET_K => return i.k,
            code => panic!("pc {pc}: unexpected opcode {code:#x}"),
        };
    }
}
