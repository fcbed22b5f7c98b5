//! The agent process: the helper modes of its binary, configuration,
//! logging, PID 1 duties, then the server on the configured addresses until
//! SIGTERM, SIGINT or DestroySandbox.

use std::sync::Arc;

use anyhow::{Context, Result};
use slog::{error, info, warn};

use crate::config::flags::Args;
use crate::config::{self, AgentConfig, Sources};
use crate::context::AgentContext;
use crate::keeper::link::KeeperLink;
use crate::persist::file::StateFile;
use crate::sandbox::durable;
use crate::sandbox::rustjail_engine::RustjailEngine;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::server::{dispatch::Dispatcher, limits::Limits, Listener, Server};
use crate::{init, logging, rpc};

/// Every mode this binary starts in besides the agent: single-threaded
/// helpers that rustjail starts from its sealed copy of this binary.
const MODES: &[rustjail::helper::Mode] = &[
    // A container's init, and a process exec'd into a running container.
    rustjail::helper::Mode::CONTAINER,
    // The holder of the sandbox's shared UTS and IPC namespaces.
    crate::sandbox::shared_ns::MODE,
    // Makes and removes device nodes inside a running container.
    crate::device::node::MODE,
];

/// `main` of `pith-agent`.
pub fn main() {
    // In one of the helper modes this never returns.
    rustjail::helper::dispatch(MODES);
    agent_main()
}

/// The agent (or its keeper), once no helper mode took the process. A frame
/// of its own: `main`'s stack is probed page by page at its entry, and every
/// container's init comes through `main` (this function's locals made that
/// ~10 KiB, three page faults per init).
#[inline(never)]
fn agent_main() {
    let args = Args::from_env();
    // The keeper runs the agent: when asked, and always as the guest's init
    // (an agent crash must not take PID 1, and with it the kernel, down).
    let pid1 = std::process::id() == 1;
    if (args.keeper || pid1) && std::env::var_os(crate::keeper::FD_ENV).is_none() {
        // Before any thread: the keeper is single-threaded.
        let kmsg = (pid1 || args.overrides.log_kmsg).then_some(args.kmsg_path.as_path());
        std::process::exit(crate::keeper::parent::run(pid1, kmsg));
    }
    if let Err(e) = run(args) {
        eprintln!("pith-agent: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    // While single-threaded (it edits the environment).
    let keeper = crate::keeper::link::KeeperLink::from_env()
        .transpose()
        .context("keeper channel")?
        .map(Arc::new);
    // While the low descriptor numbers are free (before the runtime, the
    // listeners, a restart's containers): a spawn then copies a few entries
    // of the table, not one per descriptor of every container. One group per
    // spawn at a time (containers are mostly made one after another; each
    // group is 6 descriptors of RLIMIT_NOFILE); a spawn that finds none
    // copies the table up to its own highest descriptor.
    rustjail::spawn::reserve_low_fds(2).context("reserve descriptors for spawns")?;
    // The guest's agent: its keeper is init (and mounted /proc, /sys, /dev...).
    // SAFETY: getppid(2) has no arguments and cannot fail.
    let init_mode = keeper.is_some() && unsafe { libc::getppid() } == 1;
    if keeper.is_some() {
        // Started as /proc/self/exe, it would be called "exe" in ps and pidof.
        // SAFETY: prctl with a NUL-terminated name that outlives the call.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"pith-agent".as_ptr(), 0, 0, 0) };
    }
    // Set by the keeper when it runs this binary again after a failed upgrade.
    let rolled_back = std::env::var(crate::keeper::parent::UPGRADE_FAILED_ENV).ok();
    if rolled_back.is_some() {
        // SAFETY: single-threaded at this point of start-up (before the runtime).
        unsafe { std::env::remove_var(crate::keeper::parent::UPGRADE_FAILED_ENV) };
    }
    let cmdline = config::read_cmdline(&args.cmdline).with_context(|| format!("read {}", args.cmdline.display()))?;
    let env = |k: &str| std::env::var(k).ok();
    let loaded = AgentConfig::load(&Sources {
        cmdline: &cmdline,
        env: &env,
        flags: &args.overrides,
    });
    let cfg = loaded.config;

    let kmsg = (init_mode || cfg.log_kmsg).then_some(args.kmsg_path.as_path());
    let (log, _guard, kmsg_error) = logging::init(cfg.log_level, kmsg);
    if let Some(e) = kmsg_error {
        warn!(log, "{e}");
    }
    for w in &loaded.warnings {
        warn!(log, "{w}"; "subsystem" => "config");
    }
    init::load_modules(&cfg.kernel_modules, &log);
    info!(log, "starting";
          "init_mode" => init_mode,
          "server_addr" => cfg.server_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
          "log_level" => cfg.log_level.as_str(),
          "hotplug_timeout_s" => cfg.hotplug_timeout.as_secs(),
          "debug_console" => cfg.debug_console);

    let rt = runtime_builder().enable_all().build().context("start tokio runtime")?;
    let result = rt.block_on(serve(&cfg, init_mode, &args, keeper, rolled_back, &log));
    if let Err(e) = &result {
        error!(log, "agent failed: {e:#}");
    }
    if init_mode {
        // The keeper (PID 1) powers the VM off once this process is gone.
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
    }
    result
}

/// How many threads run the agent's tasks when `TOKIO_WORKER_THREADS` does
/// not say: one, as in a guest booted with one vCPU (Kata's default), whatever
/// the CPU count. The tasks only move bytes and wait; the work that takes CPU
/// (a container's create, start, delete, mounts) runs on threads of its own.
/// A second worker bought nothing but wake-ups: each request it was
/// notified to steal from, mostly in vain, cost ~5% of a container cycle's CPU.
const WORKER_THREADS: usize = 1;

/// The runtime: multi-threaded (blocking work hands its worker's tasks on), with
/// [`WORKER_THREADS`] workers unless `TOKIO_WORKER_THREADS` is set.
fn runtime_builder() -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        b.worker_threads(WORKER_THREADS);
    }
    b
}

/// The connections an upgrade left, ready to serve: the upgrade call's
/// answer first, then the calls carried over, then what they send.
fn carry(a: crate::upgrade::resume::Arrival, level: u32) -> Vec<crate::server::CarriedConn> {
    let mut answer = Some(rpc::lifecycle::answer(a.outcome, level));
    a.conns
        .into_iter()
        .map(|c| crate::server::CarriedConn {
            fd: c.fd,
            resume: crate::server::conn::Resume {
                buffered: c.over.buffered,
                carried: c.over.carried,
                answers: c
                    .over
                    .upgrade_stream
                    .and_then(|s| Some((s, answer.take()?)))
                    .into_iter()
                    .collect(),
            },
        })
        .collect()
}

async fn serve(
    cfg: &AgentConfig,
    init_mode: bool,
    args: &Args,
    keeper: Option<Arc<KeeperLink>>,
    rolled_back: Option<String>,
    log: &slog::Logger,
) -> Result<()> {
    // A command line that cannot work is told as such, whoever holds the state.
    for a in &cfg.server_addrs {
        Listener::check(a)?;
    }
    // Then: a second agent on this state directory stops here.
    let state_file = StateFile::lock(&args.state_dir).context("lock the state directory")?;
    // Before any listener: a client that sees the socket may send SIGTERM at
    // once, and the agent must stop cleanly then, not die of the signal.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    // Before any listener: no device event may come before someone keeps it.
    let devices = Arc::new(crate::device::Devices::start(cfg.hotplug_timeout, log));
    let reaper = crate::reaper::Reaper::new();
    let sandbox_cfg = SandboxConfig {
        state_dir: args.state_dir.clone(),
        pipe_size: cfg.container_pipe_size,
        dns: crate::sandbox::dns::DnsFiles {
            sandbox: args.sandbox_resolv_conf.clone(),
            guest: args.resolv_conf.clone(),
        },
        storage_roots: crate::storage::roots_for(&args.state_dir, &|k| std::env::var(k).ok()),
    };
    let state = || format!("set up container state in {}", args.state_dir.display());
    let engine = RustjailEngine::new(&args.state_dir.join("containers"), reaper.clone()).with_context(state)?;
    let guest = crate::guest::Guest::from_env(&|k| std::env::var(k).ok());
    let mut sandbox = Sandbox::new(sandbox_cfg, Arc::new(engine), devices, guest, log).with_context(state)?;
    // Exits a keeper kept: on disk at the first write, then forgotten by it.
    let kept = std::sync::Mutex::new(Vec::new());
    let attached = sandbox.attach(state_file, keeper.clone(), &|pid, exit| {
        kept.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        reaper.deliver(pid, exit);
    });
    let sandbox = Arc::new(sandbox);
    if attached.is_ok() {
        sandbox.persist().await;
        if let Some(k) = &keeper {
            for pid in kept.into_inner().unwrap_or_default() {
                let _ = k.forget(pid);
            }
        }
    }
    // Listening once the sandbox is taken back: a client that connects is
    // answered at once, and by the sandbox as it was. Under a keeper, on the
    // sockets it held for a previous agent (before the keeper's exits are
    // read on their own thread: the handoff may be asked for here).
    let listeners = cfg
        .server_addrs
        .iter()
        .map(|a| {
            let name = a.to_string();
            crate::keeper::listen::listen(
                keeper.as_deref(),
                &name,
                |fd| Listener::adopt(a, fd),
                || Listener::bind(a),
                log,
            )
            .with_context(|| format!("listen on {a}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let console = cfg.debug_console.then(|| {
        let port = cfg.debug_console_vport;
        crate::keeper::listen::listen(
            keeper.as_deref(),
            &format!("vsock://-1:{port}#console"),
            |fd| init::debug_console::adopt(fd, port),
            || init::debug_console::bind(port),
            log,
        )
    });
    durable::spawn_writers(&sandbox, &reaper, keeper.clone(), log);
    // A live upgrade brought this agent (or failed and ran it again): the
    // connections the previous binary served, and the answer to its call.
    let carried = keeper
        .as_deref()
        .and_then(|k| crate::upgrade::resume::arrive(k, rolled_back, log))
        .map(|a| carry(a, sandbox.level()))
        .unwrap_or_default();
    let listen: Vec<String> = listeners.iter().map(Listener::address).collect();
    let ctx = Arc::new(AgentContext::new(listen, init_mode));
    let mut destroyed = sandbox.shutdown_requested();
    let pause = crate::upgrade::pause::Pause::new();
    let upgrader = crate::upgrade::Upgrader::new(
        pause.clone(),
        keeper.clone(),
        reaper.clone(),
        sandbox.clone(),
        &args.state_dir,
        log,
    );
    let rpc = Arc::new(rpc::Rpc::new(sandbox.clone(), ctx, log));
    let reads = rpc::stdio_read::stream_reads(rpc.clone());
    // Kata's answer at level 1, pith's above (the level may change at any call).
    let not_served = Box::new(move |path: &str| rpc::status::not_served(path, sandbox.level()));
    let dispatcher = Dispatcher::with_answers(rpc::services(rpc, Some(Arc::new(upgrader))), reads, not_served);
    let limits = Limits::new(cfg.max_connections, cfg.frame_timeout);
    let server = Server::start(listeners, carried, dispatcher, limits, pause, log);

    // Orphans of our children become ours (as subreaper; PID 1, when the
    // binary is init, is the keeper): reap them so they do not pile up as zombies.
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        warn!(
            log,
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    let _reaping = reaper.spawn_on_sigchld().context("install SIGCHLD handler")?;
    match console {
        Some(Ok(l)) => drop(init::debug_console::spawn(l, cfg.debug_console_vport, log)),
        Some(Err(e)) => warn!(log, "debug console not started: {e}"),
        None => {}
    }

    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        // The watch's read guard goes before the pause: held through it, a
        // second DestroySandbox's send would block a worker thread on it, and
        // with it the timer and the stop.
        _ = async { destroyed.wait_for(|d| *d).await.is_ok() } => {
            // The DestroySandbox response is written right after the handler
            // returns; give it that moment before the connections go.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            "DestroySandbox"
        }
    };
    info!(log, "stopping"; "reason" => which);
    server.stop().await;
    info!(log, "stopped");
    Ok(())
}
