//! The new agent's side of an upgrade (or the previous binary's, run again
//! after a failed one): what the keeper handed over besides the sandbox.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use slog::{info, warn, Logger};

use super::handover::{ConnOver, Handover, HANDOVER_NAME, PREFIX};
use super::UpgradeError;
use crate::keeper::link::KeeperLink;

/// How the upgrade that brought this agent went.
#[derive(Debug)]
pub(crate) struct Done {
    /// The version before.
    pub from_version: String,
    /// From the pause to now.
    pub paused_for: Duration,
    /// Calls carried over.
    pub calls: usize,
    /// Connections carried over.
    pub conns: usize,
}

/// A connection to serve again.
pub(crate) struct ConnBack {
    /// Its socket.
    pub fd: OwnedFd,
    /// What the previous binary left of it.
    pub over: ConnOver,
}

/// What an upgrade left this agent.
pub(crate) struct Arrival {
    /// The connections.
    pub conns: Vec<ConnBack>,
    /// The answer to the upgrade call.
    pub outcome: Result<Done, UpgradeError>,
}

/// Takes what the keeper held for an upgrade (None: this start is no
/// upgrade) and tells the keeper this agent is ready: it runs this binary
/// from now on and lets the upgrade's descriptors go. `rolled_back`: the
/// keeper's reason when it ran this binary again after a failed upgrade.
/// Call once the sandbox is taken back and the listeners are up.
pub(crate) fn arrive(keeper: &KeeperLink, rolled_back: Option<String>, log: &Logger) -> Option<Arrival> {
    let mut fds: HashMap<String, OwnedFd> = keeper.take_upgrade();
    if fds.is_empty() && rolled_back.is_none() {
        return None;
    }
    let doc = fds.remove(HANDOVER_NAME).map(Handover::from_fd);
    let ready = match &rolled_back {
        None => super::exec::current_binary()
            .map_err(std::io::Error::other)
            .and_then(|me| keeper.upgraded(me.as_fd())),
        Some(_) => keeper.drop_prefix(PREFIX),
    };
    if let Err(e) = ready {
        warn!(log, "keeper: upgrade not confirmed"; "error" => %e);
    }
    let doc = match doc {
        None => {
            warn!(log, "upgrade: connections handed over without their document; closing them"; "count" => fds.len());
            return None;
        }
        Some(Err(e)) => {
            warn!(log, "upgrade: the hand-over is not usable; its connections are closed"; "error" => %e);
            return None;
        }
        Some(Ok(doc)) => doc,
    };
    let mut conns = Vec::new();
    for over in doc.conns.iter().cloned() {
        match fds.remove(&over.name) {
            Some(fd) => conns.push(ConnBack { fd, over }),
            None => warn!(log, "upgrade: a connection's socket was not handed over"; "name" => &over.name),
        }
    }
    let outcome = match rolled_back {
        None => Ok(Done {
            from_version: doc.from_version.clone(),
            paused_for: doc.paused_for(),
            calls: conns.iter().map(|c| c.over.carried.len()).sum(),
            conns: conns.len(),
        }),
        Some(why) => Err(UpgradeError::RolledBack {
            binary: doc.binary.clone(),
            why,
            serving: crate::AGENT_VERSION.into(),
        }),
    };
    match &outcome {
        Ok(d) => info!(log, "upgrade: took over"; "from_version" => &d.from_version,
                       "pause_us" => d.paused_for.as_micros() as u64, "connections" => d.conns, "carried_calls" => d.calls),
        Err(e) => warn!(log, "upgrade: {e}"),
    }
    Some(Arrival { conns, outcome })
}
