//! A container engine for the sandbox's unit tests: no process, cgroup or
//! namespace is made (they need root). It is a mock on purpose, and records
//! what the sandbox asked of it: the specs it was given, signals, device rules,
//! device node operations, deletions. Pids are invented; exits happen when a
//! test says so (or on SIGKILL); failures are injected per operation; an
//! operation can be held at a gate to make two requests overlap for certain.
//!
//! A process's stdio is real: the fake keeps the process's ends of the pipes,
//! so a test can write what the "process" prints and read what it was sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources, Process, Spec};
use tokio::sync::{mpsc, watch};

use super::engine::{Adopt, ContainerEngine, CreateSpec, Created, EngineContainer, EngineFacts, NsHolder, Spawned};
use super::error::{Error, Result};
use crate::device::node::{NodeError, NodeOp, NodeOutcome, NodeRequest};
use crate::reaper::Exit;

/// Operations whose next calls can be made to fail or be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Op {
    Create,
    Start,
    Exec,
    Holder,
    DeviceRules,
    DeviceNode,
    Delete,
    Update,
}

/// Holds the callers of an operation until opened; counts who arrived.
#[derive(Default)]
pub(super) struct Gate {
    state: Mutex<(bool, usize)>,
    cv: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.1 += 1;
        self.cv.notify_all();
        while !s.0 {
            s = self.cv.wait(s).unwrap();
        }
    }

    /// Lets every caller through, now and later.
    pub(super) fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.cv.notify_all();
    }

    /// Waits (on a blocking thread) until `n` callers have arrived.
    pub(super) async fn arrived(self: &Arc<Self>, n: usize) {
        let g = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = g.state.lock().unwrap();
            while s.1 < n {
                s = g.cv.wait(s).unwrap();
            }
        })
        .await
        .unwrap();
    }
}

/// What the fake knows about one container.
#[derive(Debug, Default)]
pub(super) struct FakeContainer {
    pub spec: Option<Spec>,
    pub started: bool,
    pub paused: bool,
    pub deleted: bool,
    /// Every device rule list it was given, in order.
    pub device_rules: Vec<Vec<LinuxDeviceCgroup>>,
    /// Every device node operation, in order: (op, path).
    pub nodes: Vec<(NodeOp, String)>,
    /// Every UpdateContainer's resources, as the engine got them.
    pub updates: Vec<LinuxResources>,
    /// Pids of processes exec'd into it.
    pub execs: Vec<i32>,
    /// Every CPU list its cpuset was asked to follow, in order.
    pub follow_cpus: Vec<String>,
}

#[derive(Default)]
pub(super) struct State {
    next_pid: i32,
    exits: HashMap<i32, watch::Sender<Option<Exit>>>,
    exit_hook: Option<crate::reaper::ExitHook>,
    pub signals: Vec<(i32, Option<Signal>)>,
    pub containers: HashMap<String, FakeContainer>,
    /// Holders spawned, and those still held by the sandbox.
    pub holders: Vec<i32>,
    pub live_holders: HashSet<i32>,
    /// The process's ends of each pid's pipes.
    pub stdio: HashMap<i32, [OwnedFd; 3]>,
    fail: HashMap<Op, VecDeque<Error>>,
    node_answers: VecDeque<std::result::Result<NodeOutcome, NodeError>>,
    gates: HashMap<Op, Arc<Gate>>,
    oom: HashMap<String, mpsc::UnboundedSender<String>>,
    /// Give a terminal master to processes that asked for one.
    pub no_terminal: bool,
    /// (pid, signal) of processes that catch the signal.
    pub handlers: HashSet<(i32, Signal)>,
    /// What every container's cgroup statistics say.
    pub stats: rustjail::cgroups::Stats,
}

/// The fake engine; clones share one state.
#[derive(Clone, Default)]
pub(crate) struct FakeEngine {
    pub(super) state: Arc<Mutex<State>>,
}

impl FakeEngine {
    pub(crate) fn new() -> FakeEngine {
        let e = FakeEngine::default();
        e.lock().next_pid = 1000;
        e
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next call of `op` fails with `e`.
    pub(super) fn fail_next(&self, op: Op, e: Error) {
        self.lock().fail.entry(op).or_default().push_back(e);
    }

    /// The next device node operations answer these (default: Created / Removed).
    pub(super) fn node_answer(&self, a: std::result::Result<NodeOutcome, NodeError>) {
        self.lock().node_answers.push_back(a);
    }

    /// Calls of `op` wait at the returned gate until it is opened.
    pub(super) fn gate(&self, op: Op) -> Arc<Gate> {
        let g = Arc::new(Gate::default());
        self.lock().gates.insert(op, g.clone());
        g
    }

    /// Process `pid` ends with `exit`.
    pub(super) fn exit(&self, pid: i32, exit: Exit) {
        let hook = {
            let mut s = self.lock();
            let tx = s.exits.entry(pid).or_insert_with(|| watch::channel(None).0);
            let _ = tx.send(Some(exit));
            s.exit_hook.clone()
        };
        if let Some(h) = hook {
            h(pid);
        }
    }

    fn exited(&self, pid: i32) -> bool {
        self.lock().exits.get(&pid).is_some_and(|tx| tx.borrow().is_some())
    }

    /// An OOM kill in container `id`.
    pub(super) fn oom(&self, id: &str) {
        if let Some(tx) = self.lock().oom.get(id) {
            let _ = tx.send(id.to_string());
        }
    }

    /// What the fake knows of container `id`.
    pub(super) fn container<T>(&self, id: &str, f: impl FnOnce(&FakeContainer) -> T) -> T {
        f(self.lock().containers.get(id).expect("the fake made this container"))
    }

    fn enter(&self, op: Op) -> Result<()> {
        let gate = self.lock().gates.get(&op).cloned();
        if let Some(g) = gate {
            g.pass();
        }
        match self.lock().fail.get_mut(&op).and_then(|q| q.pop_front()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn new_pid(&self) -> i32 {
        let mut s = self.lock();
        s.next_pid += 1;
        s.next_pid
    }

    /// A terminal master stand-in (a socket: pollable, as a pty master is).
    fn terminal(&self, asked: bool) -> Option<OwnedFd> {
        if !asked || self.lock().no_terminal {
            return None;
        }
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        // The "slave" side is kept open by leaking it into the fake's stdio map.
        std::mem::forget(b);
        Some(a.into())
    }
}

struct FakeHolder {
    pid: i32,
    engine: FakeEngine,
}

impl NsHolder for FakeHolder {
    fn pid(&self) -> i32 {
        self.pid
    }
}

impl Drop for FakeHolder {
    fn drop(&mut self) {
        // Closing its socket ends a real holder.
        self.engine.lock().live_holders.remove(&self.pid);
        self.engine.exit(self.pid, Exit::Code(0));
    }
}

impl ContainerEngine for FakeEngine {
    fn create(&self, req: CreateSpec) -> Result<Created> {
        self.enter(Op::Create)?;
        if self.lock().containers.get(&req.id).is_some_and(|c| !c.deleted) {
            return Err(Error::Runtime(rustjail::Error::Exists(req.id)));
        }
        let pid = self.new_pid();
        let terminal = req.spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
        // As rustjail: run once the init's pid is known, before create returns.
        if let Some(m) = req.meanwhile {
            let spec_json = serde_json::value::to_raw_value(&req.spec).expect("a spec serialises");
            (m.0)(rustjail::container::InitStarted {
                pid,
                start_time: super::process::start_time_of(pid),
                spec: &req.spec,
                spec_json: &spec_json,
            });
        }
        let mut s = self.lock();
        if let Some(fds) = req.stdio {
            s.stdio.insert(pid, fds);
        }
        s.containers.insert(
            req.id.clone(),
            FakeContainer {
                spec: Some(req.spec.clone()),
                ..Default::default()
            },
        );
        drop(s);
        Ok(Created {
            container: Box::new(FakeHandle {
                id: req.id,
                pid,
                spec: req.spec,
                engine: self.clone(),
            }),
            terminal: self.terminal(terminal),
        })
    }

    fn spawn_ns_holder(&self, _hostname: &str) -> Result<Box<dyn NsHolder>> {
        self.enter(Op::Holder)?;
        let pid = self.new_pid();
        let mut s = self.lock();
        s.holders.push(pid);
        s.live_holders.insert(pid);
        Ok(Box::new(FakeHolder {
            pid,
            engine: self.clone(),
        }))
    }

    fn watch_exit(&self, pid: i32) -> watch::Receiver<Option<Exit>> {
        self.lock()
            .exits
            .entry(pid)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    fn on_exit(&self, hook: crate::reaper::ExitHook) {
        self.lock().exit_hook = Some(hook);
    }

    fn signal(&self, pid: i32, signal: Option<Signal>) -> nix::Result<()> {
        if self.exited(pid) {
            return Err(nix::Error::ESRCH);
        }
        self.lock().signals.push((pid, signal));
        if signal == Some(Signal::SIGKILL) {
            self.exit(pid, Exit::Signal(9));
        }
        Ok(())
    }

    fn handles_signal(&self, pid: i32, signal: Signal) -> bool {
        self.lock().handlers.contains(&(pid, signal))
    }

    fn adopt(&self, a: Adopt) -> Result<Box<dyn EngineContainer>> {
        let mut s = self.lock();
        s.next_pid = s.next_pid.max(a.pid);
        s.containers.insert(
            a.id.clone(),
            FakeContainer {
                spec: Some(a.spec.clone()),
                started: true,
                ..Default::default()
            },
        );
        Ok(Box::new(FakeHandle {
            id: a.id,
            pid: a.pid,
            spec: a.spec,
            engine: self.clone(),
        }))
    }

    fn adopt_ns_holder(&self, pid: i32, _channel: Option<OwnedFd>) -> Box<dyn NsHolder> {
        let mut s = self.lock();
        s.holders.push(pid);
        s.live_holders.insert(pid);
        Box::new(FakeHolder {
            pid,
            engine: self.clone(),
        })
    }
}

/// The fake's handle of one container.
struct FakeHandle {
    id: String,
    pid: i32,
    spec: Spec,
    engine: FakeEngine,
}

impl FakeHandle {
    fn with<T>(&self, f: impl FnOnce(&mut FakeContainer) -> T) -> T {
        let mut s = self.engine.lock();
        f(s.containers.get_mut(&self.id).expect("the fake made this container"))
    }
}

impl EngineContainer for FakeHandle {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn facts(&self) -> EngineFacts {
        EngineFacts {
            pid: self.pid,
            start_time: 4242,
            rootfs: self.spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_default(),
            created: "2026-12-01T00:00:00.000000000Z".into(),
            cgroup: [("memory".to_string(), format!("/fake/{}", self.id).into())].into(),
        }
    }

    fn start_time(&self) -> u64 {
        // The process's real one, which recovery checks a pid against.
        super::process::start_time_of(self.pid)
    }

    fn status(&self) -> rustjail::Status {
        if self.engine.exited(self.pid) {
            return rustjail::Status::Stopped;
        }
        self.with(|c| match (c.started, c.paused) {
            (false, _) => rustjail::Status::Created,
            (true, true) => rustjail::Status::Paused,
            (true, false) => rustjail::Status::Running,
        })
    }

    fn start(&self) -> Result<Vec<String>> {
        self.engine.enter(Op::Start)?;
        self.with(|c| c.started = true);
        Ok(Vec::new())
    }

    fn exec(&self, process: Process, stdio: Option<[OwnedFd; 3]>) -> Result<Spawned> {
        self.engine.enter(Op::Exec)?;
        let pid = self.engine.new_pid();
        if let Some(fds) = stdio {
            self.engine.lock().stdio.insert(pid, fds);
        }
        self.with(|c| c.execs.push(pid));
        Ok(Spawned {
            pid,
            terminal: self.engine.terminal(process.terminal().unwrap_or(false)),
        })
    }

    fn pause(&self) -> Result<()> {
        self.with(|c| c.paused = true);
        Ok(())
    }

    fn resume(&self) -> Result<()> {
        self.with(|c| c.paused = false);
        Ok(())
    }

    fn update(&self, resources: &LinuxResources) -> Result<Vec<String>> {
        self.engine.enter(Op::Update)?;
        self.with(|c| c.updates.push(resources.clone()));
        Ok(Vec::new())
    }

    fn set_device_rules(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        self.engine.enter(Op::DeviceRules)?;
        self.with(|c| c.device_rules.push(rules.to_vec()));
        Ok(())
    }

    fn stats(&self) -> Result<rustjail::cgroups::Stats> {
        Ok(self.engine.lock().stats.clone())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let execs = self.with(|c| c.execs.clone());
        Ok(std::iter::once(self.pid)
            .chain(execs)
            .filter(|&p| !self.engine.exited(p))
            .collect())
    }

    fn kill_all(&self, signal: Signal) -> Result<usize> {
        let pids = self.pids()?;
        for &p in &pids {
            let _ = self.engine.signal(p, Some(signal));
        }
        Ok(pids.len())
    }

    fn delete(&self) -> Result<Vec<String>> {
        self.engine.enter(Op::Delete)?;
        for p in self.pids()? {
            self.engine.exit(p, Exit::Signal(9));
        }
        self.with(|c| c.deleted = true);
        Ok(Vec::new())
    }

    fn follow_cpus(&self, online: &str) -> Result<Vec<std::path::PathBuf>> {
        self.with(|c| c.follow_cpus.push(online.to_string()));
        Ok(vec![format!("/fake/{}/cpuset.cpus", self.id).into()])
    }

    fn device_node(&self, req: &NodeRequest) -> std::result::Result<NodeOutcome, NodeError> {
        if let Err(e) = self.engine.enter(Op::DeviceNode) {
            return Err(NodeError::Failed(e.to_string()));
        }
        self.with(|c| c.nodes.push((req.op, req.path.clone())));
        let answer = self.engine.lock().node_answers.pop_front();
        answer.unwrap_or(Ok(match req.op {
            NodeOp::Add => NodeOutcome::Created,
            NodeOp::Remove => NodeOutcome::Removed,
        }))
    }

    fn watch_oom(&self, id: &str, events: mpsc::UnboundedSender<String>) -> Option<tokio::task::JoinHandle<()>> {
        self.engine.lock().oom.insert(id.to_string(), events);
        Some(tokio::spawn(std::future::pending()))
    }
}
