//! What the old binary leaves the new one besides the state file: the
//! connections (held by the keeper under [`conn_name`]), what each had read
//! ahead and not yet served, the calls parked on each, and the upgrade call
//! to answer. One JSON document in a memfd the keeper holds under
//! [`HANDOVER_NAME`], so that the binary run after a failed upgrade finds
//! it too.

use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::identity::HANDOVER_VERSION;
use super::pause::{Carried, ConnSnapshot};

/// Keeper names of everything an upgrade leaves start with this.
pub(crate) const PREFIX: &str = "upgrade/";
/// The keeper's name of the hand-over document.
pub(crate) const HANDOVER_NAME: &str = "upgrade/handover/";

/// The keeper's name of connection `id`'s socket (ended by `/`: no name is
/// the prefix of another).
pub(crate) fn conn_name(id: u64) -> String {
    format!("{PREFIX}conn/{id}/")
}

/// The hand-over document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Handover {
    /// Its format ([`HANDOVER_VERSION`]).
    pub handover_version: u32,
    /// The version of the agent that wrote it.
    pub from_version: String,
    /// The binary it hands over to.
    pub binary: String,
    /// CLOCK_MONOTONIC when it stopped reading requests, in ns (the clock
    /// goes on across `execve`).
    pub paused_at_ns: u64,
    /// The connections.
    pub conns: Vec<ConnOver>,
}

/// One connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConnOver {
    /// The keeper's name of its socket.
    pub name: String,
    /// Bytes read ahead, not yet a whole frame: what the socket gives next
    /// follows them.
    pub buffered: Vec<u8>,
    /// Requests to serve again.
    pub carried: Vec<Carried>,
    /// The upgrade call's stream, when it came on this connection.
    pub upgrade_stream: Option<u32>,
}

impl From<&ConnSnapshot> for ConnOver {
    fn from(c: &ConnSnapshot) -> Self {
        ConnOver {
            name: conn_name(c.id),
            buffered: c.buffered.clone(),
            carried: c.carried.clone(),
            upgrade_stream: c.upgrade_stream,
        }
    }
}

/// A hand-over that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandoverError {
    /// A syscall failed.
    #[error("{syscall} (upgrade hand-over): {source}")]
    Sys {
        /// The call, as strace names it.
        syscall: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The document does not parse.
    #[error("upgrade hand-over is not readable: {0}")]
    Damaged(String),
    /// Another format.
    #[error("upgrade hand-over version {0}, this agent reads version {HANDOVER_VERSION}")]
    Version(u32),
}

fn sys(syscall: &'static str) -> impl FnOnce(std::io::Error) -> HandoverError {
    move |source| HandoverError::Sys { syscall, source }
}

/// Now on CLOCK_MONOTONIC, in ns.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Handover {
    /// The document in a new memfd (close-on-exec).
    pub(crate) fn to_memfd(&self) -> Result<OwnedFd, HandoverError> {
        // SAFETY: memfd_create with a static NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"pith-upgrade-handover".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(sys("memfd_create")(std::io::Error::last_os_error()));
        }
        // SAFETY: memfd_create just made it; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut f = std::fs::File::from(fd);
        let bytes = serde_json::to_vec(self).map_err(|e| HandoverError::Damaged(e.to_string()))?;
        f.write_all(&bytes).map_err(sys("write"))?;
        Ok(f.into())
    }

    /// The document in `fd` (read from its start).
    pub(crate) fn from_fd(fd: OwnedFd) -> Result<Handover, HandoverError> {
        let mut f = std::fs::File::from(fd);
        f.rewind().map_err(sys("lseek"))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(sys("read"))?;
        #[derive(Deserialize)]
        struct Version {
            handover_version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes).map_err(|e| HandoverError::Damaged(e.to_string()))?;
        if v.handover_version != HANDOVER_VERSION {
            return Err(HandoverError::Version(v.handover_version));
        }
        serde_json::from_slice(&bytes).map_err(|e| HandoverError::Damaged(e.to_string()))
    }

    /// How long since the pause began.
    pub(crate) fn paused_for(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(monotonic_ns().saturating_sub(self.paused_at_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_round_trips_through_its_memfd() {
        let h = Handover {
            handover_version: HANDOVER_VERSION,
            from_version: "0.1.0".into(),
            binary: "/usr/bin/pith-agent".into(),
            paused_at_ns: monotonic_ns(),
            conns: vec![ConnOver {
                name: conn_name(3),
                buffered: vec![0, 0, 0, 9],
                carried: vec![Carried {
                    stream_id: 7,
                    flags: 0,
                    body: b"req".to_vec(),
                }],
                upgrade_stream: Some(9),
            }],
        };
        let fd = h.to_memfd().unwrap();
        assert_eq!(Handover::from_fd(fd).unwrap(), h);
    }

    #[test]
    fn another_version_or_garbage_is_refused() {
        let mut h = Handover {
            handover_version: HANDOVER_VERSION + 1,
            from_version: "9".into(),
            binary: String::new(),
            paused_at_ns: 0,
            conns: Vec::new(),
        };
        let err = Handover::from_fd(h.to_memfd().unwrap()).unwrap_err();
        assert!(
            matches!(err, HandoverError::Version(v) if v == HANDOVER_VERSION + 1),
            "{err}"
        );
        h.handover_version = HANDOVER_VERSION;
        let fd = h.to_memfd().unwrap();
        let f = std::fs::File::from(fd);
        f.set_len(10).unwrap();
        assert!(matches!(Handover::from_fd(f.into()), Err(HandoverError::Damaged(_))));
    }

    /// The version 1 document as the first live-upgrade build wrote it: every
    /// later binary that says it reads version 1 must take it.
    #[test]
    fn the_version_1_golden_document_loads() {
        let bytes = include_bytes!("../../tests/fixtures/handover/v1.json");
        let fd = Handover {
            handover_version: 0,
            from_version: String::new(),
            binary: String::new(),
            paused_at_ns: 0,
            conns: Vec::new(),
        }
        .to_memfd()
        .unwrap();
        let mut f = std::fs::File::from(fd);
        f.set_len(0).unwrap();
        f.rewind().unwrap();
        f.write_all(bytes).unwrap();
        let h = Handover::from_fd(f.into()).unwrap();
        assert_eq!(h.from_version, "0.1.0");
        assert_eq!(h.conns.len(), 2);
        assert_eq!(h.conns[0].name, conn_name(1));
        assert_eq!(h.conns[0].upgrade_stream, Some(5));
        let req = <ttrpc::proto::Request as protobuf::Message>::parse_from_bytes(&h.conns[0].carried[0].body).unwrap();
        assert_eq!(
            (req.service.as_str(), req.method.as_str()),
            ("grpc.AgentService", "WaitProcess")
        );
        assert_eq!(h.conns[1].upgrade_stream, None);
    }

    #[test]
    fn names_are_not_prefixes_of_each_other() {
        assert!(!conn_name(10).starts_with(&conn_name(1)));
        assert!(HANDOVER_NAME.starts_with(PREFIX) && conn_name(1).starts_with(PREFIX));
    }
}
