//! Loading kernel modules without `modprobe` or `modules.dep`: find the `.ko`
//! under `/lib/modules/$(uname -r)` by name (`-` and `_` are the same), read the
//! `depends=` field of its `.modinfo` ELF section, load dependencies first, then
//! `finit_module(2)`. A module that is already loaded (EEXIST) or built into the
//! kernel (listed in `modules.builtin`) counts as loaded.
//!
//! Debian's kernel packages ship plain `.ko` files and no `modules.dep`, so the
//! order has to come from the modules themselves.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// No `.ko` of that name, and the kernel does not have it built in.
    #[error("kernel module {name}: no {name}.ko under {root} and not in its modules.builtin")]
    NotFound {
        /// Module name as asked.
        name: String,
        /// The modules directory searched.
        root: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("{syscall} {path}: {source}")]
    Io {
        /// The failing call (`open`, `read`, `readdir`).
        syscall: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not an ELF module with a `.modinfo` section.
    #[error("{path}: not a kernel module: {why}")]
    BadModule {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// Modules that depend on each other in a circle.
    #[error("kernel module dependency cycle: {0}")]
    Cycle(String),
    /// `finit_module(2)` refused the module.
    #[error("finit_module {path} (params {params:?}): {source}")]
    Load {
        /// The `.ko` file.
        path: PathBuf,
        /// The parameter string given.
        params: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The modules directory of the running kernel: `/lib/modules/$(uname -r)`.
pub fn running_kernel_root() -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new("/lib/modules").join(release)
}

/// Module names compare with `-` and `_` as the same character, as the kernel does.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The `.ko` files under a modules directory, by normalized name, and the
/// names of the modules built into the kernel.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    root: PathBuf,
    files: HashMap<String, PathBuf>,
    builtin: HashSet<String>,
}

impl ModuleIndex {
    /// Walks `root` for `*.ko` files and reads `root/modules.builtin` if present.
    pub fn scan(root: &Path) -> Result<ModuleIndex, ModuleError> {
        let mut index = ModuleIndex {
            root: root.to_path_buf(),
            ..Default::default()
        };
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| ModuleError::Io {
                syscall: "readdir",
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir {
                    dirs.push(path);
                } else if let Some(stem) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".ko"))
                {
                    index.files.entry(normalize(stem)).or_insert(path);
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string(root.join("modules.builtin")) {
            for line in text.lines() {
                let file = line.rsplit('/').next().unwrap_or(line);
                if let Some(stem) = file.strip_suffix(".ko") {
                    index.builtin.insert(normalize(stem));
                }
            }
        }
        Ok(index)
    }

    /// The `.ko` file of a module, if there is one.
    pub fn file(&self, name: &str) -> Option<&Path> {
        self.files.get(&normalize(name)).map(PathBuf::as_path)
    }

    /// Whether the kernel has the module built in.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The `.ko` files to load for `name`, dependencies first, each once.
    /// Built-in modules are left out.
    pub fn load_order(&self, name: &str) -> Result<Vec<PathBuf>, ModuleError> {
        let mut order = Vec::new();
        let mut done = HashSet::new();
        let mut path = Vec::new();
        self.visit(name, &mut order, &mut done, &mut path)?;
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        order: &mut Vec<PathBuf>,
        done: &mut HashSet<String>,
        path: &mut Vec<String>,
    ) -> Result<(), ModuleError> {
        let key = normalize(name);
        if done.contains(&key) {
            return Ok(());
        }
        if path.contains(&key) {
            path.push(key);
            return Err(ModuleError::Cycle(path.join(" -> ")));
        }
        let Some(file) = self.file(&key) else {
            if self.is_builtin(&key) {
                done.insert(key);
                return Ok(());
            }
            return Err(ModuleError::NotFound {
                name: name.to_string(),
                root: self.root.clone(),
            });
        };
        let file = file.to_path_buf();
        path.push(key.clone());
        for dep in depends(&file)? {
            self.visit(&dep, order, done, path)?;
        }
        path.pop();
        done.insert(key);
        order.push(file);
        Ok(())
    }
}

/// The module names in the `depends=` field of a `.ko` file.
pub fn depends(path: &Path) -> Result<Vec<String>, ModuleError> {
    let data = std::fs::read(path).map_err(|source| ModuleError::Io {
        syscall: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let info = modinfo(&data).map_err(|why| ModuleError::BadModule {
        path: path.to_path_buf(),
        why,
    })?;
    Ok(info
        .iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| v.split(','))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect())
}

/// The `key=value` records of the `.modinfo` section of a 64-bit little-endian
/// ELF module (the only kind an x86-64 or arm64 kernel loads).
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    if elf.get(0..4) != Some(b"\x7fELF") {
        return Err("no ELF magic".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let short = || "truncated ELF header".to_string();
    let shoff = u64_at(0x28).ok_or_else(short)?;
    let shentsize = u16_at(0x3a).ok_or_else(short)? as usize;
    let shnum = u16_at(0x3c).ok_or_else(short)? as usize;
    let shstrndx = u16_at(0x3e).ok_or_else(short)? as usize;
    // (name offset, file offset, size) of section i.
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(h)? as usize, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let bytes = |off: usize, size: usize| elf.get(off..off.checked_add(size)?);
    let (_, str_off, str_size) = section(shstrndx).ok_or("section name table out of range")?;
    let names = bytes(str_off, str_size).ok_or("section name table out of range")?;
    for i in 0..shnum {
        let (name, off, size) = section(i).ok_or("section header out of range")?;
        let Some(rest) = names.get(name..) else { continue };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if &rest[..end] != b".modinfo" {
            continue;
        }
        let data = bytes(off, size).ok_or(".modinfo section out of range")?;
        return Ok(data
            .split(|&b| b == 0)
            .filter_map(|rec| {
                let rec = String::from_utf8_lossy(rec);
                rec.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect());
    }
    Err("no .modinfo section".into())
}

/// Loads module `name` from `modules_root` with `params` (`key=value` words),
/// after its dependencies (loaded without parameters). Already loaded or
/// built in is success.
pub fn load(modules_root: &Path, name: &str, params: &[String]) -> Result<(), ModuleError> {
    let index = ModuleIndex::scan(modules_root)?;
    load_with(&index, name, params)
}

/// [`load`] with an index already scanned, for loading several modules.
pub fn load_with(index: &ModuleIndex, name: &str, params: &[String]) -> Result<(), ModuleError> {
    let order = index.load_order(name)?;
    let last = order.len().saturating_sub(1);
    for (i, file) in order.iter().enumerate() {
        let p = if i == last { params.join(" ") } else { String::new() };
        finit_module(file, &p)?;
    }
    Ok(())
}

fn finit_module(path: &Path, params: &str) -> Result<(), ModuleError> {
    let file = File::open(path).map_err(|source| ModuleError::Io {
        syscall: "open",
        path: path.to_path_buf(),
        source,
    })?;
    let c_params = std::ffi::CString::new(params).map_err(|_| ModuleError::Load {
        path: path.to_path_buf(),
        params: params.to_string(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    // SAFETY: finit_module reads the open descriptor and a NUL-terminated string
    // that both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c_params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(ModuleError::Load {
        path: path.to_path_buf(),
        params: params.to_string(),
        source: err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 file: null section, `.modinfo`, `.shstrtab`.
    fn fake_ko(records: &[&str]) -> Vec<u8> {
        let mut modinfo = Vec::new();
        for r in records {
            modinfo.extend_from_slice(r.as_bytes());
            modinfo.push(0);
        }
        let shstrtab = b"\0.modinfo\0.shstrtab\0".to_vec();
        let mut elf = vec![0u8; 64];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little-endian
        let modinfo_off = elf.len();
        elf.extend_from_slice(&modinfo);
        let str_off = elf.len();
        elf.extend_from_slice(&shstrtab);
        let shoff = elf.len();
        let sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        let headers = [
            sh(0, 0, 0),
            sh(1, modinfo_off, modinfo.len()),
            sh(10, str_off, shstrtab.len()),
        ];
        for h in headers {
            elf.extend_from_slice(&h);
        }
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    /// A modules tree shaped like Debian's: virtio_pci and friends, vsock.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mods: &[(&str, &str)] = &[
            ("drivers/virtio/virtio_ring", ""),
            ("drivers/virtio/virtio", "virtio_ring"),
            ("drivers/virtio/virtio_pci_modern_dev", ""),
            ("drivers/virtio/virtio_pci_legacy_dev", ""),
            (
                "drivers/virtio/virtio_pci",
                "virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio",
            ),
            ("net/vmw_vsock/vsock", ""),
            (
                "net/vmw_vsock/vmw_vsock_virtio_transport_common",
                "vsock,virtio_ring,virtio",
            ),
            (
                "net/vmw_vsock/vmw_vsock_virtio_transport",
                "virtio,vmw_vsock_virtio_transport_common,virtio_ring,vsock",
            ),
            ("lib/crc-t10dif", "crct10dif_common"),
            ("crypto/crct10dif_common", ""),
            ("drivers/scsi/sd_mod", "scsi_mod,crc-t10dif"),
            ("drivers/scsi/scsi_mod", "scsi_common"),
        ];
        for (path, deps) in mods {
            let p = dir.path().join("kernel").join(format!("{path}.ko"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let name = p.file_stem().unwrap().to_str().unwrap().to_string();
            let records = [
                "license=GPL".to_string(),
                format!("depends={deps}"),
                format!("name={name}"),
            ];
            let refs: Vec<&str> = records.iter().map(String::as_str).collect();
            std::fs::write(&p, fake_ko(&refs)).unwrap();
        }
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/scsi/scsi_common.ko\nkernel/fs/ext4/ext4.ko\n",
        )
        .unwrap();
        dir
    }

    fn names(order: &[PathBuf]) -> Vec<String> {
        order
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn modinfo_records_and_depends() {
        let elf = fake_ko(&["license=GPL", "depends=a,b-c", "vermagic=6.1.0 SMP"]);
        let info = modinfo(&elf).unwrap();
        assert_eq!(info[1], ("depends".to_string(), "a,b-c".to_string()));
        assert_eq!(info[2].1, "6.1.0 SMP");
        assert!(modinfo(b"not elf").unwrap_err().contains("magic"));
        let mut cut = elf.clone();
        cut.truncate(100);
        assert!(modinfo(&cut).is_err());
    }

    #[test]
    fn dependencies_come_first_each_once() {
        let dir = tree();
        let index = ModuleIndex::scan(dir.path()).unwrap();
        let order = names(&index.load_order("vmw_vsock_virtio_transport").unwrap());
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport"
            ]
        );
        let order = names(&index.load_order("virtio-pci").unwrap());
        assert_eq!(order.last().unwrap(), "virtio_pci");
        assert_eq!(order.len(), 5);
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert!(pos("virtio_ring") < pos("virtio"));
    }

    #[test]
    fn dashes_underscores_and_builtins() {
        let dir = tree();
        let index = ModuleIndex::scan(dir.path()).unwrap();
        // crc-t10dif is named with a dash on disk and in depends=; scsi_common is built in.
        let order = names(&index.load_order("sd_mod").unwrap());
        assert_eq!(order, ["scsi_mod", "crct10dif_common", "crc-t10dif", "sd_mod"]);
        assert!(index.load_order("ext4").unwrap().is_empty());
        let e = index.load_order("nosuch").unwrap_err();
        assert!(e.to_string().contains("nosuch.ko"), "{e}");
    }

    #[test]
    fn cycles_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.ko"), fake_ko(&["depends=b"])).unwrap();
        std::fs::write(dir.path().join("b.ko"), fake_ko(&["depends=a"])).unwrap();
        let index = ModuleIndex::scan(dir.path()).unwrap();
        let e = index.load_order("a").unwrap_err();
        assert_eq!(e.to_string(), "kernel module dependency cycle: a -> b -> a");
    }
}
