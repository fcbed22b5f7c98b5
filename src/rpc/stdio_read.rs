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

use super::{invalid, Ids, Rpc};
use crate::server::stream_read::{Staged, StreamRead, StreamReads};

/// Reads one output stream of a process.
struct StdioRead {
    rpc: Arc<Rpc>,
    stderr: bool,
}

impl StreamRead for StdioRead {
    fn read<'a>(
        &'a self,
        payload: &'a [u8],
        out: &'a mut Vec<u8>,
        staged: Option<&'a mut Option<Box<dyn Staged>>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>> {
        Box::pin(async move {
            let (what, method) = if self.stderr {
                ("stderr", "grpc.AgentService/ReadStderr")
            } else {
                ("stdout", "grpc.AgentService/ReadStdout")
            };
            let req = ReadStreamRequest::parse_from_bytes(payload);
            let ids = match &req {
                Ok(r) => Ids::process(&r.container_id, &r.exec_id),
                Err(_) => Ids::NONE,
            };
            self.rpc
                .run_status(method, ids, async {
                    let req = req
                        .as_ref()
                        .map_err(|e| invalid(format!("Read{what}: cannot decode request: {e}")))?;
                    let p = self.rpc.sandbox.process(&req.container_id, &req.exec_id)?;
                    let o = if self.stderr { &p.stderr } else { &p.stdout };
                    let splice = staged.is_some();
                    let s = o.read_staged(out, req.len as usize, what, splice).await?;
                    if let (Some(slot), Some(s)) = (staged, s) {
                        *slot = Some(Box::new(s));
                    }
                    Ok(())
                })
                .await
        })
    }
}

/// The fast-path table: `grpc.AgentService` ReadStdout and ReadStderr.
pub(crate) fn stream_reads(rpc: Arc<Rpc>) -> StreamReads {
    let mut methods: HashMap<String, Arc<dyn StreamRead>> = HashMap::new();
    for (method, stderr) in [("ReadStdout", false), ("ReadStderr", true)] {
        methods.insert(
            method.to_string(),
            Arc::new(StdioRead {
                rpc: rpc.clone(),
                stderr,
            }),
        );
    }
    StreamReads::from([("grpc.AgentService".to_string(), methods)])
}
