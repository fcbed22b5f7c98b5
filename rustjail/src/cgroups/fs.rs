//! Small file helpers for cgroup files: reads, writes and parsers whose errors name the path.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use super::error::{Error, Result};

/// Reads a whole cgroup file.
pub(crate) fn read(path: &Path) -> Result<String> {
    crate::pseudo_file::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

/// Reads `dir/file` and trims surrounding white space.
pub(crate) fn read_trim(dir: &Path, file: &str) -> Result<String> {
    Ok(read(&dir.join(file))?.trim().to_string())
}

/// Reads `dir/file` if it exists; `None` when it does not.
pub(crate) fn read_opt(dir: &Path, file: &str) -> Result<Option<String>> {
    let path = dir.join(file);
    match crate::pseudo_file::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Writes `value` to the existing file `dir/file` in one `write(2)`, as cgroup files need.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    write_lines(dir, file, [value])
}

/// Writes each of `lines` to `dir/file` in a `write(2)` of its own through
/// one open descriptor: a file such as devices.allow takes one rule per
/// write, and a cgroup file opened once is looked up in kernfs once.
pub(crate) fn write_lines<'a>(dir: &Path, file: &str, lines: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let path = dir.join(file);
    let mut f = crate::open::file(&path, nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_TRUNC)
        .map_err(|e| Error::io("open", &path, e))?;
    for line in lines {
        f.write_all(line.as_bytes()).map_err(|e| Error::io("write", &path, e))?;
    }
    Ok(())
}

/// True when `dir/file` exists.
pub(crate) fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// Parses a number, with "max" (v2) or a huge v1 "unlimited" value mapped to `u64::MAX`.
pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    let s = s.trim();
    if s == "max" || s == "-1" {
        return Ok(u64::MAX);
    }
    s.parse::<u64>().map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        msg: format!("{s:?}: {e}"),
    })
}

/// Reads `dir/file` as a single number ("max" is `u64::MAX`).
pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    let path = dir.join(file);
    parse_u64(&path, &read(&path)?)
}

/// Reads `dir/file` as a single number, 0 when the file does not exist.
pub(crate) fn read_u64_or_zero(dir: &Path, file: &str) -> Result<u64> {
    match read_opt(dir, file)? {
        Some(s) => parse_u64(&dir.join(file), &s),
        None => Ok(0),
    }
}

/// Reads a flat keyed file ("key value" per line); a missing file gives an empty map.
pub(crate) fn read_keyed(dir: &Path, file: &str) -> Result<HashMap<String, u64>> {
    let path = dir.join(file);
    let Some(text) = read_opt(dir, file)? else {
        return Ok(HashMap::new());
    };
    let mut map = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            return Err(Error::Parse {
                path,
                msg: format!("line {line:?} is not \"key value\""),
            });
        };
        map.insert(k.to_string(), parse_u64(&path, v)?);
    }
    Ok(map)
}

/// Reads the pids listed in one `cgroup.procs` file.
pub(crate) fn read_procs(dir: &Path) -> Result<Vec<i32>> {
    let path = dir.join("cgroup.procs");
    let text = read(&path)?;
    text.split_whitespace()
        .map(|p| {
            p.parse::<i32>().map_err(|e| Error::Parse {
                path: path.clone(),
                msg: format!("pid {p:?}: {e}"),
            })
        })
        .collect()
}

/// The sub-directories of `dir`, deepest first, `dir` itself last.
pub(crate) fn dirs_depth_first(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("readdir", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("readdir", dir, e))?;
        let ft = entry.file_type().map_err(|e| Error::io("stat", entry.path(), e))?;
        if ft.is_dir() {
            out.extend(dirs_depth_first(&entry.path())?);
        }
    }
    out.push(dir.to_path_buf());
    Ok(out)
}

/// All pids in the cgroup `dir` and its descendants, sorted and without duplicates.
pub(crate) fn procs_recursive(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    for d in dirs_depth_first(dir)? {
        match read_procs(&d) {
            Ok(p) => pids.extend(p),
            // A child cgroup removed while we walk is not an error.
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// How many times [`remove_cgroup`] tries `rmdir` on a busy directory.
const RMDIR_ATTEMPTS: u32 = 6;

/// Removes the cgroup `dir` and its descendants (deepest first), retrying on EBUSY for about 0.6 s.
/// A directory that is already gone is not an error.
pub(crate) fn remove_cgroup(dir: &Path) -> Result<()> {
    // A container's cgroup seldom has sub-cgroups: one rmdir, no listing.
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    for d in dirs_depth_first(dir)? {
        let mut delay = Duration::from_millis(10);
        let mut attempt = 1;
        loop {
            match fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                    if attempt >= RMDIR_ATTEMPTS {
                        let pids = procs_recursive(&d).unwrap_or_default();
                        return Err(Error::Busy {
                            path: d,
                            attempts: attempt,
                            pids,
                        });
                    }
                    sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(Error::io("rmdir", &d, e)),
            }
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents; true when `dir` itself was not there.
pub(crate) fn mkdir_new(dir: &Path) -> Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                mkdir_all(parent)?;
            }
            match fs::create_dir(dir) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(Error::io("mkdir", dir, e)),
            }
        }
        Err(e) => Err(Error::io("mkdir", dir, e)),
    }
}

/// Creates `dir` and its missing parents.
pub(crate) fn mkdir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir, e))
}

/// Checks that a page size looks like "2MB", "64KB", "1GB" (the hugetlb file name part).
pub(crate) fn check_page_size(page_size: &str) -> Result<()> {
    let digits = page_size.trim_end_matches(['K', 'M', 'G', 'B']);
    let unit = &page_size[digits.len()..];
    let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && ["KB", "MB", "GB"].contains(&unit);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "hugepageLimits.pageSize",
            page_size,
            "expected <number>KB, MB or GB, e.g. 2MB",
        ))
    }
}

/// The hugetlb page sizes that have a file `hugetlb.<size>.<suffix>` in `dir`, sorted.
pub(crate) fn hugetlb_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let mut sizes: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?.strip_suffix('.')?;
            (!rest.contains('.')).then(|| rest.to_string())
        })
        .collect();
    sizes.sort();
    sizes
}

/// Validates a device number from the spec (major or minor): 0..=i32::MAX.
pub(crate) fn dev_num(resource: &str, n: i64) -> Result<u32> {
    if (0..=i64::from(i32::MAX)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(Error::invalid(
            resource,
            n,
            "device numbers must be between 0 and 2147483647",
        ))
    }
}

/// Polls `check` every few milliseconds for up to `timeout`; returns the last state seen on timeout.
pub(crate) fn wait_for<F>(path: &Path, want: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Result<(bool, String)>,
{
    let start = std::time::Instant::now();
    loop {
        let (done, last) = check()?;
        if done {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                path: path.to_path_buf(),
                want: want.to_string(),
                last,
                ms: timeout.as_millis() as u64,
            });
        }
        sleep(Duration::from_millis(2));
    }
}
