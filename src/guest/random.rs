//! ReseedRandomDev: feed host entropy to the guest's random pool, as Kata's
//! agent does: write the bytes to `/dev/random`, credit them with
//! `RNDADDENTROPY`, then force a reseed of the CRNG with `RNDRESEEDCRNG`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{io, sys, GuestError};

/// The random device.
pub const RANDOM_DEV: &str = "/dev/random";

/// `_IOW('R', 0x03, int[2])` (0x40085203 on x86 and arm).
const RNDADDENTROPY: nix::sys::ioctl::ioctl_num_type = nix::request_code_write!(b'R', 0x03, 8);
/// `_IO('R', 0x07)`.
const RNDRESEEDCRNG: nix::sys::ioctl::ioctl_num_type = nix::request_code_none!(b'R', 0x07);

/// `struct rand_pool_info` followed by the bytes, as the ioctl reads it.
fn pool_info(data: &[u8]) -> Result<Vec<u8>, GuestError> {
    let len = i32::try_from(data.len())
        .ok()
        .filter(|l| l.checked_mul(8).is_some())
        .ok_or_else(|| GuestError::InvalidArgument(format!("ReseedRandomDev: {} bytes is too much", data.len())))?;
    let mut buf = Vec::with_capacity(8 + data.len());
    buf.extend_from_slice(&(len * 8).to_ne_bytes()); // entropy_count, in bits
    buf.extend_from_slice(&len.to_ne_bytes()); // buf_size, in bytes
    buf.extend_from_slice(data);
    Ok(buf)
}

/// Adds `data` to the pool of `dev` and reseeds.
pub fn reseed(dev: &Path, data: &[u8]) -> Result<(), GuestError> {
    let info = pool_info(data)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(io("open", dev.display()))?;
    f.write_all(data).map_err(io("write", dev.display()))?;
    // SAFETY: RNDADDENTROPY reads a rand_pool_info whose buf_size matches the
    // bytes that follow it in `info`, which outlives the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    nix::errno::Errno::result(r).map_err(sys("ioctl", format!("{}, RNDADDENTROPY", dev.display())))?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG, 0) };
    nix::errno::Errno::result(r).map_err(sys("ioctl", format!("{}, RNDRESEEDCRNG", dev.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn ioctl_numbers() {
        let (add, reseed): (nix::sys::ioctl::ioctl_num_type, nix::sys::ioctl::ioctl_num_type) = (0x4008_5203, 0x5207);
        assert_eq!((RNDADDENTROPY, RNDRESEEDCRNG), (add, reseed));
    }

    #[test]
    fn pool_info_layout() {
        let b = pool_info(&[1, 2, 3]).unwrap();
        assert_eq!(&b[0..4], &24i32.to_ne_bytes());
        assert_eq!(&b[4..8], &3i32.to_ne_bytes());
        assert_eq!(&b[8..], &[1, 2, 3]);
    }

    #[test]
    #[cfg_attr(not(pith_root), ignore = "needs root")]
    fn reseeds_the_real_device_as_root() {
        reseed(Path::new(RANDOM_DEV), b"pith test seed 0123456789abcdef").unwrap();
    }

    #[test]
    fn a_file_is_not_a_random_device() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("notrandom");
        std::fs::write(&f, "").unwrap();
        let e = reseed(&f, b"x").unwrap_err();
        assert!(e.to_string().contains("RNDADDENTROPY"), "{e}");
        assert_eq!(e.kind(), crate::error::ErrorKind::Internal);
    }
}
