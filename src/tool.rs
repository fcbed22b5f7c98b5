//! Running a tool of the guest image (iptables-save, resize2fs, ...) and
//! collecting its output.
//!
//! The agent reaps every child itself (`reaper.rs`, `waitpid(-1)`), so a
//! tool's exit status must come from the reaper ([`Exits`]): `Child::wait` or
//! `Command::output` would race it and fail with ECHILD.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::sync::watch;

use crate::reaper::Exit;

/// The exit of a child of the agent, once there is one (the reaper's watch).
pub(crate) type Exits<'a> = &'a (dyn Fn(i32) -> watch::Receiver<Option<Exit>> + Sync);

/// What a tool printed, and how it ended.
#[derive(Debug)]
pub(crate) struct Output {
    /// How it ended.
    pub exit: Exit,
    /// Its standard output (read by iptables-save).
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub stdout: Vec<u8>,
    /// Its standard error, as text.
    pub stderr: String,
}

/// A tool that could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    /// `execve` failed (`NotFound`: the tool is not in the image).
    #[error("execve {tool}: {source}")]
    Spawn {
        /// The tool.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{tool} did not finish within {after:?} and was killed")]
    Timeout {
        /// The tool.
        tool: String,
        /// The limit.
        after: Duration,
    },
    /// Its exit status or output could not be collected.
    #[error("{tool} (pid {pid}): {what}")]
    Lost {
        /// The tool.
        tool: String,
        /// Its pid.
        pid: i32,
        /// What was lost.
        what: String,
    },
}

/// How `e` reads in an error message.
pub(crate) fn describe(e: Exit) -> String {
    match e {
        Exit::Code(c) => format!("exit status {c}"),
        Exit::Signal(s) => format!("killed by signal {s}"),
    }
}

/// Runs `tool args` (a bare name is looked up in `PATH`) with `stdin` (or
/// /dev/null), collecting its output; killed after `timeout`.
pub(crate) async fn run(
    tool: &Path,
    args: &[&str],
    stdin: Option<Vec<u8>>,
    exits: Exits<'_>,
    timeout: Duration,
) -> Result<Output, ToolError> {
    let name = tool.display().to_string();
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Spawn {
            tool: name.clone(),
            source,
        })?;
    let pid = child.id() as i32;
    let mut exited = exits(pid);
    // One thread per pipe: a tool that fills stderr while its stdin is still
    // being written must not deadlock with us.
    let writer = child.stdin.take().zip(stdin).map(|(mut w, data)| {
        std::thread::spawn(move || {
            // A tool that exits early closes the pipe (EPIPE): its status tells why.
            let _ = w.write_all(&data);
        })
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let lost = |what: &str| ToolError::Lost {
        tool: name.clone(),
        pid,
        what: what.into(),
    };
    let exit = match tokio::time::timeout(timeout, exited.wait_for(|e| e.is_some())).await {
        Ok(Ok(e)) => (*e).expect("checked"),
        Ok(Err(_)) => return Err(lost("exit status lost")),
        Err(_) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            return Err(ToolError::Timeout {
                tool: name,
                after: timeout,
            });
        }
    };
    let join = move || {
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = reader.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        (stdout, stderr)
    };
    let (stdout, stderr) = tokio::task::spawn_blocking(join)
        .await
        .map_err(|e| lost(&format!("collect output: {e}")))?;
    Ok(Output { exit, stdout, stderr })
}
