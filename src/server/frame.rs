//! ttrpc framing: a 10-byte header (length, stream id, type, flags; big endian)
//! followed by `length` bytes of protobuf.
//!
//! One bad frame costs one answer, not the connection: as long as the header
//! can be trusted, the reader stays in step with the stream by reading (or
//! skipping) exactly the announced body, and the caller answers that frame
//! alone (ttrpc-rust, and so kata-agent, does the same). Only a header that
//! cannot be trusted ends the connection: an unknown frame type, or a length no
//! ttrpc peer sends ([`MAX_DISCARD`]), both signs that the bytes are not ttrpc.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 10;
/// Largest frame body accepted or sent (the ttrpc limit).
pub const MAX_FRAME: usize = 4 << 20;
/// Largest announced body skipped to stay in step with the peer; a longer one
/// means the stream is not ttrpc (ttrpc clients refuse to send over 4 MiB).
pub const MAX_DISCARD: usize = 16 * MAX_FRAME;
/// Frame type of a request.
pub const TYPE_REQUEST: u8 = 1;
/// Frame type of a response.
pub const TYPE_RESPONSE: u8 = 2;
/// Frame type of a stream's data.
pub const TYPE_DATA: u8 = 3;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Body length in bytes.
    pub len: u32,
    /// Stream id chosen by the client; the response echoes it.
    pub stream_id: u32,
    /// Frame type.
    pub kind: u8,
    /// Frame flags.
    pub flags: u8,
}

impl Header {
    /// Decodes the 10 header bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            len: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
            flags: b[9],
        }
    }

    /// Encodes the header into its 10 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&self.len.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8] = self.kind;
        b[9] = self.flags;
        b
    }
}

/// Why the connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames: a normal end.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection inside a frame.
    #[error("truncated frame: got {got} of {want} bytes")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the header or frame needed.
        want: u64,
    },
    /// The header announced a body no ttrpc peer sends.
    #[error("impossible frame length: {len} bytes announced (limit {MAX_FRAME}, skipped up to {MAX_DISCARD})")]
    ImpossibleLength {
        /// Announced body length.
        len: u32,
    },
    /// The frame type is not one ttrpc defines.
    #[error("unexpected frame type {kind:#04x}: not a ttrpc stream")]
    UnexpectedType {
        /// The type byte received.
        kind: u8,
    },
    /// Reading from the socket failed.
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
}

/// A frame whose body was skipped: it gets an answer of its own (or a log
/// line) and the connection goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// The body is over [`MAX_FRAME`].
    Oversized,
    /// A stream data frame: no streaming method is served.
    Data,
    /// A response sent to the server: logged, never answered (two servers
    /// answering each other's answers would never stop).
    Response,
}

impl Skipped {
    /// The message of the `INVALID_ARGUMENT` answer, `None` when the frame is
    /// not answered.
    pub fn answer(&self, h: &Header) -> Option<String> {
        match self {
            Skipped::Oversized => Some(format!(
                "message length {} exceeds the maximum message size of {MAX_FRAME} bytes",
                h.len
            )),
            Skipped::Data => Some(format!(
                "stream {}: data frame for a stream that is not open (pith-agent serves no streaming method)",
                h.stream_id
            )),
            Skipped::Response => None,
        }
    }
}

/// One whole frame as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A request; its body is in the caller's buffer.
    Request(Header),
    /// A frame whose body was read past.
    Skipped(Header, Skipped),
}

/// What to do with the body behind `h`: read it (`Ok(None)`), skip it
/// (`Ok(Some(why))`), or give up on the stream (`Err`).
pub fn check_header(h: &Header) -> Result<Option<Skipped>, FrameError> {
    let kind = match h.kind {
        TYPE_REQUEST => None,
        TYPE_DATA => Some(Skipped::Data),
        TYPE_RESPONSE => Some(Skipped::Response),
        kind => return Err(FrameError::UnexpectedType { kind }),
    };
    let len = h.len as usize;
    if len > MAX_DISCARD {
        return Err(FrameError::ImpossibleLength { len: h.len });
    }
    if len > MAX_FRAME {
        return Ok(Some(Skipped::Oversized));
    }
    Ok(kind)
}

async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize, std::io::Error> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Reads and drops `len` bytes without holding them.
async fn skip<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<usize, std::io::Error> {
    let mut scratch = [0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = r.read(&mut scratch[..left.min(4096)]).await?;
        if n == 0 {
            break;
        }
        left -= n;
    }
    Ok(len - left)
}

/// Reads one whole frame. A request's body replaces the contents of `body`;
/// other bodies are skipped (see [`check_header`]).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, body: &mut Vec<u8>) -> Result<Frame, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    match read_full(r, &mut hb).await? {
        0 => return Err(FrameError::Closed),
        n if n < HEADER_LEN => {
            return Err(FrameError::Truncated {
                got: n,
                want: HEADER_LEN as u64,
            })
        }
        _ => {}
    }
    let h = Header::decode(&hb);
    let truncated = |got: usize| FrameError::Truncated {
        got: HEADER_LEN + got,
        want: HEADER_LEN as u64 + u64::from(h.len),
    };
    if let Some(why) = check_header(&h)? {
        let got = skip(r, h.len as usize).await?;
        if got < h.len as usize {
            return Err(truncated(got));
        }
        return Ok(Frame::Skipped(h, why));
    }
    body.clear();
    body.resize(h.len as usize, 0);
    let got = read_full(r, body).await?;
    if got < body.len() {
        return Err(truncated(got));
    }
    Ok(Frame::Request(h))
}

/// Why a request frame is refused before it reaches a handler: ttrpc clients
/// number their streams with odd ids, so 0 and even ids are refused, with
/// kata-agent's (ttrpc-rust's) code.
pub fn check_stream_id(stream_id: u32) -> Result<(), String> {
    if stream_id % 2 == 1 {
        Ok(())
    } else {
        Err(format!("stream id {stream_id}: stream id must be odd"))
    }
}

/// Builds a whole response frame (header and body) for one write.
pub fn response_frame(stream_id: u32, body: &[u8]) -> Vec<u8> {
    let h = Header {
        len: body.len() as u32,
        stream_id,
        kind: TYPE_RESPONSE,
        flags: 0,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Header {
            len: body.len() as u32,
            stream_id: 7,
            kind,
            flags: 0,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(body);
        v
    }

    fn header(len: u32, kind: u8) -> Header {
        Header {
            len,
            stream_id: 1,
            kind,
            flags: 0,
        }
    }

    #[tokio::test]
    async fn reads_a_request() {
        let bytes = frame(TYPE_REQUEST, b"hello");
        let mut body = Vec::new();
        let f = read_frame(&mut &bytes[..], &mut body).await.unwrap();
        let Frame::Request(h) = f else { panic!("{f:?}") };
        assert_eq!((h.stream_id, h.len, body.as_slice()), (7, 5, &b"hello"[..]));
    }

    #[tokio::test]
    async fn clean_close_and_truncation() {
        let mut body = Vec::new();
        assert!(matches!(
            read_frame(&mut &b""[..], &mut body).await,
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut &b"\0\0\0"[..], &mut body).await,
            Err(FrameError::Truncated { got: 3, want: 10 })
        ));
        let mut short = frame(TYPE_REQUEST, b"hello");
        short.truncate(12);
        assert!(matches!(
            read_frame(&mut &short[..], &mut body).await,
            Err(FrameError::Truncated { got: 12, want: 15 })
        ));
    }

    #[tokio::test]
    async fn an_oversized_frame_is_skipped_and_the_next_one_read() {
        let len = MAX_FRAME as u32 + 1;
        let mut bytes = header(len, TYPE_REQUEST).encode().to_vec();
        bytes.resize(HEADER_LEN + len as usize, 0xab);
        bytes.extend_from_slice(&frame(TYPE_REQUEST, b"next"));
        let mut r = &bytes[..];
        let mut body = Vec::new();
        let f = read_frame(&mut r, &mut body).await.unwrap();
        assert_eq!(f, Frame::Skipped(header(len, TYPE_REQUEST), Skipped::Oversized));
        assert!(body.capacity() < 4096, "the skipped body was not buffered");
        let Frame::Request(h) = read_frame(&mut r, &mut body).await.unwrap() else {
            panic!()
        };
        assert_eq!((h.stream_id, body.as_slice()), (7, &b"next"[..]));
    }

    #[tokio::test]
    async fn data_and_response_frames_are_skipped() {
        let mut bytes = frame(TYPE_DATA, b"abc");
        bytes.extend_from_slice(&frame(TYPE_RESPONSE, b"de"));
        let mut r = &bytes[..];
        let mut body = Vec::new();
        let a = read_frame(&mut r, &mut body).await.unwrap();
        let b = read_frame(&mut r, &mut body).await.unwrap();
        assert!(matches!(a, Frame::Skipped(_, Skipped::Data)), "{a:?}");
        assert!(matches!(b, Frame::Skipped(_, Skipped::Response)), "{b:?}");
        assert!(matches!(read_frame(&mut r, &mut body).await, Err(FrameError::Closed)));
    }

    #[test]
    fn untrusted_headers_end_the_stream() {
        assert!(matches!(
            check_header(&header(5, 0)),
            Err(FrameError::UnexpectedType { kind: 0 })
        ));
        assert!(matches!(
            check_header(&header(5, 0x54)),
            Err(FrameError::UnexpectedType { kind: 0x54 })
        ));
        assert!(matches!(
            check_header(&header(MAX_DISCARD as u32 + 1, TYPE_REQUEST)),
            Err(FrameError::ImpossibleLength { .. })
        ));
        assert_eq!(
            check_header(&header(MAX_DISCARD as u32, TYPE_REQUEST)).unwrap(),
            Some(Skipped::Oversized)
        );
        assert_eq!(check_header(&header(MAX_FRAME as u32, TYPE_REQUEST)).unwrap(), None);
    }

    #[test]
    fn answers_name_the_length_and_stream() {
        let h = header(5 << 20, TYPE_REQUEST);
        let m = Skipped::Oversized.answer(&h).unwrap();
        assert!(m.contains("5242880") && m.contains("4194304"), "{m}");
        assert!(Skipped::Data.answer(&h).unwrap().contains("stream 1"));
        assert_eq!(Skipped::Response.answer(&h), None);
    }

    #[test]
    fn only_odd_stream_ids_are_served() {
        assert!(check_stream_id(1).is_ok());
        assert!(check_stream_id(u32::MAX).is_ok());
        for id in [0, 2, 1 << 31] {
            let e = check_stream_id(id).unwrap_err();
            assert!(e.contains("must be odd") && e.contains(&id.to_string()), "{e}");
        }
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            len: 0x01020304,
            stream_id: 0xdeadbeef,
            kind: 2,
            flags: 4,
        };
        assert_eq!(Header::decode(&h.encode()), h);
    }
}
