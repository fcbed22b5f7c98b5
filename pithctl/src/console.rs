//! `pithctl console`: the agent's debug console (a shell on a vsock port) on the
//! local terminal. Raw mode when stdin is a terminal; piped stdin works too.
//!
//! The local end never half-closes the connection when stdin ends (hybrid vsock
//! backends drop the whole connection on `shutdown(SHUT_WR)`): it keeps
//! printing until the guest closes, so `echo 'uname -a; exit' | pithctl console`
//! shows all the output.

use std::time::{Duration, Instant};

use std::io::{Read, Write};

use anyhow::{anyhow, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use pithctl::client::hybrid_handshake;
use protocols::addr::Address;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to the console at `addr` and copies stdin/stdout until the guest closes.
pub async fn run(addr: &Address, timeout: Duration) -> Result<()> {
    let stream = connect(addr, timeout).await?;
    let _raw = crate::term::RawMode::enter();
    let (mut rd, mut wr) = tokio::io::split(stream);
    // stdin on a plain thread (blocking reads), handed over in chunks.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let to_guest = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // Keep the write half alive (no half-close) until the guest is done.
        std::future::pending::<()>().await;
        drop(wr);
    });
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 4096];
    let result = loop {
        match rd.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = stdout.write_all(&buf[..n]).and_then(|_| stdout.flush()) {
                    break Err(anyhow!("write to stdout: {e}"));
                }
            }
            Err(e) => break Err(anyhow!("read from the debug console: {e}")),
        }
    };
    to_guest.abort();
    result
}

async fn connect(addr: &Address, timeout: Duration) -> Result<Box<dyn Stream>> {
    let start = Instant::now();
    loop {
        let attempt: std::io::Result<Box<dyn Stream>> = async {
            Ok(match addr {
                Address::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?) as Box<dyn Stream>,
                Address::Vsock { cid, port } => {
                    Box::new(tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await?)
                }
                Address::HybridVsock { path, port } => {
                    let mut s = tokio::net::UnixStream::connect(path).await?;
                    hybrid_handshake(&mut s, *port).await?;
                    Box::new(s)
                }
            })
        }
        .await;
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() >= timeout => return Err(anyhow!("connect to debug console {addr}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
