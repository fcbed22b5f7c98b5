//! Terminals for container processes. rustjail hands the pty master over a
//! console socket (as runc does); the agent listens on a private socket for the
//! one connection of each process it starts with a terminal.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use super::SandboxError;

/// A console socket waiting for its pty master.
pub struct ConsoleSocket {
    path: PathBuf,
    accept: JoinHandle<Result<OwnedFd, SandboxError>>,
}

impl ConsoleSocket {
    /// Listens at a fresh short path in `dir` (container ids can be 64 characters,
    /// more than a socket path holds); a stale file from an earlier run is replaced.
    pub fn listen(dir: &Path) -> Result<ConsoleSocket, SandboxError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir).map_err(|e| SandboxError::Internal(format!("mkdir {}: {e}", dir.display())))?;
        let path = dir.join(format!("t{}.sock", NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| SandboxError::Internal(format!("bind console socket {}: {e}", path.display())))?;
        let shown = path.display().to_string();
        let accept = tokio::spawn(async move {
            let (conn, _) = listener
                .accept()
                .await
                .map_err(|e| SandboxError::Internal(format!("accept on console socket {shown}: {e}")))?;
            let conn = conn
                .into_std()
                .map_err(|e| SandboxError::Internal(format!("console socket {shown}: {e}")))?;
            // The sender writes the descriptor right after connecting: a short blocking read.
            tokio::task::spawn_blocking(move || {
                conn.set_nonblocking(false)
                    .map_err(|e| SandboxError::Internal(format!("console socket {shown}: {e}")))?;
                rustjail::sync::recv_fd(&conn).map_err(|e| SandboxError::Internal(format!("console socket: {e}")))
            })
            .await
            .map_err(|e| SandboxError::Internal(format!("worker thread: {e}")))?
        });
        Ok(ConsoleSocket { path, accept })
    }

    /// The path to give rustjail.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The master, once rustjail has sent it (call after create/exec returned Ok).
    pub async fn master(mut self) -> Result<OwnedFd, SandboxError> {
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.accept).await;
        match r {
            Ok(joined) => joined.map_err(|e| SandboxError::Internal(format!("console task: {e}")))?,
            Err(_) => Err(SandboxError::Internal(format!(
                "no terminal arrived on {} within 5s",
                self.path.display()
            ))),
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
