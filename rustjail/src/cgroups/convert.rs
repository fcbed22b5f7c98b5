//! Value conversions between OCI resources and cgroup file contents (runc's semantics: 0 means
//! "not set", -1 means "unlimited").

use std::collections::HashMap;

use oci_spec::runtime::LinuxRdma;

use super::error::{Error, Result};

/// Converts v1 cpu shares (2..262144) to a v2 cpu.weight (1..10000), as runc does; 0 stays 0 (unset).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    (1 + (shares.saturating_sub(2).min(262_142) * 9999) / 262_142).clamp(1, 10_000)
}

/// Converts a v1 blkio weight (10..1000) to a v2 io.weight (1..10000), as runc does; 0 stays 0.
pub fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    (1 + (weight.saturating_sub(10).min(990) * 9999) / 990).clamp(1, 10_000)
}

/// A limit in bytes (or µs): `None` for 0 (unset), `unlimited` for -1, an error below -1.
pub(crate) fn limit_str(resource: &str, v: i64, unlimited: &str) -> Result<Option<String>> {
    match v {
        0 => Ok(None),
        -1 => Ok(Some(unlimited.to_string())),
        v if v < 0 => Err(Error::invalid(resource, v, "must be positive, or -1 for unlimited")),
        v => Ok(Some(v.to_string())),
    }
}

/// `limit_str` over an optional value.
pub(crate) fn opt_limit(resource: &str, v: Option<i64>, unlimited: &str) -> Result<Option<String>> {
    v.map_or(Ok(None), |v| limit_str(resource, v, unlimited))
}

/// The pids.max value: `None` for 0 (unset, as runc), "max" for negative, else the number.
pub(crate) fn pids_str(limit: i64) -> Option<String> {
    match limit {
        0 => None,
        l if l < 0 => Some("max".into()),
        l => Some(l.to_string()),
    }
}

/// The v2 memory.swap.max value for OCI `memory.swap` (memory+swap) and `memory.limit`:
/// swap - limit, "max" for unlimited, `None` when nothing is to be written (runc's rules).
pub fn swap_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<String>> {
    let (swap, memory) = (swap.unwrap_or(0), limit.unwrap_or(0));
    if memory == -1 && swap == 0 {
        return Ok(Some("max".into()));
    }
    match swap {
        0 => return Ok(None),
        -1 => return Ok(Some("max".into())),
        s if s < 0 => {
            return Err(Error::invalid(
                "memory.swap",
                s,
                "must be positive, or -1 for unlimited",
            ))
        }
        _ => {}
    }
    if memory == 0 {
        return Err(Error::invalid("memory.swap", swap, "a swap limit needs a memory limit"));
    }
    if memory < 0 {
        return Err(Error::invalid(
            "memory.limit",
            memory,
            "must be positive when a swap limit is set",
        ));
    }
    if swap < memory {
        return Err(Error::invalid(
            "memory.swap",
            swap,
            "memory+swap must be >= the memory limit",
        ));
    }
    Ok(Some((swap - memory).to_string()))
}

/// rdma.max lines ("mlx4_0 hca_handle=2 hca_object=2000"), one per device with a limit, sorted.
pub(crate) fn rdma_lines(rdma: &HashMap<String, LinuxRdma>) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (dev, l) in rdma {
        if dev.is_empty() || dev.contains(char::is_whitespace) {
            return Err(Error::invalid(
                "rdma device",
                dev,
                "must be a device name without spaces",
            ));
        }
        let mut line = dev.clone();
        if let Some(h) = l.hca_handles() {
            line.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = l.hca_objects() {
            line.push_str(&format!(" hca_object={o}"));
        }
        if line.len() > dev.len() {
            lines.push(line);
        }
    }
    lines.sort();
    Ok(lines)
}

/// A device number pair "major:minor" from spec values, refusing negative numbers.
pub(crate) fn dev_pair(resource: &str, major: i64, minor: i64) -> Result<String> {
    let ma = super::fs::dev_num(resource, major)?;
    let mi = super::fs::dev_num(resource, minor)?;
    Ok(format!("{ma}:{mi}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_weights_match_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
    }

    #[test]
    fn swap_conversion_follows_runc() {
        let s = |swap, limit| swap_v2(swap, limit).map_err(|e| e.to_string());
        assert_eq!(s(None, None), Ok(None));
        assert_eq!(s(None, Some(-1)), Ok(Some("max".into())));
        assert_eq!(s(Some(-1), Some(100)), Ok(Some("max".into())));
        assert_eq!(s(Some(300), Some(100)), Ok(Some("200".into())));
        assert_eq!(s(Some(100), Some(100)), Ok(Some("0".into())));
        assert!(s(Some(50), Some(100)).unwrap_err().contains(">= the memory limit"));
        assert!(s(Some(100), None).unwrap_err().contains("needs a memory limit"));
        assert!(s(Some(-5), Some(100)).is_err());
    }

    #[test]
    fn limits_and_pids() {
        assert_eq!(limit_str("x", 0, "max").unwrap(), None);
        assert_eq!(limit_str("x", -1, "max").unwrap(), Some("max".into()));
        assert_eq!(limit_str("x", 4096, "max").unwrap(), Some("4096".into()));
        let e = limit_str("memory.limit", -7, "max").unwrap_err().to_string();
        assert!(e.contains("memory.limit") && e.contains("-7"), "{e}");
        assert_eq!(pids_str(0), None);
        assert_eq!(pids_str(-1), Some("max".into()));
        assert_eq!(pids_str(10), Some("10".into()));
        assert!(dev_pair("blkio", -1, 0).is_err());
        assert_eq!(dev_pair("blkio", 8, 16).unwrap(), "8:16");
    }
}
