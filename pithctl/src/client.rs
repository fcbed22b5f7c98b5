//! Connecting to an agent: `unix://`, `vsock://` and hybrid vsock (`hvsock://`),
//! with retries until a deadline, for `pithctl`, the tests and the benchmarks.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use ttrpc::r#async::transport::Socket;
use ttrpc::r#async::Client;

use protocols::addr::Address;

/// No connection could be made before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {addr} within {waited:?} ({attempts} attempts): {last}")]
pub struct ConnectError {
    /// The address tried.
    pub addr: String,
    /// How long it kept trying.
    pub waited: Duration,
    /// How many tries.
    pub attempts: u32,
    /// The last failure.
    pub last: io::Error,
}

/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for the `OK` line of a hybrid vsock handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a byte stream to `addr`, retrying until `timeout` has passed.
pub async fn connect_socket(addr: &Address, timeout: Duration) -> Result<Socket, ConnectError> {
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match connect_once(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() + RETRY_PAUSE >= timeout => {
                return Err(ConnectError {
                    addr: addr.to_string(),
                    waited: start.elapsed(),
                    attempts,
                    last: e,
                })
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// Opens a ttrpc client to `addr`, retrying until `timeout` has passed.
pub async fn connect(addr: &Address, timeout: Duration) -> Result<Client, ConnectError> {
    connect_socket(addr, timeout).await.map(Client::new)
}

async fn connect_once(addr: &Address) -> io::Result<Socket> {
    match addr {
        Address::Unix(path) => {
            let s = UnixStream::connect(path)
                .await
                .map_err(|e| ctx(e, "connect", path.display()))?;
            Ok(Socket::new(s))
        }
        Address::Vsock { cid, port } => {
            let s = tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port))
                .await
                .map_err(|e| ctx(e, "connect", addr))?;
            Ok(Socket::new(s))
        }
        Address::HybridVsock { path, port } => {
            let mut s = UnixStream::connect(path)
                .await
                .map_err(|e| ctx(e, "connect", path.display()))?;
            tokio::time::timeout(HANDSHAKE_TIMEOUT, hybrid_handshake(&mut s, *port))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer to CONNECT {port}")))??;
            Ok(Socket::new(s))
        }
    }
}

fn ctx(e: io::Error, syscall: &str, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{syscall} {what}: {e}"))
}

/// Sends `CONNECT <port>\n` and reads the answer line byte by byte, so that no
/// byte of the stream behind it is consumed. The answer must start with `OK`.
pub async fn hybrid_handshake(s: &mut UnixStream, port: u32) -> io::Result<()> {
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "hybrid vsock closed the connection after CONNECT {port} (nothing listening on that port yet?)"
                ),
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "hybrid vsock answer line too long",
            ));
        }
    }
    let text = String::from_utf8_lossy(&line);
    if text.starts_with("OK") {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("hybrid vsock refused CONNECT {port}: {text:?}"),
        ))
    }
}

/// One unary call, its status turned into an error naming the method.
pub async fn call<Req: protobuf::Message, Resp: protobuf::Message>(
    c: &Client,
    svc: &str,
    method: &str,
    req: &Req,
    timeout: Duration,
) -> anyhow::Result<Resp> {
    let mut r = ttrpc::proto::Request::new();
    r.service = svc.into();
    r.method = method.into();
    r.payload = req.write_to_bytes()?;
    r.timeout_nano = timeout.as_nanos() as i64;
    let resp = c.request(r).await.map_err(|e| match e {
        ttrpc::Error::RpcStatus(s) => anyhow::anyhow!("{svc}/{method} failed: {:?}: {}", s.code(), s.message),
        other => anyhow::anyhow!("{svc}/{method} failed: {other}"),
    })?;
    Ok(Resp::parse_from_bytes(&resp.payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixListener;

    /// A stand-in for a VMM's hybrid vsock socket: answers the handshake with
    /// `answer`, then echoes.
    async fn fake_vmm(path: std::path::PathBuf, answer: &'static str) {
        let l = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut s = tokio::io::BufReader::new(s);
            let mut line = String::new();
            s.read_line(&mut line).await.unwrap();
            assert_eq!(line, "CONNECT 1024\n");
            s.get_mut().write_all(answer.as_bytes()).await.unwrap();
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).await.is_ok() {
                s.get_mut().write_all(&buf).await.unwrap();
            }
        });
    }

    #[tokio::test]
    async fn hybrid_vsock_handshake_ok_then_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.vsock");
        fake_vmm(path.clone(), "OK 1073741824\nhello").await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        hybrid_handshake(&mut s, 1024).await.unwrap();
        // The bytes after the OK line belong to the stream and were not eaten.
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn hybrid_vsock_refusal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.vsock");
        fake_vmm(path.clone(), "FAILED\n").await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        let e = hybrid_handshake(&mut s, 1024).await.unwrap_err();
        assert!(e.to_string().contains("FAILED"), "{e}");
    }

    #[tokio::test]
    async fn connect_gives_up_at_the_deadline() {
        let addr = Address::Unix("/nonexistent/pith.sock".into());
        let Err(e) = connect(&addr, Duration::from_millis(200)).await else {
            panic!("connected to nothing")
        };
        assert!(e.attempts >= 2, "{e}");
        assert!(e.to_string().contains("/nonexistent/pith.sock"), "{e}");
    }
}
