//! Shared fixtures for whole-agent tests: start the real `pith-agent` binary on
//! a private Unix socket, talk ttrpc to it, stop it and read its log.

#![allow(dead_code)]

pub mod containers;
pub mod frames;
pub mod loopdev;
pub mod netns;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protobuf::Message;
use ttrpc::proto::{Code, Request};
use ttrpc::r#async::Client;

use protocols::addr::Address;

/// A running agent; killed (SIGKILL) on drop if not stopped before.
pub struct Agent {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub stderr_path: PathBuf,
}

impl Agent {
    /// Starts the agent with `--server-addr unix://<tmp>/agent.sock` plus `extra` args,
    /// an empty kernel command line, and waits until the socket accepts.
    pub fn start(extra: &[&str]) -> Agent {
        Self::start_with(extra, &[])
    }

    /// Like [`Agent::start`], with environment variables.
    pub fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Agent {
        Self::start_in(&[], extra, env)
    }

    /// Like [`Agent::start_with`], the agent run by `wrapper` (e.g. `ip netns exec NS`),
    /// which must exec it (so that the child is the agent).
    pub fn start_in(wrapper: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Agent {
        Self::start_prepared_in(wrapper, extra, env, &|_| {})
    }

    /// Like [`Agent::start_with`], after `prepare` has seen the state
    /// directory (created, empty) the agent will use.
    pub fn start_prepared(extra: &[&str], env: &[(&str, &str)], prepare: &dyn Fn(&Path)) -> Agent {
        Self::start_prepared_in(&[], extra, env, prepare)
    }

    /// [`Agent::start_in`] and [`Agent::start_prepared`] together.
    pub fn start_prepared_in(wrapper: &[&str], extra: &[&str], env: &[(&str, &str)], prepare: &dyn Fn(&Path)) -> Agent {
        let bin = Path::new(env!("CARGO_BIN_EXE_pith-agent"));
        Self::start_bin_prepared(bin, wrapper, extra, env, prepare)
    }

    /// Like [`Agent::start_in`], with the agent binary `agent_bin` (e.g. the
    /// static build that goes into the guest image).
    pub fn start_bin(agent_bin: &Path, wrapper: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Agent {
        Self::start_bin_prepared(agent_bin, wrapper, extra, env, &|_| {})
    }

    /// Every start above: `agent_bin` run by `wrapper`, once `prepare` has
    /// seen the state directory.
    fn start_bin_prepared(
        agent_bin: &Path,
        wrapper: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
        prepare: &dyn Fn(&Path),
    ) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        prepare(&dir.path().join("state"));
        let sock = dir.path().join("agent.sock");
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "").unwrap();
        let stderr_path = dir.path().join("agent.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        // The guest's resolv.conf stand-in, which CreateSandbox's DNS is
        // bind-mounted over (never the machine's /etc/resolv.conf).
        std::fs::write(dir.path().join("resolv.conf"), GUEST_RESOLV_CONF).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(agent_bin);
                c
            }
            None => Command::new(agent_bin),
        };
        cmd.arg("--server-addr")
            .arg(format!("unix://{}", sock.display()))
            .arg("--cmdline")
            .arg(&cmdline)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--resolv-conf")
            .arg(dir.path().join("resolv.conf"))
            .arg("--sandbox-resolv-conf")
            .arg(dir.path().join("sandbox/resolv.conf"))
            .args(extra)
            .env_remove("PITH_AGENT_SERVER_ADDR")
            .env_remove("KATA_AGENT_SERVER_ADDR")
            .env_remove("PITH_AGENT_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn pith-agent");
        let agent = Agent {
            child: Some(child),
            dir,
            sock,
            stderr_path,
        };
        agent.wait_socket();
        agent
    }

    fn wait_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "agent did not listen on {} in 10s; log:\n{}",
            self.sock.display(),
            self.log()
        );
    }

    /// The guest's resolv.conf as the agent sees it (CreateSandbox's DNS is
    /// mounted over it; it holds [`GUEST_RESOLV_CONF`] before).
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.path().join("resolv.conf")
    }

    pub fn address(&self) -> Address {
        Address::Unix(self.sock.clone())
    }

    /// A ttrpc client on a new connection.
    pub async fn client(&self) -> Client {
        match pithctl::client::connect(&self.address(), Duration::from_secs(5)).await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// What the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits (up to 5 s: logging is asynchronous) until a whole line of the
    /// log (one ended by its newline: a record may reach the file in more
    /// than one write) contains `needle`; returns the log either way.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            let whole = log.rfind('\n').map_or("", |end| &log[..end]);
            if whole.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not stop within 10s of SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still alive.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .map(|c| c.try_wait().unwrap().is_none())
            .unwrap_or(false)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Containers (and the namespace holder) are the agent's children and
            // would outlive it (a test that failed half-way), and a container
            // whose init has exited but was never removed still has its
            // cgroups: let the agent remove them, as a host ends a sandbox,
            // before it goes.
            if c.try_wait().map(|s| s.is_none()).unwrap_or(false) {
                let addr = self.address();
                let _ = std::thread::spawn(move || destroy_sandbox(&addr)).join();
            }
            // Under a keeper, the agent is the keeper's child and outlives it
            // (as do an agent's own helpers): they go with it.
            let left = all_children(c.id() as i32);
            let _ = c.kill();
            let _ = c.wait();
            for pid in left {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        // A sandbox not destroyed leaves its DNS mounted over the stand-in:
        // unmount what this agent mounted (every layer), so the directory goes.
        while nix::mount::umount2(&self.resolv_conf(), nix::mount::MntFlags::MNT_DETACH).is_ok() {}
    }
}

/// What the guest's resolv.conf stand-in holds before CreateSandbox.
pub const GUEST_RESOLV_CONF: &str = "# the guest image's resolv.conf\n";

/// The children of process `pid`, whichever of its threads started them
/// (each thread's list, as [`children`] reads the main thread's).
fn all_children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| task_children(pid, t.file_name().to_str()?.parse().ok()?))
        .flatten()
        .collect()
}

/// DestroySandbox on a connection of its own (outside any test's runtime).
fn destroy_sandbox(addr: &Address) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    rt.block_on(async {
        let Ok(client) = pithctl::client::connect(addr, Duration::from_secs(2)).await else {
            return;
        };
        let mut req = Request::new();
        req.service = "grpc.AgentService".into();
        req.method = "DestroySandbox".into();
        req.payload = protocols::agent::DestroySandboxRequest::new().write_to_bytes().unwrap();
        req.timeout_nano = Duration::from_secs(20).as_nanos() as i64;
        let _ = client.request(req).await;
    });
}

/// The outcome of a raw call: the response payload, or the status code and message.
pub type CallResult = Result<Vec<u8>, (Code, String)>;

/// Calls `service/method` with an already encoded payload.
pub async fn call_raw(client: &Client, service: &str, method: &str, payload: Vec<u8>) -> CallResult {
    let mut req = Request::new();
    req.service = service.to_string();
    req.method = method.to_string();
    req.payload = payload;
    req.timeout_nano = Duration::from_secs(10).as_nanos() as i64;
    match client.request(req).await {
        Ok(resp) => Ok(resp.payload),
        Err(ttrpc::Error::RpcStatus(s)) => Err((s.code(), s.message.clone())),
        Err(e) => panic!("{service}/{method}: transport error {e}"),
    }
}

/// Calls `service/method` with a typed request and decodes the typed response.
pub async fn call<Req: Message, Resp: Message>(
    client: &Client,
    service: &str,
    method: &str,
    req: &Req,
) -> Result<Resp, (Code, String)> {
    call_raw(client, service, method, req.write_to_bytes().unwrap())
        .await
        .map(|b| Resp::parse_from_bytes(&b).expect("decode response"))
}

/// Path of a file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// A busybox root filesystem (Debian's busybox-static) under `dir`; returns its path.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("/bin/busybox (apt-get install busybox-static)");
    for tool in [
        "sh", "echo", "cat", "sleep", "true", "head", "wc", "md5sum", "hostname", "stty", "tail", "dd", "tr", "tty",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
    }
    root
}

/// A CreateContainerRequest for a container on `rootfs` running `args` on pipes.
pub fn container_request(rootfs: PathBuf, id: &str, args: &[&str]) -> protocols::agent::CreateContainerRequest {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut root = spec.root().clone().unwrap();
    root.set_path(rootfs);
    spec.set_root(Some(root));
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p.set_terminal(Some(false));
    spec.set_process(Some(p));
    let mut req = protocols::agent::CreateContainerRequest::new();
    req.container_id = id.to_string();
    req.exec_id = id.to_string();
    req.OCI = protobuf::MessageField::some(protocols::oci_convert::from_oci(&spec));
    req
}

/// The `pithctl` binary, built from its own crate (the host tools are not part
/// of the agent's package, so Cargo does not hand its path to these tests):
/// `cargo build -p pithctl` once per test process, into the same target
/// directory and profile as the test itself, so the binary is never stale.
pub fn pithctl_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        // <target>/<profile>/deps/<test binary>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let target = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()).unwrap() {
            "debug" => "dev".to_string(),
            other => other.to_string(),
        };
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "pithctl",
                "--bin",
                "pithctl",
                "--profile",
                &profile,
            ])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build -p pithctl");
        assert!(
            out.status.success(),
            "cargo build -p pithctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("pithctl")
    })
    .clone()
}

/// The children of process `pid` (its main thread's, as `/proc` lists them).
pub fn children(pid: i32) -> Vec<i32> {
    task_children(pid, pid).unwrap_or_default()
}

/// The children thread `tid` of process `pid` started; None when it is gone.
fn task_children(pid: i32, tid: i32) -> Option<Vec<i32>> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).ok()?;
    Some(list.split_whitespace().filter_map(|p| p.parse().ok()).collect())
}
