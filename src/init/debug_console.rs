//! The debug console (`agent.debug_console`): a shell for each connection to a
//! vsock port (`agent.debug_console_vport`, default 1026), as Kata's agent has.
//!
//! The shell runs on a pseudo-terminal when one can be had (so job control and
//! line editing work), with `setsid -c` making it the session's controlling
//! terminal; otherwise the connection itself is its stdio. The shell is started
//! with `std::process::Command` (fork + exec, no Rust code in the child) and
//! reaped by the agent's reaper like every other child.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use slog::{info, warn, Logger};

/// Shells tried in order.
const SHELLS: &[&str] = &["/bin/bash", "/bin/sh"];
/// PATH for the console's shell (PID 1 gets none from the kernel).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the console could not start or serve a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A system call failed.
    #[error("{syscall} {what}: {source}")]
    Sys {
        /// The call.
        syscall: &'static str,
        /// Path or address it was about.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No shell in the guest.
    #[error("no shell for the debug console (tried {0:?})")]
    NoShell(&'static [&'static str]),
}

fn sys(syscall: &'static str, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ConsoleError {
    let what = what.into();
    move |source| ConsoleError::Sys { syscall, what, source }
}

/// Listens on vsock `port` (any CID). Must run inside the tokio runtime.
pub fn bind(port: u32) -> Result<tokio_vsock::VsockListener, ConsoleError> {
    let addr = tokio_vsock::VsockAddr::new(libc::VMADDR_CID_ANY, port);
    tokio_vsock::VsockListener::bind(addr).map_err(sys("bind", format!("vsock://-1:{port} (debug console)")))
}

/// The console's listener on a socket bound before (by an agent that died;
/// its keeper held it); refuses one not bound to vsock `port`.
pub fn adopt(fd: OwnedFd, port: u32) -> Result<tokio_vsock::VsockListener, ConsoleError> {
    use std::os::fd::AsFd;
    match crate::keeper::listen::vsock_port(fd.as_fd()) {
        Some(p) if p == port => Ok(tokio_vsock::VsockListener::from(fd)),
        other => Err(ConsoleError::Sys {
            syscall: "getsockname",
            what: format!("vsock://-1:{port} (debug console)"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the held socket is on vsock port {other:?}"),
            ),
        }),
    }
}

/// Serves a shell per connection to `listener` (on vsock `port`), on a task
/// of the current tokio runtime. Errors of single connections are logged.
pub fn spawn(listener: tokio_vsock::VsockListener, port: u32, log: &Logger) -> tokio::task::JoinHandle<()> {
    let log = log.new(slog::o!("subsystem" => "debug_console"));
    info!(log, "debug console listening"; "port" => port);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, peer)) => {
                    info!(log, "debug console connection"; "peer" => peer.to_string());
                    s
                }
                Err(e) => {
                    warn!(log, "accept on debug console port {port}: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Blocking copies on plain threads: a console is rare and interactive.
            // SAFETY: dup of a descriptor the stream owns; the copy is owned by `fd`.
            let fd = unsafe { libc::dup(stream.as_raw_fd()) };
            drop(stream);
            if fd < 0 {
                warn!(log, "dup debug console connection: {}", std::io::Error::last_os_error());
                continue;
            }
            // SAFETY: `fd` is a fresh descriptor nobody else owns.
            let conn = unsafe { OwnedFd::from_raw_fd(fd) };
            let log = log.clone();
            std::thread::spawn(move || {
                if let Err(e) = serve(conn, &log) {
                    warn!(log, "debug console: {e}");
                }
            });
        }
    })
}

/// Runs one shell for one connection until either ends.
pub fn serve(conn: OwnedFd, log: &Logger) -> Result<(), ConsoleError> {
    set_blocking(&conn)?;
    let shell = SHELLS
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or(ConsoleError::NoShell(SHELLS))?;
    match open_pty() {
        Ok((master, slave_path)) => serve_pty(conn, master, &slave_path, shell, log),
        Err(e) => {
            warn!(log, "no pseudo-terminal ({e}); the shell gets the connection as stdio");
            let mut cmd = Command::new(shell);
            cmd.arg("-i").env("PATH", PATH).env("TERM", "dumb");
            let out = conn.try_clone().map_err(sys("dup", "debug console connection"))?;
            let err = conn.try_clone().map_err(sys("dup", "debug console connection"))?;
            cmd.stdin(Stdio::from(conn))
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err));
            let child = cmd.spawn().map_err(sys("spawn", shell.display().to_string()))?;
            info!(log, "debug console shell started"; "pid" => child.id(), "pty" => false);
            Ok(())
        }
    }
}

fn serve_pty(conn: OwnedFd, master: File, slave_path: &Path, shell: &Path, log: &Logger) -> Result<(), ConsoleError> {
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(slave_path)
        .map_err(sys("open", slave_path.display().to_string()))?;
    let setsid = ["/bin/setsid", "/usr/bin/setsid"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let mut cmd = match setsid {
        Some(s) => {
            let mut c = Command::new(s);
            c.arg("-c").arg(shell);
            c
        }
        None => Command::new(shell),
    };
    cmd.arg("-i").env("PATH", PATH).env("TERM", "vt100").env("HOME", "/");
    let dup = |f: &File| f.try_clone().map_err(sys("dup", slave_path.display().to_string()));
    cmd.stdin(Stdio::from(dup(&slave)?))
        .stdout(Stdio::from(dup(&slave)?))
        .stderr(Stdio::from(slave));
    let child = cmd.spawn().map_err(sys("spawn", shell.display().to_string()))?;
    // The Command holds copies of the slave: close them, or the master never
    // sees the end of the session.
    drop(cmd);
    let pid = child.id() as i32;
    info!(log, "debug console shell started"; "pid" => pid, "pty" => slave_path.display().to_string());

    let mut conn_in = File::from(conn);
    let mut conn_out = conn_in.try_clone().map_err(sys("dup", "debug console connection"))?;
    let mut master_in = master.try_clone().map_err(sys("dup", "/dev/ptmx"))?;
    let mut master_out = master;
    // Connection -> terminal on a second thread; terminal -> connection here.
    let upstream = std::thread::spawn(move || {
        let _ = copy(&mut conn_in, &mut master_in);
        // The peer went away: hang up the shell's session.
        // SAFETY: kill(2) on the shell's pid (a child the reaper has not reaped yet, or a no-op).
        unsafe { libc::kill(pid, libc::SIGHUP) };
    });
    // Ends with EIO once the shell and everything on the terminal have exited.
    let _ = copy(&mut master_out, &mut conn_out);
    // End the connection both ways: the host sees EOF and the other thread's
    // read returns. (A full shutdown, never a half-close: vsock backends drop
    // the whole connection on one anyway.)
    // SAFETY: shutdown(2) on a socket we own.
    unsafe { libc::shutdown(conn_out.as_raw_fd(), libc::SHUT_RDWR) };
    drop(conn_out);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    drop(master_out);
    let _ = upstream.join();
    info!(log, "debug console session ended"; "pid" => pid);
    Ok(())
}

fn copy(from: &mut File, to: &mut File) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

fn set_blocking(fd: &OwnedFd) -> Result<(), ConsoleError> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(ConsoleError::Sys {
            syscall: "fcntl",
            what: "debug console connection (clear O_NONBLOCK)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Opens a new pseudo-terminal: the master and the slave's path.
pub fn open_pty() -> Result<(File, PathBuf), ConsoleError> {
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(sys("posix_openpt", "/dev/ptmx")(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is new and owned by nobody else.
    let master = unsafe { File::from_raw_fd(fd) };
    // SAFETY: grantpt/unlockpt on the master we just opened.
    if unsafe { libc::grantpt(fd) } != 0 || unsafe { libc::unlockpt(fd) } != 0 {
        return Err(sys("unlockpt", "/dev/ptmx")(std::io::Error::last_os_error()));
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty number into `n`.
    if unsafe { libc::ioctl(fd, libc::TIOCGPTN, &mut n) } != 0 {
        return Err(sys("ioctl(TIOCGPTN)", "/dev/ptmx")(std::io::Error::last_os_error()));
    }
    Ok((master, PathBuf::from(format!("/dev/pts/{n}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_carries_bytes_both_ways() {
        let (mut master, path) = match open_pty() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        assert!(path.starts_with("/dev/pts"), "{}", path.display());
        let mut slave = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        slave.write_all(b"hi\n").unwrap();
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).unwrap();
        // The terminal turns \n into \r\n on output.
        assert_eq!(&buf[..n], b"hi\r\n");
    }

    #[test]
    fn a_shell_answers_on_a_socket_pair() {
        if !Path::new("/bin/sh").exists() {
            return;
        }
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let log = Logger::root(slog::Discard, slog::o!());
        let t = std::thread::spawn(move || serve(OwnedFd::from(b), &log));
        let mut a = a;
        a.write_all(b"echo pith-$((6*7))\nexit\n").unwrap();
        let mut out = Vec::new();
        a.read_to_end(&mut out).unwrap();
        t.join().unwrap().unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("pith-42"), "{text}");
    }
}
