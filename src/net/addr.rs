//! Interface addresses: listing, adding (replacing an equal one) and deleting.

use std::net::IpAddr;

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::nl::Nl;
use super::parse::IpNet;
use super::NetError;

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    /// The link's index.
    pub index: u32,
    /// The address and its prefix length.
    pub net: IpNet,
}

impl Addr {
    /// An IPv6 link-local address (`fe80::/10`): the kernel's, never the host's to replace.
    pub fn is_v6_link_local(&self) -> bool {
        matches!(self.net.addr, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
    }
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Every address of every link.
pub async fn list(nl: &Nl) -> Result<Vec<Addr>, NetError> {
    let msgs = nl
        .dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            "addresses (RTM_GETADDR)",
        )
        .await?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
        // on point-to-point links and the same otherwise.
        let mut local = None;
        let mut address = None;
        for attr in &a.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                _ => {}
            }
        }
        if let Some(ip) = local.or(address) {
            out.push(Addr {
                index: a.header.index,
                net: IpNet {
                    addr: ip,
                    prefix: a.header.prefix_len,
                },
            });
        }
    }
    Ok(out)
}

fn message(index: u32, net: &IpNet) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&net.addr);
    m.header.prefix_len = net.prefix;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(net.addr));
    m.attributes.push(AddressAttribute::Address(net.addr));
    m
}

/// Adds `net` to link `index` (replacing the same address with another prefix).
pub async fn add(nl: &Nl, index: u32, who: &str, net: &IpNet) -> Result<(), NetError> {
    let mut m = message(index, net);
    if let IpAddr::V4(a) = net.addr {
        if net.prefix < 31 {
            let host = u32::MAX.checked_shr(u32::from(net.prefix)).unwrap_or(0);
            m.attributes
                .push(AddressAttribute::Broadcast((u32::from(a) | host).into()));
        }
    }
    nl.ack(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_REPLACE, || {
        format!("add address {net} to {who}")
    })
    .await
}

/// Removes `addr` from its link.
pub async fn del(nl: &Nl, who: &str, addr: &Addr) -> Result<(), NetError> {
    nl.ack(
        RouteNetlinkMessage::DelAddress(message(addr.index, &addr.net)),
        0,
        || format!("delete address {} from {who}", addr.net),
    )
    .await
}

/// Whether the kernel takes IPv6 addresses (IPv6 built in and not disabled):
/// as kata-agent does, IPv6 addresses are skipped when it does not.
pub fn ipv6_enabled(procfs: &std::path::Path) -> bool {
    let on = |which: &str| {
        std::fs::read_to_string(procfs.join(format!("sys/net/ipv6/conf/{which}/disable_ipv6")))
            .map(|s| s.trim() == "0")
            .unwrap_or(false)
    };
    on("all") || on("default")
}
