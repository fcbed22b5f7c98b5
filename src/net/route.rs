//! Routes of the main table: what the host asks for, what the kernel has,
//! and replacing the one with the other (all or nothing).

use std::net::IpAddr;

use super::link::{self, Link, IFF_LOOPBACK};
use super::msg::{
    family_of, ip_bytes, ip_from, u32_at, Attr, Msg, NLM_F_CREATE, NLM_F_REPLACE, RTM_DELROUTE, RTM_GETROUTE,
    RTM_NEWROUTE,
};
use super::nl::Nl;
use super::parse::IpNet;
use super::NetError;

/// `RTNH_F_ONLINK`, the one next-hop flag a host may ask for.
const RTNH_F_ONLINK: u32 = 4;

const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTA_PREF: u16 = 20;
const RTAX_MTU: u16 = 2;
/// `RT_TABLE_MAIN`.
const RT_TABLE_MAIN: u8 = 254;
/// `RTPROT_KERNEL`: a route the kernel made for an address.
const RTPROT_KERNEL: u8 = 2;
/// `RTPROT_BOOT`: what routes the agent adds are marked with (as `ip route`).
const RTPROT_BOOT: u8 = 3;
/// `RTN_UNICAST`.
const RTN_UNICAST: u8 = 1;

/// A `struct rtmsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RtHeader {
    family: u8,
    dst_len: u8,
    src_len: u8,
    tos: u8,
    table: u8,
    protocol: u8,
    scope: u8,
    kind: u8,
    flags: u32,
}

impl RtHeader {
    fn read(m: &Msg) -> RtHeader {
        let b = &m.header;
        let at = |i: usize| b.get(i).copied().unwrap_or(0);
        RtHeader {
            family: at(0),
            dst_len: at(1),
            src_len: at(2),
            tos: at(3),
            table: at(4),
            protocol: at(5),
            scope: at(6),
            kind: at(7),
            flags: u32_at(b, 8).unwrap_or(0),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut h = vec![
            self.family,
            self.dst_len,
            self.src_len,
            self.tos,
            self.table,
            self.protocol,
            self.scope,
            self.kind,
        ];
        h.extend_from_slice(&self.flags.to_ne_bytes());
        h
    }
}

/// Where a route's source address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Not given.
    None,
    /// The preferred source address (`src` in `ip route`; `RTA_PREFSRC`). A
    /// bare address from the host means this: Kata's Go runtime fills it from
    /// the netlink route's `Src`, which is the preferred source.
    Pref(IpAddr),
    /// A source prefix (`from` in `ip route`; `RTA_SRC`), given as `ADDR/LEN`.
    Prefix(IpNet),
}

/// A route the host asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination (`0.0.0.0/0` or `::/0` for a default route).
    pub dest: IpNet,
    /// Next hop, for a gateway route.
    pub gateway: Option<IpAddr>,
    /// Output interface, by name.
    pub device: String,
    /// Source address or prefix.
    pub source: Source,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// `rtm_flags` (`RTNH_F_ONLINK`, ...).
    pub flags: u32,
    /// The route's MTU metric; 0 for none.
    pub mtu: u32,
}

/// A route of the main table as the kernel reports it: the route as a host
/// would ask for it (`device` empty when it has none or the link is gone),
/// and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The route.
    pub route: RouteSpec,
    /// `RTPROT_*` (2 = kernel, 3 = boot).
    pub protocol: u8,
}

fn table_of(m: &Msg) -> u32 {
    m.attr(RTA_TABLE)
        .and_then(Attr::as_u32)
        .unwrap_or(u32::from(RtHeader::read(m).table))
}

fn oif_of(m: &Msg) -> Option<u32> {
    m.attr(RTA_OIF).and_then(Attr::as_u32)
}

/// Reads a dumped route; `links` names its output interface.
fn info(m: &Msg, links: &[Link]) -> RouteInfo {
    let h = RtHeader::read(m);
    let v6 = h.family == libc::AF_INET6 as u8;
    let mut r = RouteSpec {
        dest: IpNet::default_route(v6),
        gateway: None,
        device: String::new(),
        source: Source::None,
        scope: h.scope,
        flags: h.flags,
        mtu: 0,
    };
    r.dest.prefix = h.dst_len;
    let ip = |kind| m.attr(kind).and_then(|a| ip_from(&a.data));
    if let Some(d) = ip(RTA_DST) {
        r.dest.addr = d;
    }
    r.gateway = ip(RTA_GATEWAY);
    if let Some(s) = ip(RTA_SRC) {
        r.source = Source::Prefix(IpNet {
            addr: s,
            prefix: h.src_len,
        });
    } else if let Some(p) = ip(RTA_PREFSRC) {
        r.source = Source::Pref(p);
    }
    if let Some(i) = oif_of(m) {
        r.device = links
            .iter()
            .find(|l| l.index == i)
            .map(|l| l.name.clone())
            .unwrap_or_default();
    }
    if let Some(ms) = m.attr(RTA_METRICS) {
        if let Some(mtu) = ms.nested_attrs().iter().find(|x| x.kind == RTAX_MTU) {
            r.mtu = mtu.as_u32().unwrap_or(0);
        }
    }
    RouteInfo {
        route: r,
        protocol: h.protocol,
    }
}

async fn dump_main(nl: &Nl) -> Result<Vec<Msg>, NetError> {
    let mut out = Vec::new();
    // One family at a time: two dumps in flight on one socket are refused (EBUSY).
    for v6 in [false, true] {
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
        let q = Msg {
            kind: RTM_GETROUTE,
            header: RtHeader {
                family,
                ..RtHeader::default()
            }
            .bytes(),
            attrs: Vec::new(),
        };
        let what = if v6 {
            "IPv6 routes (RTM_GETROUTE)"
        } else {
            "IPv4 routes (RTM_GETROUTE)"
        };
        for m in nl.dump(&q, what).await? {
            if m.kind == RTM_NEWROUTE && table_of(&m) == u32::from(RT_TABLE_MAIN) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Every route of the main table, IPv4 then IPv6.
pub async fn list(nl: &Nl) -> Result<Vec<RouteInfo>, NetError> {
    let links = link::list(nl).await?;
    Ok(dump_main(nl).await?.iter().map(|m| info(m, &links)).collect())
}

/// The message that adds `spec` through link `oif`.
fn add_message(spec: &RouteSpec, oif: u32) -> Msg {
    let mut h = RtHeader {
        family: family_of(&spec.dest.addr),
        dst_len: spec.dest.prefix,
        table: RT_TABLE_MAIN,
        protocol: RTPROT_BOOT,
        scope: spec.scope,
        kind: RTN_UNICAST,
        flags: spec.flags,
        ..RtHeader::default()
    };
    let mut attrs = Vec::new();
    if spec.dest.prefix > 0 {
        attrs.push(Attr::new(RTA_DST, ip_bytes(&spec.dest.addr)));
    }
    attrs.push(Attr::u32(RTA_OIF, oif));
    if let Some(g) = spec.gateway {
        attrs.push(Attr::new(RTA_GATEWAY, ip_bytes(&g)));
    }
    match spec.source {
        Source::None => {}
        Source::Pref(ip) => attrs.push(Attr::new(RTA_PREFSRC, ip_bytes(&ip))),
        Source::Prefix(net) => {
            h.src_len = net.prefix;
            attrs.push(Attr::new(RTA_SRC, ip_bytes(&net.addr)));
        }
    }
    if spec.mtu != 0 {
        attrs.push(Attr::nested(RTA_METRICS, &[Attr::u32(RTAX_MTU, spec.mtu)]));
    }
    Msg {
        kind: RTM_NEWROUTE,
        header: h.bytes(),
        attrs,
    }
}

/// A dumped route, stripped to what adding it back needs.
fn restore_message(old: &Msg) -> Msg {
    // Only the flag a route is created with; the rest are the kernel's state.
    let h = RtHeader {
        flags: RtHeader::read(old).flags & RTNH_F_ONLINK,
        ..RtHeader::read(old)
    };
    const KEPT: [u16; 11] = [
        RTA_DST,
        RTA_SRC,
        RTA_GATEWAY,
        RTA_PREFSRC,
        RTA_OIF,
        RTA_PRIORITY,
        RTA_TABLE,
        RTA_METRICS,
        RTA_PREF,
        RTA_VIA,
        RTA_MULTIPATH,
    ];
    Msg {
        kind: RTM_NEWROUTE,
        header: h.bytes(),
        attrs: old.attrs.iter().filter(|a| KEPT.contains(&a.kind)).cloned().collect(),
    }
}

/// The same route, to be deleted.
fn deletion(m: &Msg) -> Msg {
    Msg {
        kind: RTM_DELROUTE,
        ..m.clone()
    }
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dest)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        write!(f, " dev {}", self.device)?;
        match self.source {
            Source::None => {}
            Source::Pref(ip) => write!(f, " src {ip}")?,
            Source::Prefix(n) => write!(f, " from {n}")?,
        }
        if self.scope != 0 {
            write!(f, " scope {}", self.scope)?;
        }
        if self.mtu != 0 {
            write!(f, " mtu {}", self.mtu)?;
        }
        Ok(())
    }
}

/// Replaces the main table's routes through non-loopback interfaces (except
/// the kernel's own, `proto kernel`) with `specs`: routes without a gateway
/// first, so that the gateways of the others are reachable when they are
/// added. Any failure puts the old routes back and removes the new ones.
/// Errors name the request's index (`routes[i]`).
pub async fn replace_all(nl: &Nl, specs: &[RouteSpec]) -> Result<(), NetError> {
    let links = link::list(nl).await?;
    let mut plan = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        let l = link::by_name(&links, &s.device)
            .ok_or_else(|| NetError::NotFound(format!("routes[{i}].device: no interface named {:?}", s.device)))?;
        plan.push((i, s, l.index));
    }
    // Stable: the order of the request within each group.
    plan.sort_by_key(|(_, s, _)| s.gateway.is_some());

    let loopback = |idx: u32| links.iter().any(|l| l.index == idx && l.flags & IFF_LOOPBACK != 0);
    let old: Vec<Msg> = dump_main(nl)
        .await?
        .into_iter()
        .filter(|m| RtHeader::read(m).protocol != RTPROT_KERNEL && oif_of(m).is_some_and(|i| !loopback(i)))
        .collect();

    let mut deleted: Vec<Msg> = Vec::new();
    for m in &old {
        let r = info(m, &links).route;
        match nl
            .ack(&deletion(m), 0, || {
                format!("delete old route {} dev {}", r.dest, r.device)
            })
            .await
        {
            Ok(()) => deleted.push(m.clone()),
            // Gone already (removed with another route or its address).
            Err(NetError::Netlink { errno, .. }) if errno == libc::ESRCH => {}
            Err(e) => {
                restore(nl, &deleted, &[]).await;
                return Err(e);
            }
        }
    }

    let mut added: Vec<Msg> = Vec::new();
    for (i, s, oif) in plan {
        let m = add_message(s, oif);
        let r = nl
            .ack(&m, NLM_F_CREATE | NLM_F_REPLACE, || format!("add routes[{i}] ({s})"))
            .await;
        if let Err(e) = r {
            restore(nl, &deleted, &added).await;
            return Err(e);
        }
        added.push(m);
    }
    Ok(())
}

/// Best effort: removes `added` (newest first) and puts `deleted` back.
async fn restore(nl: &Nl, deleted: &[Msg], added: &[Msg]) {
    for m in added.iter().rev() {
        let _ = nl.ack(&deletion(m), 0, || "undo: delete route".into()).await;
    }
    // Routes without a gateway first, as when adding.
    let mut back: Vec<&Msg> = deleted.iter().collect();
    back.sort_by_key(|m| m.attr(RTA_GATEWAY).is_some());
    for m in back {
        let _ = nl
            .ack(&restore_message(m), NLM_F_CREATE | NLM_F_REPLACE, || {
                "undo: restore route".into()
            })
            .await;
    }
}

/// The routes through link `index` that `replace_all` would own (for the
/// interface update to put back what an address change swept away).
pub async fn snapshot_link(nl: &Nl, index: u32) -> Result<Vec<Msg>, NetError> {
    Ok(dump_main(nl)
        .await?
        .into_iter()
        .filter(|m| RtHeader::read(m).protocol != RTPROT_KERNEL && oif_of(m) == Some(index))
        .collect())
}

/// Adds back the routes of `snap` that are missing now.
pub async fn restore_missing(nl: &Nl, snap: &[Msg]) {
    restore(nl, snap, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dest: &str, gw: Option<&str>) -> RouteSpec {
        RouteSpec {
            dest: IpNet::parse("d", dest).unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            device: "eth0".into(),
            source: Source::Pref("10.88.0.5".parse().unwrap()),
            scope: 0,
            flags: RTNH_F_ONLINK,
            mtu: 1400,
        }
    }

    #[test]
    fn add_message_carries_every_field() {
        let m = add_message(&spec("10.0.0.0/8", Some("10.88.0.1")), 7);
        let h = RtHeader::read(&m);
        assert_eq!(h.family, libc::AF_INET as u8);
        assert_eq!(h.dst_len, 8);
        assert_eq!(h.table, 254);
        assert_eq!(h.protocol, RTPROT_BOOT);
        assert_eq!(h.kind, RTN_UNICAST);
        assert_eq!(h.flags, RTNH_F_ONLINK);
        assert_eq!(oif_of(&m), Some(7));
        assert_eq!(m.attr(RTA_GATEWAY).unwrap().data, [10, 88, 0, 1]);
        assert_eq!(m.attr(RTA_PREFSRC).unwrap().data, [10, 88, 0, 5]);
        assert_eq!(m.attr(RTA_METRICS).unwrap().nested_attrs(), [Attr::u32(RTAX_MTU, 1400)]);
        // The dumped form reads back to the same route.
        let links = [Link {
            index: 7,
            name: "eth0".into(),
            addr: vec![],
            mtu: 1500,
            min_mtu: None,
            max_mtu: None,
            flags: 0,
            kind: String::new(),
        }];
        let i = info(&m, &links);
        assert_eq!(i.protocol, 3);
        assert_eq!(i.route, spec("10.0.0.0/8", Some("10.88.0.1")));
    }

    #[test]
    fn default_route_has_no_destination_attribute() {
        let mut s = spec("::/0", Some("fe80::1"));
        s.source = Source::Prefix(IpNet::parse("s", "fd00::/64").unwrap());
        s.mtu = 0;
        let m = add_message(&s, 3);
        let h = RtHeader::read(&m);
        assert_eq!(h.family, libc::AF_INET6 as u8);
        assert_eq!(h.src_len, 64);
        assert!(m.attr(RTA_DST).is_none());
        assert!(m.attr(RTA_METRICS).is_none());
        assert_eq!(info(&m, &[]).route.dest.to_string(), "::/0");
    }

    #[test]
    fn restore_keeps_what_the_route_is_made_of() {
        let mut old = add_message(&spec("10.0.0.0/8", Some("10.88.0.1")), 7);
        old.header = RtHeader {
            flags: RTNH_F_ONLINK | 0x10, /* linkdown */
            ..RtHeader::read(&old)
        }
        .bytes();
        old.attrs.push(Attr::u32(23 /* RTA_EXPIRES */, 5));
        let m = restore_message(&old);
        assert_eq!(RtHeader::read(&m).flags, RTNH_F_ONLINK);
        assert_eq!(m.attrs.len(), old.attrs.len() - 1);
        assert_eq!(deletion(&m).kind, RTM_DELROUTE);
    }
}
