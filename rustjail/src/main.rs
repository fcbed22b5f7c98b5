//! `rustjail`: a runc-compatible command line over the rustjail library.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use rustjail::helper::Mode;
use rustjail::{Container, CreateOptions, Runtime};

/// OCI container runtime (runc-compatible command line).
#[derive(Parser, Debug)]
#[command(name = "rustjail", version)]
struct Cli {
    /// State directory.
    #[arg(long, global = true, default_value = "/run/rustjail")]
    root: PathBuf,
    /// Also append errors to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a default config.json into the bundle.
    Spec {
        /// Bundle directory.
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
    },
    /// Create a container: its init is set up and waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Print a container's state as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal to a container's init (default SIGTERM).
    Kill {
        /// Container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Signal every process in the container, not only its init.
        #[arg(long, short)]
        all: bool,
    },
    /// Freeze every process of a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// List the processes of a container.
    Ps {
        /// Container id.
        id: String,
        /// table or json (a list of host pids).
        #[arg(long, short, default_value = "table")]
        format: String,
    },
    /// Change a container's resource limits.
    Update(UpdateArgs),
    /// Delete a stopped container.
    Delete {
        /// Container id.
        id: String,
        /// Kill it first if it still runs.
        #[arg(long, short)]
        force: bool,
    },
    /// Create, start, wait, delete; exits with the container's status.
    Run(CreateArgs),
    /// List containers.
    List,
    /// Print what this build supports, as JSON.
    Features,
    /// Run a new process inside a running container; exits with its status.
    Exec(ExecArgs),
}

#[derive(clap::Args, Debug)]
struct UpdateArgs {
    /// Container id.
    id: String,
    /// LinuxResources JSON from this file (`-` for stdin); flags below override it.
    #[arg(long, short)]
    resources: Option<PathBuf>,
    /// Memory limit in bytes.
    #[arg(long)]
    memory: Option<i64>,
    /// Memory plus swap limit in bytes (-1: unlimited).
    #[arg(long)]
    memory_swap: Option<i64>,
    /// Maximum number of pids (-1: unlimited).
    #[arg(long)]
    pids_limit: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    cpu_shares: Option<u64>,
    /// CPU CFS quota in microseconds per period.
    #[arg(long)]
    cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CPUs the container may use (e.g. 0-1).
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long)]
    cpuset_mems: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    /// Container id.
    id: String,
    /// Command and arguments (unless --process is given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
    /// process.json describing the whole process.
    #[arg(long, short)]
    process: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Environment variable KEY=VALUE; repeat for several.
    #[arg(long, short)]
    env: Vec<String>,
    /// User: UID[:GID].
    #[arg(long, short)]
    user: Option<String>,
    /// Allocate a terminal (needs --console-socket).
    #[arg(long, short)]
    tty: bool,
    /// Do not wait for the process.
    #[arg(long, short)]
    detach: bool,
    /// Write the process's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master (SCM_RIGHTS) with --tty.
    #[arg(long)]
    console_socket: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Container id.
    id: String,
    /// Bundle directory.
    #[arg(long, short, default_value = ".")]
    bundle: PathBuf,
    /// Write the init's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    #[arg(long)]
    no_pivot: bool,
    /// Unix socket that receives the pty master (SCM_RIGHTS) when process.terminal is set.
    #[arg(long)]
    console_socket: Option<PathBuf>,
}

fn main() {
    // The containers' inits and exec'd processes are this binary too.
    rustjail::helper::dispatch(&[Mode::CONTAINER]);
    let cli = Cli::parse();
    let log = cli.log.clone();
    let json = cli.log_format == "json";
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = format!("{e:#}");
            if let Some(path) = log {
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                    let line = if json {
                        serde_json::json!({"level": "error", "msg": msg, "time": rustjail::state::now_rfc3339()})
                            .to_string()
                    } else {
                        format!("rustjail: error: {msg}")
                    };
                    let _ = writeln!(f, "{line}");
                }
            }
            eprintln!("rustjail: error: {msg}");
            std::process::exit(1);
        }
    }
}

fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("signal {n}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<Signal>().with_context(|| format!("unknown signal {s:?}"))
}

/// Checks that a terminal and a console socket come together (as runc does).
fn check_console(terminal: bool, socket: &Option<PathBuf>) -> Result<()> {
    match (terminal, socket) {
        (true, None) => bail!("process.terminal is true: give a --console-socket to receive the pty"),
        (false, Some(_)) => bail!("a console socket was given but process.terminal is false"),
        _ => Ok(()),
    }
}

/// Sends a terminal's master to the console socket (SCM_RIGHTS), as runc does.
fn send_console(master: Option<std::os::fd::OwnedFd>, socket: &Option<PathBuf>) -> Result<()> {
    if let (Some(m), Some(path)) = (master, socket) {
        let s = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("connect to console socket {}", path.display()))?;
        rustjail::sync::send_fd(&s, std::os::fd::AsRawFd::as_raw_fd(&m))?;
    }
    Ok(())
}

fn create(rt: &Runtime, a: &CreateArgs) -> Result<Container> {
    let bundle = a
        .bundle
        .canonicalize()
        .with_context(|| format!("resolve bundle {}", a.bundle.display()))?;
    let config = bundle.join("config.json");
    // Read with named errors here; `create` checks it (runc's rules).
    let spec = rustjail::spec::read(&config).with_context(|| format!("read {}", config.display()))?;
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    check_console(terminal, &a.console_socket)?;
    let created = rt.create(CreateOptions {
        id: a.id.clone(),
        spec,
        bundle,
        no_pivot: a.no_pivot,
        stdio: None,
        meanwhile: None,
    })?;
    let c = created.container;
    let saved = c.save(rt.root()).and_then(|()| {
        send_console(created.terminal, &a.console_socket).map_err(|e| rustjail::Error::Init(format!("{e:#}")))
    });
    if let Err(e) = saved {
        let _ = rt.delete(&c, true);
        return Err(e.into());
    }
    if let Some(p) = &a.pid_file {
        std::fs::write(p, c.pid.to_string()).with_context(|| format!("write pid file {}", p.display()))?;
    }
    Ok(c)
}

fn run(cli: Cli) -> Result<i32> {
    let state_json = |rt: &Runtime, id: &str| -> Result<String> {
        let st = rt.load(id)?;
        let status = st.status();
        let pid = if status == rustjail::Status::Stopped { 0 } else { st.pid };
        Ok(serde_json::to_string_pretty(&serde_json::json!({
            "ociVersion": "1.0.2",
            "id": st.id,
            "pid": pid,
            "status": status.to_string(),
            "bundle": st.bundle,
            "rootfs": st.rootfs,
            "created": st.created,
            "owner": st.owner,
            "annotations": st.annotations,
        }))?)
    };
    match &cli.cmd {
        Cmd::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} exists already", path.display());
            }
            let mut spec = oci_spec::runtime::Spec::default();
            spec.set_hostname(Some("rustjail".into()));
            let text = serde_json::to_string_pretty(&spec)?;
            std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
            return Ok(0);
        }
        Cmd::Features => {
            println!("{}", serde_json::to_string_pretty(&rustjail::features::features())?);
            return Ok(0);
        }
        Cmd::List => {
            let rt = Runtime::new(&cli.root)?;
            println!("{:<20} {:<8} {:<10} {:<40} CREATED", "ID", "PID", "STATUS", "BUNDLE");
            for st in rt.list()? {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {}",
                    st.id,
                    st.pid,
                    st.status(),
                    st.bundle.display(),
                    st.created
                );
            }
            return Ok(0);
        }
        _ => {}
    }
    let rt = Runtime::new(&cli.root)?;
    match cli.cmd {
        Cmd::Create(a) => create(&rt, &a).map(|_| 0),
        Cmd::Start { id } => rt.start(&rt.load(&id)?).map(warn).map_err(Into::into),
        Cmd::State { id } => {
            println!("{}", state_json(&rt, &id)?);
            Ok(0)
        }
        Cmd::Kill { id, signal, all } => {
            let sig = parse_signal(&signal)?;
            let c = rt.load(&id)?;
            if all {
                rt.kill_all(&c, sig)?
            } else {
                rt.kill(&c, sig)?
            }
            Ok(0)
        }
        Cmd::Pause { id } => rt.pause(&rt.load(&id)?).map(|_| 0).map_err(Into::into),
        Cmd::Resume { id } => rt.resume(&rt.load(&id)?).map(|_| 0).map_err(Into::into),
        Cmd::Ps { id, format } => {
            let pids = rt.pids(&rt.load(&id)?)?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string(&pids)?),
                "table" => {
                    println!("{:>8} CMD", "PID");
                    for p in pids {
                        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                        let cmd: Vec<String> = cmd
                            .split(|b| *b == 0)
                            .filter(|a| !a.is_empty())
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect();
                        println!("{p:>8} {}", cmd.join(" "));
                    }
                }
                other => bail!("unknown format {other:?}: use table or json"),
            }
            Ok(0)
        }
        Cmd::Update(a) => update(&rt, a),
        Cmd::Delete { id, force } => rt.delete(&rt.load(&id)?, force).map(warn).map_err(Into::into),
        Cmd::Run(a) => {
            let c = create(&rt, &a)?;
            match rt.start(&c) {
                Ok(w) => warn(w),
                Err(e) => {
                    let _ = rt.delete(&c, true);
                    return Err(e.into());
                }
            };
            let code = wait_exit_code(nix::unistd::Pid::from_raw(c.pid))?;
            warn(rt.delete(&c, true)?);
            Ok(code)
        }
        Cmd::Exec(a) => exec(&rt, a),
        Cmd::Spec { .. } | Cmd::List | Cmd::Features => unreachable!("handled above"),
    }
}

/// Builds the exec'd process: the container's own process as the base (as
/// runc does), overridden by the flags, or process.json as given.
fn exec(rt: &Runtime, a: ExecArgs) -> Result<i32> {
    let c = rt.load(&a.id)?;
    let process = match &a.process {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            serde_json::from_str::<oci_spec::runtime::Process>(&text)
                .with_context(|| format!("parse {}", path.display()))?
        }
        None => {
            if a.args.is_empty() {
                bail!("exec needs a command, or --process process.json");
            }
            let mut p = c.spec.process().clone().unwrap_or_default();
            p.set_args(Some(a.args.clone()));
            p.set_terminal(Some(a.tty));
            let mut env = p.env().clone().unwrap_or_default();
            for kv in &a.env {
                let key = kv.split('=').next().unwrap_or_default();
                env.retain(|e| e.split('=').next() != Some(key));
                env.push(kv.clone());
            }
            p.set_env(Some(env));
            if let Some(cwd) = &a.cwd {
                p.set_cwd(cwd.clone());
            }
            if let Some(u) = &a.user {
                let (uid, gid) = match u.split_once(':') {
                    Some((u, g)) => (u.parse::<u32>()?, g.parse::<u32>()?),
                    None => (
                        u.parse::<u32>()
                            .with_context(|| format!("--user {u:?}: expected UID[:GID]"))?,
                        0,
                    ),
                };
                let mut user = p.user().clone();
                user.set_uid(uid);
                user.set_gid(gid);
                p.set_user(user);
            }
            p
        }
    };
    check_console(process.terminal().unwrap_or(false), &a.console_socket)?;
    let spawned = rt.exec(&c, rustjail::ExecOptions { process, stdio: None })?;
    let pid = spawned.pid;
    if let Err(e) = send_console(spawned.terminal, &a.console_socket) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(e);
    }
    if let Some(p) = &a.pid_file {
        std::fs::write(p, pid.to_string()).with_context(|| format!("write pid file {}", p.display()))?;
    }
    if a.detach {
        return Ok(0);
    }
    wait_exit_code(pid)
}

/// Prints warnings (failed poststart/poststop hooks) to stderr; exit code 0.
fn warn(warnings: Vec<String>) -> i32 {
    for w in warnings {
        eprintln!("rustjail: warning: {w}");
    }
    0
}

fn update(rt: &Runtime, a: UpdateArgs) -> Result<i32> {
    let mut r: serde_json::Value = match &a.resources {
        Some(p) => {
            let text = if p.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("read resources from stdin")?
            } else {
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?
            };
            serde_json::from_str(&text).context("parse resources JSON")?
        }
        None => serde_json::json!({}),
    };
    let mut set = |section: &str, key: &str, v: serde_json::Value| {
        if !r[section].is_object() {
            r[section] = serde_json::json!({});
        }
        r[section][key] = v;
    };
    if let Some(v) = a.memory {
        set("memory", "limit", v.into());
    }
    if let Some(v) = a.memory_swap {
        set("memory", "swap", v.into());
    }
    if let Some(v) = a.pids_limit {
        set("pids", "limit", v.into());
    }
    if let Some(v) = a.cpu_shares {
        set("cpu", "shares", v.into());
    }
    if let Some(v) = a.cpu_quota {
        set("cpu", "quota", v.into());
    }
    if let Some(v) = a.cpu_period {
        set("cpu", "period", v.into());
    }
    if let Some(v) = &a.cpuset_cpus {
        set("cpu", "cpus", v.clone().into());
    }
    if let Some(v) = &a.cpuset_mems {
        set("cpu", "mems", v.clone().into());
    }
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(r).context("resources")?;
    for note in rt.update(&rt.load(&a.id)?, &resources)? {
        eprintln!("rustjail: warning: {note}");
    }
    Ok(0)
}

/// Waits for a child and returns its status as runc does: the exit code, or
/// 128 + the signal that killed it.
fn wait_exit_code(pid: nix::unistd::Pid) -> Result<i32> {
    Ok(match nix::sys::wait::waitpid(pid, None).context("waitpid")? {
        nix::sys::wait::WaitStatus::Exited(_, c) => c,
        nix::sys::wait::WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 255,
    })
}
