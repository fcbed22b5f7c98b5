//! The mount namespaces of a sandbox's containers, held open by the agent.
//!
//! The last reference to a mount namespace tears it down: every mount
//! unmounted, an expedited RCU grace period, each filesystem's superblock
//! let go. Left to the init, that ran in its exit before its parent was
//! told: `exit_group` to zombie took 0.21 ms of every WaitProcess, ~0.15 ms
//! of it this (`sched_switch` tracing). Held here, the init exits at once.
//! RemoveContainer parks the namespace; it is closed after the answer
//! ([`super::settling`]), and before any storage is torn down: a filesystem
//! still mounted in a parked namespace keeps its device in use, and the host
//! unplugs a device once its storage is released.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::lock;

/// The mount namespace of `pid`, when `spec` gives it one of its own (none
/// joined by path). `None` when it cannot be opened (the init already gone):
/// the init then tears it down itself, as before.
pub(crate) fn hold(pid: i32, spec: &Spec) -> Option<OwnedFd> {
    let own = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none())
        });
    if !own {
        return None;
    }
    let path = format!("/proc/{pid}/ns/mnt");
    rustjail::open::open(
        path.as_ref(),
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
}

/// Namespaces of removed containers, still to be closed.
#[derive(Default)]
pub(crate) struct Parked {
    fds: Mutex<Vec<OwnedFd>>,
}

impl Parked {
    /// Keeps `fd` until [`Parked::close_all`].
    pub(crate) fn park(&self, fd: OwnedFd) {
        lock(&self.fds).push(fd);
    }

    /// Closes every parked namespace (each close pays its teardown). Returns
    /// only once they are all gone, also those another thread is closing.
    pub(crate) fn close_all(&self) {
        let mut fds = lock(&self.fds);
        fds.clear();
    }

    /// What a storage manager runs before it tears a storage down.
    pub(crate) fn closer(self: &Arc<Self>) -> Box<dyn Fn() + Send + Sync> {
        let parked = self.clone();
        Box::new(move || parked.close_all())
    }

    /// How many are parked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.fds).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    fn spec(mount: Option<Option<&str>>) -> Spec {
        let mut ns = vec![LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Pid)
            .build()
            .unwrap()];
        if let Some(path) = mount {
            let mut b = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Mount);
            if let Some(p) = path {
                b = b.path(p);
            }
            ns.push(b.build().unwrap());
        }
        SpecBuilder::default()
            .linux(LinuxBuilder::default().namespaces(ns).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn only_a_mount_namespace_of_its_own_is_held() {
        let me = std::process::id() as i32;
        assert!(hold(me, &spec(Some(None))).is_some());
        assert!(hold(me, &spec(None)).is_none(), "no mount namespace of its own");
        assert!(
            hold(me, &spec(Some(Some("/proc/1/ns/mnt")))).is_none(),
            "joined by path"
        );
        assert!(hold(i32::MAX, &spec(Some(None))).is_none(), "no such process");
    }

    #[test]
    fn close_all_closes_every_parked_descriptor() {
        let p = Parked::default();
        let (r1, w1) = nix::unistd::pipe().unwrap();
        let (r2, w2) = nix::unistd::pipe().unwrap();
        p.park(w1);
        p.park(w2);
        assert_eq!(p.len(), 2);
        p.close_all();
        assert_eq!(p.len(), 0);
        // Each read end sees its last writer gone.
        let mut buf = [0u8; 1];
        assert_eq!(
            nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r1), &mut buf).unwrap(),
            0
        );
        assert_eq!(
            nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r2), &mut buf).unwrap(),
            0
        );
    }
}
