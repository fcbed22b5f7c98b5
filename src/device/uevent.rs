//! Kernel uevents: parsing, and the hub that keeps what arrived and wakes the
//! waiters. The listener (netlink `NETLINK_KOBJECT_UEVENT`, kernel multicast
//! group 1) runs on its own thread from before the server accepts requests.
//!
//! The hub's one lock covers both the events seen so far and the waiters, so a
//! waiter that registers after its event arrived finds the event in the store,
//! and one that registers before is woken by the listener: nothing is missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Events kept for late waiters; older ones are dropped first.
const KEEP: usize = 4096;

/// One kernel uevent (the fields the device handlers use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `change`, `bind`, ...
    pub action: String,
    /// Path under sysfs, starting with `/devices/`.
    pub devpath: String,
    /// `block`, `scsi`, `pci`, ...
    pub subsystem: String,
    /// Node name under /dev (`sda`), empty when there is none.
    pub devname: String,
    /// `disk` or `partition` for block devices.
    pub devtype: String,
    /// Major number, when the device has a node.
    pub major: Option<u32>,
    /// Minor number, when the device has a node.
    pub minor: Option<u32>,
}

impl Uevent {
    /// Parses a kernel uevent datagram (`action@devpath\0KEY=VALUE\0...`); `None`
    /// for anything else (udev's `libudev` messages included).
    pub fn parse(buf: &[u8]) -> Option<Uevent> {
        let mut parts = buf.split(|&b| b == 0).filter(|p| !p.is_empty());
        let header = std::str::from_utf8(parts.next()?).ok()?;
        if !header.contains('@') {
            return None;
        }
        let mut ev = Uevent::default();
        for p in parts {
            let Ok(kv) = std::str::from_utf8(p) else { continue };
            let Some((k, v)) = kv.split_once('=') else { continue };
            match k {
                "ACTION" => ev.action = v.to_string(),
                "DEVPATH" => ev.devpath = v.to_string(),
                "SUBSYSTEM" => ev.subsystem = v.to_string(),
                "DEVNAME" => ev.devname = v.to_string(),
                "DEVTYPE" => ev.devtype = v.to_string(),
                "MAJOR" => ev.major = v.parse().ok(),
                "MINOR" => ev.minor = v.parse().ok(),
                _ => {}
            }
        }
        (!ev.action.is_empty() && !ev.devpath.is_empty()).then_some(ev)
    }
}

/// Decides whether an event is the one a waiter wants.
pub type Matcher = Arc<dyn Fn(&Uevent) -> bool + Send + Sync>;

struct Waiter {
    id: u64,
    matcher: Matcher,
    tx: oneshot::Sender<Uevent>,
}

#[derive(Default)]
struct Inner {
    seen: VecDeque<Uevent>,
    waiters: Vec<Waiter>,
    next_id: u64,
}

/// What [`Hub::register`] found: the event at once, or a ticket to wait on.
pub enum Registration {
    /// Already there (seen before, or found by the probe).
    Found(Uevent),
    /// Not yet: the receiver fires when the listener delivers a match.
    Waiting {
        /// Id to cancel the waiter with.
        id: u64,
        /// Fires with the matching event.
        rx: oneshot::Receiver<Uevent>,
    },
}

/// Events seen so far and the waiters for future ones, under one lock.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Hub {
        Hub::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `ev` and wakes every waiter it matches. A `remove` forgets the
    /// earlier events of the same device, so a stale `add` never matches.
    pub fn deliver(&self, ev: Uevent) {
        let mut inner = self.lock();
        if ev.action == "remove" {
            inner.seen.retain(|e| e.devpath != ev.devpath);
        } else {
            if inner.seen.len() == KEEP {
                inner.seen.pop_front();
            }
            inner.seen.push_back(ev.clone());
        }
        let mut i = 0;
        while i < inner.waiters.len() {
            if (inner.waiters[i].matcher)(&ev) {
                let w = inner.waiters.swap_remove(i);
                let _ = w.tx.send(ev.clone());
            } else {
                i += 1;
            }
        }
    }

    /// Under the lock: looks for a match among the events seen (newest first),
    /// then asks `probe` (e.g. a sysfs scan for devices that came before the
    /// listener), and only then registers a waiter.
    pub fn register(&self, matcher: Matcher, probe: impl FnOnce() -> Option<Uevent>) -> Registration {
        let mut inner = self.lock();
        if let Some(ev) = inner.seen.iter().rev().find(|e| matcher(e)) {
            return Registration::Found(ev.clone());
        }
        if let Some(ev) = probe() {
            return Registration::Found(ev);
        }
        let (tx, rx) = oneshot::channel();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.waiters.push(Waiter { id, matcher, tx });
        Registration::Waiting { id, rx }
    }

    /// Drops a waiter that gave up.
    pub fn cancel(&self, id: u64) {
        self.lock().waiters.retain(|w| w.id != id);
    }

    /// Number of waiters registered.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.lock().waiters.len()
    }
}

/// Opens the uevent socket and starts the listener thread feeding `hub`.
pub fn start_listener(hub: Arc<Hub>, log: slog::Logger) -> std::io::Result<()> {
    use nix::sys::socket::{
        bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
    };
    use std::os::fd::AsRawFd;

    let sock = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .map_err(|e| std::io::Error::other(format!("socket(AF_NETLINK, NETLINK_KOBJECT_UEVENT): {e}")))?;
    // A burst of hot-plug events must not overflow the default buffer.
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt on a socket we own with a pointer to a c_int that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        slog::debug!(
            log,
            "setsockopt(uevent socket, SO_RCVBUFFORCE): {}",
            std::io::Error::last_os_error()
        );
    }
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 1))
        .map_err(|e| std::io::Error::other(format!("bind(NETLINK_KOBJECT_UEVENT, group 1): {e}")))?;
    std::thread::Builder::new().name("uevent".into()).spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => {
                    if let Some(ev) = Uevent::parse(&buf[..n]) {
                        slog::trace!(log, "uevent"; "action" => &ev.action, "devpath" => &ev.devpath,
                                     "subsystem" => &ev.subsystem, "devname" => &ev.devname);
                        hub.deliver(ev);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                // ENOBUFS: events were lost; waiters still probe sysfs on their next try.
                Err(nix::errno::Errno::ENOBUFS) => slog::warn!(log, "recv(uevent socket): ENOBUFS, events lost"),
                Err(e) => {
                    slog::error!(log, "recv(uevent socket): {e}; uevent listener stops");
                    return;
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(action: &str, devpath: &str, kv: &[&str]) -> Vec<u8> {
        let mut v = format!("{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0").into_bytes();
        for s in kv {
            v.extend_from_slice(s.as_bytes());
            v.push(0);
        }
        v
    }

    fn block(action: &str, devpath: &str, name: &str) -> Uevent {
        Uevent::parse(&raw(
            action,
            devpath,
            &[
                "SUBSYSTEM=block",
                &format!("DEVNAME={name}"),
                "DEVTYPE=disk",
                "MAJOR=8",
                "MINOR=0",
            ],
        ))
        .unwrap()
    }

    #[test]
    fn parses_kernel_events_and_skips_udev_ones() {
        let ev = block("add", "/devices/x/block/sda", "sda");
        assert_eq!(ev.action, "add");
        assert_eq!(ev.subsystem, "block");
        assert_eq!(ev.devname, "sda");
        assert_eq!((ev.major, ev.minor), (Some(8), Some(0)));
        assert!(Uevent::parse(b"libudev\0\xfe\xed").is_none());
        assert!(Uevent::parse(b"").is_none());
    }

    #[test]
    fn event_before_registration_is_found() {
        let hub = Hub::new();
        hub.deliver(block("add", "/devices/x/block/sda", "sda"));
        let m: Matcher = Arc::new(|e| e.devname == "sda");
        assert!(matches!(hub.register(m, || None), Registration::Found(e) if e.devname == "sda"));
    }

    #[test]
    fn removed_device_is_forgotten_and_waiter_woken_later() {
        let hub = Hub::new();
        hub.deliver(block("add", "/devices/x/block/sda", "sda"));
        hub.deliver(block("remove", "/devices/x/block/sda", "sda"));
        let m: Matcher = Arc::new(|e| e.devname == "sda" && e.action == "add");
        let Registration::Waiting { mut rx, .. } = hub.register(m, || None) else {
            panic!("a removed device must not be found")
        };
        assert_eq!(hub.waiting(), 1);
        hub.deliver(block("add", "/devices/y/block/sdb", "sdb"));
        assert!(rx.try_recv().is_err());
        hub.deliver(block("add", "/devices/x/block/sda", "sda"));
        assert_eq!(rx.try_recv().unwrap().devpath, "/devices/x/block/sda");
        assert_eq!(hub.waiting(), 0);
    }

    #[test]
    fn probe_result_is_used_and_cancel_drops_the_waiter() {
        let hub = Hub::new();
        let m: Matcher = Arc::new(|_| false);
        let probed = block("add", "/devices/p/block/vda", "vda");
        assert!(matches!(
            hub.register(m.clone(), || Some(probed.clone())),
            Registration::Found(_)
        ));
        let Registration::Waiting { id, .. } = hub.register(m, || None) else {
            panic!()
        };
        hub.cancel(id);
        assert_eq!(hub.waiting(), 0);
    }
}
