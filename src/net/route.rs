//! Routes of the main table: what the host asks for, what the kernel has,
//! and replacing the one with the other (all or nothing).

use std::net::IpAddr;

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::link::{self, Link, IFF_LOOPBACK};
use super::nl::Nl;
use super::parse::IpNet;
use super::NetError;

/// `RTNH_F_ONLINK`, the one next-hop flag a host may ask for.
const RTNH_F_ONLINK: u32 = 4;

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

fn family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn oif_of(m: &RouteMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// Reads a dumped route; `links` names its output interface.
fn info(m: &RouteMessage, links: &[Link]) -> RouteInfo {
    let v6 = m.header.address_family == AddressFamily::Inet6;
    let mut r = RouteSpec {
        dest: IpNet::default_route(v6),
        gateway: None,
        device: String::new(),
        source: Source::None,
        scope: m.header.scope.into(),
        flags: m.header.flags.bits(),
        mtu: 0,
    };
    r.dest.prefix = m.header.destination_prefix_length;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = ip_of(d) {
                    r.dest.addr = ip;
                }
            }
            RouteAttribute::Gateway(g) => r.gateway = ip_of(g),
            RouteAttribute::Source(s) => {
                if let Some(ip) = ip_of(s) {
                    r.source = Source::Prefix(IpNet {
                        addr: ip,
                        prefix: m.header.source_prefix_length,
                    });
                }
            }
            RouteAttribute::PrefSource(s) => {
                if let (Some(ip), Source::None) = (ip_of(s), r.source) {
                    r.source = Source::Pref(ip);
                }
            }
            RouteAttribute::Oif(i) => {
                r.device = links
                    .iter()
                    .find(|l| l.index == *i)
                    .map(|l| l.name.clone())
                    .unwrap_or_default()
            }
            RouteAttribute::Metrics(ms) => {
                for x in ms {
                    if let RouteMetric::Mtu(v) = x {
                        r.mtu = *v;
                    }
                }
            }
            _ => {}
        }
    }
    RouteInfo {
        route: r,
        protocol: m.header.protocol.into(),
    }
}

async fn dump_main(nl: &Nl) -> Result<Vec<RouteMessage>, NetError> {
    let mut out = Vec::new();
    // One family at a time: two dumps in flight on one socket are refused (EBUSY).
    for v6 in [false, true] {
        let mut q = RouteMessage::default();
        q.header.address_family = family(v6);
        let what = if v6 {
            "IPv6 routes (RTM_GETROUTE)"
        } else {
            "IPv4 routes (RTM_GETROUTE)"
        };
        for m in nl.dump(RouteNetlinkMessage::GetRoute(q), what).await? {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                if table_of(&r) == u32::from(RouteHeader::RT_TABLE_MAIN) {
                    out.push(r);
                }
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
fn add_message(spec: &RouteSpec, oif: u32) -> RouteMessage {
    let v6 = spec.dest.is_v6();
    let mut m = RouteMessage::default();
    m.header.address_family = family(v6);
    m.header.destination_prefix_length = spec.dest.prefix;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::from(spec.scope);
    m.header.kind = RouteType::Unicast;
    m.header.flags = RouteFlags::from_bits_retain(spec.flags);
    if spec.dest.prefix > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(spec.dest.addr)));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    if let Some(g) = spec.gateway {
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    match spec.source {
        Source::None => {}
        Source::Pref(ip) => m.attributes.push(RouteAttribute::PrefSource(RouteAddress::from(ip))),
        Source::Prefix(net) => {
            m.header.source_prefix_length = net.prefix;
            m.attributes.push(RouteAttribute::Source(RouteAddress::from(net.addr)));
        }
    }
    if spec.mtu != 0 {
        m.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(spec.mtu)]));
    }
    m
}

/// A dumped route, stripped to what adding it back needs.
fn restore_message(old: &RouteMessage) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = old.header.clone();
    // Only the flag a route is created with; the rest are the kernel's state.
    m.header.flags = RouteFlags::from_bits_retain(old.header.flags.bits() & RTNH_F_ONLINK);
    m.attributes = old
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Source(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::PrefSource(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::Table(_)
                    | RouteAttribute::Metrics(_)
                    | RouteAttribute::Preference(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::MultiPath(_)
            )
        })
        .cloned()
        .collect();
    m
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
    let old: Vec<RouteMessage> = dump_main(nl)
        .await?
        .into_iter()
        .filter(|m| m.header.protocol != RouteProtocol::Kernel && oif_of(m).is_some_and(|i| !loopback(i)))
        .collect();

    let mut deleted: Vec<RouteMessage> = Vec::new();
    for m in &old {
        let r = info(m, &links).route;
        match nl
            .ack(RouteNetlinkMessage::DelRoute(m.clone()), 0, || {
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

    let mut added: Vec<RouteMessage> = Vec::new();
    for (i, s, oif) in plan {
        let m = add_message(s, oif);
        let r = nl
            .ack(
                RouteNetlinkMessage::NewRoute(m.clone()),
                NLM_F_CREATE | NLM_F_REPLACE,
                || format!("add routes[{i}] ({s})"),
            )
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
async fn restore(nl: &Nl, deleted: &[RouteMessage], added: &[RouteMessage]) {
    for m in added.iter().rev() {
        let _ = nl
            .ack(RouteNetlinkMessage::DelRoute(m.clone()), 0, || {
                "undo: delete route".into()
            })
            .await;
    }
    // Routes without a gateway first, as when adding.
    let mut back: Vec<&RouteMessage> = deleted.iter().collect();
    back.sort_by_key(|m| m.attributes.iter().any(|a| matches!(a, RouteAttribute::Gateway(_))));
    for m in back {
        let _ = nl
            .ack(
                RouteNetlinkMessage::NewRoute(restore_message(m)),
                NLM_F_CREATE | NLM_F_REPLACE,
                || "undo: restore route".into(),
            )
            .await;
    }
}

/// The routes through link `index` that `replace_all` would own (for the
/// interface update to put back what an address change swept away).
pub async fn snapshot_link(nl: &Nl, index: u32) -> Result<Vec<RouteMessage>, NetError> {
    Ok(dump_main(nl)
        .await?
        .into_iter()
        .filter(|m| m.header.protocol != RouteProtocol::Kernel && oif_of(m) == Some(index))
        .collect())
}

/// Adds back the routes of `snap` that are missing now.
pub async fn restore_missing(nl: &Nl, snap: &[RouteMessage]) {
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
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 8);
        assert_eq!(m.header.table, 254);
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(m.header.flags.bits(), RTNH_F_ONLINK);
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(m.attributes.contains(&RouteAttribute::Gateway(RouteAddress::Inet(
            "10.88.0.1".parse().unwrap()
        ))));
        assert!(m.attributes.contains(&RouteAttribute::PrefSource(RouteAddress::Inet(
            "10.88.0.5".parse().unwrap()
        ))));
        assert!(m
            .attributes
            .contains(&RouteAttribute::Metrics(vec![RouteMetric::Mtu(1400)])));
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
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(m.header.source_prefix_length, 64);
        assert!(!m.attributes.iter().any(|a| matches!(a, RouteAttribute::Destination(_))));
        assert!(!m.attributes.iter().any(|a| matches!(a, RouteAttribute::Metrics(_))));
        assert_eq!(info(&m, &[]).route.dest.to_string(), "::/0");
    }

    #[test]
    fn restore_keeps_what_the_route_is_made_of() {
        let mut old = add_message(&spec("10.0.0.0/8", Some("10.88.0.1")), 7);
        old.header.flags = RouteFlags::from_bits_retain(RTNH_F_ONLINK | 0x10 /* linkdown */);
        old.attributes.push(RouteAttribute::Expires(5));
        let m = restore_message(&old);
        assert_eq!(m.header.flags.bits(), RTNH_F_ONLINK);
        assert_eq!(m.attributes.len(), old.attributes.len() - 1);
    }
}
