//! The hot path of a streaming host: `ReadStdout`/`ReadStderr`, served without
//! the generated handler. Their response is one `bytes` field; the data is
//! read from the process's pipe straight into a reused frame buffer, after
//! room for the frame header and the two protobuf prefixes, which are then
//! written just in front of it. No fresh memory per call: on these VMs a page
//! fault costs ~3 µs, so four fresh 1 MiB buffers per call cost ~3 ms.
//!
//! The bytes are exactly what the generated handler would send: a `Response`
//! with an OK status and the encoded message as payload.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use ttrpc::proto::Status;

use super::frame::{Header, HEADER_LEN, TYPE_RESPONSE};

/// A method whose response message is a single `bytes` field number 1.
pub trait StreamRead: Send + Sync {
    /// Decodes the request `payload` and appends the response's bytes to `out`
    /// (nothing appended: an empty read), or, when `staged` is given (the
    /// connection can splice), may instead put there bytes staged in a pipe.
    fn read<'a>(
        &'a self,
        payload: &'a [u8],
        out: &'a mut Vec<u8>,
        staged: Option<&'a mut Option<Box<dyn Staged>>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>>;
}

/// A response's data waiting in a pipe, spliced into the socket after the
/// frame's prefix; dropping it tells the source how much the socket took
/// (the pipe's level), see `sandbox::out_journal`.
pub trait Staged: Send + Sync {
    /// The bytes staged.
    fn len(&self) -> usize;
    /// Splices up to `max` of them into socket `sock`; 0: the socket is full.
    fn splice_to(&self, sock: i32, max: usize) -> std::io::Result<usize>;
}

/// Stream-read methods by service name, then method name (looked up with the
/// request's strings as they are: no allocation per request).
pub type StreamReads = std::collections::HashMap<String, std::collections::HashMap<String, Arc<dyn StreamRead>>>;

/// Frame header, `Response.status` (OK: an empty message), and room for the
/// two length-delimited prefixes (tag + at most 5 varint bytes each).
pub const PREFIX: usize = HEADER_LEN + 2 + 6 + 6;

fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Appends `v` as a protobuf varint to `out` at `*at`.
fn put_varint(out: &mut [u8], at: &mut usize, mut v: usize) {
    loop {
        out[*at] = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        *at += 1;
        v >>= 7;
        if v == 0 {
            return;
        }
    }
}

/// Writes the frame header and prefixes in front of the data in `buf`
/// (which starts at [`PREFIX`]); returns where the frame starts.
pub fn finish_frame(buf: &mut [u8], stream_id: u32) -> usize {
    let n = buf.len() - PREFIX;
    frame_prefix(&mut buf[..PREFIX], stream_id, n)
}

/// Writes, at the end of `buf` ([`PREFIX`] bytes), the frame header and
/// prefixes for `n` bytes of data that follow; returns where the frame starts.
pub fn frame_prefix(buf: &mut [u8], stream_id: u32, n: usize) -> usize {
    // Response { status: OK (0a 00), payload (12 len) = ReadStreamResponse { data (0a len) } };
    // proto3 leaves out an empty payload.
    let mut body = [0u8; PREFIX - HEADER_LEN];
    body[..2].copy_from_slice(&[0x0a, 0x00]);
    let mut len = 2;
    if n > 0 {
        body[len] = 0x12;
        len += 1;
        put_varint(&mut body, &mut len, 1 + varint_len(n) + n);
        body[len] = 0x0a;
        len += 1;
        put_varint(&mut body, &mut len, n);
    }
    let start = PREFIX - len - HEADER_LEN;
    let header = Header {
        len: (len + n) as u32,
        stream_id,
        kind: TYPE_RESPONSE,
        flags: 0,
    };
    buf[start..start + HEADER_LEN].copy_from_slice(&header.encode());
    buf[start + HEADER_LEN..PREFIX].copy_from_slice(&body[..len]);
    start
}

/// Frame buffers of one connection, reused from call to call.
#[derive(Default, Clone)]
pub struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers kept per connection: a host reads stdout and stderr at once. Each
/// may hold 1 MiB for as long as the connection lives, so keep few.
const POOL_MAX: usize = 2;

impl BufferPool {
    /// A buffer holding [`PREFIX`] bytes of room.
    pub fn take(&self) -> Vec<u8> {
        let mut b = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        b.clear();
        b.resize(PREFIX, 0);
        b
    }

    /// Returns a buffer for later calls.
    pub fn give(&self, b: Vec<u8>) {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;
    use ttrpc::proto::Response;

    #[test]
    fn frames_match_what_the_generated_handler_sends() {
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 20] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let mut buf = vec![0u8; PREFIX];
            buf.extend_from_slice(&data);
            let start = finish_frame(&mut buf, 9);

            let mut msg = protocols::agent::ReadStreamResponse::new();
            msg.data = data.clone();
            let mut resp = Response::new();
            resp.status = protobuf::MessageField::some(ttrpc::get_status(ttrpc::Code::OK, ""));
            resp.payload = msg.write_to_bytes().unwrap();
            let body = resp.write_to_bytes().unwrap();
            let want = super::super::frame::response_frame(9, &body);
            assert_eq!(&buf[start..], &want[..], "n = {n}");
        }
    }
}
