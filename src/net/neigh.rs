//! Static ARP/NDP entries (AddARPNeighbors).

use std::net::IpAddr;

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::link;
use super::nl::Nl;
use super::parse::Mac;
use super::NetError;

/// `NUD_PERMANENT`: what an entry gets when the host leaves the state at 0 (as kata-agent does).
pub const NUD_PERMANENT: u16 = 0x80;

/// A neighbour entry the host asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborSpec {
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// The interface, by name.
    pub device: String,
    /// Its link-layer address, when given.
    pub lladdr: Option<Mac>,
    /// `NUD_*` state.
    pub state: u16,
    /// `NTF_*` flags.
    pub flags: u8,
}

fn message(n: &NeighborSpec, ifindex: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if n.ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::from(n.state);
    m.header.flags = NeighbourFlags::from_bits_retain(n.flags);
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(n.ip)));
    if let Some(mac) = n.lladdr {
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    m
}

/// The entry for `ip` on `ifindex`, if the kernel has one.
async fn existing(nl: &Nl, ifindex: u32, ip: IpAddr) -> Result<Option<NeighbourMessage>, NetError> {
    let mut q = NeighbourMessage::default();
    q.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let all = nl
        .dump(RouteNetlinkMessage::GetNeighbour(q), "neighbours (RTM_GETNEIGH)")
        .await?;
    let want = NeighbourAddress::from(ip);
    Ok(all.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewNeighbour(n)
            if n.header.ifindex == ifindex
                && n.attributes
                    .iter()
                    .any(|a| matches!(a, NeighbourAttribute::Destination(d) if *d == want)) =>
        {
            Some(n)
        }
        _ => None,
    }))
}

/// Adds (or replaces) every entry of `specs`; on a failure the entries this
/// call made are removed and the ones it replaced put back. Errors name the
/// request's index (`neighbors[i]`).
pub async fn add_all(nl: &Nl, specs: &[NeighborSpec]) -> Result<(), NetError> {
    let links = link::list(nl).await?;
    let mut plan = Vec::with_capacity(specs.len());
    for (i, n) in specs.iter().enumerate() {
        let l = link::by_name(&links, &n.device)
            .ok_or_else(|| NetError::NotFound(format!("neighbors[{i}].device: no interface named {:?}", n.device)))?;
        plan.push((i, n, l.index));
    }
    // (entry made, what it replaced)
    let mut done: Vec<(NeighbourMessage, Option<NeighbourMessage>)> = Vec::new();
    for (i, n, ifindex) in plan {
        let before = existing(nl, ifindex, n.ip).await?;
        let m = message(n, ifindex);
        let r = nl
            .ack(
                RouteNetlinkMessage::NewNeighbour(m.clone()),
                NLM_F_CREATE | NLM_F_REPLACE,
                || format!("add neighbors[{i}] ({} dev {})", n.ip, n.device),
            )
            .await;
        if let Err(e) = r {
            undo(nl, &done).await;
            return Err(e);
        }
        done.push((m, before));
    }
    Ok(())
}

async fn undo(nl: &Nl, done: &[(NeighbourMessage, Option<NeighbourMessage>)]) {
    for (made, before) in done.iter().rev() {
        let _ = nl
            .ack(RouteNetlinkMessage::DelNeighbour(made.clone()), 0, || {
                "undo: delete neighbour".into()
            })
            .await;
        if let Some(b) = before {
            let mut back = NeighbourMessage::default();
            back.header = b.header.clone();
            back.attributes = b
                .attributes
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        NeighbourAttribute::Destination(_) | NeighbourAttribute::LinkLayerAddress(_)
                    )
                })
                .cloned()
                .collect();
            let _ = nl
                .ack(
                    RouteNetlinkMessage::NewNeighbour(back),
                    NLM_F_CREATE | NLM_F_REPLACE,
                    || "undo: restore neighbour".into(),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_fields() {
        let n = NeighborSpec {
            ip: "fd00::9".parse().unwrap(),
            device: "eth0".into(),
            lladdr: Some(Mac([2, 0, 0, 0, 0, 9])),
            state: NUD_PERMANENT,
            flags: 0,
        };
        let m = message(&n, 4);
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!((m.header.ifindex, u16::from(m.header.state)), (4, NUD_PERMANENT));
        assert_eq!(m.attributes.len(), 2);
    }
}
