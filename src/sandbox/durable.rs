//! The sandbox on disk and across agent crashes.
//!
//! After every call that may change the sandbox, its view is converted to
//! the persist format and written (`crate::persist`) before the call is
//! answered, so what a host was told is on disk when the agent dies.
//! Concurrent calls share one write: a call waits until a write that began
//! after its change has finished.
//!
//! At start the file is taken back: the storages, the pod (with the
//! namespace holder), every container with its processes. Under a keeper
//! (`crate::keeper`), the processes' stdio descriptors and the exits of
//! processes that ended while no agent ran come from the keeper's handoff;
//! while the agent runs, it has the keeper hold a copy of each descriptor it
//! must not lose.
//!
//! A state file this agent cannot take back (damaged, too new, meaningless)
//! puts the sandbox in a fault: sandbox calls are refused with the reason
//! (FAILED_PRECONDITION), and nothing is ever written over that file.

use std::collections::{HashMap, HashSet};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use slog::{debug, error, info, warn};
use tokio::sync::watch;

use super::changed::{Changed, Mark, Taken};
use super::engine::Adopt;
use super::guest_hooks::GuestHooks;
use super::hotplug::DeviceState;
use super::process::{Process, Restored, RestoredStdio};
use super::view::{ContainerChanges, ContainerView, PodView, ProcessView, SandboxView, SpecJson};
use super::{blocking, lock, Container, Error, Pod, Result, Sandbox};
use crate::keeper::link::{Handoff, KeeperLink};
use crate::persist::file::{Replaced, StateFile};
use crate::persist::v3::RawJson;
use crate::persist::{self, convert, PersistError};
use crate::reaper::Exit;

/// The state file and the writes to it.
pub(crate) struct Durable {
    file: Arc<StateFile>,
    /// Changes announced so far.
    requested: AtomicU64,
    /// The last change a finished write covers, and what is on disk.
    written: tokio::sync::Mutex<Written>,
}

/// What the writes so far have left.
#[derive(Default)]
struct Written {
    /// The last change they cover.
    covers: u64,
    /// What the state file holds, when known.
    file: Option<persist::Encoded>,
    /// What the temporary file holds (the file before the last write), when known.
    temp: Option<persist::Encoded>,
}

/// A container's text in the state file, and what may change in it as the
/// text holds it.
pub(crate) struct StateText {
    /// The container it was made of (a weak reference keeps the address
    /// from being reused: a new container under the same id is another).
    owner: Weak<Container>,
    /// That container's [`Container::seq`], which orders the texts.
    seq: u64,
    changes: ContainerChanges,
    /// The text.
    pub(crate) json: RawJson,
}

impl StateText {
    /// Its container's [`Container::seq`].
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether this is `c`'s text as it is now.
    async fn holds(&self, c: &Arc<Container>) -> bool {
        std::ptr::eq(self.owner.as_ptr(), Arc::as_ptr(c)) && c.unchanged_since(&self.changes).await
    }

    /// `c`'s text, made now.
    async fn of(c: &Arc<Container>) -> StateText {
        let changes = c.changes().await;
        let json = persist::encode_container(&convert::container(&c.view_with(changes.clone(), false)));
        StateText {
            owner: Arc::downgrade(c),
            seq: c.seq,
            changes,
            json,
        }
    }
}

/// Marks taken from `changed`, put back on drop unless taken out (a write
/// dropped half-way has not looked at them).
struct Retake<'a>(&'a Changed, Option<Taken>);

impl Drop for Retake<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.1.take() {
            self.0.untake(t);
        }
    }
}

/// The keeper's name for a descriptor of process `exec_id` of container `id`.
fn fd_name(id: &str, exec_id: &str, stream: &str) -> String {
    format!("p/{id}/{exec_id}/{stream}")
}

/// The keeper's name for the namespace holder's channel.
const HOLDER_FD: &str = "pod/holder";

/// Whether `pid` is a process that started at `start_time` (0: any start time).
fn alive(pid: i32, start_time: u64) -> bool {
    match rustjail::state::proc_start_time(pid) {
        Some((t, state)) => state != 'X' && (start_time == 0 || t == start_time),
        None => false,
    }
}

/// Whether `pid` runs (a zombie does not: its parent, maybe not us, reaps it).
fn running(pid: i32) -> bool {
    matches!(rustjail::state::proc_start_time(pid), Some((_, state)) if state != 'Z' && state != 'X')
}

impl Sandbox {
    /// Keeps the sandbox in `file`, under `keeper` when the agent runs under
    /// one: takes back what the file holds (a restart), with the exits the
    /// keeper kept given to `deliver` (the reaper), then writes after each
    /// change. A file that cannot be taken back puts the sandbox in a fault
    /// (returned, and logged) and is left as it is. Runs before serving,
    /// inside the runtime.
    pub(crate) fn attach(
        &mut self,
        file: StateFile,
        keeper: Option<Arc<KeeperLink>>,
        deliver: &dyn Fn(i32, Exit),
    ) -> std::result::Result<(), PersistError> {
        let loaded = self.load(&file, keeper.as_deref(), deliver);
        self.keeper = keeper;
        self.durable = Some(Durable {
            file: Arc::new(file),
            requested: AtomicU64::new(0),
            written: tokio::sync::Mutex::new(Written::default()),
        });
        if let Err(e) = &loaded {
            error!(self.log, "state file not taken back; sandbox calls are refused until it is mended or removed";
                   "error" => %e);
            self.fault = Some(e.to_string());
        }
        loaded
    }

    fn load(
        &mut self,
        file: &StateFile,
        keeper: Option<&KeeperLink>,
        deliver: &dyn Fn(i32, Exit),
    ) -> std::result::Result<(), PersistError> {
        let started = std::time::Instant::now();
        let saved = match file.read()? {
            Some(bytes) => Some(convert::to_view(
                persist::decode(file.path(), &bytes)?,
                self.view_guest(),
                file.path(),
            )?),
            None => None,
        };
        // Processes already gone now, before the handoff: the keeper holds
        // the exit of each one it reaped; any other was reaped by the agent
        // before, which died before writing it down.
        let gone: Vec<i32> = saved
            .iter()
            .flat_map(|v| v.containers.iter())
            .flat_map(|c| std::iter::once(&c.init).chain(c.execs.iter()))
            .filter(|p| p.exit.is_none() && !alive(p.pid, p.start_time))
            .map(|p| p.pid)
            .collect();
        // The namespace holder too: without a keeper (systemd restarting the
        // agent, which killed the unit's processes) nobody else would ever
        // tell its end, and DestroySandbox would wait for it.
        let holder_gone = saved
            .as_ref()
            .and_then(|v| v.pod.ns_holder)
            .filter(|pid| !running(*pid));
        let decoded = started.elapsed();
        let handoff = match keeper {
            Some(k) => k.handoff().map_err(|e| PersistError::Sys {
                syscall: "recvmsg",
                path: format!("keeper channel (fd {})", k.raw()).into(),
                source: e,
            })?,
            None => Handoff::default(),
        };
        let handed = started.elapsed();
        let kept: HashSet<i32> = handoff.exits.iter().map(|(pid, _)| *pid).collect();
        for (pid, exit) in &handoff.exits {
            deliver(*pid, *exit);
        }
        for pid in gone.iter().filter(|p| !kept.contains(p)) {
            warn!(self.log, "a process ended while no agent ran and its exit status is lost; reporting 255"; "pid" => pid);
            deliver(*pid, Exit::Code(255));
        }
        if let Some(pid) = holder_gone.filter(|p| !kept.contains(p)) {
            warn!(self.log, "the namespace holder ended while no agent ran: the pod's shared namespaces are gone"; "pid" => pid);
            deliver(pid, Exit::Signal(libc::SIGKILL));
        }
        let Some(view) = saved else { return Ok(()) };
        let containers = view.containers.len();
        if keeper.is_none() && containers > 0 {
            warn!(self.log, "taking containers back without a keeper: their stdio is gone and their exits \
                             cannot be known (run with --keeper)"; "containers" => containers);
        }
        self.restore(view, handoff.fds).map_err(|e| PersistError::Invalid {
            path: file.path().to_path_buf(),
            why: e.to_string(),
        })?;
        info!(self.log, "state taken back";
              "file" => %file.path().display(), "containers" => containers, "exits_kept" => kept.len(),
              "keeper" => keeper.is_some(), "decode_us" => decoded.as_micros() as u64,
              "handoff_us" => (handed - decoded).as_micros() as u64,
              "restore_us" => (started.elapsed() - handed).as_micros() as u64);
        Ok(())
    }

    /// Why sandbox calls are refused, if they are.
    pub(crate) fn fault(&self) -> Option<Error> {
        self.fault.clone().map(Error::FailedPrecondition)
    }

    /// Writes the sandbox's state now (or waits for a write already covering
    /// the caller's change; or finds the file already holding it). A failed
    /// write is logged: the call it follows did its work, and the next write
    /// tries again.
    pub(crate) async fn persist(&self) {
        let Some(d) = &self.durable else { return };
        if self.fault.is_some() {
            return;
        }
        let mine = d.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let mut written = d.written.lock().await;
        if written.covers >= mine {
            return;
        }
        let covers = d.requested.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let (encoded, viewed) = self.state_bytes().await;
        let made = started.elapsed();
        let len = encoded.len();
        // A call that changed nothing the file holds (StartContainer, a
        // read) finds it already as it would write it.
        let unchanged = written.file.as_ref().is_some_and(|w| w.same_as(&encoded));
        // The temporary, written over, keeps what it already has right: the
        // containers before the first one that changed since it was the file.
        let kept = written.temp.as_ref().map_or(0, |t| encoded.common_prefix(t));
        let result = if unchanged {
            Ok((encoded, None))
        } else if d.file.in_memory() {
            // On tmpfs a write copies memory and never waits for a disk: done
            // here, it costs less than waking a worker thread to do it.
            d.file
                .write_pieces(&encoded.pieces(), kept)
                .map(|r| (encoded, Some(r)))
                .map_err(|e| e.to_string())
        } else {
            let file = d.file.clone();
            blocking(move || {
                file.write_pieces(&encoded.pieces(), kept)
                    .map(|r| (encoded, Some(r)))
                    .map_err(|e| Error::Internal(e.to_string()))
            })
            .await
            .map_err(|e| e.to_string())
        };
        match result {
            Ok((encoded, replaced)) => {
                written.covers = covers;
                if let Some(r) = replaced {
                    let before = written.file.replace(encoded);
                    written.temp = (r == Replaced::Exchanged).then_some(before).flatten();
                }
                // make bench reads this line (the cost of persisting).
                debug!(self.log, "state written"; "bytes" => len, "unchanged" => unchanged,
                       "kept" => if unchanged { len } else { kept },
                       "duration_us" => started.elapsed().as_micros() as u64,
                       "view_us" => viewed.as_micros() as u64, "encode_us" => (made - viewed).as_micros() as u64);
            }
            Err(e) => {
                // What the files hold is no longer known.
                written.file = None;
                written.temp = None;
                error!(self.log, "state not written"; "error" => %e)
            }
        }
    }

    /// The state file's contents now, and how long taking the snapshot took.
    /// Only the containers marked changed are looked at (`changed.rs`), and
    /// a text is made again only when what may change in it did (its spec,
    /// the bulk of it, is serialised once).
    pub(crate) async fn state_bytes(&self) -> (persist::Encoded, std::time::Duration) {
        let started = std::time::Instant::now();
        let mut texts = self.texts.lock().await;
        // Dropped half-way (the call's future dropped), it puts the marks back.
        let mut taken = Retake(&self.changed, Some(self.changed.take()));
        let ids = match taken.1.as_ref().expect("taken") {
            Taken::All => {
                let now = lock(&self.containers);
                texts.retain(|id| now.contains_key(id));
                now.keys().map(|id| Arc::from(id.as_str())).collect()
            }
            Taken::Ids(ids) => ids.clone(),
        };
        for id in ids {
            let Ok(c) = self.container(&id) else {
                texts.remove(&id);
                continue;
            };
            match texts.get_mut(c.seq) {
                Some(text) => {
                    if !text.holds(&c).await {
                        *text = StateText::of(&c).await;
                    }
                }
                None => texts.put(&id, StateText::of(&c).await),
            }
        }
        taken.1 = None;
        let containers = texts.iter().map(|(_, t)| t.json.clone()).collect();
        drop(texts);
        let view = self.snapshot_with(Vec::new());
        let viewed = started.elapsed();
        (persist::Encoded::new(&convert::from_view(&view), containers), viewed)
    }

    /// Has the keeper hold a copy of each open stdio descriptor of `p`.
    pub(crate) fn keep_stdio(&self, id: &str, p: &Process) {
        let Some(k) = &self.keeper else { return };
        for (stream, fd) in p.held_fds() {
            // SAFETY: `p` owns `fd` and outlives this call.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            if let Err(e) = k.store(&fd_name(id, &p.exec_id, stream), fd) {
                warn!(self.log, "keeper: descriptor not held; a crash would close it";
                      "container" => id, "exec_id" => &p.exec_id, "stream" => stream, "error" => %e);
            }
        }
    }

    /// Has the keeper hold the namespace holder's channel.
    pub(crate) fn keep_holder(&self, channel: Option<BorrowedFd<'_>>) {
        if let (Some(k), Some(fd)) = (&self.keeper, channel) {
            if let Err(e) = k.store(HOLDER_FD, fd) {
                warn!(self.log, "keeper: namespace holder's channel not held"; "error" => %e);
            }
        }
    }

    /// Has the keeper close what it holds for a container (`exec_id` None),
    /// a process, or one stream of a process.
    pub(crate) fn unkeep(&self, id: &str, exec_id: Option<&str>, stream: Option<&str>) {
        let Some(k) = &self.keeper else { return };
        let prefix = match (exec_id, stream) {
            (None, _) => format!("p/{id}/"),
            (Some(e), None) => format!("p/{id}/{e}/"),
            (Some(e), Some(s)) => fd_name(id, e, s),
        };
        if let Err(e) = k.drop_prefix(&prefix) {
            warn!(self.log, "keeper: descriptors not released"; "prefix" => &prefix, "error" => %e);
        }
    }

    /// Has the keeper close the namespace holder's channel.
    pub(crate) fn unkeep_holder(&self) {
        if let Some(k) = &self.keeper {
            let _ = k.drop_prefix(HOLDER_FD);
        }
    }

    /// Takes back the sandbox a previous agent left (before serving).
    fn restore(&mut self, view: SandboxView, mut fds: HashMap<String, OwnedFd>) -> Result<()> {
        *lock(&self.session) = view.session;
        let base = crate::storage::StorageManager::from_state(view.storages)?;
        self.storages = super::fitted_storages(base, &self.cfg, &self.log, &self.parked_ns);
        self.restore_pod(view.pod, fds.remove(HOLDER_FD));
        for c in view.containers {
            let id = c.id.clone();
            let c = self.restore_container(c, &mut fds)?;
            lock(&self.containers).insert(id, c);
        }
        if !fds.is_empty() {
            let names: Vec<&String> = fds.keys().collect();
            warn!(self.log, "keeper held descriptors no container claims; closing them"; "names" => ?names);
        }
        Ok(())
    }

    fn restore_pod(&mut self, pod: PodView, channel: Option<OwnedFd>) {
        let ns_holder: Option<Arc<dyn super::engine::NsHolder>> = pod
            .ns_holder
            .map(|pid| Arc::from(self.engine.adopt_ns_holder(pid, channel)));
        let ns_holder_exit = ns_holder.as_ref().map(|h| self.engine.watch_exit(h.pid()));
        let guest_hooks = match &pod.guest_hook_path {
            Some(p) => GuestHooks::load(p).unwrap_or_else(|e| {
                warn!(self.log, "guest hooks not reloaded"; "path" => %p.display(), "error" => %e);
                GuestHooks::default()
            }),
            None => GuestHooks::default(),
        };
        *lock(&self.pod) = Pod {
            state: pod.state,
            id: pod.id,
            hostname: pod.hostname,
            dns: pod.dns,
            dns_mounted: pod.dns_mounted,
            sandbox_pidns: pod.sandbox_pidns,
            pidns_container: pod.pidns_container,
            ns_holder,
            ns_holder_exit,
            guest_hook_path: pod.guest_hook_path,
            guest_hooks,
        };
    }

    fn restore_container(&self, c: ContainerView, fds: &mut HashMap<String, OwnedFd>) -> Result<Arc<Container>> {
        let spec = c
            .spec
            .take_spec()
            .map_err(|e| Error::Internal(format!("container {:?}: spec: {e}", c.id)))?;
        let engine = self.engine.adopt(Adopt {
            id: c.id.clone(),
            pid: c.init.pid,
            start_time: c.start_time,
            bundle: c.bundle.clone(),
            rootfs: c.rootfs,
            created: c.created,
            cgroup: c.cgroup,
            spec,
        })?;
        let init = Arc::new(self.restore_process(&c.id, c.init, fds)?);
        let mut execs = HashMap::new();
        for e in c.execs {
            let p = self.restore_process(&c.id, e, fds)?;
            execs.insert(p.exec_id.clone(), Arc::new(p));
        }
        let oom_watch = c
            .oom_watch
            .then(|| engine.watch_oom(&c.id, self.oom_tx.clone()))
            .flatten();
        let c = Arc::new(Container {
            id: c.id,
            engine,
            bundle: c.bundle,
            init,
            execs: Mutex::new(execs),
            starting: Mutex::new(HashSet::new()),
            devices: tokio::sync::Mutex::new(DeviceState {
                own_rules: c.device_rules,
                plugged: c.devices,
            }),
            oom_watch,
            leftovers_watch: Mutex::new(None),
            // The text alone: the parsed spec was taken above.
            spec_json: SpecJson::from_raw(c.spec.raw().clone()).into(),
            // Its init closes it (a previous agent's hold ended with it).
            mount_ns: Mutex::new(None),
            // Called in the file's order: the file keeps its order.
            seq: self.next_seq(),
        });
        c.watch_leftovers(&self.log);
        Ok(c)
    }

    fn restore_process(&self, id: &str, p: ProcessView, fds: &mut HashMap<String, OwnedFd>) -> Result<Process> {
        let stdio = RestoredStdio::take(|stream| fds.remove(&fd_name(id, &p.exec_id, stream)));
        let exit = match p.exit {
            Some(exit) => watch::channel(Some(exit)).1,
            None => self.watch_exit_of(id, p.pid),
        };
        let mark = Mark::new(&self.changed, id);
        let was = Restored {
            exec_id: p.exec_id,
            pid: p.pid,
            start_time: p.start_time,
            exit,
            waited: p.waited,
        };
        Process::restore(was, stdio, mark, &self.log)
    }
}

/// Writes the state down after every exit the reaper delivers, and, under a
/// keeper, delivers the exits it reaps and tells it once each is on disk.
/// Must run inside the runtime.
pub(crate) fn spawn_writers(
    sandbox: &Arc<Sandbox>,
    reaper: &crate::reaper::Reaper,
    keeper: Option<Arc<KeeperLink>>,
    log: &slog::Logger,
) {
    let mut delivered = reaper.delivered();
    let sb = sandbox.clone();
    tokio::spawn(async move {
        while delivered.changed().await.is_ok() {
            // A WaitProcess the exit ends goes first: its write (which it
            // makes before it answers) then holds the exit too, and this one
            // finds the file already as it would write it.
            tokio::task::yield_now().await;
            sb.persist().await;
        }
    });
    let Some(k) = keeper else { return };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<i32>();
    let (reaper, link, log) = (reaper.clone(), k.clone(), log.clone());
    let spawned = std::thread::Builder::new()
        .name("keeper-exits".into())
        .spawn(move || loop {
            match link.next_exit() {
                Ok(Some((pid, exit))) => {
                    reaper.deliver(pid, exit);
                    let _ = tx.send(pid);
                }
                Ok(None) => {
                    error!(
                        log,
                        "the keeper is gone: exits of processes the agent did not start are no longer known"
                    );
                    return;
                }
                Err(e) => warn!(log, "keeper channel"; "error" => %e),
            }
        });
    if let Err(e) = spawned {
        error!(sandbox.log, "keeper exits not read"; "error" => %e);
    }
    let sb = sandbox.clone();
    tokio::spawn(async move {
        while let Some(pid) = rx.recv().await {
            tokio::task::yield_now().await;
            sb.persist().await;
            if sb.fault.is_none() {
                let _ = k.forget(pid);
            }
        }
    });
}
