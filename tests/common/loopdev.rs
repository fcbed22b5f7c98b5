//! Loop devices as stand-ins for the disks a host hot-plugs (root only).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over a 1 MiB file, detached on drop (test failures included).
pub struct Loop {
    /// The device node (`/dev/loopN`).
    pub dev: PathBuf,
    /// The file behind it.
    pub file: PathBuf,
}

impl Loop {
    pub fn new(dir: &Path) -> Loop {
        Self::with_size(dir, 1 << 20, false)
    }

    /// A loop device over a file of `size` bytes, formatted ext4 when `ext4`.
    pub fn with_size(dir: &Path, size: usize, ext4: bool) -> Loop {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let file = dir.join(format!(
            "disk{}.img",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&file, vec![0u8; size]).unwrap();
        if ext4 {
            let st = Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&file)
                .status()
                .unwrap();
            assert!(st.success(), "mkfs.ext4 {}", file.display());
        }
        // The tests of this file run in parallel: one `losetup -f` at a time.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Loop { dev, file }
    }

    pub fn numbers(&self) -> (u32, u32) {
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        (libc::major(rdev), libc::minor(rdev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}
