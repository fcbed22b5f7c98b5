//! What CreateContainer sets up for a container's init while the init builds
//! its root: the agent's side of its stdio (pipes registered, output
//! journals), the watch on its exit, and its spec as the state file holds it.
//! Done after the init reported, that was ~0.1 ms of every create spent while
//! the other CPU sat idle waiting for the mounts.

use std::sync::{Arc, Mutex};

use rustjail::container::{InitStarted, Meanwhile};

use super::changed::{Changed, Mark};
use super::engine::ContainerEngine;
use super::new_stdio::NewStdio;
use super::process::Process;
use super::view::SpecJson;
use super::{lock, Result};

/// What was made for the init `pid`.
pub(crate) struct Made {
    /// The init the work was done for.
    pub pid: i32,
    /// Its Process, when its stdio were pipes (a terminal's master comes
    /// only with the created container).
    pub init: Option<Result<Process>>,
    /// The spec the engine runs, serialised.
    pub spec_json: SpecJson,
}

/// Where the work leaves what it made.
pub(crate) type Slot = Arc<Mutex<Option<Made>>>;

/// Everything the work needs, owned: it runs on the engine's thread.
pub(crate) struct Work {
    /// Container id.
    pub id: String,
    /// The init's exec id.
    pub exec_id: String,
    /// The agent's ends of the pipes; None with a terminal.
    pub stdio: Option<NewStdio>,
    pub engine: Arc<dyn ContainerEngine>,
    pub changed: Arc<Changed>,
    pub log: slog::Logger,
}

impl Work {
    /// The work as the engine runs it, and the slot it fills.
    pub(crate) fn into_meanwhile(self) -> (Meanwhile, Slot) {
        let slot = Slot::default();
        let out = slot.clone();
        let run = move |s: InitStarted<'_>| {
            let init = self.stdio.map(|stdio| {
                // As `Sandbox::watch_exit_of`: its exit marks the container.
                self.changed.watch_pid(s.pid, &self.id);
                let exit = self.engine.watch_exit(s.pid);
                stdio.finish(None).and_then(|stdio| {
                    let mark = Mark::new(&self.changed, &self.id);
                    Process::new(self.exec_id, s.pid, s.start_time, exit, stdio, mark, &self.log)
                })
            });
            *lock(&out) = Some(Made {
                pid: s.pid,
                init,
                spec_json: SpecJson::of(s.spec),
            });
        };
        (Meanwhile(Box::new(run)), slot)
    }
}
