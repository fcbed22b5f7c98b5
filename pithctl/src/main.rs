//! `pithctl`: the host side of pith on the command line. Talks to an agent over
//! `unix://`, `vsock://` or hybrid vsock (`hvsock:///path/vmm.sock:PORT`).

mod console;
mod container;
mod hotplug;
mod methods;
mod state;
mod term;

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use protocols::levels;
use ttrpc::proto::Request;

use pithctl::client;
use protocols::addr::Address;

/// Default address: where `make run` starts the agent.
const DEFAULT_ADDR: &str = "unix:///tmp/pith-agent.sock";

/// Host-side command line for the pith agent.
#[derive(Parser, Debug)]
#[command(name = "pithctl", version = pithctl::VERSION)]
struct Cli {
    /// Agent address: unix:///path, vsock://CID:PORT or hvsock:///path/vmm.sock:PORT.
    #[arg(long, global = true, env = "PITH_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,
    /// Seconds to keep retrying the connection, and to wait for each answer.
    #[arg(long, global = true, default_value_t = 5.0)]
    timeout: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// grpc.Health/Check: is the agent serving?
    Check,
    /// grpc.Health/Version: agent and API versions.
    Version,
    /// pith.Negotiation/Hello: agree on an API level.
    Hello {
        /// Lowest API level to accept.
        #[arg(long, default_value_t = levels::MIN_LEVEL)]
        min: u32,
        /// Highest API level to accept.
        #[arg(long, default_value_t = levels::MAX_LEVEL)]
        max: u32,
        /// Feature wanted; repeat for several.
        #[arg(long = "feature")]
        features: Vec<String>,
        /// Host name to report.
        #[arg(long, default_value = "pithctl")]
        name: String,
    },
    /// Call any method with a JSON request; prints the JSON response.
    Call {
        /// Method: CreateContainer, AgentService/CreateContainer or grpc.AgentService/CreateContainer.
        method: String,
        /// JSON request inline (default: read from --file or stdin; `{}` when empty).
        json: Option<String>,
        /// Read the JSON request from this file (`-` for stdin).
        #[arg(long, short)]
        file: Option<PathBuf>,
    },
    /// List every method with its request and response types.
    Methods,
    #[command(flatten)]
    Container(container::Cmd),
    /// Plug a disk image into the VM (QMP) and into a running container (pith.Devices, level 3).
    Hotplug(hotplug::PlugArgs),
    /// Remove a hot-plugged disk from the container, then from the VM (QMP).
    Hotunplug(hotplug::UnplugArgs),
    /// Copy a pith-agent binary into the guest (CopyFile) and hand the running
    /// agent over to it in place (pith.Lifecycle, level 4): connections,
    /// pending calls and containers carry on.
    Upgrade {
        /// The new pith-agent binary on this machine.
        #[arg(long)]
        binary: PathBuf,
        /// Where to put it in the guest (under a CopyFile root).
        #[arg(long, default_value = pithctl::upgrade::DEFAULT_GUEST_PATH)]
        guest_path: String,
        /// The binary is already at --guest-path: do not copy it.
        #[arg(long)]
        no_copy: bool,
        /// Milliseconds the new binary has to take over before the old one runs again.
        #[arg(long, default_value_t = 10_000)]
        ready_timeout_ms: u64,
    },
    /// The sandbox an agent persisted, read from its state file (no agent is asked).
    State {
        /// The agent's state directory (its --state-dir).
        #[arg(long, default_value = "/run/pith")]
        state_dir: PathBuf,
    },
    /// The agent's debug console (agent.debug_console): a shell on the terminal.
    Console {
        /// Port of the console, replacing the port of --addr (default: the port of --addr).
        #[arg(long)]
        port: Option<u32>,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(container::Outcome::Print(out)) => {
            if !out.is_empty() {
                print_out(&out)
            }
        }
        Ok(container::Outcome::Exit(status)) => {
            // The stdin reader thread may still be blocked: leave without waiting for it.
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::process::exit(status)
        }
        Err(e) => {
            eprintln!("pithctl: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Prints a command's answer. A reader that stopped early (`pithctl methods |
/// head`) took all it wanted: a broken pipe ends the command quietly, any
/// other write error is reported.
fn print_out(out: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{out}").and_then(|_| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("pithctl: error: write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> Result<container::Outcome> {
    run_inner(cli).await
}

async fn run_inner(cli: Cli) -> Result<container::Outcome> {
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    let timeout = Duration::from_secs_f64(cli.timeout);
    let (method, json) = match cli.cmd {
        Cmd::State { state_dir } => return Ok(container::Outcome::Print(state::show(&state_dir)?)),
        Cmd::Methods => {
            let lines: Vec<String> = methods::all()
                .iter()
                .map(|m| {
                    format!(
                        "{}/{} {} -> {}",
                        m.service,
                        m.name,
                        m.input.full_name(),
                        m.output.full_name()
                    )
                })
                .collect();
            return Ok(container::Outcome::Print(lines.join("\n")));
        }
        Cmd::Check => ("grpc.Health/Check".to_string(), "{}".to_string()),
        Cmd::Version => ("grpc.Health/Version".to_string(), "{}".to_string()),
        Cmd::Hello {
            min,
            max,
            features,
            name,
        } => {
            let req = serde_json::json!({
                "hostName": name, "hostVersion": pithctl::VERSION,
                "minLevel": min, "maxLevel": max, "wantedFeatures": features,
            });
            ("pith.Negotiation/Hello".to_string(), req.to_string())
        }
        Cmd::Call { method, json, file } => (method, read_request(json, file)?),
        Cmd::Container(cmd) => {
            let addr: Address = cli.addr.parse()?;
            let client = client::connect(&addr, timeout).await?;
            return container::run(&client, cmd, timeout).await;
        }
        Cmd::Hotplug(a) => {
            let client = client::connect(&cli.addr.parse()?, timeout).await?;
            return hotplug::plug(&client, a, timeout).await.map(container::Outcome::Print);
        }
        Cmd::Upgrade {
            binary,
            guest_path,
            no_copy,
            ready_timeout_ms,
        } => {
            use pithctl::upgrade;
            let client = client::connect(&cli.addr.parse()?, timeout).await?;
            upgrade::negotiate(&client, timeout).await?;
            if !no_copy {
                upgrade::copy_in(&client, &binary, &guest_path, timeout).await?;
            }
            let ready = Duration::from_millis(ready_timeout_ms);
            let r = upgrade::upgrade(&client, &guest_path, ready, timeout).await?;
            return Ok(container::Outcome::Print(upgrade::describe(&r)));
        }
        Cmd::Hotunplug(a) => {
            let client = client::connect(&cli.addr.parse()?, timeout).await?;
            return hotplug::unplug(&client, a, timeout)
                .await
                .map(container::Outcome::Print);
        }
        Cmd::Console { port } => {
            let mut addr: Address = cli.addr.parse()?;
            if let Some(p) = port {
                match &mut addr {
                    Address::Vsock { port, .. } | Address::HybridVsock { port, .. } => *port = p,
                    Address::Unix(_) => bail!("--port needs a vsock:// or hvsock:// address"),
                }
            }
            console::run(&addr, timeout).await?;
            return Ok(container::Outcome::Print(String::new()));
        }
    };
    let m = methods::find(&method)?;
    let payload = methods::encode_json(&m.input, &json)?;
    let addr: Address = cli.addr.parse()?;
    let client = client::connect(&addr, timeout).await?;
    let mut req = Request::new();
    req.service = m.service.clone();
    req.method = m.name.clone();
    req.payload = payload;
    req.timeout_nano = timeout.as_nanos() as i64;
    let resp = client.request(req).await.map_err(|e| rpc_error(&m, e))?;
    methods::decode_to_json(&m.output, &resp.payload).map(container::Outcome::Print)
}

fn read_request(inline: Option<String>, file: Option<PathBuf>) -> Result<String> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("give the request inline or with --file, not both"),
        (Some(j), None) => Ok(j),
        (None, Some(p)) if p.as_os_str() != "-" => {
            std::fs::read_to_string(&p).with_context(|| format!("read request from {}", p.display()))
        }
        (None, _) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("read request from stdin")?;
            Ok(s)
        }
    }
}

fn rpc_error(m: &methods::Method, e: ttrpc::Error) -> anyhow::Error {
    match e {
        ttrpc::Error::RpcStatus(s) => anyhow!("{}/{} failed: {:?}: {}", m.service, m.name, s.code(), s.message),
        other => anyhow!("{}/{} failed: {other}", m.service, m.name),
    }
}
