//! Reading the kernel's generated files (procfs, cgroupfs) whole.
//!
//! Such files report a size of 0, so `std::fs::read_to_string` starts with a
//! 32-byte probe and doubles: five or six `read(2)` calls for a
//! `/proc/<pid>/stat` line that one page holds. Read here, it is one read
//! with the data and one that finds the end.

use std::io::{self, ErrorKind, Read};
use std::path::Path;

/// What one read asks for first: every file read on a container's path fits.
const FIRST_READ: usize = 4096;

/// Reads the whole of a kernel-generated file as UTF-8.
pub fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    let mut file = crate::open::file(path.as_ref(), nix::fcntl::OFlag::O_RDONLY)?;
    let mut buf = vec![0u8; FIRST_READ];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    // A bare kind: a boxed FromUtf8Error would link its formatting in.
    String::from_utf8(buf).map_err(|_| io::Error::from(ErrorKind::InvalidData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_proc_line_whole() {
        let stat = read_to_string("/proc/self/stat").unwrap();
        assert!(stat.starts_with(&format!("{} (", std::process::id())), "{stat}");
        assert!(stat.ends_with('\n'), "{stat}");
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        assert!(after_comm.split_whitespace().count() >= 50, "{stat}");
    }

    #[test]
    fn reads_past_the_first_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long");
        let text: String = (0..3 * FIRST_READ).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn says_what_went_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = read_to_string(dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        let bytes = dir.path().join("bytes");
        std::fs::write(&bytes, [0xff, 0xfe]).unwrap();
        assert_eq!(read_to_string(&bytes).unwrap_err().kind(), ErrorKind::InvalidData);
    }
}
