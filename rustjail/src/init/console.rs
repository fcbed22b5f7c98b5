//! A terminal for the container's process: a pty from the container's own
//! devpts, its master sent back to the runtime, its slave made the process's
//! controlling terminal and stdio.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::runtime::Process;

use crate::error::{sys, Result};
use crate::sync::{self, FromInit};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// `/dev/console` is the process's terminal (the spec's default devices): the
/// pty slave bound over it.
fn bind_dev_console(slave: &str) -> Result<()> {
    let console = "/dev/console";
    match crate::open::open(
        Path::new(console),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => drop(fd),
        // Whatever is there gets the pty bound over it.
        Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(sys("open", console)(e)),
    }
    nix::mount::mount(
        Some(slave),
        console,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("mount", format_args!("bind {slave} on {console}")))
}

/// Opens a pty in the current mount namespace (after the root is entered), sends
/// the master over `sock`, and makes the slave our terminal and stdio. Only the
/// container's init binds it over `/dev/console` (`bind_console`), as runc: an
/// exec that did would stack a mount per terminal, and once the first exec's
/// pty is gone the next bind fails with ENOENT.
pub fn setup(sock: &mut UnixStream, p: &Process, bind_console: bool) -> Result<()> {
    let master =
        nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(sys("open", "/dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(sys("grantpt", "/dev/ptmx"))?;
    nix::pty::unlockpt(&master).map_err(sys("unlockpt", "/dev/ptmx"))?;
    let name = nix::pty::ptsname_r(&master).map_err(sys("ptsname", "/dev/ptmx"))?;
    if let Some(size) = p.console_size() {
        let ws = libc::winsize {
            ws_row: size.height() as u16,
            ws_col: size.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on a pty master with a valid winsize.
        unsafe { set_winsize(master.as_raw_fd(), &ws) }.map_err(sys("ioctl(TIOCSWINSZ)", &name))?;
    }
    sync::send(sock, &FromInit::Console)?;
    sync::send_fd(sock, master.as_raw_fd())?;
    drop(master);
    let slave = crate::open::open(Path::new(&name), OFlag::O_RDWR, Mode::empty()).map_err(sys("open", &name))?;
    if bind_console {
        bind_dev_console(&name)?;
    }
    nix::unistd::setsid().map_err(sys("setsid", "console"))?;
    // SAFETY: TIOCSCTTY on a terminal we opened; we are a session leader without one.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(sys("ioctl(TIOCSCTTY)", &name)(nix::Error::last()));
    }
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).map_err(sys("dup2", format_args!("{name} -> {fd}")))?;
    }
    Ok(())
}
