//! One client connection: read frames, run each request on its own task (a
//! blocking call such as WaitProcess must not hold up the others), write each
//! response as a single frame.
//!
//! A bad frame (too long, not a request, undecodable, an even stream id) is
//! answered on its own stream and the connection goes on, so the calls pending
//! on it (a host's WaitProcess) are not lost. Only a stream that cannot be
//! followed any more (see [`frame::check_header`]), a peer that closes inside a
//! frame, or a frame that stalls past the frame timeout ends the connection.
//! Between frames a connection may stay idle for ever.
//!
//! When the connection ends, the calls still running on it are cancelled:
//! nobody can read their answers, and a WaitProcess or ReadStdout that went
//! on would take an exit status or output the host, reconnected, asks for
//! again. (Operations that must not stop half-way, such as CreateContainer,
//! run detached in the sandbox and finish anyway.)

use std::future::Future;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use protobuf::Message as _;
use slog::{debug, warn, Logger};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Interest};
use tokio::sync::Mutex;
use ttrpc::proto::{Code, Request, Response};
use ttrpc::MessageHeader;

use super::dispatch::{encode_response, status_response, Dispatcher};
use super::frame::{self, Frame, FrameError, MAX_FRAME};
use super::stream_read::{finish_frame, frame_prefix, BufferPool, Staged, StreamRead, PREFIX};
use crate::upgrade::pause::{Carried, ConnHandle, Pause};

/// Read buffer of a connection. Small: requests are small, a larger body is
/// read straight into its own buffer, and with a thousand connections every
/// KiB here is a MiB of the agent's memory (glibc also zeroes it each time).
const READ_BUFFER: usize = 8 * 1024;

/// Serves requests from `reader` until the peer closes or the stream breaks.
/// A frame must arrive whole within `frame_timeout` of its first byte.
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub async fn serve<R, W>(reader: R, writer: W, dispatcher: Arc<Dispatcher>, frame_timeout: Duration, log: Logger)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let conn = Conn {
        sock: None,
        dispatcher,
        pause: Pause::new(),
        frame_timeout,
        log,
    };
    serve_socket(reader, writer, conn, None).await
}

/// What a connection is served with.
pub struct Conn {
    /// Its socket's descriptor, when it is one: stream reads may then splice
    /// their data into it (see `sandbox::out_journal`).
    pub sock: Option<RawFd>,
    /// The calls.
    pub dispatcher: Arc<Dispatcher>,
    /// The agent's pause (a live upgrade stops connections at a frame boundary).
    pub pause: Arc<Pause>,
    /// A frame must arrive whole within this of its first byte.
    pub frame_timeout: Duration,
    /// Its log.
    pub log: Logger,
}

/// A connection a previous binary served (a live upgrade): what it had read
/// ahead, the calls to serve again, and answers to write first.
#[derive(Default)]
pub struct Resume {
    /// Bytes read ahead: the stream goes on with them.
    pub buffered: Vec<u8>,
    /// Requests to serve again.
    pub carried: Vec<Carried>,
    /// Responses to write before anything else.
    pub answers: Vec<(u32, Response)>,
}

/// [`serve`] for a socket (see [`Conn`]), going on from `resume` when a
/// previous binary served it.
pub async fn serve_socket<R, W>(reader: R, writer: W, conn: Conn, resume: Option<Resume>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        sock,
        dispatcher,
        pause,
        frame_timeout,
        log,
    } = conn;
    let resume = resume.unwrap_or_default();
    let mut reader = BufReader::with_capacity(READ_BUFFER, Prefixed::new(resume.buffered, reader));
    let writer = Arc::new(Mutex::new(writer));
    let pool = BufferPool::default();
    let mut body = Vec::new();
    let handle = pause.register(sock.unwrap_or(-1));
    let mut stop = pause.stopping();
    let cx = CallCx {
        dispatcher: &dispatcher,
        pause: &pause,
        handle: &handle,
        writer: &writer,
        sock,
        pool: &pool,
        log: &log,
    };
    // Calls in flight; dropping the set (the connection ended) aborts them.
    let mut calls = tokio::task::JoinSet::new();
    debug!(log, "connection opened"; "conn" => handle.id());
    for (stream_id, resp) in resume.answers {
        write_response(&writer, stream_id, &resp, &log).await;
    }
    for c in resume.carried {
        match Request::parse_from_bytes(&c.body) {
            Ok(req) => {
                let (stream_id, flags, len) = (c.stream_id, c.flags, c.body.len() as u32);
                cx.dispatch(&mut calls, stream_id, flags, len, req, Some(c)).await
            }
            Err(e) => warn!(log, "a carried request does not decode: {e}"; "stream_id" => c.stream_id),
        }
    }
    loop {
        while calls.try_join_next().is_some() {}
        // Idle between frames: no deadline. A pause stops the connection here.
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => None,
            r = reader.fill_buf() => Some(r.map(|b| b.is_empty())),
        };
        match next {
            None => {
                let mut ahead = reader.buffer().to_vec();
                ahead.extend_from_slice(reader.get_ref().rest());
                handle.stopped(ahead);
                let _ = stop.wait_for(|s| !*s).await;
                handle.reading();
                continue;
            }
            Some(Ok(true)) => {
                debug!(log, "connection closed by peer");
                return;
            }
            Some(Ok(false)) => {}
            Some(Err(e)) => {
                debug!(log, "connection ended: read: {e}");
                return;
            }
        }
        let read = tokio::time::timeout(frame_timeout, frame::read_frame(&mut reader, &mut body));
        let header = match read.await {
            Ok(Ok(Frame::Request(h))) => h,
            Ok(Ok(Frame::Skipped(h, why))) => {
                match why.answer(&h) {
                    Some(msg) => {
                        warn!(log, "refusing frame: {msg}"; "error" => "protocol", "stream_id" => h.stream_id,
                              "type" => h.kind, "len" => h.len);
                        answer(&writer, h.stream_id, Code::INVALID_ARGUMENT, msg, &log).await;
                    }
                    None => warn!(log, "ignoring a response frame sent to the agent";
                                  "error" => "protocol", "stream_id" => h.stream_id, "len" => h.len),
                }
                continue;
            }
            Ok(Err(FrameError::Closed)) => return,
            Ok(Err(e)) => {
                warn!(log, "disconnecting client: {e}"; "error" => "protocol");
                break;
            }
            Err(_) => {
                warn!(log, "disconnecting client: stalled frame: not complete {:?} after its first byte", frame_timeout;
                      "error" => "protocol");
                break;
            }
        };
        if let Err(msg) = frame::check_stream_id(header.stream_id) {
            warn!(log, "refusing request: {msg}"; "error" => "protocol", "stream_id" => header.stream_id);
            answer(&writer, header.stream_id, Code::INVALID_ARGUMENT, msg, &log).await;
            continue;
        }
        let req = match Request::parse_from_bytes(&body) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("frame body is not a ttrpc request: {e}");
                warn!(log, "refusing request: {msg}";
                      "error" => "protocol", "stream_id" => header.stream_id, "len" => header.len);
                answer(&writer, header.stream_id, Code::INVALID_ARGUMENT, msg, &log).await;
                continue;
            }
        };
        let kept = parkable(&req).then(|| Carried {
            stream_id: header.stream_id,
            flags: header.flags,
            body: body.clone(),
        });
        cx.dispatch(&mut calls, header.stream_id, header.flags, header.len, req, kept)
            .await;
    }
    // Only a broken stream gets here: tell the peer now, not when the last
    // in-flight reply is written.
    let _ = writer.lock().await.shutdown().await;
}

/// Calls that may wait in `upgrade::pause::park`: their request is kept, to
/// be served again by the next binary if an upgrade comes while they wait.
fn parkable(req: &Request) -> bool {
    req.service == "grpc.AgentService"
        && matches!(
            req.method.as_str(),
            "WaitProcess" | "GetOOMEvent" | "ReadStdout" | "ReadStderr"
        )
}

/// What a connection's calls share.
struct CallCx<'a, W> {
    dispatcher: &'a Arc<Dispatcher>,
    pause: &'a Arc<Pause>,
    handle: &'a ConnHandle,
    writer: &'a Arc<Mutex<W>>,
    sock: Option<RawFd>,
    pool: &'a BufferPool,
    log: &'a Logger,
}

impl<W> CallCx<'_, W>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Runs request `req` (its frame's stream id, flags and length);
    /// `carried` is the request as it came when the call may park.
    async fn dispatch(
        &self,
        calls: &mut tokio::task::JoinSet<()>,
        stream_id: u32,
        flags: u8,
        len: u32,
        req: Request,
        carried: Option<Carried>,
    ) {
        if let Some(sr) = self.dispatcher.stream_read(&req.service, &req.method) {
            let call = respond_stream(
                sr,
                stream_id,
                req,
                self.writer.clone(),
                self.sock,
                self.pool.clone(),
                self.log.clone(),
            );
            calls.spawn(self.pause.call(self.handle, stream_id, carried, call));
            return;
        }
        let mh = MessageHeader {
            length: len,
            stream_id,
            type_: ttrpc::proto::MESSAGE_TYPE_REQUEST,
            flags,
        };
        let call = respond(self.dispatcher.clone(), mh, req, self.writer.clone(), self.log.clone());
        let mut call = Box::pin(self.pause.call(self.handle, stream_id, carried, call));
        // Quick calls (Check, Version, most errors) finish in their first poll:
        // run them here, without a task spawn or a hop to another worker thread.
        // Calls that wait on something get their own task and the loop reads on.
        let done = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_ready())).await;
        if !done {
            calls.spawn(call);
        }
    }
}

/// A reader that gives `prefix` first, then what `inner` gives.
struct Prefixed<R> {
    prefix: Vec<u8>,
    pos: usize,
    inner: R,
}

impl<R> Prefixed<R> {
    fn new(prefix: Vec<u8>, inner: R) -> Self {
        Prefixed { prefix, pos: 0, inner }
    }

    /// What is left of the prefix.
    fn rest(&self) -> &[u8] {
        &self.prefix[self.pos..]
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Prefixed<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Writes `resp` as the answer on `stream_id`.
async fn write_response<W>(writer: &Arc<Mutex<W>>, stream_id: u32, resp: &Response, log: &Logger)
where
    W: AsyncWrite + Unpin,
{
    let bytes = frame::response_frame(stream_id, &encode_response(resp, MAX_FRAME));
    if let Err(e) = writer.lock().await.write_all(&bytes).await {
        debug!(log, "write response failed: {e}"; "stream_id" => stream_id);
    }
}

/// Answers one stream with a status alone.
async fn answer<W>(writer: &Arc<Mutex<W>>, stream_id: u32, code: Code, msg: String, log: &Logger)
where
    W: AsyncWrite + Unpin,
{
    write_response(writer, stream_id, &status_response(code, msg), log).await
}

async fn respond<W>(dispatcher: Arc<Dispatcher>, mh: MessageHeader, req: Request, writer: Arc<Mutex<W>>, log: Logger)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let stream_id = mh.stream_id;
    super::after_answer::scope(async {
        let resp = dispatcher.call(mh, req).await;
        write_response(&writer, stream_id, &resp, &log).await
    })
    .await
}

/// Serves a stream read: the data lands in a pooled frame buffer, written as is.
async fn respond_stream<W>(
    sr: Arc<dyn StreamRead>,
    stream_id: u32,
    req: Request,
    writer: Arc<Mutex<W>>,
    sock: Option<RawFd>,
    pool: BufferPool,
    log: Logger,
) where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = pool.take();
    let mut staged: Option<Box<dyn Staged>> = None;
    let fut = sr.read(&req.payload, &mut buf, sock.is_some().then_some(&mut staged));
    let result = if req.timeout_nano > 0 {
        match tokio::time::timeout(std::time::Duration::from_nanos(req.timeout_nano as u64), fut).await {
            Ok(r) => r,
            Err(_) => Err(ttrpc::get_status(
                ttrpc::Code::DEADLINE_EXCEEDED,
                format!(
                    "{}/{}: the client's timeout of {} ns ran out",
                    req.service, req.method, req.timeout_nano
                ),
            )),
        }
    } else {
        fut.await
    };
    let mut w = writer.lock().await;
    let written = match (result, staged.as_deref(), sock) {
        (Ok(()), Some(s), Some(sock)) => write_spliced(&mut *w, sock, stream_id, s, &mut buf).await,
        (result, _, _) => write_frame(&mut *w, result, &req, stream_id, &mut buf).await,
    };
    drop(w);
    // Settles the staged read: what the socket took whole is consumed.
    drop(staged);
    if let Err(e) = written {
        debug!(log, "write response failed: {e}"; "stream_id" => stream_id);
    }
    pool.give(buf);
}

/// Writes the frame's prefix, then splices its staged data into `sock`.
/// While the socket has room no descriptor is added; when it is full, a copy
/// of it is registered with the reactor to wait (a connection must not cost
/// two descriptors: the agent's limit counts them), or, if even that copy
/// cannot be had, the wait is a short sleep.
async fn write_spliced<W>(
    w: &mut W,
    sock: RawFd,
    stream_id: u32,
    s: &dyn Staged,
    buf: &mut Vec<u8>,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let n = s.len();
    buf.clear();
    buf.resize(PREFIX, 0);
    let start = frame_prefix(buf, stream_id, n);
    w.write_all(&buf[start..]).await?;
    w.flush().await?;
    let mut waiter: Option<AsyncFd<OwnedFd>> = None;
    let mut left = n;
    while left > 0 {
        match s.splice_to(sock, left)? {
            0 => {
                if waiter.is_none() {
                    // SAFETY: the connection's socket is open for the whole call.
                    let fd = unsafe { BorrowedFd::borrow_raw(sock) };
                    waiter = fd.try_clone_to_owned().ok().and_then(|dup| {
                        // SAFETY: `dup` is ours, open for as long as the AsyncFd holds it.
                        unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }.ok()
                    });
                }
                match &waiter {
                    Some(a) => a.writable().await?.clear_ready(),
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
            k => left -= k,
        }
    }
    Ok(())
}

/// Writes a stream read's frame from `buf`, or its error.
async fn write_frame<W>(
    w: &mut W,
    result: Result<(), ttrpc::proto::Status>,
    req: &Request,
    stream_id: u32,
    buf: &mut [u8],
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    match result {
        Ok(()) if buf.len() - super::stream_read::PREFIX <= MAX_FRAME - 64 => {
            let start = finish_frame(buf, stream_id);
            w.write_all(&buf[start..]).await
        }
        Ok(()) => {
            let msg = format!(
                "{}/{}: read of {} bytes exceeds the frame limit",
                req.service,
                req.method,
                buf.len()
            );
            let resp = status_response(ttrpc::Code::RESOURCE_EXHAUSTED, msg);
            w.write_all(&frame::response_frame(stream_id, &encode_response(&resp, MAX_FRAME)))
                .await
        }
        Err(status) => {
            let mut resp = ttrpc::proto::Response::new();
            resp.status = protobuf::MessageField::some(status);
            w.write_all(&frame::response_frame(stream_id, &encode_response(&resp, MAX_FRAME)))
                .await
        }
    }
}
