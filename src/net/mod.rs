//! Guest networking, as Kata's runtimes drive it: UpdateInterface,
//! UpdateRoutes, ListInterfaces, ListRoutes, AddARPNeighbors (route netlink), and
//! GetIPTables / SetIPTables (the guest image's iptables tools).
//!
//! * [`parse`]: MACs, prefixes, interface names, with the request field in errors;
//! * [`msg`]: route-netlink messages as bytes;
//! * [`nl`]: the route-netlink socket, on the agent's runtime;
//! * [`link`], [`addr`], [`route`], [`neigh`]: one kind of kernel object each;
//! * [`iface`]: UpdateInterface, undone step by step when a step fails;
//! * [`iptables`]: running `iptables-save` / `iptables-restore`.
//!
//! Nothing here knows the wire types: `rpc::network` converts, and the
//! sandbox owns the [`Network`] (`sandbox::network`).

pub mod addr;
pub mod iface;
pub mod iptables;
pub mod link;
pub mod msg;
pub mod neigh;
pub mod nl;
pub mod parse;
pub mod route;

use std::path::PathBuf;

use tokio::sync::{Mutex, OnceCell};

use crate::error::ErrorKind;
use iface::InterfaceSpec;
use link::Link;
use neigh::NeighborSpec;
use nl::Nl;
use route::{RouteInfo, RouteSpec};

/// What went wrong with a network request.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A request field is malformed or out of range.
    #[error("{field}: {why}")]
    Invalid {
        /// The field, as the request names it (`interface.hwAddr`, `routes[1].dest`).
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// Something the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something did not happen in time (a hot-plugged NIC, a tool run).
    #[error("{0}")]
    Timeout(String),
    /// The kernel refused a netlink request.
    #[error("{op}: {} (errno {errno})", std::io::Error::from_raw_os_error(*errno))]
    Netlink {
        /// The operation, naming what it was about.
        op: String,
        /// The kernel's errno.
        errno: i32,
    },
    /// A tool the request needs is not in the guest image.
    #[error("{0}")]
    MissingTool(String),
    /// A tool ran and failed.
    #[error("{msg}")]
    ToolFailed {
        /// The tool, its status and what it printed on stderr.
        msg: String,
        /// The tool refused its input (rather than failing on its own).
        bad_input: bool,
    },
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl NetError {
    /// A malformed `field`.
    pub fn invalid(field: &str, why: impl Into<String>) -> NetError {
        NetError::Invalid {
            field: field.to_string(),
            why: why.into(),
        }
    }

    /// How a host can act on it (`rpc::status` turns it into the code).
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            NetError::Invalid { .. } => ErrorKind::InvalidArgument,
            NetError::NotFound(_) => ErrorKind::NotFound,
            NetError::Timeout(_) => ErrorKind::DeadlineExceeded,
            NetError::Netlink { .. } if self.is_refused_input() => ErrorKind::InvalidArgument,
            NetError::MissingTool(_) => ErrorKind::FailedPrecondition,
            NetError::ToolFailed { bad_input: true, .. } => ErrorKind::InvalidArgument,
            NetError::Netlink { .. } | NetError::ToolFailed { .. } | NetError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether the kernel refused the request for what it asked (a bad value,
    /// an unreachable gateway) rather than for a fault of its own.
    pub fn is_refused_input(&self) -> bool {
        matches!(self, NetError::Netlink { errno, .. }
            if [libc::EINVAL, libc::ENETUNREACH, libc::EADDRNOTAVAIL, libc::ERANGE, libc::EAFNOSUPPORT, libc::EEXIST]
                .contains(errno))
    }
}

/// The agent's network state: one netlink connection, opened on first use
/// (an agent that is never asked about the network never opens it), and one
/// change at a time.
pub struct Network {
    nl: OnceCell<Nl>,
    changes: Mutex<()>,
    procfs: PathBuf,
    /// Where the iptables tools are looked for.
    pub tools: iptables::Tools,
}

impl Network {
    /// The network of the agent's own namespace; `PITH_NET_TOOLS_DIRS` read now.
    pub fn new() -> Network {
        Network {
            nl: OnceCell::new(),
            changes: Mutex::new(()),
            procfs: PathBuf::from("/proc"),
            tools: iptables::Tools::from_env(&|k| std::env::var(k).ok()),
        }
    }

    async fn nl(&self) -> Result<&Nl, NetError> {
        self.nl.get_or_try_init(|| async { Nl::connect() }).await
    }

    /// UpdateInterface (after any wait for a hot-plugged NIC).
    pub async fn update_interface(&self, spec: &InterfaceSpec) -> Result<(), NetError> {
        let nl = self.nl().await?;
        let _one = self.changes.lock().await;
        iface::update(nl, spec, &self.procfs).await
    }

    /// UpdateRoutes; answers with the main table afterwards, as kata-agent does.
    pub async fn update_routes(&self, specs: &[RouteSpec]) -> Result<Vec<RouteInfo>, NetError> {
        let nl = self.nl().await?;
        let _one = self.changes.lock().await;
        route::replace_all(nl, specs).await?;
        route::list(nl).await
    }

    /// Every link, with its addresses.
    pub async fn list_interfaces(&self) -> Result<Vec<(Link, Vec<parse::IpNet>)>, NetError> {
        let nl = self.nl().await?;
        let links = link::list(nl).await?;
        let addrs = addr::list(nl).await?;
        Ok(links
            .into_iter()
            .map(|l| {
                let mine = addrs.iter().filter(|a| a.index == l.index).map(|a| a.net).collect();
                (l, mine)
            })
            .collect())
    }

    /// Every route of the main table.
    pub async fn list_routes(&self) -> Result<Vec<RouteInfo>, NetError> {
        route::list(self.nl().await?).await
    }

    /// AddARPNeighbors.
    pub async fn add_neighbors(&self, specs: &[NeighborSpec]) -> Result<(), NetError> {
        let nl = self.nl().await?;
        let _one = self.changes.lock().await;
        neigh::add_all(nl, specs).await
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}
