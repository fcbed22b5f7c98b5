//! Links (network interfaces): what the kernel reports about them, and
//! setting name, MTU and flags.

use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::nl::Nl;
use super::parse::Mac;
use super::NetError;

/// `IFF_UP`.
pub const IFF_UP: u32 = libc::IFF_UP as u32;
/// `IFF_NOARP`.
pub const IFF_NOARP: u32 = libc::IFF_NOARP as u32;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = libc::IFF_LOOPBACK as u32;

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
    pub fn from_msg(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            addr: Vec::new(),
            mtu: 0,
            min_mtu: None,
            max_mtu: None,
            flags: m.header.flags.bits(),
            kind: String::new(),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(b) => l.addr = b.clone(),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                LinkAttribute::MinMtu(v) => l.min_mtu = Some(*v),
                LinkAttribute::MaxMtu(v) => l.max_mtu = Some(*v),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = k.to_string();
                        }
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
    let msgs = nl
        .dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "links (RTM_GETLINK)",
        )
        .await?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(Link::from_msg(l)),
            _ => None,
        })
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
    let mut m = LinkMessage::default();
    m.header.index = index;
    if let Some((value, mask)) = change.flags {
        m.header.flags = LinkFlags::from_bits_retain(value & mask);
        m.header.change_mask = LinkFlags::from_bits_retain(mask);
    }
    if let Some(n) = &change.name {
        m.attributes.push(LinkAttribute::IfName(n.clone()));
    }
    if let Some(mtu) = change.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    nl.ack(RouteNetlinkMessage::SetLink(m), 0, || {
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
