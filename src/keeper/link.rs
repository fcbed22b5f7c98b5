//! The agent's side of the keeper channel: the handoff at start, then
//! descriptors to hold (`STORE`/`DROP`), and the exits the keeper reaps,
//! delivered to the agent's reaper and forgotten once on disk.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use super::wire::{self, Message};
use super::FD_ENV;
use crate::reaper::Exit;

/// What a keeper held for the agent before it started.
#[derive(Default)]
pub(crate) struct Handoff {
    /// Held descriptors, by name.
    pub fds: HashMap<String, OwnedFd>,
    /// Exits of processes a previous agent left.
    pub exits: Vec<(i32, Exit)>,
}

/// The channel to the keeper.
pub(crate) struct KeeperLink {
    sock: OwnedFd,
    /// One sender at a time (a datagram is atomic; this only orders them).
    send: Mutex<()>,
    /// Listening sockets from the handoff (names under [`LISTEN_PREFIX`]),
    /// until the agent takes them; None before the handoff.
    listeners: Mutex<Option<HashMap<String, OwnedFd>>>,
    /// What an upgrade left (names under `upgrade::handover::PREFIX`),
    /// until the agent takes it.
    upgrade: Mutex<HashMap<String, OwnedFd>>,
}

/// Names of held listening sockets start with this; they are kept out of
/// [`Handoff::fds`] (the sandbox's) and taken with [`KeeperLink::take_listener`].
pub(crate) const LISTEN_PREFIX: &str = "listen/";

impl KeeperLink {
    /// The channel named by the environment, if the agent runs under a
    /// keeper. The variable is removed (no child inherits it) and the
    /// descriptor made close-on-exec.
    pub(crate) fn from_env() -> Option<std::io::Result<KeeperLink>> {
        let v = std::env::var(FD_ENV).ok()?;
        // SAFETY: single-threaded at this point of start-up (before the runtime).
        unsafe { std::env::remove_var(FD_ENV) };
        let fd: i32 = match v.parse() {
            Ok(fd) if fd > 2 => fd,
            _ => {
                return Some(Err(std::io::Error::other(format!(
                    "{FD_ENV}={v:?} is not a descriptor"
                ))))
            }
        };
        // SAFETY: fcntl on the descriptor the keeper gave us.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Some(Err(std::io::Error::other(format!(
                "fcntl(F_SETFD) on the keeper channel {fd}: {}",
                std::io::Error::last_os_error()
            ))));
        }
        // SAFETY: the keeper passed this descriptor to us alone; nothing else owns it.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(Ok(KeeperLink {
            sock,
            send: Mutex::new(()),
            listeners: Mutex::new(None),
            upgrade: Mutex::new(HashMap::new()),
        }))
    }

    /// Asks for the handoff and reads it (everything up to `READY`). Every
    /// exit the keeper reaped before it read the request is in it; later ones
    /// follow as messages ([`KeeperLink::next_exit`]). Blocks.
    pub(crate) fn handoff(&self) -> std::io::Result<Handoff> {
        self.send(&Message::Hello, None)?;
        let mut h = Handoff::default();
        let mut listeners = HashMap::new();
        loop {
            match wire::recv(self.sock.as_fd())? {
                Some((Message::Fd(name), Some(fd))) if name.starts_with(LISTEN_PREFIX) => {
                    listeners.insert(name, fd);
                }
                Some((Message::Fd(name), Some(fd))) if name.starts_with(crate::upgrade::handover::PREFIX) => {
                    self.upgrade.lock().unwrap_or_else(|e| e.into_inner()).insert(name, fd);
                }
                Some((Message::Fd(name), Some(fd))) => {
                    h.fds.insert(name, fd);
                }
                Some((Message::Exit(pid, exit), _)) => h.exits.push((pid, exit)),
                Some((Message::Ready, _)) => {
                    *self.listeners.lock().unwrap_or_else(|e| e.into_inner()) = Some(listeners);
                    return Ok(h);
                }
                Some((m, _)) => {
                    return Err(std::io::Error::other(format!(
                        "keeper channel: {m:?} during the handoff"
                    )))
                }
                None => return Err(std::io::Error::other("keeper channel closed during the handoff")),
            }
        }
    }

    /// The listening socket the keeper holds under `name` (a previous
    /// agent's), taken out of the handoff. When the sandbox never asked for
    /// the handoff (its state file could not be read), asks for it here,
    /// for the listeners alone: what else it holds stays in the keeper.
    pub(crate) fn take_listener(&self, name: &str) -> std::io::Result<Option<OwnedFd>> {
        let handed = self.listeners.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if !handed {
            self.handoff()?;
        }
        let mut l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        Ok(l.as_mut().and_then(|m| m.remove(name)))
    }

    fn send(&self, msg: &Message, fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
        let _one = self.send.lock().unwrap_or_else(|e| e.into_inner());
        wire::send(self.sock.as_fd(), msg, fd)
    }

    /// Has the keeper hold a copy of `fd` under `name`.
    pub(crate) fn store(&self, name: &str, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        self.send(&Message::Store(name.into()), Some(fd))
    }

    /// Has the keeper close every descriptor whose name starts with `prefix`.
    pub(crate) fn drop_prefix(&self, prefix: &str) -> std::io::Result<()> {
        self.send(&Message::Drop(prefix.into()), None)
    }

    /// Tells the keeper that `pid`'s exit is on disk.
    pub(crate) fn forget(&self, pid: i32) -> std::io::Result<()> {
        self.send(&Message::Forget(pid), None)
    }

    /// The next exit the keeper reaped; None when the keeper is gone. Blocks.
    pub(crate) fn next_exit(&self) -> std::io::Result<Option<(i32, Exit)>> {
        match wire::recv(self.sock.as_fd())? {
            Some((Message::Exit(pid, exit), _)) => Ok(Some((pid, exit))),
            Some((m, _)) => Err(std::io::Error::other(format!("keeper channel: unexpected {m:?}"))),
            None => Ok(None),
        }
    }

    /// The raw descriptor (for the log, and to pass it across `execve`).
    pub(crate) fn raw(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// What an upgrade left for this agent at the handoff (empty: none),
    /// taken out of the link.
    pub(crate) fn take_upgrade(&self) -> HashMap<String, OwnedFd> {
        std::mem::take(&mut *self.upgrade.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Tells the keeper that another binary takes over now: `running` (this
    /// binary) is run again if the new one is not ready within `ready_ms`.
    pub(crate) fn begin_upgrade(&self, ready_ms: u32, running: BorrowedFd<'_>) -> std::io::Result<()> {
        self.send(&Message::Upgrade(ready_ms), Some(running))
    }

    /// Tells the keeper that this binary (`exe`) took over: it is the one to
    /// run after a crash from now on.
    pub(crate) fn upgraded(&self, exe: BorrowedFd<'_>) -> std::io::Result<()> {
        self.send(&Message::Upgraded, Some(exe))
    }

    /// Tells the keeper why the hand-over failed before the new binary ran.
    pub(crate) fn failed(&self, why: &str) -> std::io::Result<()> {
        self.send(&Message::Failed(why.replace('\n', " ")), None)
    }
}
