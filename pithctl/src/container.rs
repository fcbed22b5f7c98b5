//! Container commands: what a host runtime does, one verb at a time, so a
//! person can drive a pod from a shell (`sandbox create`, `run`, `exec`, `ps`,
//! `kill`, `rm`, `sandbox destroy`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use protobuf::Message;
use protocols::agent::*;
use ttrpc::proto::Request;
use ttrpc::r#async::Client;

const SVC: &str = "grpc.AgentService";

/// Container and sandbox commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// CreateSandbox / DestroySandbox.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Create and start a container from a rootfs directory, stream its output, wait for it.
    Run(RunArgs),
    /// Run another process in a running container, stream its output, wait for it.
    Exec(ExecArgs),
    /// List a container's processes.
    Ps {
        /// Container id.
        id: String,
        /// table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Send a signal to a container's init (or to one of its execs).
    Kill {
        /// Container id.
        id: String,
        /// Signal number.
        #[arg(default_value_t = 15)]
        signal: u32,
        /// Exec id (default: the container's init).
        #[arg(long, default_value = "")]
        exec_id: String,
    },
    /// Remove a container (SIGKILL after --grace seconds).
    Rm {
        /// Container id.
        id: String,
        /// Seconds to let it end by itself.
        #[arg(long, default_value_t = 0)]
        grace: u32,
    },
}

/// `sandbox` subcommands.
#[derive(Subcommand, Debug)]
pub enum SandboxCmd {
    /// Set the sandbox up: hostname, DNS, shared PID namespace.
    Create {
        /// Sandbox id.
        #[arg(long, default_value = "pithctl-sandbox")]
        id: String,
        /// Hostname of the containers.
        #[arg(long, default_value = "pith")]
        hostname: String,
        /// resolv.conf line; repeat for several.
        #[arg(long)]
        dns: Vec<String>,
        /// Containers share the first container's PID namespace.
        #[arg(long)]
        sandbox_pidns: bool,
    },
    /// Stop every container and the agent.
    Destroy,
}

/// `run` arguments.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Root filesystem directory (for example a busybox tree).
    #[arg(long)]
    rootfs: PathBuf,
    /// Container id.
    #[arg(long, default_value = "c1")]
    id: String,
    /// Give the process a terminal.
    #[arg(long, short)]
    tty: bool,
    /// Create and start only; print the id and return.
    #[arg(long, short)]
    detach: bool,
    /// Remove the container after it exits.
    #[arg(long)]
    rm: bool,
    /// Forward our stdin to the process (CloseStdin at its end).
    #[arg(long, short)]
    interactive: bool,
    /// Memory limit in bytes.
    #[arg(long)]
    memory: Option<i64>,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, required = true)]
    args: Vec<String>,
}

/// `exec` arguments.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Container id.
    id: String,
    /// Exec id.
    #[arg(long, default_value = "pithctl-exec")]
    exec_id: String,
    /// Give the process a terminal.
    #[arg(long, short)]
    tty: bool,
    /// Forward our stdin to the process (CloseStdin at its end).
    #[arg(long, short)]
    interactive: bool,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, required = true)]
    args: Vec<String>,
}

/// What a command leaves for `main`: text to print, or an exit status.
pub enum Outcome {
    /// Print this.
    Print(String),
    /// Exit with this status (the container process's).
    Exit(i32),
}

async fn call<Req: Message, Resp: Message>(c: &Client, method: &str, req: &Req, timeout: Duration) -> Result<Resp> {
    let mut r = Request::new();
    r.service = SVC.into();
    r.method = method.into();
    r.payload = req.write_to_bytes()?;
    r.timeout_nano = timeout.as_nanos() as i64;
    let resp = c.request(r).await.map_err(|e| match e {
        ttrpc::Error::RpcStatus(s) => anyhow!("{method} failed: {:?}: {}", s.code(), s.message),
        other => anyhow!("{method} failed: {other}"),
    })?;
    Resp::parse_from_bytes(&resp.payload).with_context(|| format!("decode {method} response"))
}

fn process(args: &[String], tty: bool) -> protocols::oci::Process {
    let mut p = protocols::oci::Process::new();
    p.Args = args.to_vec();
    p.Terminal = tty;
    p.Cwd = "/".into();
    p.Env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        format!("TERM={}", if tty { "xterm" } else { "dumb" }),
    ];
    p
}

fn spec(a: &RunArgs) -> Result<protocols::oci::Spec> {
    let rootfs = std::fs::canonicalize(&a.rootfs).with_context(|| format!("rootfs {}", a.rootfs.display()))?;
    let mut s = oci_spec::runtime::Spec::default();
    let mut root = s.root().clone().unwrap_or_default();
    root.set_path(rootfs);
    root.set_readonly(Some(false));
    s.set_root(Some(root));
    // The sandbox's hostname applies.
    s.set_hostname(None);
    let mut spec = protocols::oci_convert::from_oci(&s);
    let user = spec.Process.as_ref().map(|p| p.User.clone()).unwrap_or_default();
    let mut p = process(&a.args, a.tty);
    p.User = user;
    p.Capabilities = spec
        .Process
        .as_ref()
        .map(|p| p.Capabilities.clone())
        .unwrap_or_default();
    spec.Process = protobuf::MessageField::some(p);
    if let Some(limit) = a.memory {
        let linux = spec.Linux.mut_or_insert_default();
        let mem = linux.Resources.mut_or_insert_default().Memory.mut_or_insert_default();
        mem.Limit = limit;
    }
    Ok(spec)
}

/// Copies one output stream to ours until it ends.
async fn pump(c: &Client, id: &str, exec_id: &str, method: &str, mut out: impl Write) -> Result<()> {
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = id.into();
        r.exec_id = exec_id.into();
        r.len = 1 << 16;
        // Output may take any time to come: no deadline on the read.
        let resp: ReadStreamResponse = match call(c, method, &r, Duration::ZERO).await {
            Ok(r) => r,
            // After the end was reported, or for a terminal's stderr.
            Err(_) => return Ok(()),
        };
        if resp.data.is_empty() {
            return Ok(());
        }
        out.write_all(&resp.data)?;
        out.flush()?;
    }
}

/// Gives the process's terminal our window size, now and after every SIGWINCH.
/// A failed resize is not worth ending the session for: the process keeps its
/// previous size.
async fn follow_window(c: &Client, id: &str, exec_id: &str) {
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    loop {
        let (rows, cols) = crate::term::window_size();
        let mut r = TtyWinResizeRequest::new();
        r.container_id = id.into();
        r.exec_id = exec_id.into();
        r.row = rows.into();
        r.column = cols.into();
        let _: Result<protobuf::well_known_types::empty::Empty> = call(c, "TtyWinResize", &r, Duration::ZERO).await;
        match winch.as_mut() {
            Some(w) => {
                w.recv().await;
            }
            None => return,
        }
    }
}

/// Sends our stdin to the process, then closes its stdin.
async fn feed(c: &Client, id: &str, exec_id: &str) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    // Reading a terminal or pipe blocks: a plain thread, which may outlive the process.
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    while let Some(data) = rx.recv().await {
        let mut w = WriteStreamRequest::new();
        w.container_id = id.into();
        w.exec_id = exec_id.into();
        w.data = data;
        let _: WriteStreamResponse = call(c, "WriteStdin", &w, Duration::ZERO).await?;
    }
    let mut close = CloseStdinRequest::new();
    close.container_id = id.into();
    close.exec_id = exec_id.into();
    let _: protobuf::well_known_types::empty::Empty = call(c, "CloseStdin", &close, Duration::ZERO).await?;
    Ok(())
}

/// Streams stdin (when `interactive`), stdout and stderr, then waits for the
/// process; returns its status.
async fn attach(c: &Client, id: &str, exec_id: &str, tty: bool, interactive: bool) -> Result<i32> {
    // Raw mode only with our stdin attached: keystrokes such as ^C belong to
    // the container then, and to this command otherwise.
    let _raw = (tty && interactive).then(crate::term::RawMode::enter);
    let resize = async {
        if tty {
            follow_window(c, id, exec_id).await;
        }
        std::future::pending::<()>().await
    };
    let input = async {
        if interactive {
            // The process may end before our stdin does; its end is what counts.
            let _ = feed(c, id, exec_id).await;
        }
        std::future::pending::<()>().await
    };
    let out = pump(c, id, exec_id, "ReadStdout", std::io::stdout());
    let err = async {
        if tty {
            Ok(())
        } else {
            pump(c, id, exec_id, "ReadStderr", std::io::stderr()).await
        }
    };
    let (o, e) = tokio::select! {
        r = async { tokio::join!(out, err) } => r,
        _ = input => unreachable!("pending"),
        _ = resize => unreachable!("pending"),
    };
    o?;
    e?;
    let mut w = WaitProcessRequest::new();
    w.container_id = id.into();
    w.exec_id = exec_id.into();
    let r: WaitProcessResponse = call(c, "WaitProcess", &w, Duration::ZERO).await?;
    Ok(r.status)
}

/// Runs one container command.
pub async fn run(c: &Client, cmd: Cmd, timeout: Duration) -> Result<Outcome> {
    let empty = |_: protobuf::well_known_types::empty::Empty| Outcome::Print(String::new());
    match cmd {
        Cmd::Sandbox(SandboxCmd::Create {
            id,
            hostname,
            dns,
            sandbox_pidns,
        }) => {
            let mut r = CreateSandboxRequest::new();
            r.sandbox_id = id;
            r.hostname = hostname;
            r.dns = dns;
            r.sandbox_pidns = sandbox_pidns;
            call(c, "CreateSandbox", &r, timeout).await.map(empty)
        }
        Cmd::Sandbox(SandboxCmd::Destroy) => call(c, "DestroySandbox", &DestroySandboxRequest::new(), timeout * 6)
            .await
            .map(empty),
        Cmd::Run(a) => {
            let mut r = CreateContainerRequest::new();
            r.container_id = a.id.clone();
            r.exec_id = a.id.clone();
            r.OCI = protobuf::MessageField::some(spec(&a)?);
            let _: protobuf::well_known_types::empty::Empty = call(c, "CreateContainer", &r, timeout).await?;
            let mut s = StartContainerRequest::new();
            s.container_id = a.id.clone();
            let _: protobuf::well_known_types::empty::Empty = call(c, "StartContainer", &s, timeout).await?;
            if a.detach {
                return Ok(Outcome::Print(a.id));
            }
            let status = attach(c, &a.id, &a.id, a.tty, a.interactive).await?;
            if a.rm {
                let mut rm = RemoveContainerRequest::new();
                rm.container_id = a.id.clone();
                let _: protobuf::well_known_types::empty::Empty = call(c, "RemoveContainer", &rm, timeout).await?;
            }
            Ok(Outcome::Exit(status))
        }
        Cmd::Exec(a) => {
            let mut r = ExecProcessRequest::new();
            r.container_id = a.id.clone();
            r.exec_id = a.exec_id.clone();
            r.process = protobuf::MessageField::some(process(&a.args, a.tty));
            let _: protobuf::well_known_types::empty::Empty = call(c, "ExecProcess", &r, timeout).await?;
            Ok(Outcome::Exit(attach(c, &a.id, &a.exec_id, a.tty, a.interactive).await?))
        }
        Cmd::Ps { id, format } => {
            let mut r = ListProcessesRequest::new();
            r.container_id = id;
            r.format = format;
            let resp: ListProcessesResponse = call(c, "ListProcesses", &r, timeout).await?;
            Ok(Outcome::Print(
                String::from_utf8_lossy(&resp.process_list).trim_end().to_string(),
            ))
        }
        Cmd::Kill { id, signal, exec_id } => {
            let mut r = SignalProcessRequest::new();
            r.container_id = id;
            r.exec_id = exec_id;
            r.signal = signal;
            call(c, "SignalProcess", &r, timeout).await.map(empty)
        }
        Cmd::Rm { id, grace } => {
            if grace > 3600 {
                bail!("--grace is at most 3600 seconds");
            }
            let mut r = RemoveContainerRequest::new();
            r.container_id = id;
            r.timeout = grace;
            call(c, "RemoveContainer", &r, timeout + Duration::from_secs(grace.into()))
                .await
                .map(empty)
        }
    }
}
