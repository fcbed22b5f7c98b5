//! Loop devices as stand-ins for the disks a host hot-plugs (root only).
//! (Also the storage unit tests' fixture: `src/storage/tests.rs` includes
//! this file.)

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over a file, detached on drop (test failures included).
pub struct Loop {
    /// The device node (`/dev/loopN`).
    pub dev: PathBuf,
    /// The file behind it.
    pub file: PathBuf,
}

impl Loop {
    /// Over a 1 MiB file of zeros.
    pub fn new(dir: &Path) -> Loop {
        Self::with_size(dir, 1 << 20, false)
    }

    /// A loop device over a file of `size` bytes in `dir`, formatted ext4 when `ext4`.
    pub fn with_size(dir: &Path, size: usize, ext4: bool) -> Loop {
        Self::make(dir, size, ext4.then_some(&[]))
    }

    /// Over an ext4 filesystem of `size` bytes holding `files` (name, content).
    pub fn ext4_with(dir: &Path, size: usize, files: &[(&str, &str)]) -> Loop {
        Self::make(dir, size, Some(files))
    }

    fn make(dir: &Path, size: usize, ext4_files: Option<&[(&str, &str)]>) -> Loop {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = dir.join(format!("disk{n}.img"));
        std::fs::File::create(&file).unwrap().set_len(size as u64).unwrap();
        if let Some(files) = ext4_files {
            let mut mkfs = Command::new("mkfs.ext4");
            mkfs.args(["-q", "-F"]);
            if !files.is_empty() {
                let tree = dir.join(format!("disk{n}.tree"));
                std::fs::create_dir(&tree).unwrap();
                for (name, content) in files {
                    std::fs::write(tree.join(name), content).unwrap();
                }
                mkfs.arg("-d").arg(&tree);
            }
            let st = mkfs.arg(&file).status().unwrap();
            assert!(st.success(), "mkfs.ext4 {}", file.display());
        }
        Self::attach(file)
    }

    /// Attaches `file` to a free loop device.
    pub fn attach(file: PathBuf) -> Loop {
        // Tests run in parallel: one `losetup -f` at a time (two may pick the same device).
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

    /// The device node's path, as a string.
    pub fn path(&self) -> &str {
        self.dev.to_str().unwrap()
    }

    /// Its major and minor numbers.
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
