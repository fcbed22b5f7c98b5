//! The local terminal: raw mode while a remote terminal is attached, and the
//! window size the remote one should have.

use std::os::fd::AsRawFd;

/// Size sent when none of our standard descriptors is a terminal: the classic
/// VT100 screen, so programs in the container never see a 0x0 window.
pub const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// The terminal in raw mode while alive; restored on drop. Nothing when stdin
/// is not a terminal.
pub struct RawMode(Option<libc::termios>);

impl RawMode {
    /// Puts stdin's terminal in raw mode, when stdin is one.
    pub fn enter() -> RawMode {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: isatty/tcgetattr on stdin with a valid out pointer.
        if unsafe { libc::isatty(fd) } != 1 || unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return RawMode(None);
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the struct in place; tcsetattr reads it.
        unsafe {
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(fd, libc::TCSANOW, &raw);
        }
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the attributes read in `enter`.
            unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, saved) };
        }
    }
}

/// (rows, columns) of the first of stdin, stdout, stderr that is a terminal
/// with a known size, else [`DEFAULT_SIZE`].
pub fn window_size() -> (u16, u16) {
    for fd in [0, 1, 2] {
        // SAFETY: winsize is plain data.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize through a valid pointer, or fails
        // (ENOTTY) without writing.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return (ws.ws_row, ws.ws_col);
        }
    }
    DEFAULT_SIZE
}
