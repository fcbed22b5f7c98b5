//! Route-netlink messages as bytes: the `nlmsghdr`, the fixed header of each
//! family (`ifinfomsg`, `ifaddrmsg`, `rtmsg`, `ndmsg`) and `rtattr`s.
//!
//! Why not `netlink-packet-route`: the agent asks for links, addresses, routes
//! and neighbours, and reads back a handful of attributes. That crate parses
//! every attribute of every message kind the kernel has (traffic control,
//! bridge, link-info of each driver ...), about 360 kB of the static guest
//! binary whose budget is 4 MiB. Attributes are kept here as their bytes, so
//! a route read from the kernel can be given back to it as it was.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `NLMSG_NOOP`.
pub const NLMSG_NOOP: u16 = 1;
/// `NLMSG_ERROR`: an error or, with code 0, an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;

/// `RTM_NEWLINK`.
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_GETLINK`.
pub const RTM_GETLINK: u16 = 18;
/// `RTM_SETLINK`.
pub const RTM_SETLINK: u16 = 19;
/// `RTM_NEWADDR`.
pub const RTM_NEWADDR: u16 = 20;
/// `RTM_DELADDR`.
pub const RTM_DELADDR: u16 = 21;
/// `RTM_GETADDR`.
pub const RTM_GETADDR: u16 = 22;
/// `RTM_NEWROUTE`.
pub const RTM_NEWROUTE: u16 = 24;
/// `RTM_DELROUTE`.
pub const RTM_DELROUTE: u16 = 25;
/// `RTM_GETROUTE`.
pub const RTM_GETROUTE: u16 = 26;
/// `RTM_NEWNEIGH`.
pub const RTM_NEWNEIGH: u16 = 28;
/// `RTM_DELNEIGH`.
pub const RTM_DELNEIGH: u16 = 29;
/// `RTM_GETNEIGH`.
pub const RTM_GETNEIGH: u16 = 30;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_REPLACE`.
pub const NLM_F_REPLACE: u16 = 0x100;
/// `NLM_F_CREATE`.
pub const NLM_F_CREATE: u16 = 0x400;

/// `NLA_TYPE_MASK`: an attribute's type without the nested / byte-order bits.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;

/// `AF_INET` or `AF_INET6` for an address.
pub fn family_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

/// The bytes of an address as netlink carries it.
pub fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// An address read from 4 or 16 bytes.
pub fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

/// The host-order `u32` at byte `at` of `b`, when `b` is long enough.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One `rtattr`: its type (flag bits cleared) and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// `IFLA_*`, `IFA_*`, `RTA_*`, `NDA_*` ...
    pub kind: u16,
    /// The payload, without padding.
    pub data: Vec<u8>,
}

impl Attr {
    /// An attribute holding `data`.
    pub fn new(kind: u16, data: impl Into<Vec<u8>>) -> Attr {
        Attr {
            kind,
            data: data.into(),
        }
    }

    /// A `u32` attribute (host byte order, as rtnetlink's are).
    pub fn u32(kind: u16, v: u32) -> Attr {
        Attr::new(kind, v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn string(kind: u16, s: &str) -> Attr {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        Attr::new(kind, d)
    }

    /// A nested attribute holding `inner`.
    pub fn nested(kind: u16, inner: &[Attr]) -> Attr {
        let mut d = Vec::new();
        put_attrs(&mut d, inner);
        Attr::new(kind, d)
    }

    /// The payload as a `u32`, when it is one.
    pub fn as_u32(&self) -> Option<u32> {
        u32_at(&self.data, 0)
    }

    /// The payload as a string, up to its NUL.
    pub fn as_string(&self) -> String {
        let end = self.data.iter().position(|&b| b == 0).unwrap_or(self.data.len());
        String::from_utf8_lossy(&self.data[..end]).into_owned()
    }

    /// The attributes nested in the payload.
    pub fn nested_attrs(&self) -> Vec<Attr> {
        parse_attrs(&self.data)
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attrs(out: &mut Vec<u8>, attrs: &[Attr]) {
    for a in attrs {
        let len = 4 + a.data.len();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&a.kind.to_ne_bytes());
        out.extend_from_slice(&a.data);
        out.resize(out.len() + align4(len) - len, 0);
    }
}

/// Reads a run of attributes; a malformed tail is ignored (the kernel never
/// sends one; a short read is not worth failing a listing for).
pub fn parse_attrs(mut b: &[u8]) -> Vec<Attr> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push(Attr::new(kind, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

/// A route-netlink message: its type, its family header's bytes and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// `RTM_*`.
    pub kind: u16,
    /// The fixed header of the family (`ifinfomsg`, `rtmsg` ...), as bytes.
    pub header: Vec<u8>,
    /// The attributes after it.
    pub attrs: Vec<Attr>,
}

impl Msg {
    /// The first attribute of type `kind`.
    pub fn attr(&self, kind: u16) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.kind == kind)
    }

    /// The whole message with its `nlmsghdr`, ready to send.
    pub fn encode(&self, flags: u16, seq: u32) -> Vec<u8> {
        let mut out = vec![0; NLMSG_HDRLEN];
        out.extend_from_slice(&self.header);
        out.resize(NLMSG_HDRLEN + align4(self.header.len()), 0);
        put_attrs(&mut out, &self.attrs);
        let len = out.len() as u32;
        out[0..4].copy_from_slice(&len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.kind.to_ne_bytes());
        out[6..8].copy_from_slice(&flags.to_ne_bytes());
        out[8..12].copy_from_slice(&seq.to_ne_bytes());
        out
    }

    /// Reads the payload of a message of type `kind`, whose family header is
    /// `header_len` bytes; `None` when it is shorter than that.
    pub fn decode(kind: u16, payload: &[u8], header_len: usize) -> Option<Msg> {
        let header = payload.get(..header_len)?.to_vec();
        let rest = payload.get(align4(header_len)..).unwrap_or_default();
        Some(Msg {
            kind,
            header,
            attrs: parse_attrs(rest),
        })
    }
}

/// One message of a datagram: `(type, flags, seq, payload)`.
pub type Frame<'a> = (u16, u16, u32, &'a [u8]);

/// Splits a received datagram into its messages.
pub fn frames(mut b: &[u8]) -> Vec<Frame<'_>> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            break;
        }
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let flags = u16::from_ne_bytes([b[6], b[7]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        out.push((kind, flags, seq, &b[NLMSG_HDRLEN..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

/// The family header length of a message type (`RTM_*LINK` ... `RTM_*NEIGH`).
pub fn header_len(kind: u16) -> usize {
    match kind {
        16..=19 => 16, // ifinfomsg
        20..=23 => 8,  // ifaddrmsg
        24..=27 => 12, // rtmsg
        28..=31 => 12, // ndmsg
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_split_gives_the_message_back() {
        let m = Msg {
            kind: RTM_NEWROUTE,
            header: vec![2, 8, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0],
            attrs: vec![
                Attr::new(1, [10, 0, 0, 0]),
                Attr::u32(4, 7),
                Attr::string(3, "eth0"),
                Attr::nested(8, &[Attr::u32(2, 1400)]),
            ],
        };
        let bytes = m.encode(NLM_F_REQUEST | NLM_F_ACK, 9);
        assert_eq!(bytes.len() % 4, 0);
        let f = frames(&bytes);
        assert_eq!(f.len(), 1);
        let (kind, flags, seq, payload) = f[0];
        assert_eq!((kind, flags, seq), (RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK, 9));
        let back = Msg::decode(kind, payload, header_len(kind)).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.attr(4).and_then(Attr::as_u32), Some(7));
        assert_eq!(back.attr(3).unwrap().as_string(), "eth0");
        assert_eq!(back.attr(8).unwrap().nested_attrs()[0].as_u32(), Some(1400));
    }

    #[test]
    fn truncated_input_stops_cleanly() {
        let m = Msg {
            kind: RTM_NEWLINK,
            header: vec![0; 16],
            attrs: vec![Attr::string(3, "lo")],
        };
        let bytes = m.encode(0, 1);
        for cut in 0..bytes.len() {
            let _ = frames(&bytes[..cut]);
            let _ = parse_attrs(&bytes[NLMSG_HDRLEN.min(cut)..cut]);
        }
        assert!(Msg::decode(RTM_NEWLINK, &[0; 3], 16).is_none());
        assert_eq!(ip_from(&[10, 0, 0, 1]), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ip_from(&[1, 2, 3]), None);
    }
}
