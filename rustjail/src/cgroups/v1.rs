//! cgroup v1 manager: one directory per mounted controller hierarchy (used in legacy and hybrid mode).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::devices::DeviceState;
use super::error::{Error, Result};
use super::mode::{own_v1_dir, Hierarchies, OwnCgroup};
use super::path::CgroupPath;
use super::{fs, FreezerState};

/// A container cgroup on cgroup v1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct V1Manager {
    /// Controller name -> cgroup directory (co-mounted controllers share a directory).
    paths: BTreeMap<String, PathBuf>,
    /// Controller name -> mount point of its hierarchy.
    mounts: BTreeMap<String, PathBuf>,
}

impl V1Manager {
    /// Resolves the container's directory in every mounted v1 controller hierarchy. The devices
    /// hierarchy is required: without it the container could open any device.
    pub fn new(h: &Hierarchies, own: &[OwnCgroup], path: &CgroupPath) -> Result<Self> {
        let mut paths = BTreeMap::new();
        let mut mounts = BTreeMap::new();
        for m in &h.v1 {
            let own_dir = own_v1_dir(own, m);
            let dir = path.dir_in(&m.mount_point, own_dir.as_deref());
            for c in m.controllers.iter().filter(|c| !c.starts_with("name=")) {
                paths.insert(c.clone(), dir.clone());
                mounts.insert(c.clone(), m.mount_point.clone());
            }
        }
        if !paths.contains_key("devices") {
            return Err(Error::MissingController {
                resource: "device rules".into(),
                controller: "devices".into(),
                detail: "no cgroup v1 hierarchy has it mounted; refusing to run containers without device isolation"
                    .into(),
            });
        }
        Ok(V1Manager { paths, mounts })
    }

    /// Builds a manager from known directories (e.g. restored after an agent restart).
    pub fn from_paths(paths: BTreeMap<String, PathBuf>, mounts: BTreeMap<String, PathBuf>) -> Self {
        V1Manager { paths, mounts }
    }

    /// Controller name -> cgroup directory.
    pub fn paths(&self) -> &BTreeMap<String, PathBuf> {
        &self.paths
    }

    /// Controller name -> hierarchy mount point.
    pub fn mounts(&self) -> &BTreeMap<String, PathBuf> {
        &self.mounts
    }

    /// The directory for `controller`, if that controller is mounted.
    pub fn path(&self, controller: &str) -> Option<&Path> {
        self.paths.get(controller).map(PathBuf::as_path)
    }

    /// The directory for `controller`, or an error saying which resource needed it.
    pub(crate) fn need(&self, controller: &str, resource: &str) -> Result<&Path> {
        self.path(controller).ok_or_else(|| Error::MissingController {
            resource: resource.into(),
            controller: controller.into(),
            detail: "no cgroup v1 hierarchy has it mounted".into(),
        })
    }

    /// Each distinct directory once, in the order of their bytes.
    fn unique_dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = self.paths.values().map(PathBuf::as_path).collect();
        sort_dedup(&mut dirs);
        dirs
    }

    /// Whether every controller sharing directory `dir` is made only on demand.
    fn on_demand_only(&self, dir: &Path) -> bool {
        self.paths
            .iter()
            .filter(|(_, d)| d.as_os_str() == dir.as_os_str())
            .all(|(c, _)| ON_DEMAND.contains(&c.as_str()))
    }

    /// The directories a container with resources `r` is put in: every one
    /// but those whose controllers are all made on demand and unused by `r`.
    fn dirs_for(&self, r: &LinuxResources) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = self
            .paths
            .iter()
            .filter(|(c, _)| !ON_DEMAND.contains(&c.as_str()) || uses(r, c))
            .map(|(_, d)| d.as_path())
            .collect();
        sort_dedup(&mut dirs);
        dirs
    }

    /// The directories the container is in: those made on demand only once made.
    fn joined_dirs(&self) -> Vec<&Path> {
        let mut dirs = self.unique_dirs();
        dirs.retain(|d| !self.on_demand_only(d) || d.exists());
        dirs
    }

    /// Creates the directory in every hierarchy; cpuset directories get cpuset.cpus/mems copied from
    /// their parents (an empty cpuset refuses tasks).
    pub fn create(&self) -> Result<()> {
        for d in self.unique_dirs() {
            fs::mkdir_all(d)?;
        }
        if let (Some(dir), Some(mount)) = (self.paths.get("cpuset"), self.mounts.get("cpuset")) {
            fill_cpuset(mount, dir, false)?;
        }
        Ok(())
    }

    /// Like [`V1Manager::create`], in the hierarchies a container with
    /// resources `r` needs: a hierarchy whose controllers are only made on
    /// demand ([`ON_DEMAND`]: net_cls, perf_event, ...) and which `r` does
    /// not use is left alone (the container stays in its parent's cgroup
    /// there), which saves a mkdir, a join and an rmdir each.
    /// [`V1Manager::apply`] makes one when a later update uses it. True when
    /// no hierarchy had the directory.
    pub fn create_new(&self, r: &LinuxResources) -> Result<bool> {
        let mut made = Vec::new();
        for d in self.dirs_for(r) {
            made.push((d, fs::mkdir_new(d)?));
        }
        if let (Some(dir), Some(mount)) = (self.paths.get("cpuset"), self.mounts.get("cpuset")) {
            if let Some(&(_, fresh)) = made.iter().find(|(d, _)| *d == dir.as_path()) {
                fill_cpuset(mount, dir, fresh)?;
            }
        }
        Ok(made.iter().all(|&(_, fresh)| fresh))
    }

    /// Moves process `pid` (all its threads) into the cgroup in every hierarchy it has.
    pub fn add_task(&self, pid: i32) -> Result<()> {
        if pid <= 0 {
            return Err(Error::invalid("pid", pid, "must be a positive process id"));
        }
        for d in self.joined_dirs() {
            fs::write(d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// How many files [`V1Manager::join_files`] lists.
    pub(crate) fn joined_count(&self) -> usize {
        self.joined_dirs().len()
    }

    /// The files [`V1Manager::join_self`] writes.
    pub(crate) fn join_files(&self) -> Vec<PathBuf> {
        self.joined_dirs().iter().map(|d| d.join("tasks")).collect()
    }

    /// Moves the calling thread into the cgroup in every hierarchy it has by
    /// writing "0" to `tasks`. For a single-threaded caller that moves the
    /// process, and unlike a pid written to `cgroup.procs` it needs no write
    /// lock on the kernel's threadgroup semaphore, whose RCU grace period
    /// costs 5-30 ms.
    pub fn join_self(&self) -> Result<()> {
        for d in self.joined_dirs() {
            fs::write(d, "tasks", "0")?;
        }
        Ok(())
    }

    /// Makes the on-demand hierarchies `r` uses that the container is not in
    /// yet, and moves the container's processes there (an update that sets a
    /// network class on a container created without one).
    pub(crate) fn make_on_demand(&self, r: &LinuxResources) -> Result<()> {
        let missing: Vec<&Path> = self
            .dirs_for(r)
            .into_iter()
            .filter(|d| self.on_demand_only(d) && !d.exists())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for d in &missing {
            fs::mkdir_all(d)?;
        }
        // A process forked while the others move starts in the old cgroup:
        // list again until every one is in (each round moves the new ones).
        for _ in 0..MIGRATE_ROUNDS {
            let all = self.pids()?;
            let mut moved = 0;
            for d in &missing {
                let there = fs::procs_recursive(d)?;
                for pid in all.iter().filter(|p| there.binary_search(p).is_err()) {
                    match fs::write(d, "cgroup.procs", &pid.to_string()) {
                        Ok(()) => moved += 1,
                        // Exited meanwhile.
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if moved == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Replaces the device rules, writing only the changes when possible (see [`DeviceState::transition`]).
    pub fn update_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        let dir = self.need("devices", "device rules")?;
        let current = DeviceState::from_v1_list(&fs::read(&dir.join("devices.list"))?)?;
        Self::write_devices(dir, &current, rules)
    }

    /// Sets the device rules of a cgroup no process has joined yet, where a
    /// reset disrupts nothing: written from [`DeviceState::unread`], without
    /// the read of devices.list (a fresh directory's, whose files the kernel
    /// looks up for the first time: ~10 µs).
    pub(crate) fn set_devices_unjoined(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        Self::write_devices(self.need("devices", "device rules")?, &DeviceState::unread(), rules)
    }

    /// Writes the rules that take `dir` from `current` to `rules`.
    fn write_devices(dir: &Path, current: &DeviceState, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        let target = DeviceState::from_spec(rules)?;
        // Consecutive rules for the same file go through one descriptor
        // (the order matters: a deny of everything comes before the allows).
        let writes = current.transition(&target);
        for run in writes.chunk_by(|a, b| a.allow == b.allow) {
            fs::write_lines(dir, run[0].file(), run.iter().map(|w| w.line.as_str()))?;
        }
        Ok(())
    }

    /// Freezes every process (freezer.state FROZEN), retrying while it stays FREEZING as runc does;
    /// on failure the cgroup is thawed again.
    pub fn freeze(&self) -> Result<()> {
        let dir = self.need("freezer", "freeze")?;
        let start = std::time::Instant::now();
        for i in 0..1000 {
            if i % 50 == 49 {
                fs::write(dir, "freezer.state", "THAWED")?;
                std::thread::sleep(Duration::from_millis(10));
            }
            fs::write(dir, "freezer.state", "FROZEN")?;
            if i % 25 == 24 {
                std::thread::sleep(Duration::from_micros(100));
            }
            match fs::read_trim(dir, "freezer.state")?.as_str() {
                "FROZEN" => return Ok(()),
                "FREEZING" => continue,
                other => {
                    let _ = fs::write(dir, "freezer.state", "THAWED");
                    return Err(Error::Parse {
                        path: dir.join("freezer.state"),
                        msg: format!("unexpected {other:?}"),
                    });
                }
            }
        }
        let _ = fs::write(dir, "freezer.state", "THAWED");
        Err(Error::Timeout {
            path: dir.join("freezer.state"),
            want: "FROZEN".into(),
            last: "FREEZING".into(),
            ms: start.elapsed().as_millis() as u64,
        })
    }

    /// Thaws the cgroup and waits until freezer.state reads THAWED.
    pub fn thaw(&self) -> Result<()> {
        let dir = self.need("freezer", "thaw")?;
        fs::write(dir, "freezer.state", "THAWED")?;
        let path = dir.join("freezer.state");
        fs::wait_for(&path, "THAWED", Duration::from_secs(5), || {
            let s = fs::read_trim(dir, "freezer.state")?;
            Ok((s == "THAWED", s))
        })
    }

    /// The freezer state (THAWED, FREEZING, FROZEN).
    pub fn state(&self) -> Result<FreezerState> {
        let dir = self.need("freezer", "freezer state")?;
        match fs::read_trim(dir, "freezer.state")?.as_str() {
            "THAWED" => Ok(FreezerState::Thawed),
            "FREEZING" => Ok(FreezerState::Freezing),
            "FROZEN" => Ok(FreezerState::Frozen),
            other => Err(Error::Parse {
                path: dir.join("freezer.state"),
                msg: format!("unknown state {other:?}"),
            }),
        }
    }

    /// All processes in the cgroup and its descendants (read from the pids, freezer or devices hierarchy).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = ["pids", "freezer", "devices", "memory"]
            .iter()
            .find_map(|c| self.path(c))
            .or_else(|| self.unique_dirs().first().copied())
            .ok_or_else(|| Error::invalid("cgroup", "(none)", "no hierarchy"))?;
        fs::procs_recursive(dir)
    }

    /// Registers an eventfd that becomes readable on each OOM event in the memory cgroup
    /// (memory.oom_control via cgroup.event_control); also signalled when the cgroup is removed.
    /// The descriptor is close-on-exec and non-blocking; each read returns an 8-byte counter.
    pub fn oom_eventfd(&self) -> Result<OwnedFd> {
        let dir = self.need("memory", "OOM notification")?;
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            let source = std::io::Error::last_os_error();
            return Err(Error::Sys {
                syscall: "eventfd",
                what: dir.display().to_string(),
                source,
            });
        }
        // SAFETY: raw is a new descriptor returned by eventfd and owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ctl = dir.join("memory.oom_control");
        let ctl_file = crate::open::file(&ctl, nix::fcntl::OFlag::O_RDONLY).map_err(|e| Error::io("open", &ctl, e))?;
        let line = format!("{} {}", efd.as_raw_fd(), ctl_file.as_raw_fd());
        fs::write(dir, "cgroup.event_control", &line)?;
        Ok(efd)
    }

    /// How many processes the OOM killer killed in this cgroup (memory.oom_control "oom_kill").
    pub fn oom_kill_count(&self) -> Result<u64> {
        let dir = self.need("memory", "OOM kill count")?;
        Ok(fs::read_keyed(dir, "memory.oom_control")?
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }

    /// Removes the cgroup (and sub-cgroups) from every hierarchy; tries them all, reports the first error.
    pub fn destroy(&self) -> Result<()> {
        let mut first = None;
        for d in self.unique_dirs() {
            if let Err(e) = fs::remove_cgroup(d) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Sorts `dirs` by their bytes and drops repeats. The managers build their
/// paths from mount points and components alike, so bytes tell what
/// components would; `Path`'s own order and equality parse every component
/// (listing the join files was 5% of the init's user time in a profile of
/// the container cycle, mostly this sort and dedup).
fn sort_dedup(dirs: &mut Vec<&Path>) {
    dirs.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    dirs.dedup_by(|a, b| a.as_os_str() == b.as_os_str());
}

/// Controllers whose hierarchy a container is put in only when its resources
/// use it. The agent needs every other one: devices isolate; freezer pauses
/// and kills; memory, pids, cpuacct, blkio and hugetlb feed OOM events and
/// statistics; cpu keeps the container one scheduling entity (as runc does);
/// cpuset lets OnlineCPUMem grow each container's CPUs (as kata-agent does).
pub const ON_DEMAND: &[&str] = &["net_cls", "net_prio", "perf_event", "rdma", "misc"];

/// How many times [`V1Manager::make_on_demand`] lists and moves the processes.
const MIGRATE_ROUNDS: usize = 5;

/// Whether `r` sets something in `controller`'s hierarchy.
fn uses(r: &LinuxResources, controller: &str) -> bool {
    match controller {
        "net_cls" => r.network().as_ref().is_some_and(|n| n.class_id().is_some()),
        "net_prio" => r
            .network()
            .as_ref()
            .is_some_and(|n| n.priorities().as_ref().is_some_and(|p| !p.is_empty())),
        "rdma" => r.rdma().as_ref().is_some_and(|m| !m.is_empty()),
        _ => false,
    }
}

/// Copies empty cpuset.cpus/mems from the parent into every directory from
/// `mount` down to `dir` (which exist: an empty cpuset refuses tasks).
/// `fresh`: `dir` was just made here.
///
/// A directory above `dir` filled here also gets cgroup.clone_children, so
/// that the kernel fills the siblings made after `dir` at their mkdir: then
/// a fresh directory costs one read. Copied by hand, the cpus write rebuilds
/// the scheduler domains, which v1 does whenever a load-balanced cpuset's
/// CPUs change, at a cost that grows with the machine's cpusets and tasks
/// (22 µs with 2 siblings, 44 µs with 200, measured on the bench machine).
/// The hierarchy's root and directories filled by others are not written;
/// the flag passes to directories made below a flagged one (the kernel
/// copies it at mkdir), the later containers' own included, where it only
/// fills their sub-cpusets as this would.
fn fill_cpuset(mount: &Path, dir: &Path, fresh: bool) -> Result<()> {
    let Ok(rel) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    // Filled by the kernel at mkdir, and so is every directory above it (a
    // cpuset's CPUs are a subset of its parent's). Right below the root there
    // is no look: this never flags the root.
    if fresh && dir.parent() != Some(mount) && !fs::read_trim(dir, CPUS)?.is_empty() {
        return Ok(());
    }
    let mut parent = mount.to_path_buf();
    for comp in rel.components() {
        let cur = parent.join(comp);
        let mut filled = false;
        for file in [CPUS, MEMS] {
            // A fresh `dir` is written without a look: it was read empty
            // above (the kernel fills both files or neither), or sits right
            // below the root, where a write of what it may already hold
            // changes nothing.
            if (fresh && cur == dir) || fs::read_trim(&cur, file)?.is_empty() {
                let v = fs::read_trim(&parent, file)?;
                fs::write(&cur, file, &v)?;
                filled = true;
            }
        }
        if filled && cur != dir {
            // Only saves work later: a hierarchy without the file (or that
            // refuses it) costs the copy each time, as before.
            let _ = fs::write(&cur, "cgroup.clone_children", "1");
        }
        parent = cur;
    }
    Ok(())
}

const CPUS: &str = "cpuset.cpus";
const MEMS: &str = "cpuset.mems";
