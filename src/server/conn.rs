//! One client connection: read frames, run each request on its own task (a
//! blocking call such as WaitProcess must not hold up the others), write each
//! response as a single frame. A protocol error ends this connection only.

use std::sync::Arc;

use protobuf::Message as _;
use slog::{debug, warn, Logger};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;
use ttrpc::proto::Request;
use ttrpc::MessageHeader;

use super::dispatch::{encode_response, Dispatcher};
use super::frame::{self, FrameError, MAX_FRAME};

/// Serves requests from `reader` until the peer closes or misbehaves.
pub async fn serve<R, W>(reader: R, writer: W, dispatcher: Arc<Dispatcher>, log: Logger)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let writer = Arc::new(Mutex::new(writer));
    let mut body = Vec::new();
    debug!(log, "connection opened");
    loop {
        let header = match frame::read_request(&mut reader, &mut body).await {
            Ok(h) => h,
            Err(FrameError::Closed) => {
                debug!(log, "connection closed by peer");
                return;
            }
            Err(e) => {
                warn!(log, "disconnecting client: {e}"; "error" => "protocol");
                break;
            }
        };
        let req = match Request::parse_from_bytes(&body) {
            Ok(r) => r,
            Err(e) => {
                warn!(log, "disconnecting client: frame is not a ttrpc request: {e}";
                      "error" => "protocol", "stream_id" => header.stream_id, "len" => header.len);
                break;
            }
        };
        let mh = MessageHeader {
            length: header.len,
            stream_id: header.stream_id,
            type_: header.kind,
            flags: header.flags,
        };
        let dispatcher = dispatcher.clone();
        let writer = writer.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let method = format!("{}/{}", req.service, req.method);
            let resp = dispatcher.call(mh, req).await;
            let bytes = frame::response_frame(header.stream_id, &encode_response(&resp, MAX_FRAME));
            let mut w = writer.lock().await;
            if let Err(e) = w.write_all(&bytes).await {
                debug!(log, "write response failed: {e}"; "method" => method);
            }
        });
    }
    // Only protocol errors get here: tell the peer now, not when the last
    // in-flight reply is written.
    let _ = writer.lock().await.shutdown().await;
}
