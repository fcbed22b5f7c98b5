//! Interface addresses: listing, adding (replacing an equal one) and deleting.

use std::net::IpAddr;

use super::msg::{
    family_of, ip_bytes, ip_from, u32_at, Attr, Msg, NLM_F_CREATE, NLM_F_REPLACE, RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR,
};
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

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

/// A `struct ifaddrmsg`: family, prefix length, flags, scope, link index.
fn ifaddrmsg(family: u8, prefix: u8, index: u32) -> Vec<u8> {
    let mut h = vec![family, prefix, 0, 0];
    h.extend_from_slice(&index.to_ne_bytes());
    h
}

/// Every address of every link.
pub async fn list(nl: &Nl) -> Result<Vec<Addr>, NetError> {
    let q = Msg {
        kind: RTM_GETADDR,
        header: ifaddrmsg(0, 0, 0),
        attrs: Vec::new(),
    };
    let msgs = nl.dump(&q, "addresses (RTM_GETADDR)").await?;
    let mut out = Vec::new();
    for a in msgs.iter().filter(|m| m.kind == RTM_NEWADDR && m.header.len() == 8) {
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
        // on point-to-point links and the same otherwise.
        let ip = |kind| a.attr(kind).and_then(|x| ip_from(&x.data));
        if let Some(ip) = ip(IFA_LOCAL).or_else(|| ip(IFA_ADDRESS)) {
            out.push(Addr {
                index: u32_at(&a.header, 4).unwrap_or(0),
                net: IpNet {
                    addr: ip,
                    prefix: a.header[1],
                },
            });
        }
    }
    Ok(out)
}

fn message(kind: u16, index: u32, net: &IpNet) -> Msg {
    let ip = ip_bytes(&net.addr);
    Msg {
        kind,
        header: ifaddrmsg(family_of(&net.addr), net.prefix, index),
        attrs: vec![Attr::new(IFA_LOCAL, ip.clone()), Attr::new(IFA_ADDRESS, ip)],
    }
}

/// Adds `net` to link `index` (replacing the same address with another prefix).
pub async fn add(nl: &Nl, index: u32, who: &str, net: &IpNet) -> Result<(), NetError> {
    let mut m = message(RTM_NEWADDR, index, net);
    if let IpAddr::V4(a) = net.addr {
        if net.prefix < 31 {
            let host = u32::MAX.checked_shr(u32::from(net.prefix)).unwrap_or(0);
            m.attrs
                .push(Attr::new(IFA_BROADCAST, (u32::from(a) | host).to_be_bytes()));
        }
    }
    nl.ack(&m, NLM_F_CREATE | NLM_F_REPLACE, || {
        format!("add address {net} to {who}")
    })
    .await
}

/// Removes `addr` from its link.
pub async fn del(nl: &Nl, who: &str, addr: &Addr) -> Result<(), NetError> {
    nl.ack(&message(RTM_DELADDR, addr.index, &addr.net), 0, || {
        format!("delete address {} from {who}", addr.net)
    })
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
