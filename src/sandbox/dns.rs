//! CreateSandbox's DNS, as kata-agent sets it up: the lines go to a file of
//! the sandbox's own (`/run/kata-containers/sandbox/resolv.conf`), which is
//! bind-mounted over the guest's `/etc/resolv.conf`. The guest's root may be
//! read-only (a Kata image is); a bind mount over an existing file works
//! there. No DNS, or no `/etc/resolv.conf` in the guest: nothing is done.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::{Error, Result};

/// Where the DNS lines go and what they are mounted over.
#[derive(Debug, Clone)]
pub(crate) struct DnsFiles {
    /// The sandbox's file (kata-agent: `/run/kata-containers/sandbox/resolv.conf`).
    pub sandbox: PathBuf,
    /// The guest's file it is mounted over (`/etc/resolv.conf`).
    pub guest: PathBuf,
}

/// kata-agent's file for the sandbox's DNS.
pub(crate) const SANDBOX_RESOLV_CONF: &str = "/run/kata-containers/sandbox/resolv.conf";

impl DnsFiles {
    /// Writes `lines` (each trimmed) and mounts them over the guest's file.
    /// Returns whether it mounted (false: nothing to do).
    pub(crate) fn set_up(&self, lines: &[String]) -> Result<bool> {
        if lines.is_empty() {
            return Ok(false);
        }
        match std::fs::metadata(&self.guest) {
            // As kata-agent: a guest without the file gets none.
            Err(_) => return Ok(false),
            Ok(m) if m.is_dir() => {
                return Err(Error::FailedPrecondition(format!(
                    "DNS: {} is a directory",
                    self.guest.display()
                )))
            }
            Ok(_) => {}
        }
        write_atomically(&self.sandbox, lines)?;
        nix::mount::mount(
            Some(&self.sandbox),
            &self.guest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            let _ = std::fs::remove_file(&self.sandbox);
            Error::sys(
                format!("mount --bind {} {}", self.sandbox.display(), self.guest.display()),
                e,
            )
        })?;
        Ok(true)
    }

    /// Undoes [`DnsFiles::set_up`]: unmounts the guest's file, removes the sandbox's.
    pub(crate) fn tear_down(&self) -> Result<()> {
        nix::mount::umount2(&self.guest, MntFlags::MNT_DETACH)
            .map_err(|e| Error::sys(format!("umount {}", self.guest.display()), e))?;
        let _ = std::fs::remove_file(&self.sandbox);
        Ok(())
    }
}

/// Writes `lines` to `path` atomically (temporary file, fsync, rename),
/// making its directory first.
fn write_atomically(path: &Path, lines: &[String]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.pith-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("resolv")
    ));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        for l in lines {
            writeln!(f, "{}", l.trim())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::sys(format!("write {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(d: &Path) -> DnsFiles {
        DnsFiles {
            sandbox: d.join("run/sandbox/resolv.conf"),
            guest: d.join("etc/resolv.conf"),
        }
    }

    #[test]
    fn the_sandbox_file_is_written_whole() {
        let d = tempfile::tempdir().unwrap();
        let f = files(d.path());
        write_atomically(&f.sandbox, &[" nameserver 10.0.0.2 ".into(), "search pod.local".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f.sandbox).unwrap(),
            "nameserver 10.0.0.2\nsearch pod.local\n"
        );
        assert_eq!(
            std::fs::read_dir(f.sandbox.parent().unwrap()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn nothing_without_dns_or_without_the_guest_file() {
        let d = tempfile::tempdir().unwrap();
        let f = files(d.path());
        assert!(!f.set_up(&[]).unwrap());
        assert!(!f.set_up(&["nameserver 10.0.0.1".into()]).unwrap());
        assert!(!f.sandbox.exists(), "nothing written");
        std::fs::create_dir_all(&f.guest).unwrap();
        let e = f.set_up(&["nameserver 10.0.0.1".into()]).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }
}
