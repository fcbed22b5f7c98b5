//! StatsContainer: the container's cgroup statistics with Kata's values (an
//! unlimited pids limit is 0). No network statistics: kata-agent reports none
//! there (the shim takes them elsewhere).

use rustjail::cgroups::Stats;

use super::{Result, Sandbox};

/// `stats` as kata-agent reports them: cgroups say "max" for an unlimited
/// pids controller, Kata's agent says 0.
fn kata_values(mut stats: Stats) -> Stats {
    if stats.pids.limit == u64::MAX {
        stats.pids.limit = 0;
    }
    stats
}

impl Sandbox {
    /// The container's statistics, as StatsContainer answers them.
    pub(crate) async fn stats(&self, id: &str) -> Result<Stats> {
        Ok(kata_values(self.container_stats(id).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_pids_is_zero_as_in_kata() {
        let mut st = Stats::default();
        st.pids.limit = u64::MAX;
        st.pids.current = 3;
        let p = kata_values(st.clone()).pids;
        assert_eq!((p.current, p.limit), (3, 0));
        st.pids.limit = 64;
        assert_eq!(kata_values(st).pids.limit, 64);
    }
}
