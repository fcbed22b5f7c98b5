//! Routing one decoded ttrpc request to the generated service handlers, with
//! the status conventions of the protocol: a method declared but not served
//! gets the answer of the dispatcher's [`NotServed`] (by the API level:
//! `rpc::status::not_served`), an unknown one `UNIMPLEMENTED`,
//! `INVALID_ARGUMENT` for an undecodable payload, `DEADLINE_EXCEEDED` when the
//! client's timeout runs out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use ttrpc::proto::{Code, Request, Response};
use ttrpc::r#async::{Service, TtrpcContext};
use ttrpc::{get_status, MessageHeader};

use super::stream_read::{StreamRead, StreamReads};

/// The status for a declared method no handler serves, given `service/method`.
pub type NotServed = Box<dyn Fn(&str) -> ttrpc::proto::Status + Send + Sync>;

/// Every service the agent answers, by fully qualified name.
pub struct Dispatcher {
    services: HashMap<String, Service>,
    stream_reads: StreamReads,
    not_served: NotServed,
}

impl Dispatcher {
    /// Wraps the maps returned by the generated `create_*` functions.
    #[allow(dead_code, reason = "the agent always adds the stream-read fast path")]
    pub fn new(services: HashMap<String, Service>) -> Arc<Dispatcher> {
        Self::with_stream_reads(services, StreamReads::new())
    }

    /// Like [`Dispatcher::new`], with methods (by service and method name) served
    /// by the stream-read fast path instead of their generated handlers.
    pub fn with_stream_reads(services: HashMap<String, Service>, stream_reads: StreamReads) -> Arc<Dispatcher> {
        Self::with_answers(
            services,
            stream_reads,
            Box::new(|path| crate::rpc::status::not_served(path, u32::MAX)),
        )
    }

    /// Like [`Dispatcher::with_stream_reads`], answering declared methods no
    /// handler serves with `not_served`.
    pub fn with_answers(
        services: HashMap<String, Service>,
        stream_reads: StreamReads,
        not_served: NotServed,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            services,
            stream_reads,
            not_served,
        })
    }

    /// The fast path for `service/method`, if it has one.
    pub fn stream_read(&self, service: &str, method: &str) -> Option<Arc<dyn StreamRead>> {
        self.stream_reads.get(service)?.get(method).cloned()
    }

    /// Runs one request to completion and returns the encoded `Response`.
    pub async fn call(&self, header: MessageHeader, mut req: Request) -> Response {
        // The generated handlers read only the payload: keep the names for
        // messages, formatted only when one is needed.
        let service = std::mem::take(&mut req.service);
        let method = std::mem::take(&mut req.method);
        let path = Path(&service, &method);
        let Some(handler) = self.services.get(&service).and_then(|s| s.methods.get(&method)) else {
            return status_response(
                Code::UNIMPLEMENTED,
                format!("unknown method {path}: pith-agent does not serve it"),
            );
        };
        let metadata = req
            .metadata
            .iter()
            .fold(HashMap::<String, Vec<String>>::new(), |mut m, kv| {
                m.entry(kv.key.clone()).or_default().push(kv.value.clone());
                m
            });
        let timeout_nano = req.timeout_nano;
        let ctx = TtrpcContext {
            mh: header,
            metadata,
            timeout_nano,
            connection_data: Arc::default(),
        };
        let fut = handler.handler(ctx, req);
        let result = if timeout_nano > 0 {
            match tokio::time::timeout(Duration::from_nanos(timeout_nano as u64), fut).await {
                Ok(r) => r,
                Err(_) => {
                    return status_response(
                        Code::DEADLINE_EXCEEDED,
                        format!("{path}: the client's timeout of {timeout_nano} ns ran out"),
                    )
                }
            }
        } else {
            fut.await
        };
        match result {
            Ok(mut resp) => {
                if let Some(status) = resp.status.as_mut() {
                    let not_found = status.code() == Code::NOT_FOUND;
                    let path = path.to_string();
                    if not_found && is_generated_default(status.code(), &status.message, &path) {
                        *status = (self.not_served)(&path);
                    }
                }
                resp
            }
            // The generated handler returns Err only when the payload does not decode.
            Err(e) => status_response(Code::INVALID_ARGUMENT, format!("{path}: cannot decode request: {e}")),
        }
    }
}

/// `service/method`, formatted on demand.
struct Path<'a>(&'a str, &'a str);

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// The generated trait's default body answers NOT_FOUND "/<path> is not supported";
/// it means "declared, not implemented here" — except for the methods where
/// that is kata-agent's own answer (`rpc::status::KATA_NOT_SUPPORTED`).
fn is_generated_default(code: Code, message: &str, path: &str) -> bool {
    code == Code::NOT_FOUND
        && !crate::rpc::status::KATA_NOT_SUPPORTED.contains(&path)
        && message.strip_prefix('/').and_then(|m| m.strip_prefix(path)) == Some(" is not supported")
}

/// A response carrying only a status.
pub fn status_response(code: Code, message: String) -> Response {
    let mut r = Response::new();
    r.status = protobuf::MessageField::some(get_status(code, message));
    r
}

/// Encodes a response, replacing it with an error status when it would exceed
/// the frame limit (the client could not read it).
pub fn encode_response(resp: &Response, max: usize) -> Vec<u8> {
    let bytes = resp.write_to_bytes().unwrap_or_default();
    if bytes.len() <= max {
        return bytes;
    }
    let msg = format!("response of {} bytes exceeds the {max}-byte frame limit", bytes.len());
    status_response(Code::RESOURCE_EXHAUSTED, msg)
        .write_to_bytes()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_generated_default_only() {
        let p = "grpc.AgentService/CreateContainer";
        assert!(is_generated_default(
            Code::NOT_FOUND,
            "/grpc.AgentService/CreateContainer is not supported",
            p
        ));
        assert!(!is_generated_default(Code::NOT_FOUND, "container abc not found", p));
        assert!(!is_generated_default(
            Code::INTERNAL,
            "/grpc.AgentService/CreateContainer is not supported",
            p
        ));
        // kata-agent's own answer without the policy feature stays NOT_FOUND.
        let policy = "grpc.AgentService/SetPolicy";
        assert!(!is_generated_default(
            Code::NOT_FOUND,
            "/grpc.AgentService/SetPolicy is not supported",
            policy
        ));
    }

    #[test]
    fn oversized_response_becomes_an_error() {
        let mut r = Response::new();
        r.payload = vec![0u8; 100];
        assert_eq!(encode_response(&r, 1000).len(), r.write_to_bytes().unwrap().len());
        let small = Response::parse_from_bytes(&encode_response(&r, 10)).unwrap();
        assert_eq!(small.status.code(), Code::RESOURCE_EXHAUSTED);
    }
}
