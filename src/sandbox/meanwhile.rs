//! What CreateContainer sets up for a container's init while the init builds
//! its root: the agent's side of its stdio (pipes registered, output
//! journals), the watch on its exit, and its spec as the state file holds it.
//! Done after the init reported, that was ~0.1 ms of every create spent while
//! the other CPU sat idle waiting for the mounts.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustjail::container::{InitStarted, Meanwhile};

use super::changed::{Changed, Mark};
use super::engine::ContainerEngine;
use super::new_stdio::NewStdio;
use super::process::Process;
use super::view::SpecJson;
use super::{lock, watch_exit_in, Error, Result};

/// What was made for the init `pid`.
pub(crate) struct Made {
    /// The init the work was done for.
    pub pid: i32,
    /// Its Process, when its stdio were pipes (a terminal's master comes
    /// only with the created container).
    pub init: Option<Result<Process>>,
    /// The spec the engine runs, serialised.
    pub spec_json: SpecJson,
    /// Writing the bundle's config.json, when this work was to.
    pub config: Option<Result<()>>,
    /// Its mount namespace, held ([`super::mount_ns`]).
    pub mount_ns: Option<OwnedFd>,
}

/// Where the work leaves what it made.
pub(crate) type Slot = Arc<Mutex<Option<Made>>>;

/// What a container's init Process is made with, owned: it is made on the
/// engine's thread, or after the create (with a terminal).
pub(crate) struct InitParts {
    /// Container id.
    pub id: String,
    /// The init's exec id.
    pub exec_id: String,
    pub engine: Arc<dyn ContainerEngine>,
    pub changed: Arc<Changed>,
    pub log: slog::Logger,
}

impl InitParts {
    /// The init `pid`'s Process on `stdio` (with a terminal, its `master`),
    /// its exit watched from now on.
    pub(crate) fn process(
        &self,
        pid: i32,
        start_time: u64,
        stdio: NewStdio,
        master: Option<OwnedFd>,
    ) -> Result<Process> {
        let exit = watch_exit_in(&self.changed, self.engine.as_ref(), &self.id, pid);
        let stdio = stdio.finish(master)?;
        let mark = Mark::new(&self.changed, &self.id);
        Process::new(self.exec_id.clone(), pid, start_time, exit, stdio, mark, &self.log)
    }

    /// The work as the engine runs it, and the slot it fills: the Process
    /// on `pipes` (None with a terminal), the spec serialised and, given its
    /// path, written as the bundle's config.json.
    pub(crate) fn meanwhile(self: Arc<Self>, pipes: Option<NewStdio>, config: Option<PathBuf>) -> (Meanwhile, Slot) {
        let slot = Slot::default();
        let out = slot.clone();
        let run = move |s: InitStarted<'_>| {
            let init = pipes.map(|stdio| self.process(s.pid, s.start_time, stdio, None));
            let spec_json = SpecJson::from_raw(Arc::from(s.spec_json.to_owned()));
            let config = config.map(|path| {
                let flags = nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_TRUNC;
                rustjail::open::file(&path, flags)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, spec_json.raw().get().as_bytes()))
                    .map_err(|e| Error::sys(format!("write {}", path.display()), e))
            });
            let mount_ns = super::mount_ns::hold(s.pid, s.spec);
            *lock(&out) = Some(Made {
                pid: s.pid,
                init,
                spec_json,
                config,
                mount_ns,
            });
        };
        (Meanwhile(Box::new(run)), slot)
    }
}
