//! Transport addresses: `vsock://CID:PORT`, `unix:///path`, and on the host side
//! hybrid vsock `hvsock:///path/to/vmm.sock:PORT`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// `VMADDR_CID_ANY`, written `-1` in addresses as Kata does.
pub const VSOCK_CID_ANY: u32 = u32::MAX;

/// One place a server listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// AF_VSOCK; `cid` may be [`VSOCK_CID_ANY`] for a listener.
    Vsock {
        /// Context id of the peer (or any, for a listener).
        cid: u32,
        /// vsock port.
        port: u32,
    },
    /// AF_UNIX stream socket at a filesystem path.
    Unix(PathBuf),
    /// A VMM's Unix socket that forwards to a guest vsock port after `CONNECT <port>\n`.
    HybridVsock {
        /// The VMM's (or vhost-device-vsock's) Unix socket.
        path: PathBuf,
        /// Guest vsock port to reach.
        port: u32,
    },
}

/// An address string that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid address {addr:?}: {why} (expected vsock://CID:PORT, unix:///path or hvsock:///path:PORT)")]
pub struct AddressError {
    addr: String,
    why: &'static str,
}

fn bad(addr: &str, why: &'static str) -> AddressError {
    AddressError {
        addr: addr.to_string(),
        why,
    }
}

fn parse_port(addr: &str, s: &str) -> Result<u32, AddressError> {
    s.parse::<u32>()
        .map_err(|_| bad(addr, "port is not a number in 0..=4294967295"))
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = rest.split_once(':').ok_or_else(|| bad(s, "missing :PORT"))?;
            let cid = match cid {
                "-1" => VSOCK_CID_ANY,
                c => c.parse::<u32>().map_err(|_| bad(s, "CID is not a number or -1"))?,
            };
            Ok(Address::Vsock {
                cid,
                port: parse_port(s, port)?,
            })
        } else if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad(s, "empty socket path"));
            }
            Ok(Address::Unix(PathBuf::from(path)))
        } else if let Some(rest) = s.strip_prefix("hvsock://") {
            let (path, port) = rest.rsplit_once(':').ok_or_else(|| bad(s, "missing :PORT"))?;
            if path.is_empty() {
                return Err(bad(s, "empty socket path"));
            }
            Ok(Address::HybridVsock {
                path: PathBuf::from(path),
                port: parse_port(s, port)?,
            })
        } else {
            Err(bad(s, "unknown scheme"))
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Vsock {
                cid: VSOCK_CID_ANY,
                port,
            } => write!(f, "vsock://-1:{port}"),
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::HybridVsock { path, port } => write!(f, "hvsock://{}:{port}", path.display()),
        }
    }
}

/// Parses a comma-separated list of addresses (`agent.server_addr` may name several).
pub fn parse_list(s: &str) -> Result<Vec<Address>, AddressError> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            "vsock://-1:1024".parse::<Address>().unwrap(),
            Address::Vsock {
                cid: VSOCK_CID_ANY,
                port: 1024
            }
        );
        assert_eq!(
            "vsock://3:5000".parse::<Address>().unwrap(),
            Address::Vsock { cid: 3, port: 5000 }
        );
        assert_eq!(
            "unix:///run/pith.sock".parse::<Address>().unwrap(),
            Address::Unix("/run/pith.sock".into())
        );
        assert_eq!(
            "hvsock:///tmp/vm/vm.vsock:1024".parse::<Address>().unwrap(),
            Address::HybridVsock {
                path: "/tmp/vm/vm.vsock".into(),
                port: 1024
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "vsock://-1:1024",
            "vsock://2:1",
            "unix:///a/b.sock",
            "hvsock:///x.sock:9",
        ] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_addresses() {
        for s in [
            "",
            "tcp://1.2.3.4:5",
            "vsock://x:1",
            "vsock://3",
            "vsock://3:-5",
            "unix://",
            "hvsock:///a.sock",
        ] {
            let e = s.parse::<Address>().unwrap_err();
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
    }

    #[test]
    fn list_of_addresses() {
        let l = parse_list("vsock://-1:1024, unix:///tmp/a.sock").unwrap();
        assert_eq!(l.len(), 2);
        assert!(parse_list("vsock://-1:1024,bogus").is_err());
    }
}
