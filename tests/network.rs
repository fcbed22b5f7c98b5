//! Guest networking on the real agent (root): the agent runs inside a network
//! namespace the test makes (`ip netns exec`), with veth pairs standing in for
//! the VM's NICs; requests are built as Kata's Go runtime and runtime-rs build
//! them for a pod with a CNI veth interface. Nothing outside the namespace changes.

mod common;

use common::containers::SVC;
use common::netns::Netns;
use common::{call, Agent};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use protocols::types::{ARPNeighbor, IPAddress, IPFamily, Interface, Route};
use serde_json::Value;
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

const MAC: &str = "02:42:ac:11:00:02";

fn family(v6: bool) -> protobuf::EnumOrUnknown<IPFamily> {
    protobuf::EnumOrUnknown::new(if v6 { IPFamily::v6 } else { IPFamily::v4 })
}

fn ip(addr: &str, mask: &str) -> IPAddress {
    let mut a = IPAddress::new();
    a.family = family(addr.contains(':'));
    a.address = addr.into();
    a.mask = mask.into();
    a
}

/// The interface Kata's Go runtime sends for a CNI veth endpoint
/// (`generateVCNetworkStructures`): device and name alike, type veth, NOARP bit only.
fn go_interface(mac: &str, name: &str, addrs: &[(&str, &str)], mtu: u64) -> Interface {
    let mut i = Interface::new();
    i.device = name.into();
    i.name = name.into();
    i.IPAddresses = addrs.iter().map(|(a, m)| ip(a, m)).collect();
    i.mtu = mtu;
    i.hwAddr = mac.into();
    i.type_ = "veth".into();
    i
}

fn route(dest: &str, gw: &str, dev: &str, scope: u32) -> Route {
    let mut r = Route::new();
    r.dest = dest.into();
    r.gateway = gw.into();
    r.device = dev.into();
    r.scope = scope;
    r.family = family(dest.contains(':') || gw.contains(':'));
    r
}

async fn update_interface(c: &Client, i: Interface) -> Result<Interface, (Code, String)> {
    let mut r = UpdateInterfaceRequest::new();
    r.interface = protobuf::MessageField::some(i);
    call(c, SVC, "UpdateInterface", &r).await
}

async fn update_routes(c: &Client, routes: Vec<Route>) -> Result<Routes, (Code, String)> {
    let mut rs = Routes::new();
    rs.Routes = routes;
    let mut r = UpdateRoutesRequest::new();
    r.routes = protobuf::MessageField::some(rs);
    call(c, SVC, "UpdateRoutes", &r).await
}

fn start(ns: &Netns, env: &[(&str, &str)]) -> Agent {
    Agent::start_in(&ns.exec_prefix(), &["--hotplug-timeout", "1"], env)
}

/// `ip -j addr show dev` as (address/prefix) strings, link-local ones left out.
fn addrs(ns: &Netns, dev: &str) -> Vec<String> {
    ns.json(&["addr", "show", "dev", dev])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn link(ns: &Netns, dev: &str) -> Value {
    ns.json(&["link", "show", "dev", dev])[0].clone()
}

fn is_up(l: &Value) -> bool {
    l["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

/// `ip route` lines of the main table (IPv4 or IPv6), proto kernel left out.
fn routes(ns: &Netns, v6: bool) -> Vec<String> {
    let fam = if v6 { "-6" } else { "-4" };
    ns.ip(&[fam, "route", "show", "table", "main"])
        .lines()
        .filter(|l| !l.contains("proto kernel"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn pod_network_as_kata_runtimes_send_it() {
    let ns = Netns::new("pod");
    // The VM's NIC as qemu gives it: the MAC the host chose, a kernel name, down.
    ns.veth("ens3", MAC, "host0");
    let agent = start(&ns, &[]);
    let c = agent.client().await;

    let want = go_interface(MAC, "eth0", &[("10.88.0.5", "16"), ("fd00:88::5", "64")], 1450);
    let got = update_interface(&c, want.clone()).await.unwrap();
    assert_eq!(got, want, "kata-agent answers with the requested interface");
    let l = link(&ns, "eth0");
    assert_eq!(l["address"], MAC);
    assert_eq!(l["mtu"], 1450);
    assert!(is_up(&l), "{l}");
    assert_eq!(addrs(&ns, "eth0"), ["10.88.0.5/16", "fd00:88::5/64"]);

    // Calico-like routes, in an order that needs the agent's sorting: the
    // gateway 169.254.1.1 is reachable only through the link route after it.
    let req = vec![
        route("", "169.254.1.1", "eth0", 0),
        route("10.96.0.0/12", "169.254.1.1", "eth0", 0),
        route("169.254.1.1/32", "", "eth0", 253),
        route("", "fd00:88::1", "eth0", 0),
    ];
    let answer = update_routes(&c, req).await.unwrap();
    assert_eq!(
        routes(&ns, false),
        [
            "default via 169.254.1.1 dev eth0",
            "10.96.0.0/12 via 169.254.1.1 dev eth0",
            "169.254.1.1 dev eth0 scope link",
        ]
    );
    assert!(
        routes(&ns, true).contains(&"default via fd00:88::1 dev eth0 metric 1024 pref medium".to_string()),
        "{:?}",
        routes(&ns, true)
    );
    // The answer is the main table afterwards (kernel routes included), as kata-agent's.
    let find = |dest: &str| answer.Routes.iter().find(|r| r.dest == dest).cloned();
    let d = find("0.0.0.0/0").expect("default route in the answer");
    assert_eq!((d.gateway.as_str(), d.device.as_str()), ("169.254.1.1", "eth0"));
    let k = find("10.88.0.0/16").expect("the kernel's subnet route");
    assert_eq!((k.scope, k.source.as_str()), (253, "10.88.0.5"));
    let v6 = find("::/0").expect("IPv6 default route");
    assert_eq!(v6.family.enum_value(), Ok(IPFamily::v6));
    let listed: Routes = call(&c, SVC, "ListRoutes", &ListRoutesRequest::new()).await.unwrap();
    assert_eq!(listed, answer);

    // runtime-rs also sends rtm_flags and the route MTU; a second UpdateRoutes replaces the first.
    let mut r = route("10.200.0.0/16", "192.0.2.1", "eth0", 0);
    r.flags = 4; // RTNH_F_ONLINK: the gateway is on the link although no address covers it
    r.mtu = 1400;
    let mut src = route("10.201.0.0/16", "", "eth0", 253);
    src.source = "10.88.0.5".into();
    let answer = update_routes(&c, vec![r, src]).await.unwrap();
    assert_eq!(
        routes(&ns, false),
        [
            "10.200.0.0/16 via 192.0.2.1 dev eth0 onlink mtu 1400",
            "10.201.0.0/16 dev eth0 scope link src 10.88.0.5",
        ]
    );
    let on = answer.Routes.iter().find(|r| r.dest == "10.200.0.0/16").unwrap();
    assert_eq!((on.flags & 4, on.mtu), (4, 1400));
    assert!(
        routes(&ns, true).iter().all(|l| !l.starts_with("default")),
        "old IPv6 default route gone"
    );

    // A static neighbour, as the Go runtime sends the CNI's permanent entries.
    let mut n = ARPNeighbor::new();
    n.toIPAddress = protobuf::MessageField::some(ip("10.88.0.1", ""));
    n.device = "eth0".into();
    n.lladdr = "02:42:ac:11:00:01".into();
    n.state = 0x80;
    let mut ns_list = ARPNeighbors::new();
    ns_list.ARPNeighbors = vec![n];
    let mut req = AddARPNeighborsRequest::new();
    req.neighbors = protobuf::MessageField::some(ns_list);
    let _: Empty = call(&c, SVC, "AddARPNeighbors", &req).await.unwrap();
    let neigh = ns.ip(&["neigh", "show", "dev", "eth0"]);
    assert!(
        neigh.contains("10.88.0.1 lladdr 02:42:ac:11:00:01 PERMANENT"),
        "{neigh}"
    );

    // ListInterfaces: lo and eth0 with its addresses.
    let list: Interfaces = call(&c, SVC, "ListInterfaces", &ListInterfacesRequest::new())
        .await
        .unwrap();
    let eth0 = list.Interfaces.iter().find(|i| i.name == "eth0").expect("eth0 listed");
    assert_eq!(
        (eth0.hwAddr.as_str(), eth0.mtu, eth0.type_.as_str()),
        (MAC, 1450, "veth")
    );
    let a: Vec<(String, String, bool)> = eth0
        .IPAddresses
        .iter()
        .map(|a| {
            (
                a.address.clone(),
                a.mask.clone(),
                a.family.enum_value() == Ok(IPFamily::v6),
            )
        })
        .collect();
    assert!(a.contains(&("10.88.0.5".into(), "16".into(), false)), "{a:?}");
    assert!(a.contains(&("fd00:88::5".into(), "64".into(), true)), "{a:?}");
    assert!(list.Interfaces.iter().any(|i| i.name == "lo"));
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn renaming_swaps_with_the_link_that_has_the_name() {
    let ns = Netns::new("swap");
    ns.veth("ens4", MAC, "host0");
    ns.veth("eth0", "02:42:ac:11:00:09", "host1");
    ns.ip(&["link", "set", "eth0", "up"]);
    let agent = start(&ns, &[]);
    let c = agent.client().await;
    update_interface(&c, go_interface(MAC, "eth0", &[("10.88.0.5", "16")], 1500))
        .await
        .unwrap();
    assert_eq!(link(&ns, "eth0")["address"], MAC);
    let other = link(&ns, "ens4");
    assert_eq!(other["address"], "02:42:ac:11:00:09");
    assert!(is_up(&other), "the other link keeps its state: {other}");
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn bad_requests_name_the_field_and_change_nothing() {
    let ns = Netns::new("bad");
    ns.veth("ens3", MAC, "host0");
    ns.ip(&["addr", "add", "192.168.7.7/24", "dev", "ens3"]);
    ns.ip(&["link", "set", "ens3", "up"]);
    ns.ip(&["route", "add", "default", "via", "192.168.7.1", "dev", "ens3"]);
    let before = (link(&ns, "ens3"), addrs(&ns, "ens3"), routes(&ns, false));
    let agent = start(&ns, &[]);
    let c = agent.client().await;
    let unchanged = || {
        let now = (link(&ns, "ens3"), addrs(&ns, "ens3"), routes(&ns, false));
        assert_eq!(now.0["mtu"], before.0["mtu"]);
        assert_eq!(now.0["flags"], before.0["flags"]);
        assert_eq!((&now.1, &now.2), (&before.1, &before.2));
    };

    let e = update_interface(&c, go_interface("02:42:ac:11:00", "eth0", &[], 1500))
        .await
        .unwrap_err();
    assert_eq!(e.0, Code::INVALID_ARGUMENT);
    assert!(
        e.1.starts_with("update interface: interface.hwAddr: \"02:42:ac:11:00\""),
        "{}",
        e.1
    );

    let e = update_interface(&c, go_interface("02:00:00:00:00:99", "eth0", &[], 1500))
        .await
        .unwrap_err();
    assert_eq!(e.0, Code::NOT_FOUND);
    assert!(
        e.1.contains("no network interface has MAC address 02:00:00:00:00:99"),
        "{}",
        e.1
    );

    let e = update_interface(&c, go_interface(MAC, "eth0", &[("10.88.0.5", "33")], 1500))
        .await
        .unwrap_err();
    assert_eq!(e.0, Code::INVALID_ARGUMENT);
    assert!(e.1.contains("interface.IPAddresses[0].mask: \"33\""), "{}", e.1);

    let e = update_interface(&c, go_interface(MAC, "eth0", &[], 70000))
        .await
        .unwrap_err();
    assert_eq!(e.0, Code::INVALID_ARGUMENT);
    assert!(
        e.1.contains("interface.mtu: 70000 is outside the range 68..=65535 of ens3"),
        "{}",
        e.1
    );
    unchanged();

    // The kernel refuses the second address (multicast) after the link was
    // renamed, resized and given the first: all of it is undone.
    let e = update_interface(
        &c,
        go_interface(MAC, "eth0", &[("10.88.0.5", "16"), ("ff02::1", "128")], 1400),
    )
    .await
    .unwrap_err();
    assert_eq!(e.0, Code::INVALID_ARGUMENT, "{}", e.1);
    assert!(
        e.1.contains("interface.IPAddresses[1]: add address ff02::1/128"),
        "{}",
        e.1
    );
    unchanged();

    // A NIC that never appears.
    let mut hot = go_interface(MAC, "eth1", &[], 1500);
    hot.devicePath = "1e".into();
    let e = update_interface(&c, hot.clone()).await.unwrap_err();
    assert_eq!(e.0, Code::DEADLINE_EXCEEDED);
    assert!(
        e.1.contains("interface.devicePath: network interface at PCI path 1e did not appear within 1s"),
        "{}",
        e.1
    );
    hot.devicePath = "1e/zz".into();
    let e = update_interface(&c, hot).await.unwrap_err();
    assert_eq!(e.0, Code::INVALID_ARGUMENT);
    assert!(e.1.contains("interface.devicePath: "), "{}", e.1);

    // Routes: a missing device is found before anything changes ...
    let e = update_routes(
        &c,
        vec![route("10.1.0.0/16", "", "ens3", 253), route("", "10.1.0.1", "eth9", 0)],
    )
    .await
    .unwrap_err();
    assert_eq!(e.0, Code::NOT_FOUND);
    assert!(e.1.contains("routes[1].device: no interface named \"eth9\""), "{}", e.1);
    let e = update_routes(&c, vec![route("10.1.0.0/33", "", "ens3", 253)])
        .await
        .unwrap_err();
    assert_eq!(e.0, Code::INVALID_ARGUMENT);
    assert!(e.1.contains("routes[0].dest: "), "{}", e.1);
    unchanged();
    // ... and an unreachable gateway undoes the routes already replaced.
    let e = update_routes(
        &c,
        vec![
            route("10.1.0.0/16", "", "ens3", 253),
            route("", "203.0.113.1", "ens3", 0),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(e.0, Code::INVALID_ARGUMENT, "{}", e.1);
    assert!(
        e.1.contains("routes[1] (0.0.0.0/0 via 203.0.113.1 dev ens3)"),
        "{}",
        e.1
    );
    unchanged();

    // Neighbours: every entry is checked before the first is added.
    let mut good = ARPNeighbor::new();
    good.toIPAddress = protobuf::MessageField::some(ip("192.168.7.9", ""));
    good.device = "ens3".into();
    good.lladdr = "02:00:00:00:00:09".into();
    let mut bad = good.clone();
    bad.lladdr = "02:00:00:00:00:0x".into();
    let mut list = ARPNeighbors::new();
    list.ARPNeighbors = vec![good, bad];
    let mut req = AddARPNeighborsRequest::new();
    req.neighbors = protobuf::MessageField::some(list);
    let e = call::<_, Empty>(&c, SVC, "AddARPNeighbors", &req).await.unwrap_err();
    assert_eq!(e.0, Code::INVALID_ARGUMENT);
    assert!(e.1.contains("neighbors[1].lladdr: "), "{}", e.1);
    assert!(!ns.ip(&["neigh", "show", "dev", "ens3"]).contains("192.168.7.9"));
    let e = call::<_, Empty>(&c, SVC, "AddARPNeighbors", &AddARPNeighborsRequest::new())
        .await
        .unwrap_err();
    assert_eq!(e, (Code::INVALID_ARGUMENT, "empty add arp neighbours request".into()));
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn iptables_round_trip_in_the_agents_namespace() {
    let ns = Netns::new("ipt");
    let agent = start(&ns, &[]);
    let c = agent.client().await;
    for v6 in [false, true] {
        let src = if v6 { "fd00:99::/64" } else { "10.99.0.0/16" };
        let rules = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A INPUT -s {src} -p tcp -m tcp --dport 80 -j DROP\nCOMMIT\n"
        );
        let mut set = SetIPTablesRequest::new();
        set.is_ipv6 = v6;
        set.data = rules.into_bytes();
        let _: SetIPTablesResponse = call(&c, SVC, "SetIPTables", &set).await.unwrap();
        let mut get = GetIPTablesRequest::new();
        get.is_ipv6 = v6;
        let got: GetIPTablesResponse = call(&c, SVC, "GetIPTables", &get).await.unwrap();
        let text = String::from_utf8(got.data).unwrap();
        assert!(
            text.contains(&format!("-A INPUT -s {src} -p tcp -m tcp --dport 80 -j DROP")),
            "{text}"
        );
        // The rules live in the agent's namespace, nowhere else.
        let mine = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                if v6 { "ip6tables-save" } else { "iptables-save" },
            ])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&mine.stdout).contains(src));
    }
    // A large ruleset: half a MiB into iptables-restore's stdin, as much back
    // from iptables-save's stdout (the agent's pipes must not stall).
    let mut big = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..8000 {
        big.push_str(&format!(
            "-A FORWARD -s 10.{}.{}.0/24 -p udp -m udp --dport {} -j DROP\n",
            i / 256,
            i % 256,
            1000 + i
        ));
    }
    big.push_str("COMMIT\n");
    let mut set = SetIPTablesRequest::new();
    set.data = big.into_bytes();
    assert!(set.data.len() > 400 << 10);
    let _: SetIPTablesResponse = call(&c, SVC, "SetIPTables", &set).await.unwrap();
    let got: GetIPTablesResponse = call(&c, SVC, "GetIPTables", &GetIPTablesRequest::new()).await.unwrap();
    let text = String::from_utf8(got.data).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("-A FORWARD ")).count(), 8000);
    assert!(text.contains("-A FORWARD -s 10.31.63.0/24 -p udp -m udp --dport 8999 -j DROP"));

    let mut bad = SetIPTablesRequest::new();
    bad.data = b"*filter\n-A INPUT -j NO-SUCH-CHAIN\nCOMMIT\n".to_vec();
    let e = call::<_, SetIPTablesResponse>(&c, SVC, "SetIPTables", &bad)
        .await
        .unwrap_err();
    assert_eq!(e.0, Code::INVALID_ARGUMENT);
    assert!(e.1.contains("iptables-restore failed (exit status"), "{}", e.1);
    assert!(e.1.contains("NO-SUCH-CHAIN"), "{}", e.1);

    // A guest image without the tools.
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().display().to_string();
    let agent = start(&ns, &[("PITH_NET_TOOLS_DIRS", &dir)]);
    let c = agent.client().await;
    let e = call::<_, GetIPTablesResponse>(&c, SVC, "GetIPTables", &GetIPTablesRequest::new())
        .await
        .unwrap_err();
    assert_eq!(e.0, Code::FAILED_PRECONDITION);
    assert!(e.1.contains("iptables-save is not in the guest image"), "{}", e.1);
}

/// Requests encoded by Google's protobuf from Kata's own message definitions
/// (tests/fixtures/golden/network), decoded by pith and applied by the agent.
#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn golden_requests_from_kata_runtimes() {
    use protobuf::Message;
    let bytes = |name: &str| std::fs::read(common::fixture(&format!("golden/network/{name}.bin"))).unwrap();
    // pith's types read every field of Kata's encoding.
    let ui = UpdateInterfaceRequest::parse_from_bytes(&bytes("update_interface_go")).unwrap();
    let want = go_interface(MAC, "eth0", &[("10.88.0.5", "16"), ("fd00:88::5", "64")], 1500);
    assert_eq!(*ui.interface, want);
    let rs = UpdateRoutesRequest::parse_from_bytes(&bytes("update_routes_rs")).unwrap();
    let r = &rs.routes.Routes[0];
    assert_eq!((r.flags, r.mtu, r.dest.as_str()), (4, 1400, "10.200.0.0/16"));
    assert!(
        rs.special_fields.unknown_fields().iter().next().is_none()
            && r.special_fields.unknown_fields().iter().next().is_none()
    );

    let ns = Netns::new("golden");
    ns.veth("ens3", MAC, "host0");
    let agent = start(&ns, &[]);
    let c = agent.client().await;
    let send = |method: &'static str, name: &'static str| {
        let c = &c;
        let payload = bytes(name);
        async move { common::call_raw(c, SVC, method, payload).await }
    };
    let echoed = Interface::parse_from_bytes(&send("UpdateInterface", "update_interface_go").await.unwrap()).unwrap();
    assert_eq!(echoed, want);
    send("UpdateRoutes", "update_routes_go").await.unwrap();
    assert_eq!(routes(&ns, false), ["default via 10.88.0.1 dev eth0"]);
    assert!(routes(&ns, true)
        .iter()
        .any(|l| l.starts_with("default via fd00:88::1 dev eth0")));
    send("UpdateRoutes", "update_routes_rs").await.unwrap();
    assert_eq!(
        routes(&ns, false),
        ["10.200.0.0/16 via 192.0.2.1 dev eth0 onlink mtu 1400"]
    );
    send("AddARPNeighbors", "add_arp_neighbors_go").await.unwrap();
    assert!(ns
        .ip(&["neigh", "show", "dev", "eth0"])
        .contains("10.88.0.1 lladdr 02:42:ac:11:00:01 PERMANENT"));
}
