//! Which containers may have changed since the state was last written.
//!
//! The state is written after every change, and telling each of 200
//! containers unchanged (its device lock, its processes' exits and
//! descriptors, its execs) took a sixth of a millisecond per write, most of
//! it cache misses: a write now looks only at the containers marked here.
//!
//! A change is marked after it is made, or while the lock a reader must take
//! to see it is held, so a write that takes the mark sees the change, and a
//! change made after a write took the marks marks again. Marked: a container
//! added or removed (by the sandbox), its devices or execs changed (under
//! their locks), a process waited for, its stdin closed or an output at its
//! end (by the [`Process`](super::Process), through its [`Mark`]), and a
//! process's exit (by the engine's exit hook, through the pid's container).
//! Everything is marked at first, and when a write that took the marks was
//! dropped half-way.

use std::sync::{Arc, Mutex};

use super::lock;

/// The marks of one sandbox.
#[derive(Debug)]
pub(crate) struct Changed {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Every container, whichever are in `ids`.
    all: bool,
    /// A few at a time (a write follows every change): a list.
    ids: Vec<Arc<str>>,
    /// The container of each process whose exit is still to come (a list
    /// too: one scan per exit, and no map's code in the binary for it).
    pids: Vec<(i32, Arc<str>)>,
}

/// What [`Changed::take`] found marked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Every container.
    All,
    /// These containers (maybe gone since), in the order they were marked.
    Ids(Vec<Arc<str>>),
}

impl Default for Changed {
    fn default() -> Self {
        Changed {
            inner: Mutex::new(Inner {
                all: true,
                ids: Vec::new(),
                pids: Vec::new(),
            }),
        }
    }
}

impl Changed {
    /// Marks container `id`.
    pub(crate) fn touch(&self, id: &str) {
        let mut i = lock(&self.inner);
        if !i.all && !i.ids.iter().any(|m| **m == *id) {
            i.ids.push(Arc::from(id));
        }
    }

    /// Marks every container.
    pub(crate) fn touch_all(&self) {
        let mut i = lock(&self.inner);
        i.all = true;
        i.ids.clear();
    }

    /// Takes the marks (none left).
    pub(crate) fn take(&self) -> Taken {
        let mut i = lock(&self.inner);
        if std::mem::take(&mut i.all) {
            i.ids.clear();
            return Taken::All;
        }
        Taken::Ids(std::mem::take(&mut i.ids))
    }

    /// Puts back marks taken by a write that did not finish.
    pub(crate) fn untake(&self, taken: Taken) {
        match taken {
            Taken::All => self.touch_all(),
            Taken::Ids(ids) => {
                let mut i = lock(&self.inner);
                if !i.all {
                    for id in ids {
                        if !i.ids.contains(&id) {
                            i.ids.push(id);
                        }
                    }
                }
            }
        }
    }

    /// Remembers that `pid` is a process of container `id`, whose exit marks it.
    pub(crate) fn watch_pid(&self, pid: i32, id: &str) {
        let mut i = lock(&self.inner);
        i.pids.retain(|(p, _)| *p != pid);
        i.pids.push((pid, Arc::from(id)));
    }

    /// `pid`'s exit was delivered (the engine's exit hook): marks its container.
    pub(crate) fn exited(&self, pid: i32) {
        let mut i = lock(&self.inner);
        if let Some(at) = i.pids.iter().position(|(p, _)| *p == pid) {
            let (_, id) = i.pids.swap_remove(at);
            if !i.all && !i.ids.contains(&id) {
                i.ids.push(id);
            }
        }
    }
}

/// A process's way to mark its container.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mark(Option<(Arc<Changed>, Arc<str>)>);

impl Mark {
    /// Marks container `id` of `changed`.
    pub(crate) fn new(changed: &Arc<Changed>, id: &str) -> Mark {
        Mark(Some((changed.clone(), Arc::from(id))))
    }

    /// Marks the container (a process outside any sandbox: nothing).
    pub(crate) fn touch(&self) {
        if let Some((changed, id)) = &self.0 {
            changed.touch(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(t: Taken) -> Vec<String> {
        match t {
            Taken::All => panic!("all taken"),
            Taken::Ids(v) => v.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn marks_are_taken_once_and_everything_is_marked_at_first() {
        let c = Arc::new(Changed::default());
        assert_eq!(c.take(), Taken::All);
        assert_eq!(ids(c.take()), Vec::<String>::new());
        c.touch("b");
        Mark::new(&c, "a").touch();
        c.touch("b");
        assert_eq!(ids(c.take()), ["b", "a"]);
        assert_eq!(ids(c.take()), Vec::<String>::new());
        c.touch("a");
        c.touch_all();
        assert_eq!(c.take(), Taken::All);
        Mark::default().touch();
        assert_eq!(ids(c.take()), Vec::<String>::new());
    }

    #[test]
    fn an_exit_marks_its_container_once() {
        let c = Changed::default();
        let _ = c.take();
        c.watch_pid(7, "a");
        c.exited(8);
        assert_eq!(ids(c.take()), Vec::<String>::new());
        c.exited(7);
        assert_eq!(ids(c.take()), ["a"]);
        c.exited(7);
        assert_eq!(ids(c.take()), Vec::<String>::new());
    }

    #[test]
    fn marks_a_dropped_write_took_come_back() {
        let c = Changed::default();
        let all = c.take();
        c.untake(all);
        assert_eq!(c.take(), Taken::All);
        c.touch("a");
        let some = c.take();
        c.touch("b");
        c.untake(some);
        assert_eq!(ids(c.take()), ["b", "a"]);
    }
}
