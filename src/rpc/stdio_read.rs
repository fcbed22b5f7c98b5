//! `ReadStdout`/`ReadStderr` on the server's stream-read fast path (see
//! `server::stream_read`): the output lands straight in the frame buffer.
//! The generated handlers in `rpc::agent` answer the same way; these are used
//! when the dispatcher is built with [`stream_reads`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use protobuf::Message;
use protocols::agent::ReadStreamRequest;
use ttrpc::proto::Status;

use crate::sandbox::Sandbox;
use crate::server::stream_read::{StreamRead, StreamReads};

/// Reads one output stream of a process.
struct StdioRead {
    sandbox: Arc<Sandbox>,
    stderr: bool,
}

impl StreamRead for StdioRead {
    fn read<'a>(
        &'a self,
        payload: &'a [u8],
        out: &'a mut Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>> {
        Box::pin(async move {
            let what = if self.stderr { "stderr" } else { "stdout" };
            let req = ReadStreamRequest::parse_from_bytes(payload).map_err(|e| {
                ttrpc::get_status(
                    ttrpc::Code::INVALID_ARGUMENT,
                    format!("Read{what}: cannot decode request: {e}"),
                )
            })?;
            let fail = |e| ttrpc::get_status(super::agent::code_of(&e), e);
            let p = self.sandbox.process(&req.container_id, &req.exec_id).map_err(fail)?;
            let o = if self.stderr { &p.stderr } else { &p.stdout };
            o.read_into(out, req.len as usize, what).await.map_err(fail)
        })
    }
}

/// The fast-path table: `grpc.AgentService` ReadStdout and ReadStderr.
pub fn stream_reads(sandbox: Arc<Sandbox>) -> StreamReads {
    let mut methods: HashMap<String, Arc<dyn StreamRead>> = HashMap::new();
    for (method, stderr) in [("ReadStdout", false), ("ReadStderr", true)] {
        methods.insert(
            method.to_string(),
            Arc::new(StdioRead {
                sandbox: sandbox.clone(),
                stderr,
            }),
        );
    }
    StreamReads::from([("grpc.AgentService".to_string(), methods)])
}
