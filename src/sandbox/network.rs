//! The guest's network, as the sandbox owns it: interfaces, routes, ARP
//! neighbours (`crate::net` on route netlink) and iptables (the image's tools,
//! their exits from the engine's reaper). A hot-plugged NIC is waited for
//! here, through the sandbox's [`crate::device::Devices`], as block devices are.

use std::fmt;

use super::error::{Error, Result};
use super::Sandbox;
use crate::device::pci::PciPath;
use crate::device::DeviceError;
use crate::net::iface::InterfaceSpec;
use crate::net::link::Link;
use crate::net::neigh::NeighborSpec;
use crate::net::parse::IpNet;
use crate::net::route::{RouteInfo, RouteSpec};
use crate::net::{iptables, NetError};

/// A networking request, named as kata-agent names it in its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetOp {
    /// UpdateInterface.
    UpdateInterface,
    /// UpdateRoutes.
    UpdateRoutes,
    /// ListInterfaces.
    ListInterfaces,
    /// ListRoutes.
    ListRoutes,
    /// AddARPNeighbors.
    AddArpNeighbors,
    /// GetIPTables.
    GetIpTables,
    /// SetIPTables.
    SetIpTables,
}

impl NetOp {
    /// `e`, as the failure of this request.
    pub(crate) fn err(self, e: NetError) -> Error {
        Error::Net { op: self, source: e }
    }
}

impl fmt::Display for NetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetOp::UpdateInterface => "update interface",
            NetOp::UpdateRoutes => "update routes",
            NetOp::ListInterfaces => "list interfaces",
            NetOp::ListRoutes => "list routes",
            NetOp::AddArpNeighbors => "add ARP neighbours",
            NetOp::GetIpTables => "get iptables",
            NetOp::SetIpTables => "set iptables",
        })
    }
}

impl Sandbox {
    /// UpdateInterface: waits for the NIC at PCI path `nic` first when the
    /// host names one (a hot-plugged NIC), then configures the link with
    /// `spec.mac`.
    pub(crate) async fn update_interface(&self, spec: &InterfaceSpec, nic: Option<&PciPath>) -> Result<()> {
        let op = NetOp::UpdateInterface;
        if let Some(path) = nic {
            self.devices.wait_net(path).await.map_err(|e| {
                let why = format!("{e} (interface.hwAddr {})", spec.mac);
                op.err(match e {
                    DeviceError::Timeout { .. } => NetError::Timeout(format!("interface.devicePath: {why}")),
                    DeviceError::BadAddress { .. } => NetError::invalid("interface.devicePath", why),
                    _ => NetError::Internal(format!("interface.devicePath: {why}")),
                })
            })?;
        }
        self.net.update_interface(spec).await.map_err(|e| op.err(e))
    }

    /// UpdateRoutes: the main table becomes `specs`; returns it afterwards.
    pub(crate) async fn update_routes(&self, specs: &[RouteSpec]) -> Result<Vec<RouteInfo>> {
        self.net
            .update_routes(specs)
            .await
            .map_err(|e| NetOp::UpdateRoutes.err(e))
    }

    /// ListInterfaces: every link with its addresses.
    pub(crate) async fn list_interfaces(&self) -> Result<Vec<(Link, Vec<IpNet>)>> {
        self.net
            .list_interfaces()
            .await
            .map_err(|e| NetOp::ListInterfaces.err(e))
    }

    /// ListRoutes: the main table.
    pub(crate) async fn list_routes(&self) -> Result<Vec<RouteInfo>> {
        self.net.list_routes().await.map_err(|e| NetOp::ListRoutes.err(e))
    }

    /// AddARPNeighbors.
    pub(crate) async fn add_arp_neighbors(&self, specs: &[NeighborSpec]) -> Result<()> {
        self.net
            .add_neighbors(specs)
            .await
            .map_err(|e| NetOp::AddArpNeighbors.err(e))
    }

    /// GetIPTables: what `iptables-save` (`ip6tables-save` when `v6`) prints.
    pub(crate) async fn get_ip_tables(&self, v6: bool) -> Result<Vec<u8>> {
        let exits = |pid| self.engine.watch_exit(pid);
        iptables::save(&self.net.tools, &exits, v6)
            .await
            .map_err(|e| NetOp::GetIpTables.err(e))
    }

    /// SetIPTables: `data` through `iptables-restore` (`ip6tables-restore`
    /// when `v6`); returns what it printed.
    pub(crate) async fn set_ip_tables(&self, v6: bool, data: Vec<u8>) -> Result<Vec<u8>> {
        let exits = |pid| self.engine.watch_exit(pid);
        iptables::restore(&self.net.tools, &exits, v6, data)
            .await
            .map_err(|e| NetOp::SetIpTables.err(e))
    }
}
