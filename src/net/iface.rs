//! UpdateInterface: the link with the host's MAC gets the host's name, MTU,
//! ARP setting and addresses, and comes up. Every step is undone when a later
//! one fails, so a refused request leaves the interface as it was.

use std::path::Path;

use super::addr::{self, Addr};
use super::link::{self, Link, LinkChange, IFF_NOARP, IFF_UP};
use super::nl::Nl;
use super::parse::{IpNet, Mac};
use super::route;
use super::NetError;

/// What the host wants an interface to look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// Finds the link.
    pub mac: Mac,
    /// New name; `None` keeps the current one.
    pub name: Option<String>,
    /// New MTU; `None` keeps the current one.
    pub mtu: Option<u32>,
    /// The addresses the link ends up with (besides IPv6 link-local ones).
    pub addrs: Vec<IpNet>,
    /// Turn ARP off (`IFF_NOARP` in the host's `raw_flags`).
    pub noarp: bool,
}

/// What was changed so far, to be undone on failure.
#[derive(Default)]
struct Done {
    renamed: bool,
    /// The link that held the wanted name, moved aside: its state before.
    moved: Option<Link>,
    set: bool,
    removed: Vec<Addr>,
    added: Vec<Addr>,
}

/// Applies `spec`. `procfs` is where `/proc` is (IPv6 on/off is read there).
pub async fn update(nl: &Nl, spec: &InterfaceSpec, procfs: &Path) -> Result<(), NetError> {
    let links = link::list(nl).await?;
    let target = link::by_mac(&links, &spec.mac).ok_or_else(|| {
        NetError::NotFound(format!(
            "interface.hwAddr: no network interface has MAC address {} (interfaces: {})",
            spec.mac,
            links
                .iter()
                .map(|l| match l.mac() {
                    Some(m) => format!("{} {m}", l.name),
                    None => l.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    if let Some(mtu) = spec.mtu {
        let (lo, hi) = (target.min_mtu.unwrap_or(0), target.max_mtu.unwrap_or(u32::MAX));
        if mtu < lo || mtu > hi {
            return Err(NetError::invalid(
                "interface.mtu",
                format!("{mtu} is outside the range {lo}..={hi} of {}", target.name),
            ));
        }
    }
    let name = spec.name.as_deref().filter(|n| *n != target.name);
    let holder = name.and_then(|n| link::by_name(&links, n)).cloned();
    let before_addrs: Vec<Addr> = addr::list(nl)
        .await?
        .into_iter()
        .filter(|a| a.index == target.index)
        .collect();
    let before_routes = route::snapshot_link(nl, target.index).await?;

    let mut done = Done::default();
    let r = apply(
        nl,
        spec,
        procfs,
        &target,
        name,
        holder.as_ref(),
        &before_addrs,
        &mut done,
    )
    .await;
    if let Err(e) = r {
        undo(nl, &target, &done).await;
        route::restore_missing(nl, &before_routes).await;
        return Err(e);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    nl: &Nl,
    spec: &InterfaceSpec,
    procfs: &Path,
    target: &Link,
    name: Option<&str>,
    holder: Option<&Link>,
    before_addrs: &[Addr],
    done: &mut Done,
) -> Result<(), NetError> {
    let who = target.name.as_str();
    // A running link cannot be renamed, and kata-agent configures it down.
    if target.is_up() {
        let down = LinkChange {
            flags: Some((0, IFF_UP)),
            ..Default::default()
        };
        link::set(nl, target.index, who, &down).await?;
    }
    // Another link has the wanted name: move it aside, and give it the
    // target's old name once the target has taken its own (kata-agent swaps too).
    if let Some(h) = holder {
        let aside = LinkChange {
            name: Some(aside_name(h.index)),
            flags: Some((0, IFF_UP)),
            ..Default::default()
        };
        link::set(nl, h.index, &h.name, &aside).await?;
        done.moved = Some(h.clone());
    }
    let noarp = if spec.noarp { IFF_NOARP } else { 0 };
    let change = LinkChange {
        name: name.map(str::to_string),
        mtu: spec.mtu.filter(|m| *m != target.mtu),
        flags: Some((noarp, IFF_NOARP)),
    };
    link::set(nl, target.index, who, &change).await?;
    done.set = true;
    done.renamed = name.is_some();
    let who = name.unwrap_or(who);
    if let Some(h) = holder {
        let back = LinkChange {
            name: Some(target.name.clone()),
            flags: Some((h.flags & IFF_UP, IFF_UP)),
            ..Default::default()
        };
        link::set(nl, h.index, &aside_name(h.index), &back).await?;
    }

    // Addresses: drop what the host did not ask for, then add (or replace) the rest.
    let v6 = addr::ipv6_enabled(procfs);
    let wanted: Vec<IpNet> = spec.addrs.iter().filter(|n| v6 || !n.is_v6()).copied().collect();
    for a in before_addrs {
        if !a.is_v6_link_local() && !wanted.contains(&a.net) {
            addr::del(nl, who, a).await?;
            done.removed.push(*a);
        }
    }
    for (i, net) in wanted.iter().enumerate() {
        addr::add(nl, target.index, who, net).await.map_err(|e| match e {
            NetError::Netlink { op, errno } => NetError::Netlink {
                op: format!("interface.IPAddresses[{i}]: {op}"),
                errno,
            },
            other => other,
        })?;
        let a = Addr {
            index: target.index,
            net: *net,
        };
        if !before_addrs.contains(&a) {
            done.added.push(a);
        }
    }

    let up = LinkChange {
        flags: Some((IFF_UP, IFF_UP)),
        ..Default::default()
    };
    link::set(nl, target.index, who, &up).await
}

/// A temporary name for a link moved out of the way (unique: its index).
fn aside_name(index: u32) -> String {
    format!("pith-mv{index}")
}

/// Best effort, in reverse: addresses, names, MTU and flags as they were.
async fn undo(nl: &Nl, target: &Link, done: &Done) {
    let who = "undo";
    for a in &done.added {
        let _ = addr::del(nl, who, a).await;
    }
    for a in &done.removed {
        let _ = addr::add(nl, a.index, who, &a.net).await;
    }
    let down = LinkChange {
        flags: Some((0, IFF_UP)),
        ..Default::default()
    };
    let _ = link::set(nl, target.index, who, &down).await;
    if let Some(h) = &done.moved {
        // The holder may carry the target's old name or the temporary one.
        let aside = LinkChange {
            name: Some(aside_name(h.index)),
            flags: Some((0, IFF_UP)),
            ..Default::default()
        };
        let _ = link::set(nl, h.index, who, &aside).await;
    }
    let back = LinkChange {
        name: done.renamed.then(|| target.name.clone()),
        mtu: done.set.then_some(target.mtu),
        flags: Some((target.flags & (IFF_UP | IFF_NOARP), IFF_UP | IFF_NOARP)),
    };
    let _ = link::set(nl, target.index, who, &back).await;
    if let Some(h) = &done.moved {
        let back = LinkChange {
            name: Some(h.name.clone()),
            flags: Some((h.flags & IFF_UP, IFF_UP)),
            ..Default::default()
        };
        let _ = link::set(nl, h.index, who, &back).await;
    }
}
