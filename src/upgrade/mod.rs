//! Live upgrade: another binary takes over the running agent in place.
//!
//! ```text
//! Upgrade(binary) ─ check ─ pause ─ persist ─ hand-over ─ execve ─┐
//!                    │        │ busy: resume, UNAVAILABLE         │ same pid
//!                    │ refused: FAILED_PRECONDITION               ▼
//!                             new binary: restore, UPGRADED, answer the call,
//!                             serve the carried calls, read the connections
//! ```
//!
//! The running agent checks the binary (`pith-agent --upgrade-check`:
//! `identity.rs`), stops at a frame boundary on every connection with every
//! call finished or parked (`pause.rs`), holds the reaper (exits wait as
//! zombies of the same pid), writes its state, and leaves the rest to the
//! keeper (`crate::keeper`): the connections' sockets, a hand-over document
//! naming what each connection had read ahead and the calls to serve again
//! (`handover.rs`), and the running binary, to run again should the new one
//! fail. Then it `execve`s the new binary (`exec.rs`). The new agent takes
//! the sandbox back as after a crash, with the keeper's descriptors, tells
//! the keeper it is ready, answers the upgrade call and serves the carried
//! calls on the same connections (`resume.rs`). When the new binary is not
//! ready in time or dies, the keeper runs the previous binary on the same
//! state and hands it the same connections; it answers the call with ABORTED
//! and why.
//!
//! Files: `identity.rs` (what a binary reads; who may take over),
//! `check.rs` (asking a binary), `pause.rs` (stopping at safe points),
//! `handover.rs` (the document), `exec.rs` (`execve` in place), `resume.rs`
//! (the new agent's side).

pub(crate) mod check;
pub(crate) mod exec;
pub(crate) mod handover;
pub(crate) mod identity;
pub(crate) mod pause;
pub(crate) mod resume;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use slog::{info, warn, Logger};

use crate::error::ErrorKind;
use crate::keeper::link::KeeperLink;
use crate::reaper::Reaper;
use crate::sandbox::Sandbox;
use handover::{Handover, HANDOVER_NAME, PREFIX};
use identity::{FileVersion, Identity, Refusal, HANDOVER_VERSION};
use pause::Pause;

/// How long calls get to finish or park before the upgrade gives up.
const QUIESCE_BOUND: Duration = Duration::from_secs(2);
/// How long the log thread gets to write what is queued before `execve`
/// or `exit` (a console that slow has lines to lose anyway).
const LOG_FLUSH_BOUND: Duration = Duration::from_millis(200);
/// The new binary's time to take over when the request names none.
pub(crate) const DEFAULT_READY: Duration = Duration::from_secs(10);

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// The agent has no keeper to hold the connections and roll back.
    #[error(
        "live upgrade needs the keeper to hold the connections and run the previous binary again \
         if the new one fails: start pith-agent with --keeper (as the guest's init it always has one)"
    )]
    NoKeeper,
    /// Another upgrade is under way.
    #[error("an upgrade is already under way")]
    InProgress,
    /// The binary cannot be run.
    #[error("upgrade binary {path:?}: {why}")]
    BadBinary {
        /// The path the request named.
        path: String,
        /// Why.
        why: String,
    },
    /// `--upgrade-check` failed.
    #[error("{binary} --upgrade-check: {why}")]
    Check {
        /// The binary.
        binary: String,
        /// What it said or did.
        why: String,
    },
    /// The binary may not take over.
    #[error("refusing to upgrade to {binary}: {refusal}")]
    Refused {
        /// The binary.
        binary: String,
        /// Why.
        refusal: Refusal,
    },
    /// Calls did not finish or park in time.
    #[error("upgrade not started: {0}")]
    Busy(#[from] pause::Busy),
    /// A step of the hand-over failed before the new binary ran; the agent goes on.
    #[error("upgrade not started: {0}")]
    Handover(String),
    /// The new binary failed and the previous one serves again.
    #[error("upgrade to {binary} failed: {why}; pith-agent {serving} serves again")]
    RolledBack {
        /// The binary.
        binary: String,
        /// Why (the keeper's words).
        why: String,
        /// This agent's version.
        serving: String,
    },
}

impl UpgradeError {
    /// How a host can act on it.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            UpgradeError::NoKeeper | UpgradeError::Check { .. } | UpgradeError::Refused { .. } => {
                ErrorKind::FailedPrecondition
            }
            UpgradeError::BadBinary { .. } => ErrorKind::InvalidArgument,
            UpgradeError::InProgress | UpgradeError::Busy(_) => ErrorKind::Unavailable,
            UpgradeError::Handover(_) => ErrorKind::Internal,
            UpgradeError::RolledBack { .. } => ErrorKind::Aborted,
        }
    }
}

/// Runs upgrades for the agent.
pub(crate) struct Upgrader {
    /// The agent's pause (connections and calls).
    pub pause: Arc<Pause>,
    keeper: Option<Arc<KeeperLink>>,
    reaper: Reaper,
    sandbox: Arc<Sandbox>,
    state_file: PathBuf,
    running: AtomicBool,
    log: Logger,
}

/// Clears the one-at-a-time flag when an upgrade that did not hand over returns.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Upgrader {
    /// Upgrades of the agent whose sandbox is `sandbox`, kept in `state_dir`.
    pub(crate) fn new(
        pause: Arc<Pause>,
        keeper: Option<Arc<KeeperLink>>,
        reaper: Reaper,
        sandbox: Arc<Sandbox>,
        state_dir: &Path,
        log: &Logger,
    ) -> Upgrader {
        Upgrader {
            pause,
            keeper,
            reaper,
            sandbox,
            state_file: state_dir.join(crate::persist::file::STATE_FILE),
            running: AtomicBool::new(false),
            log: log.new(slog::o!("subsystem" => "upgrade")),
        }
    }

    /// Hands the agent over to `binary`, which has `ready` to take over.
    /// Returns only when nothing changed (the error says why): on success
    /// this process is the new binary, which answers the call.
    pub(crate) async fn upgrade(
        &self,
        binary: &str,
        ready: Duration,
    ) -> Result<std::convert::Infallible, UpgradeError> {
        let keeper = self.keeper.clone().ok_or(UpgradeError::NoKeeper)?;
        let path = Path::new(binary);
        if !path.is_absolute() {
            return Err(UpgradeError::BadBinary {
                path: binary.into(),
                why: "not an absolute path".into(),
            });
        }
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(UpgradeError::InProgress);
        }
        let _running = Running(&self.running);
        let reaper = self.reaper.clone();
        let new = check::ask(path, &move |pid| reaper.watch(pid)).await?;
        let file = self.file_version();
        identity::may_take_over(&Identity::ours(), &new, file).map_err(|refusal| UpgradeError::Refused {
            binary: binary.into(),
            refusal,
        })?;
        info!(self.log, "upgrade: pausing"; "binary" => binary, "to_version" => &new.agent_version,
              "from_version" => crate::AGENT_VERSION);
        if !pause::mark_upgrade_call() {
            return Err(UpgradeError::Handover(
                "the upgrade call is not a call of a connection".into(),
            ));
        }
        let paused_at_ns = handover::monotonic_ns();
        let conns = self.pause.quiesce(QUIESCE_BOUND).await?;
        // Its execve would cut a removed container's cgroup half-removed.
        self.sandbox.settled().await;
        // No exit may be reaped and then lost in the execve.
        self.reaper.hold();
        self.sandbox.persist().await;
        let doc = Handover {
            handover_version: HANDOVER_VERSION,
            from_version: crate::AGENT_VERSION.into(),
            binary: binary.into(),
            paused_at_ns,
            conns: conns.iter().map(handover::ConnOver::from).collect(),
        };
        let ready_ms = ready.as_millis().clamp(1, u32::MAX as u128) as u32;
        // Until the keeper has taken UPGRADE, nothing is lost: on any error
        // here this agent takes its connections back and goes on.
        if let Err(e) = leave(&keeper, &doc, &conns).and_then(|()| begin(&keeper, ready_ms)) {
            warn!(self.log, "upgrade: hand-over failed; going on"; "error" => %e);
            let _ = keeper.drop_prefix(PREFIX);
            self.reaper.release();
            self.pause.resume();
            return Err(e);
        }
        info!(self.log, "upgrade: handing over"; "binary" => binary, "connections" => conns.len(),
              "carried_calls" => conns.iter().map(|c| c.carried.len()).sum::<usize>(), "ready_ms" => ready_ms);
        crate::logging::flush(&self.log, LOG_FLUSH_BOUND);
        let Err(why) = exec::exec(path, keeper.raw());
        // The keeper has taken UPGRADE: once this process ends it runs this
        // binary again, which answers the call with why.
        warn!(self.log, "upgrade: {why}; the keeper runs this binary again");
        let _ = keeper.failed(&why);
        crate::logging::flush(&self.log, LOG_FLUSH_BOUND);
        std::process::exit(1);
    }

    /// The state file's versions now (None: no file, or one without them).
    fn file_version(&self) -> Option<FileVersion> {
        let bytes = std::fs::read(&self.state_file).ok()?;
        let (persist_version, min_reader_version) = crate::persist::versions(&bytes)?;
        Some(FileVersion {
            persist_version,
            min_reader_version,
        })
    }
}

/// Tells the keeper the hand-over begins, with this binary to run again
/// should the new one not be ready within `ready_ms`.
fn begin(keeper: &KeeperLink, ready_ms: u32) -> Result<(), UpgradeError> {
    let me = exec::current_binary().map_err(UpgradeError::Handover)?;
    keeper
        .begin_upgrade(ready_ms, me.as_fd())
        .map_err(|e| UpgradeError::Handover(format!("keeper channel: sendmsg: {e}")))
}

/// Leaves the hand-over and every connection's socket with the keeper.
fn leave(keeper: &KeeperLink, doc: &Handover, conns: &[pause::ConnSnapshot]) -> Result<(), UpgradeError> {
    let err = |what: &str, e: &dyn std::fmt::Display| UpgradeError::Handover(format!("{what}: {e}"));
    let memfd = doc.to_memfd().map_err(|e| err("hand-over document", &e))?;
    for c in conns {
        if c.fd < 0 {
            continue;
        }
        // SAFETY: the connection's socket stays open: its task is stopped, not gone.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(c.fd) };
        keeper
            .store(&handover::conn_name(c.id), fd)
            .map_err(|e| err("keeper channel: sendmsg", &e))?;
    }
    keeper
        .store(HANDOVER_NAME, memfd.as_fd())
        .map_err(|e| err("keeper channel: sendmsg", &e))
}
