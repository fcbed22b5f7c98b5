//! ttrpc framing: a 10-byte header (length, stream id, type, flags; big endian)
//! followed by `length` bytes of protobuf. Reading is strict: anything that is
//! not a whole, request-typed frame of at most 4 MiB is an error that ends the
//! connection, so one broken client cannot confuse the server.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 10;
/// Largest frame body accepted or sent (the ttrpc limit).
pub const MAX_FRAME: usize = 4 << 20;
/// Frame type of a request.
pub const TYPE_REQUEST: u8 = 1;
/// Frame type of a response.
pub const TYPE_RESPONSE: u8 = 2;

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

/// Why no frame could be read.
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
        want: usize,
    },
    /// The header announced a body over [`MAX_FRAME`].
    #[error("oversized frame: {len} bytes announced, limit {MAX_FRAME}")]
    Oversized {
        /// Announced body length.
        len: u32,
    },
    /// The frame is not a request (streams and data frames are not served).
    #[error("unexpected frame type {kind:#04x} (only requests are served)")]
    UnexpectedType {
        /// The type byte received.
        kind: u8,
    },
    /// Reading from the socket failed.
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
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

/// Reads one request frame; its body replaces the contents of `body`.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R, body: &mut Vec<u8>) -> Result<Header, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    match read_full(r, &mut hb).await? {
        0 => return Err(FrameError::Closed),
        n if n < HEADER_LEN => {
            return Err(FrameError::Truncated {
                got: n,
                want: HEADER_LEN,
            })
        }
        _ => {}
    }
    let h = Header::decode(&hb);
    if h.len as usize > MAX_FRAME {
        return Err(FrameError::Oversized { len: h.len });
    }
    if h.kind != TYPE_REQUEST {
        return Err(FrameError::UnexpectedType { kind: h.kind });
    }
    body.clear();
    body.resize(h.len as usize, 0);
    let got = read_full(r, body).await?;
    if got < body.len() {
        return Err(FrameError::Truncated {
            got: HEADER_LEN + got,
            want: HEADER_LEN + body.len(),
        });
    }
    Ok(h)
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

    #[tokio::test]
    async fn reads_a_request() {
        let bytes = frame(TYPE_REQUEST, b"hello");
        let mut body = Vec::new();
        let h = read_request(&mut &bytes[..], &mut body).await.unwrap();
        assert_eq!((h.stream_id, h.len, body.as_slice()), (7, 5, &b"hello"[..]));
    }

    #[tokio::test]
    async fn clean_close_truncation_oversize_and_type() {
        let mut body = Vec::new();
        assert!(matches!(
            read_request(&mut &b""[..], &mut body).await,
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_request(&mut &b"\0\0\0"[..], &mut body).await,
            Err(FrameError::Truncated { got: 3, want: 10 })
        ));
        let mut short = frame(TYPE_REQUEST, b"hello");
        short.truncate(12);
        assert!(matches!(
            read_request(&mut &short[..], &mut body).await,
            Err(FrameError::Truncated { got: 12, want: 15 })
        ));
        let big = Header {
            len: MAX_FRAME as u32 + 1,
            stream_id: 1,
            kind: TYPE_REQUEST,
            flags: 0,
        }
        .encode();
        assert!(matches!(
            read_request(&mut &big[..], &mut body).await,
            Err(FrameError::Oversized { .. })
        ));
        let data = frame(3, b"x");
        assert!(matches!(
            read_request(&mut &data[..], &mut body).await,
            Err(FrameError::UnexpectedType { kind: 3 })
        ));
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
