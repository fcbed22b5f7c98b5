//! The networking methods of `grpc.AgentService`: requests to `crate::net`'s
//! specs (every malformed field named), results and errors back to the wire.
//!
//! Replies follow kata-agent: UpdateInterface echoes the requested interface,
//! UpdateRoutes answers with the main table afterwards. Errors are the
//! sandbox's [`Error::Net`] with kata-agent's wording of the request first
//! ("update routes: ..."); `rpc::status` gives them codes clearer than
//! kata-agent's (which answers INTERNAL for everything but an empty request):
//! Kata's runtimes branch on none of them except AddARPNeighbors'
//! UNIMPLEMENTED, which pith never answers.

use std::net::IpAddr;

use protobuf::well_known_types::empty::Empty;
use protocols::agent::{
    AddARPNeighborsRequest, GetIPTablesRequest, GetIPTablesResponse, Interfaces, Routes, SetIPTablesRequest,
    SetIPTablesResponse, UpdateInterfaceRequest, UpdateRoutesRequest,
};
use protocols::types::{IPAddress, IPFamily, Interface, Route};

use super::{invalid, Rpc};
use crate::device::pci::PciPath;
use crate::net::iface::InterfaceSpec;
use crate::net::link::IFF_NOARP;
use crate::net::neigh::{NeighborSpec, NUD_PERMANENT};
use crate::net::parse::{check_ifname, parse_ip, IpNet, Mac};
use crate::net::route::{RouteInfo, RouteSpec, Source};
use crate::net::NetError;
use crate::sandbox::network::NetOp;
use crate::sandbox::Error;

/// UpdateInterface: waits for a hot-plugged NIC named by `devicePath`, then
/// configures the link with the request's MAC; answers with the request's interface.
pub(crate) async fn update_interface(rpc: &Rpc, req: UpdateInterfaceRequest) -> Result<Interface, Error> {
    let op = NetOp::UpdateInterface;
    let iface = req
        .interface
        .into_option()
        .ok_or_else(|| invalid("empty update interface request"))?;
    let spec = interface_spec(&iface).map_err(|e| op.err(e))?;
    let nic = match iface.devicePath.as_str() {
        "" => None,
        p => Some(PciPath::parse(p).map_err(|e| op.err(NetError::invalid("interface.devicePath", e.to_string())))?),
    };
    rpc.sandbox.update_interface(&spec, nic.as_ref()).await?;
    Ok(iface)
}

fn interface_spec(i: &Interface) -> Result<InterfaceSpec, NetError> {
    let mac = Mac::parse("interface.hwAddr", &i.hwAddr)?;
    let name = if i.name.is_empty() {
        None
    } else {
        check_ifname("interface.name", &i.name)?;
        Some(i.name.clone())
    };
    let mtu = match i.mtu {
        0 => None,
        m => Some(u32::try_from(m).map_err(|_| NetError::invalid("interface.mtu", format!("{m} is too large")))?),
    };
    let addrs = i
        .IPAddresses
        .iter()
        .enumerate()
        .map(|(n, a)| IpNet::from_parts(&format!("interface.IPAddresses[{n}]"), &a.address, &a.mask))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InterfaceSpec {
        mac,
        name,
        mtu,
        addrs,
        noarp: i.raw_flags & IFF_NOARP != 0,
    })
}

/// UpdateRoutes: replaces the routes; answers with the main table afterwards.
pub(crate) async fn update_routes(rpc: &Rpc, req: UpdateRoutesRequest) -> Result<Routes, Error> {
    let routes = req
        .routes
        .into_option()
        .ok_or_else(|| invalid("empty update routes request"))?;
    let specs = routes
        .Routes
        .iter()
        .enumerate()
        .map(|(i, r)| route_spec(i, r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NetOp::UpdateRoutes.err(e))?;
    let now = rpc.sandbox.update_routes(&specs).await?;
    Ok(routes_msg(&now))
}

fn route_spec(i: usize, r: &Route) -> Result<RouteSpec, NetError> {
    let f = |name: &str| format!("routes[{i}].{name}");
    if r.device.is_empty() {
        return Err(NetError::invalid(&f("device"), "empty, want the interface's name"));
    }
    let gateway = match r.gateway.as_str() {
        "" => None,
        g => Some(parse_ip(&f("gateway"), g)?),
    };
    let dest = match r.dest.as_str() {
        "" => None,
        d => Some(IpNet::parse(&f("dest"), d)?),
    };
    let source = match r.source.as_str() {
        "" => Source::None,
        s if s.contains('/') => Source::Prefix(IpNet::parse(&f("source"), s)?),
        s => Source::Pref(parse_ip(&f("source"), s)?),
    };
    // The family of the addresses; `family` decides only when there are none
    // (a default route without gateway), since v4 is also its unset value.
    let said_v6 = r.family.enum_value() == Ok(IPFamily::v6);
    let v6 = dest
        .map(|d| d.is_v6())
        .or(gateway.map(|g| g.is_ipv6()))
        .unwrap_or(said_v6);
    if said_v6 && !v6 {
        return Err(NetError::invalid(
            &f("family"),
            "v6, but the route's addresses are IPv4",
        ));
    }
    let src_v6 = match source {
        Source::None => v6,
        Source::Pref(ip) => ip.is_ipv6(),
        Source::Prefix(n) => n.is_v6(),
    };
    if gateway.is_some_and(|g| g.is_ipv6() != v6) || src_v6 != v6 {
        return Err(NetError::invalid(
            &f("gateway"),
            format!(
                "dest {:?}, gateway {:?} and source {:?} are not all of one IP family",
                r.dest, r.gateway, r.source
            ),
        ));
    }
    let dest = dest.unwrap_or_else(|| IpNet::default_route(v6));
    if dest.network() != dest {
        return Err(NetError::invalid(
            &f("dest"),
            format!("{} has host bits set (the prefix is {})", dest, dest.network()),
        ));
    }
    let scope =
        u8::try_from(r.scope).map_err(|_| NetError::invalid(&f("scope"), format!("{} is not 0..=255", r.scope)))?;
    Ok(RouteSpec {
        dest,
        gateway,
        device: r.device.clone(),
        source,
        scope,
        flags: r.flags,
        mtu: r.mtu,
    })
}

fn family(v6: bool) -> protobuf::EnumOrUnknown<IPFamily> {
    protobuf::EnumOrUnknown::new(if v6 { IPFamily::v6 } else { IPFamily::v4 })
}

fn routes_msg(list: &[RouteInfo]) -> Routes {
    let mut out = Routes::new();
    for r in list.iter().map(|i| &i.route) {
        let mut m = Route::new();
        m.dest = r.dest.to_string();
        m.gateway = r.gateway.map(|g| g.to_string()).unwrap_or_default();
        m.device = r.device.clone();
        m.source = match r.source {
            Source::None => String::new(),
            Source::Pref(ip) => ip.to_string(),
            Source::Prefix(n) => n.to_string(),
        };
        m.scope = u32::from(r.scope);
        m.family = family(r.dest.is_v6());
        m.flags = r.flags;
        m.mtu = r.mtu;
        out.Routes.push(m);
    }
    out
}

/// ListRoutes: the main table, IPv4 then IPv6.
pub(crate) async fn list_routes(rpc: &Rpc) -> Result<Routes, Error> {
    let list = rpc.sandbox.list_routes().await?;
    Ok(routes_msg(&list))
}

/// ListInterfaces: every link with its addresses.
pub(crate) async fn list_interfaces(rpc: &Rpc) -> Result<Interfaces, Error> {
    let list = rpc.sandbox.list_interfaces().await?;
    let mut out = Interfaces::new();
    for (l, addrs) in list {
        let mut i = Interface::new();
        i.device = l.name.clone();
        i.name = l.name.clone();
        i.mtu = u64::from(l.mtu);
        i.hwAddr = l.mac().map(|m| m.to_string()).unwrap_or_default();
        i.type_ = l.kind.clone();
        i.raw_flags = l.flags;
        for a in addrs {
            let mut ip = IPAddress::new();
            ip.family = family(a.is_v6());
            ip.address = a.addr.to_string();
            ip.mask = a.prefix.to_string();
            i.IPAddresses.push(ip);
        }
        out.Interfaces.push(i);
    }
    Ok(out)
}

/// AddARPNeighbors.
pub(crate) async fn add_arp_neighbors(rpc: &Rpc, req: AddARPNeighborsRequest) -> Result<Empty, Error> {
    let list = req
        .neighbors
        .into_option()
        .ok_or_else(|| invalid("empty add arp neighbours request"))?;
    let specs =
        list.ARPNeighbors
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let f = |name: &str| format!("neighbors[{i}].{name}");
                let addr = n.toIPAddress.as_ref().map(|a| a.address.as_str()).unwrap_or("");
                let ip: IpAddr = parse_ip(&f("toIPAddress.address"), addr)?;
                if n.device.is_empty() {
                    return Err(NetError::invalid(&f("device"), "empty, want the interface's name"));
                }
                let lladdr = match n.lladdr.as_str() {
                    "" => None,
                    s => Some(Mac::parse(&f("lladdr"), s)?),
                };
                let state = match n.state {
                    0 => NUD_PERMANENT,
                    s => u16::try_from(s)
                        .map_err(|_| NetError::invalid(&f("state"), format!("{s} is not a NUD_* state")))?,
                };
                let flags = u8::try_from(n.flags)
                    .map_err(|_| NetError::invalid(&f("flags"), format!("{} is not a set of NTF_* flags", n.flags)))?;
                Ok(NeighborSpec {
                    ip,
                    device: n.device.clone(),
                    lladdr,
                    state,
                    flags,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NetOp::AddArpNeighbors.err(e))?;
    rpc.sandbox.add_arp_neighbors(&specs).await?;
    Ok(Empty::new())
}

/// GetIPTables: `iptables-save` / `ip6tables-save` output.
pub(crate) async fn get_ip_tables(rpc: &Rpc, req: GetIPTablesRequest) -> Result<GetIPTablesResponse, Error> {
    let mut r = GetIPTablesResponse::new();
    r.data = rpc.sandbox.get_ip_tables(req.is_ipv6).await?;
    Ok(r)
}

/// SetIPTables: the request's rules through `iptables-restore` / `ip6tables-restore`.
pub(crate) async fn set_ip_tables(rpc: &Rpc, req: SetIPTablesRequest) -> Result<SetIPTablesResponse, Error> {
    let mut r = SetIPTablesResponse::new();
    r.data = rpc.sandbox.set_ip_tables(req.is_ipv6, req.data).await?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dest: &str, gw: &str, dev: &str) -> Route {
        let mut r = Route::new();
        r.dest = dest.into();
        r.gateway = gw.into();
        r.device = dev.into();
        r
    }

    fn err(r: Result<RouteSpec, NetError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn routes_as_kata_runtimes_send_them() {
        // Go runtime: a default route has an empty dest; source is the preferred source.
        let mut r = route("", "10.88.0.1", "eth0");
        r.source = "10.88.0.5".into();
        let s = route_spec(0, &r).unwrap();
        assert_eq!(s.dest.to_string(), "0.0.0.0/0");
        assert_eq!(s.source, Source::Pref("10.88.0.5".parse().unwrap()));
        // IPv6 default route, family given.
        let mut r = route("", "fe80::1", "eth0");
        r.family = family(true);
        assert_eq!(route_spec(0, &r).unwrap().dest.to_string(), "::/0");
        // runtime-rs: flags and mtu.
        let mut r = route("169.254.1.1/32", "", "eth0");
        r.scope = 253;
        r.flags = 4;
        r.mtu = 1450;
        let s = route_spec(1, &r).unwrap();
        assert_eq!((s.scope, s.flags, s.mtu), (253, 4, 1450));
        // A default route without gateway takes its family from `family`.
        let mut r = route("", "", "eth0");
        r.family = family(true);
        assert!(route_spec(0, &r).unwrap().dest.is_v6());
    }

    #[test]
    fn bad_routes_name_the_field() {
        assert_eq!(
            err(route_spec(2, &route("10.0.0.0/8", "", ""))),
            "routes[2].device: empty, want the interface's name"
        );
        assert!(err(route_spec(0, &route("10.0.0.0/33", "", "eth0"))).starts_with("routes[0].dest: "));
        assert!(err(route_spec(0, &route("", "10.0.0.300", "eth0"))).starts_with("routes[0].gateway: "));
        assert_eq!(
            err(route_spec(0, &route("10.88.0.5/16", "", "eth0"))),
            "routes[0].dest: 10.88.0.5/16 has host bits set (the prefix is 10.88.0.0/16)"
        );
        assert!(err(route_spec(0, &route("fd00::/64", "10.0.0.1", "eth0"))).contains("not all of one IP family"));
        let mut r = route("10.0.0.0/8", "", "eth0");
        r.family = family(true);
        assert!(err(route_spec(0, &r)).starts_with("routes[0].family: "));
        let mut r = route("10.0.0.0/8", "", "eth0");
        r.scope = 256;
        assert!(err(route_spec(0, &r)).starts_with("routes[0].scope: "));
        let mut r = route("10.0.0.0/8", "", "eth0");
        r.source = "10.0.0.x".into();
        assert!(err(route_spec(0, &r)).starts_with("routes[0].source: "));
    }

    #[test]
    fn interface_fields_are_checked() {
        let mut i = Interface::new();
        i.hwAddr = "02:42:ac:11:00:02".into();
        i.name = "eth0".into();
        i.mtu = 1500;
        i.raw_flags = IFF_NOARP;
        let mut a = IPAddress::new();
        a.address = "10.88.0.5".into();
        a.mask = "16".into();
        i.IPAddresses.push(a);
        let s = interface_spec(&i).unwrap();
        assert_eq!((s.name.as_deref(), s.mtu, s.noarp), (Some("eth0"), Some(1500), true));
        assert_eq!(s.addrs[0].to_string(), "10.88.0.5/16");

        let mut bad = i.clone();
        bad.hwAddr = "02:42:ac:11:00".into();
        assert!(interface_spec(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("interface.hwAddr: "));
        let mut bad = i.clone();
        bad.IPAddresses[0].mask = "40".into();
        assert!(interface_spec(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("interface.IPAddresses[0].mask: "));
        let mut bad = i.clone();
        bad.name = "a-name-that-is-too-long".into();
        assert!(interface_spec(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("interface.name: "));
        let mut bad = i;
        bad.mtu = 1 << 40;
        assert!(interface_spec(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("interface.mtu: "));
    }
}
