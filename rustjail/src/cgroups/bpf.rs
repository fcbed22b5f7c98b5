//! cgroup v2 device filtering: compiles a [`DeviceState`] to a BPF_PROG_TYPE_CGROUP_DEVICE program
//! and attaches it with BPF_F_ALLOW_MULTI, replacing the programs attached before (as runc does),
//! using the raw `bpf(2)` syscall.
//!
//! Program layout (same structure as runc's and crun's): load type/access/major/minor from
//! `struct bpf_cgroup_dev_ctx` into r2..r5, then one block per exception that jumps to the next
//! block on mismatch and otherwise returns the exception's verdict, then the default verdict.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::devices::{DevKind, DeviceState, ACC_ALL};
use super::error::{Error, Result};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// dst register in the low nibble, src register in the high nibble.
    pub regs: u8,
    /// Offset (jumps: instructions to skip).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// Builds the device filter program for `state`.
pub fn device_program(state: &DeviceState) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),        // r2 = ctx->access_type
        insn(ALU32_AND_K, 2, 0, 0, 0xffff), // r2 &= 0xffff: device type
        insn(LDX_MEM_W, 3, 1, 0, 0),        // r3 = ctx->access_type
        insn(ALU32_RSH_K, 3, 0, 0, 16),     // r3 >>= 16: requested access
        insn(LDX_MEM_W, 4, 1, 4, 0),        // r4 = ctx->major
        insn(LDX_MEM_W, 5, 1, 8, 0),        // r5 = ctx->minor
    ];
    let verdict = i32::from(!state.default_allow);
    for r in state.exceptions() {
        // Jumps are emitted with off = -1 and patched to the end of the block below.
        let mut block = Vec::new();
        let ty = if r.kind == DevKind::Block {
            BPF_DEVCG_DEV_BLOCK
        } else {
            BPF_DEVCG_DEV_CHAR
        };
        block.push(insn(JMP_JNE_K, 2, 0, -1, ty));
        if r.access != ACC_ALL {
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0)); // r1 = requested access
            block.push(insn(ALU32_AND_K, 1, 0, 0, i32::from(r.access)));
            if state.default_allow {
                // deny exception: matches when any requested bit is in the rule (v1 partial match)
                block.push(insn(JMP_JEQ_K, 1, 0, -1, 0));
            } else {
                // allow exception: matches when every requested bit is in the rule
                block.push(insn(JMP_JNE_X, 1, 3, -1, 0));
            }
        }
        if let Some(major) = r.major {
            block.push(insn(JMP_JNE_K, 4, 0, -1, major as i32));
        }
        if let Some(minor) = r.minor {
            block.push(insn(JMP_JNE_K, 5, 0, -1, minor as i32));
        }
        block.push(insn(ALU32_MOV_K, 0, 0, 0, verdict));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.off == -1 {
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(ALU32_MOV_K, 0, 0, 0, i32::from(state.default_allow)));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Calls `bpf(cmd, attr, sizeof attr)`.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr points to a live, initialised #[repr(C)] bpf_attr prefix of the given size; every
    // pointer inside it refers to a buffer that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: libc::c_long) -> OwnedFd {
    // SAFETY: r is a file descriptor the bpf syscall just returned; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

/// Loads `insns` as a cgroup device program; the verifier log is returned in the error.
pub fn load_device_program(insns: &[Insn], what: &str) -> Result<OwnedFd> {
    let license = CString::new("Apache").expect("static string");
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"pith_dev");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let mut raised = false;
    loop {
        match sys_bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => return Ok(fd_from(fd)),
            // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK: raise it once and retry.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && !raised => {
                raised = true;
                let inf = nix::sys::resource::RLIM_INFINITY;
                if nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK, inf, inf).is_err() {
                    return Err(Error::BpfLoad {
                        what: what.into(),
                        source: e,
                        log: String::new(),
                    });
                }
            }
            Err(e) => {
                let mut log = vec![0u8; 64 * 1024];
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
                let _ = sys_bpf(BPF_PROG_LOAD, &mut attr);
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let log = String::from_utf8_lossy(&log[..end]).trim().to_string();
                return Err(Error::BpfLoad {
                    what: what.into(),
                    source: e,
                    log,
                });
            }
        }
    }
}

/// The ids of the device programs attached to the cgroup `dir_fd`.
pub fn query_device_programs(dir_fd: RawFd, what: &str) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    for _ in 0..4 {
        let mut attr = QueryAttr {
            target_fd: dir_fd as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        match sys_bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => ids = vec![0u32; attr.prog_cnt as usize + 8],
            Err(e) => {
                return Err(Error::Sys {
                    syscall: "bpf(BPF_PROG_QUERY)",
                    what: what.into(),
                    source: e,
                })
            }
        }
    }
    Err(Error::Sys {
        syscall: "bpf(BPF_PROG_QUERY)",
        what: what.into(),
        source: io::Error::from_raw_os_error(libc::ENOSPC),
    })
}

fn attach_attr(cgroup: RawFd, prog: RawFd, flags: u32) -> AttachAttr {
    AttachAttr {
        target_fd: cgroup as u32,
        attach_bpf_fd: prog as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: flags,
        ..Default::default()
    }
}

/// Opens the cgroup directory `dir` for the bpf syscalls.
pub fn open_cgroup_dir(dir: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| Error::io("open", dir, e))
}

/// Replaces the device filter of the cgroup `dir` with one implementing `state`: the new program is
/// attached (BPF_F_ALLOW_MULTI) before the old ones are detached, so there is never a moment
/// without a filter. Programs we may not access (EPERM/EACCES from an LSM) are left alone.
pub fn set_device_filter(dir: &Path, state: &DeviceState) -> Result<()> {
    let what = dir.display().to_string();
    let cg = open_cgroup_dir(dir)?;
    let old = query_device_programs(cg.as_raw_fd(), &what)?;
    let prog = load_device_program(&device_program(state), &what)?;
    let mut attr = attach_attr(cg.as_raw_fd(), prog.as_raw_fd(), BPF_F_ALLOW_MULTI);
    sys_bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| Error::Sys {
        syscall: "bpf(BPF_PROG_ATTACH)",
        what: what.clone(),
        source: e,
    })?;
    for id in old {
        let mut get = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let old_fd = match sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut get) {
            Ok(fd) => fd_from(fd),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ENOENT)
                ) =>
            {
                continue
            }
            Err(e) => {
                return Err(Error::Sys {
                    syscall: "bpf(BPF_PROG_GET_FD_BY_ID)",
                    what: format!("{what}, id {id}"),
                    source: e,
                })
            }
        };
        let mut attr = attach_attr(cg.as_raw_fd(), old_fd.as_raw_fd(), 0);
        match sys_bpf(BPF_PROG_DETACH, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                return Err(Error::Sys {
                    syscall: "bpf(BPF_PROG_DETACH)",
                    what: format!("{what}, id {id}"),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// Detaches every device program we can access from the cgroup `dir` (test and cleanup helper).
pub fn clear_device_filters(dir: &Path) -> Result<usize> {
    let what = dir.display().to_string();
    let cg = open_cgroup_dir(dir)?;
    let mut n = 0;
    for id in query_device_programs(cg.as_raw_fd(), &what)? {
        let mut get = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        if let Ok(fd) = sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut get) {
            let fd = fd_from(fd);
            let mut attr = attach_attr(cg.as_raw_fd(), fd.as_raw_fd(), 0);
            if sys_bpf(BPF_PROG_DETACH, &mut attr).is_ok() {
                n += 1;
            }
        }
    }
    Ok(n)
}
