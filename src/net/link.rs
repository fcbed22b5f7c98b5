//! Links (network interfaces): what the kernel reports about them, and
//! setting name, MTU and flags.

use super::msg::{u32_at, Attr, Msg, RTM_GETLINK, RTM_NEWLINK, RTM_SETLINK};
use super::nl::Nl;
use super::parse::Mac;
use super::NetError;

/// `IFF_UP`.
pub const IFF_UP: u32 = libc::IFF_UP as u32;
/// `IFF_NOARP`.
pub const IFF_NOARP: u32 = libc::IFF_NOARP as u32;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = libc::IFF_LOOPBACK as u32;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_MIN_MTU: u16 = 50;
const IFLA_MAX_MTU: u16 = 51;

/// A `struct ifinfomsg` for link `index` (family `AF_UNSPEC`).
fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut h = vec![0; 4];
    h.extend_from_slice(&index.to_ne_bytes());
    h.extend_from_slice(&flags.to_ne_bytes());
    h.extend_from_slice(&change.to_ne_bytes());
    h
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link-layer address (six bytes for Ethernet; empty when none).
    pub addr: Vec<u8>,
    /// Current MTU.
    pub mtu: u32,
    /// Smallest MTU the driver accepts, when it says.
    pub min_mtu: Option<u32>,
    /// Largest MTU the driver accepts, when it says.
    pub max_mtu: Option<u32>,
    /// `IFF_*` flags.
    pub flags: u32,
    /// Link kind (`veth`, `bridge`, ...), empty for plain devices.
    pub kind: String,
}

impl Link {
    /// Reads the fields of a `RTM_NEWLINK` message.
    pub fn from_msg(m: &Msg) -> Link {
        let mut l = Link {
            index: u32_at(&m.header, 4).unwrap_or(0),
            name: String::new(),
            addr: Vec::new(),
            mtu: 0,
            min_mtu: None,
            max_mtu: None,
            flags: u32_at(&m.header, 8).unwrap_or(0),
            kind: String::new(),
        };
        for a in &m.attrs {
            match a.kind {
                IFLA_IFNAME => l.name = a.as_string(),
                IFLA_ADDRESS => l.addr = a.data.clone(),
                IFLA_MTU => l.mtu = a.as_u32().unwrap_or(0),
                IFLA_MIN_MTU => l.min_mtu = a.as_u32(),
                IFLA_MAX_MTU => l.max_mtu = a.as_u32(),
                IFLA_LINKINFO => {
                    if let Some(k) = a.nested_attrs().iter().find(|i| i.kind == IFLA_INFO_KIND) {
                        l.kind = k.as_string();
                    }
                }
                _ => {}
            }
        }
        l
    }

    /// Whether the link is administratively up.
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }

    /// The MAC address, when the link has an Ethernet one.
    pub fn mac(&self) -> Option<Mac> {
        Mac::from_bytes(&self.addr)
    }
}

/// Every link of the agent's network namespace.
pub async fn list(nl: &Nl) -> Result<Vec<Link>, NetError> {
    let q = Msg {
        kind: RTM_GETLINK,
        header: ifinfomsg(0, 0, 0),
        attrs: Vec::new(),
    };
    let msgs = nl.dump(&q, "links (RTM_GETLINK)").await?;
    Ok(msgs
        .iter()
        .filter(|m| m.kind == RTM_NEWLINK)
        .map(Link::from_msg)
        .collect())
}

/// What to change on a link; `None` leaves a property alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange {
    /// New name.
    pub name: Option<String>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// Flag values to set, and which flags they cover (`(IFF_UP, IFF_UP)` brings it up).
    pub flags: Option<(u32, u32)>,
}

/// Applies `change` to the link `index` (`RTM_SETLINK`); `who` names it in errors.
pub async fn set(nl: &Nl, index: u32, who: &str, change: &LinkChange) -> Result<(), NetError> {
    let (value, mask) = change.flags.unwrap_or((0, 0));
    let mut m = Msg {
        kind: RTM_SETLINK,
        header: ifinfomsg(index, value & mask, mask),
        attrs: Vec::new(),
    };
    if let Some(n) = &change.name {
        m.attrs.push(Attr::string(IFLA_IFNAME, n));
    }
    if let Some(mtu) = change.mtu {
        m.attrs.push(Attr::u32(IFLA_MTU, mtu));
    }
    nl.ack(&m, 0, || {
        let mut what = Vec::new();
        if let Some(n) = &change.name {
            what.push(format!("name {n}"));
        }
        if let Some(mtu) = change.mtu {
            what.push(format!("mtu {mtu}"));
        }
        if let Some((v, mask)) = change.flags {
            if mask & IFF_UP != 0 {
                what.push(if v & IFF_UP != 0 { "up" } else { "down" }.into());
            }
            if mask & IFF_NOARP != 0 {
                what.push(if v & IFF_NOARP != 0 { "arp off" } else { "arp on" }.into());
            }
        }
        format!("set link {who} (index {index}): {}", what.join(", "))
    })
    .await
}

/// The first link with MAC `mac` (in index order, as the kernel lists them).
pub fn by_mac(links: &[Link], mac: &Mac) -> Option<Link> {
    links.iter().find(|l| l.mac().as_ref() == Some(mac)).cloned()
}

/// The link called `name`.
pub fn by_name<'a>(links: &'a [Link], name: &str) -> Option<&'a Link> {
    links.iter().find(|l| l.name == name)
}
