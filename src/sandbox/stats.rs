//! StatsContainer: the container's cgroup statistics and the sandbox's network
//! interface counters (the sandbox's network namespace is the agent's: the VM's).

use super::{Result, Sandbox};

/// One network interface's counters, from /proc/net/dev.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InterfaceStats {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Sent packets dropped.
    pub tx_dropped: u64,
}

/// What StatsContainer answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerStats {
    /// The container's cgroup.
    pub cgroup: rustjail::cgroups::Stats,
    /// The sandbox's interfaces.
    pub interfaces: Vec<InterfaceStats>,
}

/// Interface counters from the text of /proc/net/dev.
pub(crate) fn parse_proc_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if v.len() < 12 {
                return None;
            }
            Some(InterfaceStats {
                name: name.trim().to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

impl Sandbox {
    /// The container's statistics and the sandbox's interface counters.
    pub(crate) async fn stats(&self, id: &str) -> Result<ContainerStats> {
        let cgroup = self.container_stats(id).await?;
        let interfaces = parse_proc_net_dev(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default());
        Ok(ContainerStats { cgroup, interfaces })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev_columns() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo: 1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
eth0: 5000      50    1    2    0     0          0         0     7000      70    3    4    0     0       0          0\n";
        let s = parse_proc_net_dev(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, "eth0");
        assert_eq!(
            (s[1].rx_bytes, s[1].rx_packets, s[1].rx_errors, s[1].rx_dropped),
            (5000, 50, 1, 2)
        );
        assert_eq!(
            (s[1].tx_bytes, s[1].tx_packets, s[1].tx_errors, s[1].tx_dropped),
            (7000, 70, 3, 4)
        );
    }
}
