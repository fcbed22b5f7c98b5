//! Fixtures for container tests: a busybox bundle from Debian's busybox-static,
//! and the `rustjail` binary with a private state root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// A bundle with a busybox rootfs and a default spec whose process is `args`.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub state_root: tempfile::TempDir,
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap_or_else(|e| {
            panic!("{BUSYBOX}: {e} (`make test` installs busybox-static: apt-get install busybox-static)")
        });
        for tool in [
            "sh", "echo", "cat", "ls", "true", "false", "hostname", "id", "mount", "sleep", "ps", "touch", "mkdir",
            "grep", "head", "readlink", "stat", "wc", "tty", "stty", "dd", "seq", "mknod", "kill",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
        }
        let b = Bundle {
            dir,
            state_root: tempfile::tempdir().unwrap(),
        };
        b.edit(|c| {
            c["process"]["terminal"] = false.into();
            c["process"]["args"] = serde_json::json!(args);
        });
        b
    }

    /// Rewrites config.json (created from `rustjail spec` on first use).
    pub fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let path = self.dir.path().join("config.json");
        if !path.exists() {
            let out = self.rustjail(&["spec", "--bundle", self.dir.path().to_str().unwrap()]);
            assert!(out.status.success(), "spec: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut c);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Runs `rustjail --root <private> ARGS`. Output goes through files, not
    /// pipes: a container created by `create` keeps the command's stdio, so a
    /// pipe would not see EOF until the container exits.
    pub fn rustjail(&self, args: &[&str]) -> Output {
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_rustjail"))
            .arg("--root")
            .arg(self.state_root.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: std::fs::read(out.path()).unwrap(),
            stderr: std::fs::read(err.path()).unwrap(),
        }
    }

    /// Adds capabilities to the bounding, effective and permitted sets.
    pub fn add_caps(&self, caps: &[&str]) {
        self.edit(|c| {
            for set in ["bounding", "effective", "permitted"] {
                let list = c["process"]["capabilities"][set].as_array_mut().unwrap();
                list.extend(caps.iter().map(|cap| serde_json::Value::from(*cap)));
            }
        });
    }

    /// `create` then `start` container `id`; panics with rustjail's stderr on failure.
    pub fn create_and_start(&self, id: &str) {
        let out = self.rustjail(&["create", "--bundle", self.path().to_str().unwrap(), id]);
        assert!(out.status.success(), "create {id}: {}", stderr(&out));
        let out = self.rustjail(&["start", id]);
        assert!(out.status.success(), "start {id}: {}", stderr(&out));
    }

    /// `rustjail run` of this bundle as container `id`.
    pub fn run(&self, id: &str) -> Output {
        self.rustjail(&["run", "--bundle", self.path().to_str().unwrap(), id])
    }
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
