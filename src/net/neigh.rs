//! Static ARP/NDP entries (AddARPNeighbors).

use std::net::IpAddr;

use super::link;
use super::msg::{
    family_of, ip_bytes, u32_at, Attr, Msg, NLM_F_CREATE, NLM_F_REPLACE, RTM_DELNEIGH, RTM_GETNEIGH, RTM_NEWNEIGH,
};
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

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

/// A `struct ndmsg`: family, link index, `NUD_*` state, `NTF_*` flags, type 0.
fn ndmsg(family: u8, ifindex: u32, state: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![family, 0, 0, 0];
    h.extend_from_slice(&ifindex.to_ne_bytes());
    h.extend_from_slice(&state.to_ne_bytes());
    h.extend_from_slice(&[flags, 0]);
    h
}

fn ifindex_of(m: &Msg) -> Option<u32> {
    u32_at(&m.header, 4)
}

fn message(n: &NeighborSpec, ifindex: u32) -> Msg {
    let mut m = Msg {
        kind: RTM_NEWNEIGH,
        header: ndmsg(family_of(&n.ip), ifindex, n.state, n.flags),
        attrs: vec![Attr::new(NDA_DST, ip_bytes(&n.ip))],
    };
    if let Some(mac) = n.lladdr {
        m.attrs.push(Attr::new(NDA_LLADDR, mac.0));
    }
    m
}

/// The entry for `ip` on `ifindex`, if the kernel has one.
async fn existing(nl: &Nl, ifindex: u32, ip: IpAddr) -> Result<Option<Msg>, NetError> {
    let q = Msg {
        kind: RTM_GETNEIGH,
        header: ndmsg(family_of(&ip), 0, 0, 0),
        attrs: Vec::new(),
    };
    let all = nl.dump(&q, "neighbours (RTM_GETNEIGH)").await?;
    let want = ip_bytes(&ip);
    Ok(all.into_iter().find(|m| {
        m.kind == RTM_NEWNEIGH && ifindex_of(m) == Some(ifindex) && m.attr(NDA_DST).is_some_and(|d| d.data == want)
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
    let mut done: Vec<(Msg, Option<Msg>)> = Vec::new();
    for (i, n, ifindex) in plan {
        let before = existing(nl, ifindex, n.ip).await?;
        let m = message(n, ifindex);
        let r = nl
            .ack(&m, NLM_F_CREATE | NLM_F_REPLACE, || {
                format!("add neighbors[{i}] ({} dev {})", n.ip, n.device)
            })
            .await;
        if let Err(e) = r {
            undo(nl, &done).await;
            return Err(e);
        }
        done.push((m, before));
    }
    Ok(())
}

async fn undo(nl: &Nl, done: &[(Msg, Option<Msg>)]) {
    for (made, before) in done.iter().rev() {
        let del = Msg {
            kind: RTM_DELNEIGH,
            ..made.clone()
        };
        let _ = nl.ack(&del, 0, || "undo: delete neighbour".into()).await;
        if let Some(b) = before {
            let back = Msg {
                kind: RTM_NEWNEIGH,
                header: b.header.clone(),
                attrs: b
                    .attrs
                    .iter()
                    .filter(|a| a.kind == NDA_DST || a.kind == NDA_LLADDR)
                    .cloned()
                    .collect(),
            };
            let _ = nl
                .ack(&back, NLM_F_CREATE | NLM_F_REPLACE, || "undo: restore neighbour".into())
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
        assert_eq!(m.header[0], libc::AF_INET6 as u8);
        assert_eq!(ifindex_of(&m), Some(4));
        assert_eq!(u16::from_ne_bytes([m.header[8], m.header[9]]), NUD_PERMANENT);
        assert_eq!(m.attrs.len(), 2);
        assert_eq!(m.attr(NDA_LLADDR).unwrap().data, [2, 0, 0, 0, 0, 9]);
    }
}
