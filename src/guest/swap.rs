//! AddSwap and AddSwapPath: swap on a hot-plugged disk or a file, with
//! `swapon(2)` as Kata's agent does it (default priority, no flags).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::GuestError;

/// Enables swap on `path` (a block device or a file made with mkswap).
pub fn swapon(path: &Path) -> Result<(), GuestError> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| GuestError::InvalidArgument(format!("swap path {path:?} holds a NUL byte")))?;
    if path.as_os_str().is_empty() {
        return Err(GuestError::InvalidArgument("swap path is empty".into()));
    }
    // SAFETY: swapon(2) with a NUL-terminated path we own and no flags.
    let r = unsafe { libc::swapon(c.as_ptr(), 0) };
    if r != 0 {
        let errno = nix::errno::Errno::last();
        return Err(match errno {
            nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL => GuestError::InvalidArgument(format!(
                "swapon({}): {errno} (not a swap area made with mkswap, or missing)",
                path.display()
            )),
            _ => super::sys("swapon", path.display())(errno),
        });
    }
    Ok(())
}
