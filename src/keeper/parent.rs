//! The keeper process (`pith-agent --keeper`, and always the guest's PID 1):
//! starts the agent as its child, holds descriptors for it, reaps the
//! processes it leaves behind (as PID 1: every orphan of the guest) and keeps
//! their exits, restarts it when it dies of a signal or a panic (at once, then
//! with a growing delay while it keeps crashing), and forwards SIGTERM, SIGINT
//! and SIGHUP to it. Single-threaded: one `poll` on a signalfd and the
//! channel. As PID 1 it also mounts the basic filesystems before the first
//! agent (which needs `/proc` to be started at all) and powers the VM off
//! when the agent ends for good, since PID 1 may never exit. See the module
//! above for the why.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::wire::{self, Message};
use super::FD_ENV;
use crate::reaper::Exit;

/// This many restarts within [`RESTART_WINDOW`], and a crash again: the agent
/// cannot run; give up.
const MAX_RESTARTS: usize = 8;
const RESTART_WINDOW: Duration = Duration::from_secs(30);
/// The delay before the second restart within the window; it doubles with
/// each further crash (0.1, 0.2, ... 6.4 s: 12.7 s in all before giving up).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// An agent that ran this long before it crashed is not in a crash loop: it is
/// restarted at once (the host is waiting), though the crash still counts
/// towards [`MAX_RESTARTS`]. One that died sooner gets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(1);
/// A panicking Rust program exits with this code.
const PANIC_CODE: i32 = 101;

struct Keeper {
    /// Held descriptors, by name.
    fds: BTreeMap<String, OwnedFd>,
    /// Exits of processes the agent left, until it says they are on disk.
    exits: BTreeMap<i32, Exit>,
    agent: Option<Pid>,
    chan: Option<OwnedFd>,
    restarts: VecDeque<Instant>,
    /// When the running agent was started.
    started: Instant,
    /// When to start the next agent, while backing off after crashes.
    start_at: Option<Instant>,
    /// The agent's binary after an upgrade (None: this one, /proc/self/exe).
    exe: Option<OwnedFd>,
    /// An upgrade under way: the new binary must say UPGRADED in time.
    upgrade: Option<Upgrading>,
    /// Why the last upgrade was rolled back, for the next agent to report.
    rolled_back: Option<String>,
}

/// An upgrade in progress (the agent execs the new binary in place).
struct Upgrading {
    /// The binary to run again if the new one fails.
    previous: OwnedFd,
    /// The bound.
    ready_ms: u32,
    deadline: Instant,
    /// Why it failed, once known (the old agent's FAILED, or the deadline).
    why: Option<String>,
}

/// Environment variable telling an agent started after a failed upgrade why
/// it failed (it answers the upgrade call with it).
pub(crate) const UPGRADE_FAILED_ENV: &str = "_PITH_UPGRADE_FAILED";

/// The kernel log, when the keeper copies its lines there (as PID 1, or
/// asked with `--kmsg`), so that `dmesg` in the guest shows them next to the
/// agent's.
static KMSG: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// One JSON line on stderr (the guest's console when PID 1), shaped like the
/// agent's records, and its kmsg line when the kernel log is open.
fn log(level: &str, msg: &str) {
    use std::io::Write as _;
    // Made whole first: one write, not one per piece (eprintln! writes each
    // piece), so that it does not land inside a line of the agent's.
    let line = format!(
        "{{\"msg\":{},\"level\":\"{level}\",\"name\":\"pith-agent\",\"subsystem\":\"keeper\",\"pid\":{}}}\n",
        serde_json::Value::from(msg),
        std::process::id()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    if let Some(mut f) = KMSG.get() {
        // One write per line (kmsg takes a record per write); a full or
        // rate-limited kernel log must not stop the keeper.
        let _ = f.write_all(kmsg_line(level, msg).as_bytes());
    }
}

/// `<priority>pith-keeper: LEVEL message`, as the agent's kmsg lines are
/// (`pith-agent: INFO ...`).
fn kmsg_line(level: &str, msg: &str) -> String {
    let prio = match level {
        "ERROR" => 3,
        "WARN" => 4,
        "INFO" => 6,
        _ => 7,
    };
    format!("<{prio}>pith-keeper: {level} {msg}\n")
}

/// Runs the keeper until the agent stops for good; returns the exit code.
/// As PID 1 (`init`) it does not return: it powers the VM off instead.
/// With `kmsg` its lines are copied to that kernel log device too.
pub(crate) fn run(init: bool, kmsg: Option<&std::path::Path>) -> i32 {
    // As init, the early setup mounts /dev first.
    let report = init.then(crate::init::early_setup);
    open_kmsg(kmsg);
    if let Some(report) = report {
        log(
            "INFO",
            &format!(
                "init: mounted filesystems {} (cgroup {})",
                report.mounted.join(","),
                if report.cgroup_v2 { "v2" } else { "v1" }
            ),
        );
        for w in &report.warnings {
            log("WARN", &format!("init: {w}"));
        }
    }
    let code = match keep(init) {
        Ok(code) => code,
        Err(e) => {
            log("ERROR", &format!("keeper failed: {e}"));
            1
        }
    };
    if init {
        // PID 1 must not exit (the kernel would panic): the guest ends here.
        log("INFO", &format!("the agent ended for good (code {code}); powering off"));
        let e = crate::init::poweroff::power_off();
        log("ERROR", &e.to_string());
    }
    code
}

fn open_kmsg(path: Option<&std::path::Path>) {
    let Some(path) = path else { return };
    match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(f) => {
            let _ = KMSG.set(f);
        }
        Err(e) => log("WARN", &format!("open {}: {e}; logging to stderr only", path.display())),
    }
}

fn keep(init: bool) -> std::io::Result<i32> {
    // As PID 1 every orphan is ours anyway.
    // SAFETY: prctl with constant arguments.
    if !init && unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::other(format!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        )));
    }
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| std::io::Error::other(format!("sigprocmask: {e}")))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| std::io::Error::other(format!("signalfd: {e}")))?;
    let mut k = Keeper {
        fds: BTreeMap::new(),
        exits: BTreeMap::new(),
        agent: None,
        chan: None,
        restarts: VecDeque::new(),
        started: Instant::now(),
        start_at: None,
        exe: None,
        upgrade: None,
        rolled_back: None,
    };
    k.start_agent()?;
    loop {
        let mut pfds = vec![libc::pollfd {
            fd: sfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(c) = &k.chan {
            pfds.push(libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Wake up for a delayed restart, or an upgrade's deadline.
        let wake = match (
            k.start_at,
            k.upgrade.as_ref().filter(|u| u.why.is_none()).map(|u| u.deadline),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = match wake {
            Some(at) => at.saturating_duration_since(Instant::now()).as_millis().min(60_000) as i32 + 1,
            None => -1,
        };
        // SAFETY: poll on descriptors we own, with the array's length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(std::io::Error::other(format!("poll: {e}")));
        }
        if pfds.get(1).is_some_and(|p| p.revents != 0) {
            k.read_channel();
        }
        if pfds[0].revents != 0 {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    if let Some(code) = k.reap()? {
                        return Ok(code);
                    }
                } else if let Some(agent) = k.agent {
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = kill(agent, s);
                    }
                } else if sig != libc::SIGHUP {
                    // Asked to stop while waiting to restart a crashed agent.
                    log("INFO", &format!("signal {sig} while no agent runs; stopping"));
                    return Ok(0);
                }
            }
        }
        if k.start_at.is_some_and(|at| at <= Instant::now()) {
            k.start_at = None;
            k.start_agent()?;
        }
        k.check_upgrade_deadline();
    }
}

impl Keeper {
    /// Takes one message from the agent (all of them, once it is gone).
    fn read_channel(&mut self) {
        let Some(c) = &self.chan else { return };
        match wire::recv(c.as_fd()) {
            Ok(Some((msg, fd))) => self.handle(msg, fd),
            Ok(None) => self.chan = None,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => log("WARN", &e.to_string()),
            Err(e) => {
                log("WARN", &format!("keeper channel: recvmsg: {e}"));
                self.chan = None;
            }
        }
    }

    fn handle(&mut self, msg: Message, fd: Option<OwnedFd>) {
        match (msg, fd) {
            (Message::Store(name), Some(fd)) => {
                self.fds.insert(name, fd);
            }
            (Message::Drop(prefix), _) => self.fds.retain(|n, _| !n.starts_with(&prefix)),
            (Message::Forget(pid), _) => {
                self.exits.remove(&pid);
            }
            (Message::Hello, _) => self.handoff(),
            (Message::Upgrade(ready_ms), Some(previous)) => {
                log(
                    "INFO",
                    &format!("the agent hands over to a new binary; it has {ready_ms} ms"),
                );
                self.upgrade = Some(Upgrading {
                    previous,
                    ready_ms,
                    deadline: Instant::now() + Duration::from_millis(ready_ms.into()),
                    why: None,
                });
            }
            (Message::Upgraded, Some(exe)) => {
                log("INFO", "the new agent binary took over");
                self.upgrade = None;
                self.exe = Some(exe);
                self.fds.retain(|n, _| !n.starts_with(crate::upgrade::handover::PREFIX));
            }
            (Message::Failed(why), _) => {
                if let Some(u) = &mut self.upgrade {
                    u.why = Some(why);
                }
            }
            (m, _) => log("WARN", &format!("keeper: unexpected message {m:?}")),
        }
    }

    /// Reaps every child that ended; Some(code) when the keeper must end too.
    fn reap(&mut self) -> std::io::Result<Option<i32>> {
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(None),
                Ok(_) => continue,
            };
            if Some(pid) == self.agent {
                if let Some(code) = self.agent_ended(exit)? {
                    return Ok(Some(code));
                }
                continue;
            }
            self.exits.insert(pid.as_raw(), exit);
            if let Some(c) = &self.chan {
                if wire::send(c.as_fd(), &Message::Exit(pid.as_raw(), exit), None).is_err() {
                    // The agent is going; the next one gets it at the handoff.
                    self.chan = None;
                }
            }
        }
    }

    /// Kills a new binary that did not take over in time (its end rolls back).
    fn check_upgrade_deadline(&mut self) {
        let (Some(u), Some(agent)) = (&mut self.upgrade, self.agent) else {
            return;
        };
        if u.why.is_none() && u.deadline <= Instant::now() {
            u.why = Some(format!("the new binary was not ready within {} ms", u.ready_ms));
            log(
                "WARN",
                &format!("upgrade: {}; killing it", u.why.as_deref().unwrap_or("")),
            );
            let _ = kill(agent, Signal::SIGKILL);
        }
    }

    /// The agent ended: restart it after a crash, else end with its code.
    fn agent_ended(&mut self, exit: Exit) -> std::io::Result<Option<i32>> {
        // Its last words (descriptors it stored just before dying).
        while self.chan.is_some() {
            self.read_channel();
        }
        self.agent = None;
        if let Some(u) = self.upgrade.take() {
            // Whatever ended it, the previous binary serves again, on the
            // same state and with the same connections (the keeper holds them).
            let why = u.why.unwrap_or_else(|| {
                format!(
                    "the new binary ended before it was ready ({})",
                    crate::tool::describe(exit)
                )
            });
            log(
                "WARN",
                &format!("upgrade failed: {why}; running the previous binary again"),
            );
            self.exe = Some(u.previous);
            self.rolled_back = Some(why);
            self.start_agent()?;
            return Ok(None);
        }
        let crashed = matches!(exit, Exit::Signal(_) | Exit::Code(PANIC_CODE));
        if !crashed {
            return Ok(Some(exit.status()));
        }
        let now = Instant::now();
        self.restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if self.restarts.len() >= MAX_RESTARTS {
            log(
                "ERROR",
                &format!("the agent crashed {MAX_RESTARTS} times within {RESTART_WINDOW:?}; giving up"),
            );
            return Ok(Some(1));
        }
        self.restarts.push_back(now);
        let delay = restart_delay(now.duration_since(self.started), self.restarts.len());
        log(
            "WARN",
            &format!(
                "the agent ended ({exit:?}); starting a new one in {} ms",
                delay.as_millis()
            ),
        );
        if delay.is_zero() {
            self.start_agent()?;
        } else {
            self.start_at = Some(now + delay);
        }
        Ok(None)
    }

    /// Starts the agent (this binary, same arguments) with its end of a new
    /// channel, and hands it every held descriptor and kept exit.
    fn start_agent(&mut self) -> std::io::Result<()> {
        let (ours, theirs) = wire::pair()?;
        // The agent's end must cross exec: clear close-on-exec on it alone.
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::other(format!(
                "fcntl(F_SETFD) on the keeper channel: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut args = std::env::args_os();
        let _argv0 = args.next();
        // After an upgrade, its binary (close-on-exec is no obstacle: the
        // kernel opens the file before it closes those descriptors).
        let exe = match &self.exe {
            Some(fd) => format!("/proc/self/fd/{}", fd.as_raw_fd()),
            None => "/proc/self/exe".into(),
        };
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(args).env(FD_ENV, theirs.as_raw_fd().to_string());
        match self.rolled_back.take() {
            Some(why) => cmd.env(UPGRADE_FAILED_ENV, why),
            None => cmd.env_remove(UPGRADE_FAILED_ENV),
        };
        // SAFETY: between fork and exec only sigprocmask runs, which is
        // async-signal-safe: the agent must not inherit the keeper's blocked
        // signals (it would never see SIGCHLD or SIGTERM).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                let empty = SigSet::empty();
                nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&empty), None)
                    .map_err(std::io::Error::from)
            });
        }
        #[allow(clippy::zombie_processes, reason = "reaped by waitpid(-1) in Keeper::reap")]
        let child = cmd
            .spawn()
            .map_err(|e| std::io::Error::other(format!("start the agent ({exe}): {e}")))?;
        drop(theirs);
        log("INFO", &format!("agent started (pid {})", child.id()));
        self.agent = Some(Pid::from_raw(child.id() as i32));
        self.started = Instant::now();
        self.chan = Some(ours);
        Ok(())
    }

    /// Answers HELLO: every held descriptor and kept exit, then READY. The
    /// agent reads the whole handoff before it sends anything else.
    fn handoff(&mut self) {
        let Some(c) = &self.chan else { return };
        let send = || -> std::io::Result<()> {
            for (name, fd) in &self.fds {
                wire::send(c.as_fd(), &Message::Fd(name.clone()), Some(fd.as_fd()))?;
            }
            for (pid, exit) in &self.exits {
                wire::send(c.as_fd(), &Message::Exit(*pid, *exit), None)?;
            }
            wire::send(c.as_fd(), &Message::Ready, None)
        };
        if let Err(e) = send() {
            // It died at once; SIGCHLD brings us back.
            log("WARN", &format!("handoff to the agent: {e}"));
        }
    }
}

/// The delay before restarting an agent that `lived` this long, after the
/// `n`th crash within the window: none when it ran [`STABLE_RUN`], else the
/// backoff.
fn restart_delay(lived: Duration, n: usize) -> Duration {
    if lived >= STABLE_RUN {
        Duration::ZERO
    } else {
        backoff(n)
    }
}

/// The delay before restarting after the `n`th crash within the window: none
/// for the first, then [`FIRST_BACKOFF`] doubling.
fn backoff(n: usize) -> Duration {
    match n {
        0 | 1 => Duration::ZERO,
        n => FIRST_BACKOFF * (1u32 << (n - 2).min(16)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_lines_carry_the_priority_the_name_and_the_level() {
        assert_eq!(
            kmsg_line("INFO", "agent started (pid 7)"),
            "<6>pith-keeper: INFO agent started (pid 7)\n"
        );
        assert_eq!(kmsg_line("WARN", "w"), "<4>pith-keeper: WARN w\n");
        assert_eq!(kmsg_line("ERROR", "e"), "<3>pith-keeper: ERROR e\n");
    }

    #[test]
    fn the_first_restart_is_at_once_then_the_delay_doubles() {
        let delays: Vec<u128> = (1..=MAX_RESTARTS).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 6400]);
        let all: Duration = (1..=MAX_RESTARTS).map(backoff).sum();
        // An agent that had been serving is restarted at once, whatever came before.
        assert_eq!(restart_delay(STABLE_RUN, 5), Duration::ZERO);
        assert_eq!(restart_delay(Duration::from_millis(50), 5).as_millis(), 800);
        assert!(
            all < RESTART_WINDOW,
            "a crash loop is given up within the window: {all:?}"
        );
    }
}
