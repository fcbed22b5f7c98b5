//! The keeper: a small single-threaded process that outlives the agent, so
//! that an agent crash loses no container.
//!
//! ```text
//! keeper (pith-agent --keeper; subreaper)
//!  └─ pith-agent (its child; _PITH_KEEPER_FD names its end of the channel)
//!      └─ container inits, exec'd processes, the namespace holder
//! ```
//!
//! While the agent runs it reaps its own children. When it dies, its
//! children are re-parented to the keeper (the nearest subreaper), which
//! reaps them and keeps each exit until an agent says it is on disk
//! (`FORGET`). The keeper also holds a copy of every descriptor the agent
//! cannot lose (each process's stdio, the namespace holder's channel): while
//! one copy is open, a container writing its stdout does not get EPIPE, and a
//! resident helper does not see its agent go. A new agent gets every held
//! descriptor and every kept exit at start (the handoff), then keeps the
//! keeper informed. The keeper restarts an agent that died of a signal or a
//! panic; a clean exit (DestroySandbox, SIGTERM) ends the keeper too.
//!
//! The channel is a SOCK_SEQPACKET socket pair: one message per datagram,
//! text, with at most one descriptor (`wire.rs`). Its descriptor number is
//! passed in the environment, so it also survives an `execve` of the agent.
//!
//! As the guest's PID 1 the keeper is init: it mounts the basic filesystems,
//! reaps every orphan, and powers the VM off when the agent ends for good,
//! so that an agent crash no longer panics the kernel. The agent's listening
//! sockets (ttrpc server, debug console) are held like stdio: the ports stay
//! open across a restart (`listen.rs`).
//!
//! Files: `wire.rs` (messages), `parent.rs` (the keeper process), `link.rs`
//! (the agent's side), `listen.rs` (listening sockets kept across restarts).

pub(crate) mod link;
pub(crate) mod listen;
pub(crate) mod parent;
pub(crate) mod wire;

/// Environment variable holding the agent's end of the keeper channel.
pub(crate) const FD_ENV: &str = "_PITH_KEEPER_FD";
