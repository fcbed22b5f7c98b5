//! The textual forms hosts send: MAC addresses, IP addresses with prefix
//! lengths, interface names. Every parser names the request field it reads,
//! so a bad value comes back as `INVALID_ARGUMENT "<field>: ..."`.

use std::fmt;
use std::net::IpAddr;

use super::NetError;

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `02:42:ac:11:00:02` (six groups of one or two hex digits; any case).
    pub fn parse(field: &str, s: &str) -> Result<Mac, NetError> {
        let bad = |why: &str| NetError::invalid(field, format!("{s:?} is not a MAC address: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            if n == 6 {
                return Err(bad("more than six groups"));
            }
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("want six hex groups separated by ':'"));
            }
            out[n] = u8::from_str_radix(part, 16).expect("checked hex");
            n += 1;
        }
        if n != 6 {
            return Err(bad("fewer than six groups"));
        }
        Ok(Mac(out))
    }

    /// The address as netlink carries it, when it is six bytes long.
    pub fn from_bytes(b: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(b).ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// An IP address with a prefix length (`10.88.0.5/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The address as given (host bits kept: it may be an interface address).
    pub addr: IpAddr,
    /// Prefix length, at most 32 (IPv4) or 128 (IPv6).
    pub prefix: u8,
}

impl IpNet {
    /// The longest prefix of the address family.
    pub fn max_prefix(addr: &IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// An address and a separate prefix length, as `IPAddress {address, mask}` carries them.
    pub fn from_parts(field: &str, addr: &str, mask: &str) -> Result<IpNet, NetError> {
        let ip = parse_ip(&format!("{field}.address"), addr)?;
        let max = Self::max_prefix(&ip);
        let prefix = mask.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
            NetError::invalid(
                &format!("{field}.mask"),
                format!("{mask:?} is not a prefix length for {ip} (0..={max})"),
            )
        })?;
        Ok(IpNet { addr: ip, prefix })
    }

    /// `ADDR/LEN`, or a bare `ADDR` (a host route: /32 or /128).
    pub fn parse(field: &str, s: &str) -> Result<IpNet, NetError> {
        match s.split_once('/') {
            Some((a, p)) => Self::from_parts_cidr(field, s, a, p),
            None => {
                let ip = parse_ip(field, s)?;
                Ok(IpNet {
                    addr: ip,
                    prefix: Self::max_prefix(&ip),
                })
            }
        }
    }

    fn from_parts_cidr(field: &str, whole: &str, a: &str, p: &str) -> Result<IpNet, NetError> {
        let ip = parse_ip(field, a)?;
        let max = Self::max_prefix(&ip);
        let prefix = p
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max && !p.starts_with('+'))
            .ok_or_else(|| NetError::invalid(field, format!("{whole:?}: prefix length must be 0..={max}")))?;
        Ok(IpNet { addr: ip, prefix })
    }

    /// The default route of a family: `0.0.0.0/0` or `::/0`.
    pub fn default_route(v6: bool) -> IpNet {
        let addr = if v6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        };
        IpNet { addr, prefix: 0 }
    }

    /// The same prefix with the host bits cleared (what the kernel keeps for a route).
    pub fn network(&self) -> IpNet {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        IpNet {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One IP address (v4 or v6).
pub fn parse_ip(field: &str, s: &str) -> Result<IpAddr, NetError> {
    if s.is_empty() {
        return Err(NetError::invalid(field, "empty, want an IP address"));
    }
    s.parse::<IpAddr>()
        .map_err(|_| NetError::invalid(field, format!("{s:?} is not an IP address")))
}

/// Checks an interface name as the kernel's `dev_valid_name` does: 1-15
/// bytes, no `/`, `:` or whitespace, not `.` or `..`.
pub fn check_ifname(field: &str, name: &str) -> Result<(), NetError> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes (IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Some("not a valid name")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        Some("contains '/', ':', a NUL or whitespace")
    } else {
        None
    };
    match why {
        Some(w) => Err(NetError::invalid(field, format!("interface name {name:?}: {w}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        let m = Mac::parse("hwAddr", "02:42:AC:11:0:2").unwrap();
        assert_eq!(m.0, [2, 0x42, 0xac, 0x11, 0, 2]);
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "02-42-ac-11-00-02",
            "02:42:ac:11:00:2g",
            "002:42:ac:11:00:02",
            "02:42:ac::00:02",
        ] {
            let e = Mac::parse("interface.hwAddr", bad).unwrap_err().to_string();
            assert!(e.starts_with("interface.hwAddr: "), "{bad:?}: {e}");
        }
        assert_eq!(Mac::from_bytes(&[1, 2, 3, 4, 5, 6]), Some(Mac([1, 2, 3, 4, 5, 6])));
        assert_eq!(Mac::from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn prefixes() {
        let n = IpNet::from_parts("a", "10.88.0.5", "16").unwrap();
        assert_eq!(n.to_string(), "10.88.0.5/16");
        assert_eq!(n.network().to_string(), "10.88.0.0/16");
        let n = IpNet::parse("d", "fd00::1:2/64").unwrap();
        assert_eq!(n.network().to_string(), "fd00::/64");
        assert_eq!(IpNet::parse("d", "10.0.0.1").unwrap().prefix, 32);
        assert_eq!(IpNet::parse("d", "::1").unwrap().prefix, 128);
        assert_eq!(
            IpNet::parse("d", "0.0.0.0/0").unwrap().network().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(IpNet::default_route(true).to_string(), "::/0");
        let e = IpNet::from_parts("interface.IPAddresses[1]", "10.0.0.1", "33")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("interface.IPAddresses[1].mask: \"33\""), "{e}");
        let e = IpNet::from_parts("x", "10.0.0.300", "8").unwrap_err().to_string();
        assert!(e.starts_with("x.address: \"10.0.0.300\" is not an IP address"), "{e}");
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "fd00::/129",
            "10.0.0.0/8/8",
            "x/8",
            "",
        ] {
            assert!(IpNet::parse("routes[0].dest", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "a", "abcdefghijklmno"] {
            check_ifname("n", ok).unwrap();
        }
        for bad in ["", "abcdefghijklmnop", ".", "..", "a/b", "a:1", "a b"] {
            assert!(check_ifname("n", bad).is_err(), "{bad:?}");
        }
    }
}
