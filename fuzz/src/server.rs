//! The agent's front: ttrpc frames, whole connections, every request through
//! the dispatcher.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pith_agent::fuzzing::server::frame::{self, Frame, Header, HEADER_LEN, MAX_FRAME, TYPE_RESPONSE};
use pith_agent::fuzzing::server::{self as conn, Dispatcher};
use protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ttrpc::proto::{Request, Response};
use ttrpc::r#async::Service;
use ttrpc::MessageHeader;

/// Decodes every request and answers as the generated default does (the
/// dispatcher turns that into UNIMPLEMENTED). See the crate docs.
struct DecodeOnly;

#[async_trait::async_trait]
impl protocols::agent_ttrpc::AgentService for DecodeOnly {}

#[async_trait::async_trait]
impl protocols::pith_ttrpc::Devices for DecodeOnly {}

/// Every service the agent declares: real where no container engine is
/// involved, decode-only otherwise. The sandbox's files go in a directory of
/// this process's own under `TMPDIR` (`make fuzz-ci` and `make fuzz` point it
/// at the run's work directory).
pub fn services() -> HashMap<String, Service> {
    let dir = std::env::temp_dir().join(format!("pith-fuzz-{}", std::process::id()));
    let mut all = pith_agent::fuzzing::engine_free_services(&dir);
    all.extend(protocols::agent_ttrpc::create_agent_service(Arc::new(DecodeOnly)));
    all.extend(protocols::pith_ttrpc::create_devices(Arc::new(DecodeOnly)));
    all
}

/// A dispatcher and its methods as `(service, method)`, sorted.
type Table = (Arc<Dispatcher>, Vec<(String, String)>);

/// The dispatcher over [`services`], built once.
fn dispatcher() -> &'static Table {
    static D: OnceLock<Table> = OnceLock::new();
    D.get_or_init(|| {
        let all = services();
        let mut methods: Vec<(String, String)> = all
            .iter()
            .flat_map(|(s, svc)| svc.methods.keys().map(move |m| (s.clone(), m.clone())))
            .collect();
        methods.sort();
        (Dispatcher::new(all), methods)
    })
}

/// The frame reader over arbitrary bytes. Properties: a request's body is
/// exactly its announced length and within the limit; a skipped frame is one
/// [`frame::check_header`] says to skip.
pub fn frame(data: &[u8]) {
    crate::block_on(async {
        let mut r = data;
        let mut body = Vec::new();
        loop {
            match frame::read_frame(&mut r, &mut body).await {
                Ok(Frame::Request(h)) => {
                    assert_eq!(body.len(), h.len as usize);
                    assert!(body.len() <= MAX_FRAME);
                    let _ = frame::check_stream_id(h.stream_id);
                    let _ = Request::parse_from_bytes(&body);
                }
                Ok(Frame::Skipped(h, why)) => {
                    assert_eq!(frame::check_header(&h).ok(), Some(Some(why)));
                    let _ = why.answer(&h);
                }
                Err(_) => break,
            }
        }
    })
}

/// A whole connection: the bytes as a client's stream, then EOF. Property:
/// everything the agent writes back is well-formed response frames.
pub fn connection(data: &[u8]) {
    let (d, _) = dispatcher();
    let out = crate::block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (sr, sw) = tokio::io::split(server);
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let served = tokio::spawn(conn::serve(sr, sw, d.clone(), Duration::from_secs(5), log));
        let (mut cr, mut cw) = tokio::io::split(client);
        let input = data.to_vec();
        let writer = tokio::spawn(async move {
            let _ = cw.write_all(&input).await;
            let _ = cw.shutdown().await;
        });
        let mut out = Vec::new();
        cr.read_to_end(&mut out).await.expect("read the agent's answers");
        writer.await.expect("writer task");
        served.await.expect("connection task");
        out
    });
    let mut rest = &out[..];
    while !rest.is_empty() {
        assert!(rest.len() >= HEADER_LEN, "partial frame header written");
        let h = Header::decode(rest[..HEADER_LEN].try_into().unwrap());
        assert_eq!(h.kind, TYPE_RESPONSE);
        let end = HEADER_LEN + h.len as usize;
        assert!(
            h.len as usize <= MAX_FRAME && rest.len() >= end,
            "bad response frame {h:?}"
        );
        Response::parse_from_bytes(&rest[HEADER_LEN..end]).expect("response body decodes");
        rest = &rest[end..];
    }
}

/// One request to any declared method: the first byte picks the method, the
/// rest is its payload. Property: an answer, never a panic.
pub fn requests(data: &[u8]) {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let (d, methods) = dispatcher();
    let (service, method) = &methods[pick as usize % methods.len()];
    let mut req = Request::new();
    req.service = service.clone();
    req.method = method.clone();
    req.payload = payload.to_vec();
    let mh = MessageHeader {
        length: 0,
        stream_id: 1,
        type_: frame::TYPE_REQUEST,
        flags: 0,
    };
    let resp = crate::block_on(d.call(mh, req));
    if let Some(status) = resp.status.as_ref() {
        assert!(!status.message.is_empty() || status.code() == ttrpc::Code::OK);
    }
}

/// An input of [`requests`] calling `service/method` with `payload` (for seeds).
pub fn request_input(service: &str, method: &str, payload: &[u8]) -> Option<Vec<u8>> {
    let (_, methods) = dispatcher();
    let i = methods.iter().position(|(s, m)| s == service && m == method)?;
    let mut out = vec![u8::try_from(i).ok()?];
    out.extend_from_slice(payload);
    Some(out)
}
