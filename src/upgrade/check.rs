//! Asking a binary what it is before handing the agent over to it.

use std::path::Path;
use std::time::Duration;

use super::identity::Identity;
use super::UpgradeError;
use crate::reaper::Exit;
use crate::tool::{self, Exits};

/// How long a binary gets to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `binary --upgrade-check` and reads its answer.
pub(crate) async fn ask(binary: &Path, exits: Exits<'_>) -> Result<Identity, UpgradeError> {
    let name = binary.display().to_string();
    let fail = |why: String| UpgradeError::Check {
        binary: name.clone(),
        why,
    };
    let out = tool::run(binary, &["--upgrade-check"], None, exits, CHECK_TIMEOUT)
        .await
        .map_err(|e| match e {
            tool::ToolError::Spawn { source, .. } => UpgradeError::BadBinary {
                path: name.clone(),
                why: format!("execve: {source}"),
            },
            e => fail(e.to_string()),
        })?;
    if out.exit != Exit::Code(0) {
        let said = out.stderr.trim();
        return Err(fail(format!(
            "{}{}",
            tool::describe(out.exit),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        )));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).map_err(|e| fail(format!("answer {:?} is not an identity: {e}", line.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[tokio::test]
    async fn answers_are_read_and_failures_named() {
        let reaper = crate::reaper::Reaper::new();
        let _t = reaper.spawn_on_sigchld().unwrap();
        let exits = move |pid| reaper.watch(pid);
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::ours();
        let good = script(dir.path(), "good", &format!("echo '{}'", me.to_json()));
        assert_eq!(ask(&good, &exits).await.unwrap(), me);
        let old = script(
            dir.path(),
            "old",
            "echo \"error: unexpected argument '$1' found\" >&2; exit 2",
        );
        let msg = ask(&old, &exits).await.unwrap_err().to_string();
        assert!(
            msg.contains("exit status 2: error: unexpected argument '--upgrade-check' found"),
            "{msg}"
        );
        let chatty = script(dir.path(), "chatty", "echo hello");
        let msg = ask(&chatty, &exits).await.unwrap_err().to_string();
        assert!(msg.contains("is not an identity"), "{msg}");
        let err = ask(&dir.path().join("missing"), &exits).await.unwrap_err();
        assert!(matches!(err, UpgradeError::BadBinary { .. }), "{err}");
    }
}
