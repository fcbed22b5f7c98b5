//! Storage options: mount flags and filesystem data, plus the few options the
//! agent itself interprets (`mode=`, `fsgid=`).

use nix::mount::MsFlags;
use protocols::agent::Storage;

use super::StorageError;

/// Kata's option naming the group that should own a volume (`fsgid=1000`).
pub const FSGID_OPTION: &str = "fsgid";

/// Flags and data for mount(2), from storage options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// MS_* flags.
    pub flags: MsFlags,
    /// Propagation changes to apply after mounting (MS_SHARED, MS_PRIVATE, ... with MS_REC).
    pub propagation: Vec<MsFlags>,
    /// Comma-separated options for the filesystem.
    pub data: String,
}

/// Splits `options` (each may itself be comma-separated) into flags, propagation
/// and data, leaving out the options in `skip` (by key).
pub fn mount_options(options: &[String], skip: &[&str]) -> MountOptions {
    let split: Vec<String> = options
        .iter()
        .flat_map(|o| o.split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .filter(|o| !skip.contains(&key(o)))
        .map(str::to_string)
        .collect();
    let p = rustjail::init::parse_options(&split);
    MountOptions {
        flags: p.flags,
        propagation: p.propagation,
        data: p.data,
    }
}

fn key(o: &str) -> &str {
    o.split_once('=').map_or(o, |(k, _)| k)
}

/// The value of `name=value` among `options`, the last one winning.
pub fn value<'a>(options: &'a [String], name: &str) -> Option<&'a str> {
    options
        .iter()
        .flat_map(|o| o.split(','))
        .filter_map(|o| o.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .next_back()
}

/// Permission bits from `mode=0750`, if given.
pub fn mode(s: &Storage) -> Result<Option<u32>, StorageError> {
    value(&s.options, "mode")
        .map(|m| {
            u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    StorageError::InvalidArgument(format!(
                        "storage at {}: mode={m} is not an octal permission",
                        s.mount_point
                    ))
                })
        })
        .transpose()
}

/// The group that should own the volume: `fsgid=` among the options, else
/// the `fs_group` field.
pub fn fs_gid(s: &Storage) -> Result<Option<u32>, StorageError> {
    if let Some(v) = value(&s.options, FSGID_OPTION) {
        return v.parse().map(Some).map_err(|_| {
            StorageError::InvalidArgument(format!(
                "storage at {}: {FSGID_OPTION}={v} is not a group id",
                s.mount_point
            ))
        });
    }
    Ok(s.fs_group.as_ref().map(|g| g.group_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_data_and_skips() {
        let o = mount_options(
            &strings(&["ro,nosuid", "size=64m", "fsgid=100", "rprivate", "mode=1777"]),
            &[FSGID_OPTION],
        );
        assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, "size=64m,mode=1777");
    }

    #[test]
    fn mode_and_fsgid() {
        let mut s = Storage::new();
        s.mount_point = "/m".into();
        s.options = strings(&["mode=0750", "fsgid=42"]);
        assert_eq!(mode(&s).unwrap(), Some(0o750));
        assert_eq!(fs_gid(&s).unwrap(), Some(42));
        s.options = strings(&["mode=9"]);
        assert!(matches!(mode(&s), Err(StorageError::InvalidArgument(_))));
        s.options = strings(&["fsgid=x"]);
        assert!(matches!(fs_gid(&s), Err(StorageError::InvalidArgument(_))));
        s.options = vec![];
        assert_eq!(fs_gid(&s).unwrap(), None);
        let mut g = protocols::agent::FSGroup::new();
        g.group_id = 7;
        s.fs_group = protobuf::MessageField::some(g);
        assert_eq!(fs_gid(&s).unwrap(), Some(7));
    }
}
