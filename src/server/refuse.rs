//! Turning a client away with an answer rather than silence: the first request
//! on a refused connection gets `RESOURCE_EXHAUSTED` with the reason, then the
//! connection is closed. A client that sends nothing within [`REFUSE_WAIT`]
//! (or something that is not a small request) is just closed: it sees EOF at
//! once, not a hang.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ttrpc::proto::Code;

use super::dispatch::{encode_response, status_response};
use super::frame::{self, Header, HEADER_LEN, MAX_FRAME, TYPE_REQUEST};

/// How long a refused client has to send its first request.
pub const REFUSE_WAIT: Duration = Duration::from_secs(1);
/// Largest request body read on a refused connection.
const REFUSE_BODY_MAX: usize = 64 * 1024;

/// Answers the first request on `s` with `RESOURCE_EXHAUSTED` and `reason`, then closes.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, reason: &str) {
    let _ = tokio::time::timeout(REFUSE_WAIT, async {
        let mut hb = [0u8; HEADER_LEN];
        s.read_exact(&mut hb).await.ok()?;
        let h = Header::decode(&hb);
        if h.kind != TYPE_REQUEST || h.len as usize > REFUSE_BODY_MAX {
            return None;
        }
        let mut body = vec![0u8; h.len as usize];
        s.read_exact(&mut body).await.ok()?;
        let resp = status_response(Code::RESOURCE_EXHAUSTED, reason.to_string());
        s.write_all(&frame::response_frame(h.stream_id, &encode_response(&resp, MAX_FRAME)))
            .await
            .ok()
    })
    .await;
    let _ = s.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    #[tokio::test]
    async fn the_first_request_gets_the_reason() {
        let (mut client, server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { refuse(server, "too many connections").await });
        let body = b"anything";
        let mut f = Header {
            len: body.len() as u32,
            stream_id: 5,
            kind: TYPE_REQUEST,
            flags: 0,
        }
        .encode()
        .to_vec();
        f.extend_from_slice(body);
        client.write_all(&f).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        let h = Header::decode(out[..HEADER_LEN].try_into().unwrap());
        assert_eq!(h.stream_id, 5);
        let resp = ttrpc::proto::Response::parse_from_bytes(&out[HEADER_LEN..]).unwrap();
        assert_eq!(resp.status.code(), Code::RESOURCE_EXHAUSTED);
        assert_eq!(resp.status.message, "too many connections");
    }

    #[tokio::test]
    async fn garbage_is_closed_without_an_answer() {
        let (mut client, server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { refuse(server, "full").await });
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        assert!(out.is_empty());
    }
}
