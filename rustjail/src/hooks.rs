//! OCI hooks: each runs with the container's state as JSON on stdin, its own
//! args and env, and is killed when its timeout passes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;
use serde::Serialize;

use crate::error::{Error, Result};

/// The state handed to hooks on stdin (the OCI "state" document).
#[derive(Debug, Clone, Serialize)]
pub struct HookState {
    /// OCI version of the state document.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Lifecycle status at the time of the hook.
    pub status: String,
    /// Init pid (0 once stopped).
    pub pid: i32,
    /// Bundle path.
    pub bundle: String,
    /// Annotations from the spec.
    pub annotations: std::collections::HashMap<String, String>,
}

/// How a hook ended, as a [`ChildWaiter`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookExit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Waits up to the timeout (`None`: for ever) for child `pid` to end; `None`
/// when the time ran out. A program that reaps all its children itself (the
/// agent, as PID 1 or subreaper) installs one with
/// [`crate::Runtime::set_child_waiter`], so that hook statuses reach rustjail.
pub type ChildWaiter = std::sync::Arc<dyn Fn(i32, Option<Duration>) -> Option<HookExit> + Send + Sync>;

/// Runs `hooks` in order; the first that fails or times out stops the rest.
pub fn run(kind: &str, hooks: &[Hook], state: &HookState) -> Result<()> {
    run_with(kind, hooks, state, None)
}

/// [`run`], collecting the hooks' statuses through `waiter` when given.
pub fn run_with(kind: &str, hooks: &[Hook], state: &HookState, waiter: Option<&ChildWaiter>) -> Result<()> {
    let input = serde_json::to_vec(state).map_err(|e| Error::Hook(format!("encode hook state: {e}")))?;
    for h in hooks {
        run_one(kind, h, &input, waiter)?;
    }
    Ok(())
}

/// Runs every hook of `hooks`, whatever the others did (poststart and
/// poststop: a failure is a warning, and the rest still run); returns the failures.
pub fn run_all(kind: &str, hooks: &[Hook], state: &HookState, waiter: Option<&ChildWaiter>) -> Vec<String> {
    let input = match serde_json::to_vec(state) {
        Ok(i) => i,
        Err(e) => return vec![format!("encode hook state: {e}")],
    };
    hooks
        .iter()
        .filter_map(|h| run_one(kind, h, &input, waiter).err().map(|e| e.to_string()))
        .collect()
}

fn run_one(kind: &str, h: &Hook, input: &[u8], waiter: Option<&ChildWaiter>) -> Result<()> {
    let path = h.path();
    let shown = format!("{kind} hook {}", path.display());
    let mut cmd = Command::new(path);
    let args = h.args().clone().unwrap_or_default();
    if let Some(arg0) = args.first() {
        use std::os::unix::process::CommandExt;
        cmd.arg0(arg0);
    }
    cmd.args(args.iter().skip(1));
    cmd.env_clear();
    for kv in h.env().as_deref().unwrap_or(&[]) {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Hook(format!("{shown}: start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(input);
    }
    let timeout = h.timeout().map(|t| Duration::from_secs(t.max(1) as u64));
    if let Some(wait) = waiter {
        let pid = child.id() as i32;
        return match wait(pid, timeout) {
            Some(HookExit::Code(0)) => Ok(()),
            Some(HookExit::Code(c)) => Err(Error::Hook(format!("{shown} failed: exit status: {c}"))),
            Some(HookExit::Signal(s)) => Err(Error::Hook(format!("{shown} failed: killed by signal {s}"))),
            None => {
                let _ = child.kill();
                let _ = wait(pid, None);
                Err(Error::Hook(format!(
                    "{shown} timed out after {}s and was killed",
                    h.timeout().unwrap_or(0)
                )))
            }
        };
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(Error::Hook(format!("{shown} failed: {st}"))),
            Ok(None) => {}
            Err(e) => return Err(Error::Hook(format!("{shown}: wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Hook(format!(
                "{shown} timed out after {}s and was killed",
                h.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
