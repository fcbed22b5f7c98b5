//! The sandbox's logic through the fake engine, as a normal user: reservations,
//! rollbacks, the PID namespace bookkeeping, hot-plug records and the device
//! cgroup, CreateSandbox and DestroySandbox, the session, the view, and the
//! error path of every operation. (Real containers: the whole-agent tests.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxNamespace, LinuxNamespaceType, LinuxResources, Spec};

use super::container::{CreateRequest, SpecDevice};
use super::fake_engine::{FakeEngine, Op};
use super::hotplug::{allow_block, AddDevice};
use super::pod::PodRequest;
use super::session::Hello;
use super::{Error, PodState, Sandbox, SandboxConfig};
use crate::device::node::{NodeError, NodeOp, NodeOutcome};
use crate::device::uevent::Hub;
use crate::device::{DeviceAddr, Devices};
use crate::error::ErrorKind;
use crate::reaper::Exit;

/// A sandbox on the fake engine, with its files and a fake sysfs in a temporary directory.
struct T {
    sb: Arc<Sandbox>,
    fake: FakeEngine,
    dir: tempfile::TempDir,
}

fn sandbox() -> T {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sys/class/block")).unwrap();
    std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
    let fake = FakeEngine::new();
    let devices = Devices::new(
        Arc::new(Hub::new()),
        &dir.path().join("sys"),
        Duration::from_millis(200),
    );
    let cfg = SandboxConfig {
        state_dir: dir.path().join("state"),
        pipe_size: 0,
        dns: super::dns::DnsFiles {
            sandbox: dir.path().join("sandbox/resolv.conf"),
            guest: dir.path().join("resolv.conf"),
        },
        storage_roots: vec![dir.path().to_path_buf()],
    };
    let guest = crate::guest::Guest {
        sysfs: dir.path().join("sys"),
        copy_roots: vec![dir.path().join("copy")],
        online_retry: crate::guest::online::Retry {
            attempts: 3,
            interval: Duration::from_millis(10),
        },
        ..Default::default()
    };
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let sb = Sandbox::new(cfg, Arc::new(fake.clone()), Arc::new(devices), guest, &log).unwrap();
    T {
        sb: Arc::new(sb),
        fake,
        dir,
    }
}

impl T {
    /// A spec for a container on the fake rootfs, with a new PID namespace.
    fn spec(&self) -> Spec {
        let mut spec = Spec::default();
        let mut root = spec.root().clone().unwrap();
        root.set_path(self.dir.path().join("rootfs"));
        spec.set_root(Some(root));
        let mut p = spec.process().clone().unwrap();
        p.set_terminal(Some(false));
        spec.set_process(Some(p));
        spec
    }

    fn req(id: &str) -> CreateRequest {
        CreateRequest {
            id: id.into(),
            ..Default::default()
        }
    }

    async fn create(&self, id: &str) -> Result<(), Error> {
        self.sb.create_container(T::req(id), self.spec()).await
    }

    async fn run(&self, id: &str) {
        self.create(id).await.unwrap();
        self.sb.start_container(id).await.unwrap();
    }

    fn pid(&self, id: &str) -> i32 {
        self.sb.container(id).unwrap().init.pid
    }

    /// Starts exec `exec_id` in running container `id`; returns its pid.
    async fn exec(&self, id: &str, exec_id: &str) -> i32 {
        let p = self.spec().process().clone().unwrap();
        self.sb.exec_process(id, exec_id, p).await.unwrap();
        self.sb.process(id, exec_id).unwrap().pid
    }

    /// A block device 7:`minor` in the fake sysfs.
    fn add_disk(&self, minor: u32) {
        let name = format!("loop{minor}");
        let d = self.dir.path().join("sys/devices/virtual/block").join(&name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("dev"), format!("7:{minor}\n")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../devices/virtual/block/{name}"),
            self.dir.path().join("sys/class/block").join(&name),
        )
        .unwrap();
    }

    fn plug(&self, id: &str, minor: u32, path: &str) -> AddDevice {
        AddDevice {
            container_id: id.into(),
            addr: DeviceAddr::Dev(7, minor),
            container_path: path.into(),
            access: String::new(),
            mode: 0,
            uid: 0,
            gid: 0,
            mount_path: String::new(),
            fstype: String::new(),
            mount_options: Vec::new(),
        }
    }

    /// The device rule list the container's cgroup got last.
    fn last_rules(&self, id: &str) -> Vec<LinuxDeviceCgroup> {
        self.fake
            .container(id, |c| c.device_rules.last().cloned().unwrap_or_default())
    }

    /// Pod "sb" (hostname "pod", one DNS line, a local storage "shared").
    async fn create_pod(&self) {
        self.sb
            .create_sandbox(PodRequest {
                id: "sb".into(),
                hostname: "pod".into(),
                dns: vec!["nameserver 10.0.0.1".into()],
                storages: vec![self.local_storage("shared")],
                ..Default::default()
            })
            .await
            .unwrap();
    }

    fn local_storage(&self, name: &str) -> protocols::agent::Storage {
        let mut s = protocols::agent::Storage::new();
        s.driver = "local".into();
        s.mount_point = self.dir.path().join(name).display().to_string();
        s
    }
}

fn allows(rules: &[LinuxDeviceCgroup], major: i64, minor: i64) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| r.major() == Some(major) && r.minor() == Some(minor))
        .is_some_and(|r| r.allow())
}

fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorKind {
    r.unwrap_err().kind()
}

// --- containers: reservations and rollbacks ---

#[tokio::test]
async fn lifecycle_through_the_engine() {
    let t = sandbox();
    t.run("c1").await;
    assert_eq!(t.sb.container_ids(), ["c1"]);
    let bundle = t.dir.path().join("state/bundles/c1");
    assert!(bundle.join("config.json").is_file(), "the OCI bundle is written");
    t.fake.exit(t.pid("c1"), Exit::Code(3));
    assert_eq!(t.sb.wait("c1", "").await.unwrap(), Exit::Code(3));
    // The init's exit stays until RemoveContainer: a host that waits again gets it.
    assert_eq!(t.sb.wait("c1", "c1").await.unwrap(), Exit::Code(3));
    t.sb.remove_container("c1", Duration::ZERO).await.unwrap();
    assert!(t.fake.container("c1", |c| c.deleted));
    assert!(!bundle.exists());
    assert!(t.sb.container_ids().is_empty());
    assert_eq!(
        kind(t.sb.remove_container("c1", Duration::ZERO).await),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn an_id_is_taken_once_and_freed_by_a_failure() {
    let t = sandbox();
    t.create("c1").await.unwrap();
    assert!(matches!(t.create("c1").await, Err(Error::ContainerExists(_))));
    // The engine fails: nothing is left, the id is free again.
    t.fake.fail_next(Op::Create, Error::Internal("no memory".into()));
    assert_eq!(kind(t.create("c2").await), ErrorKind::Internal);
    assert!(!t.dir.path().join("state/bundles/c2").exists());
    t.create("c2").await.unwrap();
}

/// The bundle's config.json is the spec the engine runs. A hook may read it
/// (it is told the bundle): with hooks it is there before the engine starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_json_is_the_engines_spec_and_there_before_any_hook() {
    let t = sandbox();
    t.run("c1").await;
    let bundle = t.dir.path().join("state/bundles");
    let read = |id: &str| -> Spec {
        let text = std::fs::read(bundle.join(id).join("config.json")).unwrap();
        let mut de = serde_json::Deserializer::from_slice(&text);
        rustjail::spec_wire::spec::deserialize(&mut de).unwrap()
    };
    assert_eq!(Some(read("c1")), t.fake.container("c1", |c| c.spec.clone()));

    let mut spec = t.spec();
    let mut hooks = oci_spec::runtime::Hooks::default();
    let mut hook = oci_spec::runtime::Hook::default();
    hook.set_path("/bin/true".into());
    hooks.set_poststart(Some(vec![hook]));
    spec.set_hooks(Some(hooks));
    let gate = t.fake.gate(Op::Create);
    let create = {
        let sb = t.sb.clone();
        tokio::spawn(async move { sb.create_container(T::req("c2"), spec).await })
    };
    gate.arrived(1).await;
    assert!(
        bundle.join("c2/config.json").is_file(),
        "written before the engine runs any hook"
    );
    gate.open();
    create.await.unwrap().unwrap();
    assert_eq!(Some(read("c2")), t.fake.container("c2", |c| c.spec.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_creates_of_one_id_never_both_proceed() {
    let t = sandbox();
    let gate = t.fake.gate(Op::Create);
    let first = {
        let (sb, spec) = (t.sb.clone(), t.spec());
        tokio::spawn(async move { sb.create_container(T::req("c1"), spec).await })
    };
    gate.arrived(1).await;
    // The first holds the id while the engine works.
    assert!(matches!(t.create("c1").await, Err(Error::ContainerExists(_))));
    gate.open();
    first.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_dropped_at_its_deadline_still_finishes() {
    let t = sandbox();
    let gate = t.fake.gate(Op::Create);
    let mut fut = Box::pin(t.sb.create_container(T::req("c1"), t.spec()));
    // The request is dropped once it has begun (the client gave up). (The
    // op runs in the request's task: a deadline cannot cut into the
    // engine's blocking step itself; see `finishing`.)
    let pending =
        std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(fut.as_mut(), cx).is_pending()))
            .await;
    assert!(pending);
    drop(fut);
    gate.arrived(1).await;
    assert!(
        matches!(t.create("c1").await, Err(Error::ContainerExists(_))),
        "the id is still held"
    );
    gate.open();
    // The container the engine made is the sandbox's: nothing leaks.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.sb.container("c1").is_err() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(t.sb.container_ids(), ["c1"]);
    t.sb.remove_container("c1", Duration::ZERO).await.unwrap();
    assert!(t.fake.container("c1", |c| c.deleted));
}

#[tokio::test]
async fn storages_are_released_when_the_container_is_not_made() {
    let t = sandbox();
    let mut req = T::req("c1");
    req.storages = vec![t.local_storage("vol")];
    t.fake.fail_next(Op::Create, Error::Internal("engine".into()));
    assert_eq!(
        kind(t.sb.create_container(req.clone(), t.spec()).await),
        ErrorKind::Internal
    );
    assert!(!t.dir.path().join("vol").exists(), "the storage went with the failure");
    // A storage that cannot be set up: INVALID_ARGUMENT, nothing made.
    let mut bad = T::req("c1");
    let mut s = t.local_storage("x");
    s.driver = "nosuchdriver".into();
    bad.storages = vec![s];
    let e = t.sb.create_container(bad, t.spec()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("nosuchdriver"), "{e}");
    assert!(t.fake.lock().containers.is_empty());
    // And it works when nothing fails; removal releases it.
    t.sb.create_container(req, t.spec()).await.unwrap();
    assert!(t.dir.path().join("vol").is_dir());
    t.sb.remove_container("c1", Duration::ZERO).await.unwrap();
    assert!(!t.dir.path().join("vol").exists());
}

#[tokio::test]
async fn a_container_the_sandbox_cannot_hold_is_deleted() {
    let t = sandbox();
    // A terminal was asked for, the engine gave none: the container goes.
    t.fake.lock().no_terminal = true;
    let mut spec = t.spec();
    let mut p = spec.process().clone().unwrap();
    p.set_terminal(Some(true));
    spec.set_process(Some(p));
    assert_eq!(
        kind(t.sb.create_container(T::req("c1"), spec).await),
        ErrorKind::Internal
    );
    assert!(t.fake.container("c1", |c| c.deleted));
    assert!(t.sb.container_ids().is_empty());
}

#[tokio::test]
async fn bad_container_requests() {
    let t = sandbox();
    assert_eq!(kind(t.create("a/b").await), ErrorKind::InvalidArgument);
    let mut spec = t.spec();
    spec.set_root(None);
    let e = t.sb.create_container(T::req("c1"), spec).await.unwrap_err();
    assert!(e.to_string().contains("no root.path"), "{e}");
    let mut spec = t.spec();
    let mut root = spec.root().clone().unwrap();
    root.set_path("/nonexistent/rootfs".into());
    spec.set_root(Some(root));
    let e = t.sb.create_container(T::req("c1"), spec).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("/nonexistent/rootfs"), "{e}");
    // Every operation on a container that does not exist.
    assert_eq!(kind(t.sb.start_container("nope").await), ErrorKind::NotFound);
    assert_eq!(kind(t.sb.pause_container("nope").await), ErrorKind::NotFound);
    assert_eq!(kind(t.sb.resume_container("nope").await), ErrorKind::NotFound);
    assert_eq!(
        kind(t.sb.update_container("nope", LinuxResources::default()).await),
        ErrorKind::NotFound
    );
    assert_eq!(kind(t.sb.stats("nope").await), ErrorKind::NotFound);
    assert_eq!(kind(t.sb.container_pids("nope").await), ErrorKind::NotFound);
    assert_eq!(kind(t.sb.wait("nope", "").await), ErrorKind::NotFound);
    assert_eq!(kind(t.sb.signal("nope", "", 9).await), ErrorKind::NotFound);
    assert_eq!(
        kind(t.sb.exec_process("nope", "e", Default::default()).await),
        ErrorKind::NotFound
    );
    // An engine refusal keeps its kind.
    t.create("c1").await.unwrap();
    t.fake.fail_next(
        Op::Start,
        Error::Runtime(rustjail::Error::WrongState {
            id: "c1".into(),
            status: "running".into(),
            why: "only a created container can start",
        }),
    );
    assert_eq!(kind(t.sb.start_container("c1").await), ErrorKind::FailedPrecondition);
}

// --- processes ---

#[tokio::test]
async fn exec_wait_signal_and_their_errors() {
    let t = sandbox();
    t.run("c1").await;
    let p = t.spec().process().clone().unwrap();
    assert_eq!(
        kind(t.sb.exec_process("c1", "", p.clone()).await),
        ErrorKind::InvalidArgument
    );
    assert!(matches!(
        t.sb.exec_process("c1", "c1", p.clone()).await,
        Err(Error::ProcessExists { .. })
    ));
    t.sb.exec_process("c1", "e1", p.clone()).await.unwrap();
    assert!(matches!(
        t.sb.exec_process("c1", "e1", p.clone()).await,
        Err(Error::ProcessExists { .. })
    ));
    let pid = t.sb.process("c1", "e1").unwrap().pid;
    assert_eq!(kind(t.sb.signal("c1", "e1", 999).await), ErrorKind::InvalidArgument);
    t.sb.signal("c1", "e1", 0).await.unwrap();
    t.sb.signal("c1", "e1", 15).await.unwrap();
    assert!(t
        .fake
        .lock()
        .signals
        .contains(&(pid, Some(nix::sys::signal::Signal::SIGTERM))));
    t.fake.exit(pid, Exit::Signal(15));
    // Exited, not waited for: OK, as kata-agent.
    t.sb.signal("c1", "e1", 15).await.unwrap();
    assert_eq!(t.sb.wait("c1", "e1").await.unwrap().status(), 143);
    // Forgotten once waited for; the exec id can be used again.
    assert!(matches!(t.sb.process("c1", "e1"), Err(Error::ProcessNotFound { .. })));
    assert!(matches!(
        t.sb.signal("c1", "e1", 15).await,
        Err(Error::ProcessNotFound { .. })
    ));
    assert!(matches!(
        t.sb.wait("c1", "e1").await,
        Err(Error::ProcessNotFound { .. })
    ));
    t.sb.exec_process("c1", "e1", p).await.unwrap();
    // The engine fails: the exec id is free again.
    t.fake.fail_next(Op::Exec, Error::Internal("exec".into()));
    let q = t.spec().process().clone().unwrap();
    assert_eq!(
        kind(t.sb.exec_process("c1", "e2", q.clone()).await),
        ErrorKind::Internal
    );
    t.sb.exec_process("c1", "e2", q).await.unwrap();
}

#[tokio::test]
async fn sigterm_to_an_init_that_does_not_handle_it_becomes_sigkill() {
    use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
    let t = sandbox();
    t.run("c1").await;
    t.run("c2").await;
    let exec = t.exec("c1", "e1").await;
    let (init1, init2) = (t.pid("c1"), t.pid("c2"));
    t.fake.lock().handlers.insert((init2, SIGTERM));
    // An exec'd process gets SIGTERM as asked, handled or not.
    t.sb.signal("c1", "e1", 15).await.unwrap();
    // c2's init catches SIGTERM: it gets SIGTERM.
    t.sb.signal("c2", "", 15).await.unwrap();
    // c1's init does not: SIGKILL, and its exit is 137.
    t.sb.signal("c1", "c1", 15).await.unwrap();
    let signals = t.fake.lock().signals.clone();
    assert_eq!(
        signals,
        [(exec, Some(SIGTERM)), (init2, Some(SIGTERM)), (init1, Some(SIGKILL))]
    );
    assert_eq!(t.sb.wait("c1", "").await.unwrap().status(), 137);
}

#[tokio::test]
async fn empty_exec_id_with_sigkill_kills_every_process() {
    use nix::sys::signal::Signal::SIGKILL;
    let t = sandbox();
    t.run("c1").await;
    let p = t.spec().process().clone().unwrap();
    t.sb.exec_process("c1", "e1", p.clone()).await.unwrap();
    t.sb.exec_process("c1", "e2", p).await.unwrap();
    let pids = t.sb.container_pids("c1").await.unwrap();
    assert_eq!(pids.len(), 3);
    t.sb.signal("c1", "", 9).await.unwrap();
    let killed: Vec<i32> = t
        .fake
        .lock()
        .signals
        .iter()
        .filter(|(_, s)| *s == Some(SIGKILL))
        .map(|(p, _)| *p)
        .collect();
    // The init's exit may let the leftovers' watch kill what is still
    // listed once more before this reads the record.
    assert_eq!(killed[..pids.len()], pids, "every process, the init first");
    assert!(killed[pids.len()..].iter().all(|p| pids.contains(p)), "{killed:?}");
    // With the container's id as exec id only the init is signalled.
    let t = sandbox();
    t.run("c1").await;
    let p = t.spec().process().clone().unwrap();
    t.sb.exec_process("c1", "e1", p).await.unwrap();
    t.fake
        .lock()
        .handlers
        .insert((t.sb.process("c1", "e1").unwrap().pid, SIGKILL));
    t.sb.signal("c1", "c1", 9).await.unwrap();
    assert_eq!(t.fake.lock().signals[0], (t.pid("c1"), Some(SIGKILL)));
}

#[tokio::test]
async fn what_the_init_leaves_in_its_cgroup_is_killed_when_it_exits() {
    use nix::sys::signal::Signal::SIGKILL;
    let t = sandbox();
    t.run("c1").await;
    let exec = t.exec("c1", "e1").await;
    t.fake.exit(t.pid("c1"), Exit::Code(0));
    // The exec'd process is killed, so its wait returns.
    assert_eq!(t.sb.wait("c1", "e1").await.unwrap(), Exit::Signal(9));
    assert!(t.fake.lock().signals.contains(&(exec, Some(SIGKILL))));
}

#[tokio::test]
async fn every_waiter_gets_the_exit_and_a_cancelled_wait_takes_nothing() {
    let t = sandbox();
    t.run("c1").await;
    let pid = t.exec("c1", "e1").await;
    // A wait dropped before the exit (its connection closed, its deadline ran out).
    let cancelled = tokio::time::timeout(Duration::from_millis(20), t.sb.wait("c1", "e1")).await;
    assert!(cancelled.is_err());
    // Two waits at once.
    let waits: Vec<_> = (0..2)
        .map(|_| {
            let sb = t.sb.clone();
            tokio::spawn(async move { sb.wait("c1", "e1").await })
        })
        .collect();
    // Both are registered before the exit: each holds the process (with the
    // sandbox's record and this check's).
    while Arc::strong_count(&t.sb.process("c1", "e1").unwrap()) < 4 {
        tokio::task::yield_now().await;
    }
    t.fake.exit(pid, Exit::Code(4));
    for w in waits {
        assert_eq!(w.await.unwrap().unwrap(), Exit::Code(4));
    }
    // Forgotten once a wait returned, as kata-agent: later waits NOT_FOUND.
    assert_eq!(kind(t.sb.wait("c1", "e1").await), ErrorKind::NotFound);
    // The init: every wait gets the exit, until RemoveContainer.
    t.fake.exit(t.pid("c1"), Exit::Code(1));
    for _ in 0..3 {
        assert_eq!(t.sb.wait("c1", "").await.unwrap(), Exit::Code(1));
    }
}

#[tokio::test]
async fn an_empty_cgroups_path_becomes_slash_id() {
    let t = sandbox();
    t.create("c1").await.unwrap();
    let mut spec = t.spec();
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_cgroups_path(Some("/pods/c2".into()));
    t.sb.create_container(T::req("c2"), spec).await.unwrap();
    let path = |id: &str| {
        t.fake.container(id, |c| {
            c.spec
                .as_ref()
                .unwrap()
                .linux()
                .as_ref()
                .unwrap()
                .cgroups_path()
                .clone()
        })
    };
    assert_eq!(path("c1"), Some(PathBuf::from("/c1")));
    assert_eq!(path("c2"), Some(PathBuf::from("/pods/c2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_execs_of_one_id_never_both_proceed() {
    let t = sandbox();
    t.run("c1").await;
    let gate = t.fake.gate(Op::Exec);
    let first = {
        let (sb, p) = (t.sb.clone(), t.spec().process().clone().unwrap());
        tokio::spawn(async move { sb.exec_process("c1", "e1", p).await })
    };
    gate.arrived(1).await;
    let p = t.spec().process().clone().unwrap();
    assert!(matches!(
        t.sb.exec_process("c1", "e1", p).await,
        Err(Error::ProcessExists { .. })
    ));
    gate.open();
    first.await.unwrap().unwrap();
}

#[tokio::test]
async fn stdio_reaches_the_process_and_back() {
    use std::io::{Read, Write};
    let t = sandbox();
    t.run("c1").await;
    let pid = t.pid("c1");
    let p = t.sb.process("c1", "").unwrap();
    p.write_stdin(b"hello").await.unwrap();
    let [theirs_in, theirs_out, theirs_err] = t.fake.lock().stdio.remove(&pid).unwrap();
    let mut got = [0u8; 5];
    std::fs::File::from(theirs_in.try_clone().unwrap())
        .read_exact(&mut got)
        .unwrap();
    assert_eq!(&got, b"hello");
    std::fs::File::from(theirs_out).write_all(b"out").unwrap();
    drop(theirs_err);
    assert_eq!(p.stdout.read(100, "stdout").await.unwrap(), b"out");
    assert_eq!(p.stderr.read(100, "stderr").await.unwrap(), b"");
    assert_eq!(
        kind(p.stderr.read(100, "stderr").await),
        ErrorKind::FailedPrecondition,
        "the end is reported once"
    );
    p.close_stdin().await;
    assert_eq!(std::fs::File::from(theirs_in).read(&mut got).unwrap(), 0, "EOF");
    assert_eq!(kind(p.write_stdin(b"x").await), ErrorKind::FailedPrecondition);
    assert_eq!(kind(p.resize(24, 80)), ErrorKind::FailedPrecondition, "no terminal");
}

// --- the pod ---

#[tokio::test]
async fn create_sandbox_once_and_its_errors() {
    let t = sandbox();
    let pod = |id: &str| PodRequest {
        id: id.into(),
        hostname: "pod".into(),
        dns: vec!["nameserver 10.0.0.1".into()],
        ..Default::default()
    };
    let mut bad = pod("sb");
    bad.hostname = "a/b".into();
    assert_eq!(kind(t.sb.create_sandbox(bad).await), ErrorKind::InvalidArgument);
    let mut bad = pod("sb");
    bad.dns = vec!["nameserver 1.1.1.1\nsearch evil".into()];
    assert_eq!(kind(t.sb.create_sandbox(bad).await), ErrorKind::InvalidArgument);
    assert!(
        !t.dir.path().join("resolv.conf").exists(),
        "nothing written for a bad request"
    );
    // The holder cannot start: the storages go, the pod is free again.
    let mut with_storage = pod("sb");
    with_storage.storages = vec![t.local_storage("shared")];
    t.fake.fail_next(Op::Holder, Error::Internal("clone".into()));
    assert_eq!(
        kind(t.sb.create_sandbox(with_storage.clone()).await),
        ErrorKind::Internal
    );
    assert!(!t.dir.path().join("shared").exists());
    assert_eq!(t.sb.pod().state, PodState::Absent);
    t.sb.create_sandbox(with_storage).await.unwrap();
    assert_eq!(t.sb.pod().state, PodState::Created);
    // As kata-agent: no resolv.conf in the guest, no DNS set up (the bind
    // mount over an existing one is tested as root in tests/pod.rs).
    assert!(!t.dir.path().join("sandbox/resolv.conf").exists());
    assert!(!t.sb.pod().dns_mounted);
    assert!(matches!(
        t.sb.create_sandbox(pod("other")).await,
        Err(Error::SandboxExists(id)) if id == "sb"
    ));
    assert_eq!(t.fake.lock().holders.len(), 1);
}

/// Bug: two concurrent CreateSandbox calls could both succeed, the second
/// overwriting the first and leaking its namespace holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_sandbox_one_wins_one_holder() {
    let t = sandbox();
    let gate = t.fake.gate(Op::Holder);
    let first = {
        let sb = t.sb.clone();
        tokio::spawn(async move {
            sb.create_sandbox(PodRequest {
                id: "first".into(),
                ..Default::default()
            })
            .await
        })
    };
    gate.arrived(1).await;
    let second =
        t.sb.create_sandbox(PodRequest {
            id: "second".into(),
            ..Default::default()
        })
        .await;
    assert!(matches!(second, Err(Error::SandboxExists(_))), "{second:?}");
    gate.open();
    first.await.unwrap().unwrap();
    let s = t.fake.lock();
    assert_eq!(s.holders.len(), 1, "one holder spawned");
    assert_eq!(s.live_holders.len(), 1);
    drop(s);
    assert_eq!(t.sb.pod().id, "first");
}

#[tokio::test]
async fn sandbox_pid_namespace_bookkeeping() {
    let t = sandbox();
    t.sb.create_sandbox(PodRequest {
        id: "sb".into(),
        hostname: "pod".into(),
        sandbox_pidns: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let holder = t.sb.pod().ns_holder.unwrap().pid();
    let with_pidns = |mut spec: Spec| {
        let mut linux = spec.linux().clone().unwrap();
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        ns.retain(|n| n.typ() != LinuxNamespaceType::Pid);
        let mut pid = LinuxNamespace::default();
        pid.set_typ(LinuxNamespaceType::Pid);
        ns.push(pid);
        linux.set_namespaces(Some(ns));
        spec.set_linux(Some(linux));
        spec
    };
    let ns_path = |id: &str, typ: LinuxNamespaceType| {
        t.fake.container(id, |c| {
            c.spec
                .as_ref()
                .unwrap()
                .linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .as_ref()
                .unwrap()
                .iter()
                .find(|n| n.typ() == typ)
                .and_then(|n| n.path().clone())
        })
    };
    t.sb.create_container(T::req("pause"), with_pidns(t.spec()))
        .await
        .unwrap();
    assert_eq!(t.sb.pod().pidns_container.as_deref(), Some("pause"));
    assert_eq!(
        ns_path("pause", LinuxNamespaceType::Pid),
        None,
        "the first makes the namespace"
    );
    assert_eq!(
        ns_path("pause", LinuxNamespaceType::Uts),
        Some(PathBuf::from(format!("/proc/{holder}/ns/uts")))
    );
    let pause_pid = t.pid("pause");
    t.sb.create_container(T::req("app"), with_pidns(t.spec()))
        .await
        .unwrap();
    assert_eq!(
        ns_path("app", LinuxNamespaceType::Pid),
        Some(PathBuf::from(format!("/proc/{pause_pid}/ns/pid")))
    );
    assert_eq!(
        ns_path("app", LinuxNamespaceType::Ipc),
        Some(PathBuf::from(format!("/proc/{holder}/ns/ipc")))
    );
    assert_eq!(
        t.sb.pod().pidns_container.as_deref(),
        Some("pause"),
        "the first keeps it"
    );
    // Its init has exited: nobody can join it.
    t.fake.exit(pause_pid, Exit::Code(0));
    let e =
        t.sb.create_container(T::req("late"), with_pidns(t.spec()))
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("whose init has exited"), "{e}");
    // Removed: the next container makes a new one.
    t.sb.remove_container("pause", Duration::ZERO).await.unwrap();
    assert_eq!(t.sb.pod().pidns_container, None);
    t.sb.create_container(T::req("next"), with_pidns(t.spec()))
        .await
        .unwrap();
    assert_eq!(t.sb.pod().pidns_container.as_deref(), Some("next"));
    // A request can ask for the sandbox's PID namespace on its own.
    let t2 = sandbox();
    let mut req = T::req("solo");
    req.sandbox_pidns = true;
    t2.sb.create_container(req, with_pidns(t2.spec())).await.unwrap();
    assert_eq!(t2.sb.pod().pidns_container.as_deref(), Some("solo"));
    // Without sandbox_pidns a container gets a PID namespace of its own,
    // also when its spec has no pid entry (Kata's runtimes remove it).
    t2.sb.create_container(T::req("own"), t2.spec()).await.unwrap();
    let pid_entries = t2.fake.container("own", |c| {
        let spec = c.spec.as_ref().unwrap();
        let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        ns.into_iter()
            .filter(|n| n.typ() == LinuxNamespaceType::Pid)
            .collect::<Vec<_>>()
    });
    assert_eq!(pid_entries.len(), 1);
    assert_eq!(pid_entries[0].path(), &None);
}

#[tokio::test]
async fn destroy_sandbox_removes_everything_and_lists_what_failed() {
    let t = sandbox();
    t.sb.create_sandbox(PodRequest {
        id: "sb".into(),
        storages: vec![t.local_storage("shared")],
        ..Default::default()
    })
    .await
    .unwrap();
    t.run("a").await;
    t.run("b").await;
    t.sb.pause_container("b").await.unwrap();
    let mut shutdown = t.sb.shutdown_requested();
    t.fake.fail_next(Op::Delete, Error::Internal("busy".into()));
    let e = t.sb.destroy_sandbox().await.unwrap_err();
    assert!(e.to_string().contains("container a: busy"), "{e}");
    // Every other step was done.
    assert!(t.fake.container("b", |c| c.deleted && !c.paused));
    assert!(t.fake.lock().live_holders.is_empty(), "the holder went");
    assert!(!t.dir.path().join("shared").exists(), "the storages went");
    assert_eq!(t.sb.pod().state, PodState::Absent);
    assert!(*shutdown.borrow_and_update(), "the agent is asked to stop");
    // A second DestroySandbox with nothing failing removes what is left.
    t.sb.destroy_sandbox().await.unwrap();
    assert!(t.sb.container_ids().is_empty());
}

// --- hot-plug ---

#[tokio::test]
async fn hotplug_records_rules_and_node_rollback() {
    let t = sandbox();
    t.add_disk(3);
    t.add_disk(4);
    t.run("c1").await;
    let p = t.sb.add_block_device(t.plug("c1", 3, "/dev/xvdb")).await.unwrap();
    assert_eq!(
        (p.dev.major, p.dev.minor, p.dev.guest_path()),
        (7, 3, "/dev/loop3".to_string())
    );
    assert_eq!((p.access.as_str(), p.mode), ("rwm", 0o660));
    assert!(allows(&t.last_rules("c1"), 7, 3));
    assert!(allows(&t.last_rules("c1"), 1, 3), "the defaults stay");
    // The cgroup write fails: the node made is removed, nothing is recorded.
    t.fake.fail_next(Op::DeviceRules, Error::Internal("cgroup".into()));
    assert_eq!(
        kind(t.sb.add_block_device(t.plug("c1", 4, "/dev/xvdc")).await),
        ErrorKind::Internal
    );
    let nodes = t.fake.container("c1", |c| c.nodes.clone());
    assert_eq!(
        nodes[nodes.len() - 2..],
        [
            (NodeOp::Add, "/dev/xvdc".to_string()),
            (NodeOp::Remove, "/dev/xvdc".to_string())
        ]
    );
    assert_eq!(t.sb.view().await.containers[0].devices.len(), 1);
    // A node that was there already is left alone on the same failure.
    t.fake.node_answer(Ok(NodeOutcome::Existed));
    t.fake.fail_next(Op::DeviceRules, Error::Internal("cgroup".into()));
    assert!(t.sb.add_block_device(t.plug("c1", 4, "/dev/xvdc")).await.is_err());
    assert_eq!(
        t.fake.container("c1", |c| c.nodes.last().cloned()).unwrap().0,
        NodeOp::Add
    );
    // Something else at the path: ALREADY_EXISTS, nothing changed.
    t.fake
        .node_answer(Err(NodeError::Conflict("/dev/xvdc exists and is a file".into())));
    assert_eq!(
        kind(t.sb.add_block_device(t.plug("c1", 4, "/dev/xvdc")).await),
        ErrorKind::AlreadyExists
    );
    t.sb.add_block_device(t.plug("c1", 4, "/dev/xvdc")).await.unwrap();
    assert!(allows(&t.last_rules("c1"), 7, 3) && allows(&t.last_rules("c1"), 7, 4));
    // Remove: denied first, then the node goes.
    let removed = t.sb.remove_block_device("c1", "/dev/xvdb").await.unwrap().unwrap();
    assert_eq!(removed.dev.minor, 3);
    assert!(!allows(&t.last_rules("c1"), 7, 3) && allows(&t.last_rules("c1"), 7, 4));
    assert_eq!(
        t.fake.container("c1", |c| c.nodes.last().cloned()).unwrap(),
        (NodeOp::Remove, "/dev/xvdb".to_string())
    );
    // Nothing there: nothing to do.
    assert!(t.sb.remove_block_device("c1", "/dev/xvdb").await.unwrap().is_none());
}

#[tokio::test]
async fn hotplug_refusals() {
    let t = sandbox();
    t.add_disk(3);
    t.create("c1").await.unwrap();
    let e = t.sb.add_block_device(t.plug("c1", 3, "/dev/x")).await.unwrap_err();
    assert!(matches!(e, Error::NotRunning { .. }), "a created container: {e}");
    t.sb.start_container("c1").await.unwrap();
    for (path, access, mode) in [
        ("dev/x", "", 0),
        ("/dev/../x", "", 0),
        ("/dev/x", "rx", 0),
        ("/dev/x", "", 0o10000),
    ] {
        let mut r = t.plug("c1", 3, path);
        r.access = access.into();
        r.mode = mode;
        assert_eq!(
            kind(t.sb.add_block_device(r).await),
            ErrorKind::InvalidArgument,
            "{path} {access} {mode:o}"
        );
    }
    let mut r = t.plug("c1", 3, "/dev/x");
    r.mount_path = "/mnt".into();
    let e = t.sb.add_block_device(r).await.unwrap_err();
    assert!(e.to_string().contains("without fstype"), "{e}");
    let e = t.sb.add_block_device(t.plug("c1", 9, "/dev/x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    assert!(e.to_string().contains("block device 7:9"), "{e}");
    assert_eq!(
        kind(t.sb.add_block_device(t.plug("nope", 3, "/dev/x")).await),
        ErrorKind::NotFound
    );
    t.sb.pause_container("c1").await.unwrap();
    assert!(matches!(
        t.sb.remove_block_device("c1", "/dev/x").await,
        Err(Error::NotRunning { .. })
    ));
    assert_eq!(
        kind(t.sb.remove_block_device("c1", "relative").await),
        ErrorKind::InvalidArgument
    );
}

/// Bug: an UpdateContainer carrying device rules dropped the hot-plugged
/// devices (and the defaults) from the device cgroup.
#[tokio::test]
async fn update_with_device_rules_keeps_hotplugged_devices() {
    let t = sandbox();
    t.add_disk(3);
    t.run("c1").await;
    t.sb.add_block_device(t.plug("c1", 3, "/dev/xvdb")).await.unwrap();
    let mut res = LinuxResources::default();
    res.set_devices(Some(vec![allow_block(8, 0, "r")]));
    t.sb.update_container("c1", res).await.unwrap();
    let sent = t.fake.container("c1", |c| c.updates.last().cloned().unwrap());
    let rules = sent.devices().clone().unwrap();
    assert_eq!(rules[0], allow_block(8, 0, "r"), "the new rules first");
    assert!(allows(&rules, 7, 3), "the hot-plugged device stays allowed");
    assert!(allows(&rules, 1, 3), "the defaults stay");
    // Later hot-plugs start from the new rules.
    t.add_disk(4);
    t.sb.add_block_device(t.plug("c1", 4, "/dev/xvdc")).await.unwrap();
    let rules = t.last_rules("c1");
    assert_eq!(rules[0], allow_block(8, 0, "r"));
    assert!(allows(&rules, 7, 3) && allows(&rules, 7, 4));
    // An update without device rules leaves them alone.
    t.sb.update_container("c1", LinuxResources::default()).await.unwrap();
    assert!(t
        .fake
        .container("c1", |c| c.updates.last().unwrap().devices().is_none()));
}

/// Bug: RemoveContainer did not drop the container's hot-plug records, and a
/// new container with the same id got the old one's devices.
#[tokio::test]
async fn a_removed_containers_devices_go_with_it() {
    let t = sandbox();
    t.add_disk(3);
    t.add_disk(4);
    t.run("c1").await;
    t.sb.add_block_device(t.plug("c1", 3, "/dev/xvdb")).await.unwrap();
    t.sb.remove_container("c1", Duration::ZERO).await.unwrap();
    t.fake.lock().containers.remove("c1");
    t.run("c1").await;
    t.sb.add_block_device(t.plug("c1", 4, "/dev/xvdc")).await.unwrap();
    let rules = t.last_rules("c1");
    assert!(allows(&rules, 7, 4));
    assert!(!allows(&rules, 7, 3), "the old container's device is not the new one's");
    let view = t.sb.view().await;
    assert_eq!(view.containers[0].devices.len(), 1);
}

#[tokio::test]
async fn create_container_waits_for_its_devices_after_the_id_check() {
    let t = sandbox();
    t.run("c1").await;
    let mut req = T::req("c1");
    req.devices = vec![SpecDevice {
        container_path: "/dev/xvda".into(),
        addr: DeviceAddr::Dev(7, 9),
    }];
    // A used id is refused first: the device (absent) is not waited for,
    // which would end in DEADLINE_EXCEEDED.
    assert!(matches!(
        t.sb.create_container(req.clone(), t.spec()).await,
        Err(Error::ContainerExists(_))
    ));
    req.id = "c2".into();
    let e = t.sb.create_container(req.clone(), t.spec()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
    assert!(
        e.to_string().contains("/dev/xvda") && e.to_string().contains("7:9"),
        "{e}"
    );
    // The device comes; the spec's entry has no such path: INVALID_ARGUMENT.
    t.add_disk(9);
    let e = t.sb.create_container(req.clone(), t.spec()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // With the entry, the spec the engine gets has the guest's numbers.
    let mut spec = t.spec();
    let mut linux = spec.linux().clone().unwrap();
    let mut dev = oci_spec::runtime::LinuxDevice::default();
    dev.set_path("/dev/xvda".into());
    dev.set_typ(oci_spec::runtime::LinuxDeviceType::B);
    dev.set_major(8);
    dev.set_minor(0);
    linux.set_devices(Some(vec![dev]));
    spec.set_linux(Some(linux));
    t.sb.create_container(req, spec).await.unwrap();
    let got = t.fake.container("c2", |c| {
        let d = &c
            .spec
            .as_ref()
            .unwrap()
            .linux()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap()[0];
        (d.major(), d.minor())
    });
    assert_eq!(got, (7, 9));
}

#[tokio::test]
async fn block_storages_are_waited_for_after_the_id_check() {
    let t = sandbox();
    t.run("c1").await;
    let mut s = protocols::agent::Storage::new();
    s.driver = "mmioblk".into();
    s.source = "/dev/vdz".into();
    s.fstype = "ext4".into();
    s.mount_point = t.dir.path().join("vol").display().to_string();
    let mut req = T::req("c1");
    req.storages = vec![s.clone()];
    // A used id is refused first: the device (absent) is not waited for,
    // which would end in DEADLINE_EXCEEDED.
    assert!(matches!(
        t.sb.create_container(req.clone(), t.spec()).await,
        Err(Error::ContainerExists(_))
    ));
    req.id = "c2".into();
    let e = t.sb.create_container(req, t.spec()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    let prefix = format!("storage 0 (mmioblk at {:?}): ", s.mount_point);
    assert!(
        e.to_string().starts_with(&prefix) && e.to_string().contains("vdz"),
        "{e}"
    );
    assert!(t.sb.container("c2").is_err());
    assert!(!Path::new(&s.mount_point).exists());
    // CreateSandbox's block storages too; the pod can be created afterwards.
    let pod = |storages| PodRequest {
        id: "sb".into(),
        storages,
        ..Default::default()
    };
    let e = t.sb.create_sandbox(pod(vec![s])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    assert_eq!(t.sb.pod().state, PodState::Absent);
    t.sb.create_sandbox(pod(Vec::new())).await.unwrap();
}

// --- guest RPCs that touch the sandbox's state ---

#[tokio::test]
async fn online_cpu_mem_lets_every_containers_cpuset_follow() {
    let t = sandbox();
    let cpus = t.dir.path().join("sys/devices/system/cpu");
    std::fs::create_dir_all(cpus.join("cpu0")).unwrap();
    for (n, online) in [(1, "1"), (2, "0")] {
        std::fs::create_dir_all(cpus.join(format!("cpu{n}"))).unwrap();
        std::fs::write(cpus.join(format!("cpu{n}/online")), online).unwrap();
    }
    t.run("c1").await;
    t.run("c2").await;
    // Kata's meaning: 3 CPUs online in all; cpu2 is onlined.
    let written = t.sb.online_cpu_mem(3, true).await.unwrap();
    assert_eq!(std::fs::read_to_string(cpus.join("cpu2/online")).unwrap(), "1");
    assert_eq!(written.len(), 2);
    for id in ["c1", "c2"] {
        assert_eq!(t.fake.container(id, |c| c.follow_cpus.clone()), ["0-2"]);
    }
    // Nothing to online: the cpusets still follow what is online.
    t.sb.online_cpu_mem(2, true).await.unwrap();
    assert_eq!(t.fake.container("c1", |c| c.follow_cpus.clone()), ["0-2", "0-2"]);
    // Not enough CPUs come: DEADLINE_EXCEEDED, nothing asked of the containers.
    let e = t.sb.online_cpu_mem(4, true).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    assert_eq!(t.fake.container("c2", |c| c.follow_cpus.len()), 2);
}

#[tokio::test]
async fn add_swap_waits_for_its_disk() {
    let t = sandbox();
    let e = t.sb.add_swap(&DeviceAddr::Dev(7, 42)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    assert!(
        e.to_string().starts_with("AddSwap: ") && e.to_string().contains("7:42"),
        "{e}"
    );
}

#[tokio::test]
async fn stats_have_kata_values() {
    let t = sandbox();
    t.run("c1").await;
    t.fake.lock().stats.pids.limit = u64::MAX;
    assert_eq!(t.sb.stats("c1").await.unwrap().pids.limit, 0);
    assert_eq!(kind(t.sb.stats("nope").await), ErrorKind::NotFound);
}

// --- session, OOM, view ---

#[tokio::test]
async fn negotiation_and_level_gates() {
    let t = sandbox();
    assert_eq!(t.sb.level(), 1);
    let e = t.sb.require_level(3, "pith.Devices/AddBlockDevice").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("needs API level 3"), "{e}");
    let hello = |min, max| Hello {
        host_name: "test-host".into(),
        host_version: "9".into(),
        range: protocols::levels::LevelRange { min, max },
        wanted: vec!["block-hotplug".into(), "teleport".into()],
    };
    assert_eq!(kind(t.sb.negotiate(hello(7, 9))), ErrorKind::FailedPrecondition);
    assert_eq!(t.sb.level(), 1, "a failed negotiation changes nothing");
    let a = t.sb.negotiate(hello(1, 9)).unwrap();
    assert_eq!(a.session.level, protocols::levels::MAX_LEVEL);
    assert_eq!(a.missing, ["teleport"]);
    assert!(a.session.features.contains(&"block-hotplug".to_string()));
    assert_eq!(t.sb.session().host_name, "test-host");
    t.sb.require_level(3, "pith.Devices/AddBlockDevice").unwrap();
}

#[tokio::test]
async fn oom_kills_are_queued_by_container() {
    let t = sandbox();
    t.run("c1").await;
    t.fake.oom("c1");
    assert_eq!(t.sb.next_oom().await.unwrap(), "c1");
}

#[tokio::test]
async fn the_view_has_all_the_state_and_round_trips() {
    let t = sandbox();
    t.add_disk(3);
    t.create_pod().await;
    t.sb.negotiate(Hello {
        host_name: "h".into(),
        host_version: "1".into(),
        range: protocols::levels::LevelRange::AGENT,
        wanted: vec![],
    })
    .unwrap();
    t.run("c1").await;
    let mut res = LinuxResources::default();
    res.set_devices(Some(vec![allow_block(8, 0, "r")]));
    t.sb.update_container("c1", res).await.unwrap();
    t.sb.add_block_device(t.plug("c1", 3, "/dev/xvdb")).await.unwrap();
    let mut p = t.spec().process().clone().unwrap();
    p.set_terminal(Some(true));
    t.sb.exec_process("c1", "e1", p).await.unwrap();
    let e1 = t.sb.process("c1", "e1").unwrap().pid;
    t.fake.exit(e1, Exit::Code(7));
    t.sb.process("c1", "").unwrap().close_stdin().await;

    let v = t.sb.view().await;
    assert_eq!(v.pod.state, PodState::Created);
    assert_eq!((v.pod.id.as_str(), v.pod.hostname.as_str()), ("sb", "pod"));
    assert_eq!(v.pod.dns, ["nameserver 10.0.0.1"]);
    assert!(v.pod.ns_holder.is_some());
    assert_eq!(v.session.level, protocols::levels::MAX_LEVEL);
    assert_eq!(v.guest.copy_roots, [t.dir.path().join("copy")]);
    assert_eq!(v.storages.entries.len(), 1);
    let c = &v.containers[0];
    assert_eq!(c.id, "c1");
    assert_eq!(c.status, "running");
    assert_eq!(c.bundle, t.dir.path().join("state/bundles/c1"));
    assert_eq!(c.rootfs, t.dir.path().join("rootfs"));
    assert!(c.oom_watch);
    assert_eq!(c.device_rules.as_deref(), Some(&[allow_block(8, 0, "r")][..]));
    assert_eq!(c.devices[0].path, "/dev/xvdb");
    assert_eq!(
        c.spec.parse().unwrap().root().as_ref().unwrap().path(),
        &t.dir.path().join("rootfs")
    );
    assert_eq!(c.init.stdio.stdin, None, "closed");
    assert!(c.init.stdio.stdout.is_some() && c.init.stdio.stderr.is_some());
    assert!(!c.init.stdio.terminal);
    let e = &c.execs[0];
    assert_eq!(
        (e.exec_id.as_str(), e.exit, e.waited),
        ("e1", Some(crate::reaper::Exit::Code(7)), false)
    );
    assert!(e.stdio.terminal && e.stdio.terminal_master.is_some() && e.stdio.stderr.is_none());
    let json = serde_json::to_string(&v).unwrap();
    assert_eq!(serde_json::from_str::<super::view::SandboxView>(&json).unwrap(), v);
}

#[test]
fn the_fake_rootfs_is_where_the_spec_says() {
    // (Guards the harness: a spec pointing elsewhere would make the
    // rootfs checks above vacuous.)
    let t = sandbox();
    assert!(Path::new(t.spec().root().as_ref().unwrap().path()).is_dir());
}

/// The state file's bytes, made from each container's cached text, are
/// those of the whole sandbox encoded afresh (the plain v3 types serialised
/// as a whole, no piece cached or spliced), after every kind of change; and
/// only a container that changed has its text made again.
#[tokio::test]
async fn the_cached_state_text_is_the_sandbox_encoded_afresh() {
    use crate::persist::v3::FileV3;
    use crate::persist::{convert, decode, MIN_READER_VERSION, PERSIST_VERSION};
    let t = sandbox();
    let fresh = |sb: Arc<Sandbox>| async move {
        let f = FileV3 {
            persist_version: PERSIST_VERSION,
            min_reader_version: MIN_READER_VERSION,
            agent_version: crate::AGENT_VERSION.into(),
            sandbox: convert::from_view(&sb.snapshot(false).await),
        };
        let mut bytes = serde_json::to_vec(&f).unwrap();
        bytes.push(b'\n');
        bytes
    };
    let same = |what: &'static str| {
        let sb = t.sb.clone();
        async move {
            let (cached, _) = sb.state_bytes().await;
            let (cached, fresh) = (cached.to_vec(), fresh(sb.clone()).await);
            assert_eq!(
                String::from_utf8(cached.clone()).unwrap(),
                String::from_utf8(fresh.clone()).unwrap(),
                "{what}"
            );
            let path = Path::new("sandbox.json");
            assert_eq!(decode(path, &cached).unwrap(), decode(path, &fresh).unwrap(), "{what}");
        }
    };
    // Each container's cached text, to tell which were made again.
    let texts = || {
        t.sb.texts
            .try_lock()
            .unwrap()
            .iter()
            .map(|(id, text)| (id.clone(), text.json.0.clone()))
            .collect::<Vec<_>>()
    };
    let remade = |before: &[(String, Arc<_>)], after: &[(String, Arc<_>)]| {
        after
            .iter()
            .filter(|(id, a)| !before.iter().any(|(b_id, b)| b_id == id && Arc::ptr_eq(a, b)))
            .map(|(id, _)| id.clone())
            .collect::<Vec<String>>()
    };
    same("empty").await;
    t.create_pod().await;
    same("the pod created").await;
    t.run("c1").await;
    t.run("c2").await;
    same("two containers").await;
    let before = texts();
    same("nothing changed").await;
    assert!(remade(&before, &texts()).is_empty(), "no change, no text made");

    let before = texts();
    t.exec("c1", "e1").await;
    same("an exec").await;
    assert_eq!(remade(&before, &texts()), ["c1"]);
    let before = texts();
    t.sb.close_stdin("c1", "e1").await.unwrap();
    same("the exec's stdin closed").await;
    assert_eq!(remade(&before, &texts()), ["c1"]);
    // The init's stdout read to its end.
    let [_, theirs_out, _] = t.fake.lock().stdio.remove(&t.pid("c2")).unwrap();
    drop(theirs_out);
    let init = t.sb.process("c2", "").unwrap();
    assert_eq!(init.stdout.read(100, "stdout").await.unwrap(), b"");
    let before = texts();
    same("the init's stdout at its end").await;
    assert_eq!(remade(&before, &texts()), ["c2"]);
    let pid = t.sb.process("c1", "e1").unwrap().pid;
    t.fake.exit(pid, Exit::Code(4));
    let e1 = t.sb.process("c1", "e1").unwrap();
    assert!(e1.exit_within(Duration::from_secs(10)).await.is_some());
    let before = texts();
    same("the exec exited").await;
    assert_eq!(remade(&before, &texts()), ["c1"]);
    let before = texts();
    t.sb.wait("c1", "e1").await.unwrap();
    same("the exec waited for").await;
    assert_eq!(remade(&before, &texts()), ["c1"]);
    t.add_disk(3);
    let before = texts();
    t.sb.add_block_device(t.plug("c2", 3, "/dev/xvdb")).await.unwrap();
    same("a device plugged").await;
    assert_eq!(remade(&before, &texts()), ["c2"]);
    let mut res = LinuxResources::default();
    res.set_devices(Some(vec![allow_block(8, 0, "r")]));
    t.sb.update_container("c2", res).await.unwrap();
    same("device rules replaced").await;
    let before = texts();
    t.fake.exit(t.pid("c2"), Exit::Code(0));
    same("an init exited").await;
    assert_eq!(remade(&before, &texts()), ["c2"]);
    let before = texts();
    t.sb.wait("c2", "").await.unwrap();
    same("an init waited for").await;
    assert_eq!(remade(&before, &texts()), ["c2"]);
    t.sb.remove_container("c2", Duration::ZERO).await.unwrap();
    same("a container removed").await;
    t.sb.destroy_sandbox().await.unwrap();
    same("the pod destroyed").await;
}

/// Through real state files (on disk, and on tmpfs where the write is made
/// in place): after each change the file is the sandbox encoded afresh, and
/// the temporary is the file before; the start a write keeps is the same
/// in both files.
#[tokio::test]
async fn each_write_leaves_the_file_as_the_sandbox_encoded() {
    use crate::persist::file::{StateFile, STATE_FILE, TEMP_FILE};
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    dirs.extend(shm);
    for dir in dirs {
        let mut t = sandbox();
        let file = StateFile::lock(dir.path()).unwrap();
        Arc::get_mut(&mut t.sb).unwrap().attach(file, None, &|_, _| {}).unwrap();
        let mut files: Vec<Vec<u8>> = Vec::new();
        let mut kept_some = false;
        let mut before: Option<crate::persist::Encoded> = None;
        for step in 0..9 {
            match step {
                0 => {}
                1..=4 => t.run(&format!("c{step}")).await,
                5 => drop(t.exec("c3", "e1").await),
                6 => t.sb.close_stdin("c3", "e1").await.unwrap(),
                7 => {
                    t.fake.exit(t.pid("c2"), Exit::Code(0));
                    t.sb.remove_container("c2", Duration::ZERO).await.unwrap();
                }
                _ => t.sb.destroy_sandbox().await.unwrap(),
            }
            t.sb.persist().await;
            let on_disk = std::fs::read(dir.path().join(STATE_FILE)).unwrap();
            let (now, _) = t.sb.state_bytes().await;
            assert_eq!(on_disk, now.to_vec(), "step {step}");
            if let Some(b) = &before {
                let n = now.common_prefix(b);
                assert_eq!(now.to_vec()[..n], b.to_vec()[..n], "step {step}");
                kept_some |= n > 0;
            }
            if files.last() != Some(&on_disk) {
                if let Some(prev) = files.last() {
                    assert_eq!(&std::fs::read(dir.path().join(TEMP_FILE)).unwrap(), prev, "step {step}");
                }
                files.push(on_disk);
            }
            before = Some(now);
        }
        assert!(kept_some, "some write kept a start");
        assert_eq!(files.len(), 9, "each change written once");
    }
}

/// The ids of the containers in a state file, in the file's order.
fn ids_in(bytes: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    v["sandbox"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// The state file lists the containers in the order they came, not by id:
/// the write after a create rewrites the new container's text alone (with
/// Kata's random ids, a sorted file had half its bytes written again at each
/// create), and an agent that takes the file back keeps that order.
#[tokio::test]
async fn a_new_container_is_written_at_the_end_of_the_state_file_whatever_its_id() {
    use crate::persist::file::{StateFile, STATE_FILE};
    let dir = tempfile::tempdir().unwrap();
    let mut t = sandbox();
    Arc::get_mut(&mut t.sb)
        .unwrap()
        .attach(StateFile::lock(dir.path()).unwrap(), None, &|_, _| {})
        .unwrap();
    t.create_pod().await;
    for id in ["c5", "c1", "c9"] {
        t.run(id).await;
    }
    let (before, _) = t.sb.state_bytes().await;
    assert_eq!(ids_in(&before.to_vec()), ["c5", "c1", "c9"]);
    t.run("c0").await;
    t.sb.persist().await;
    let (now, _) = t.sb.state_bytes().await;
    let bytes = now.to_vec();
    assert_eq!(now.len(), bytes.len());
    assert_eq!(ids_in(&bytes), ["c5", "c1", "c9", "c0"]);
    let text = bytes.windows(10).position(|w| w == br#"{"id":"c0""#).unwrap();
    assert_eq!(now.common_prefix(&before), text - 1, "all before c0's comma is kept");

    // Removed, then made again under the same id: one text, at the end.
    t.fake.exit(t.pid("c1"), Exit::Code(0));
    t.sb.remove_container("c1", Duration::ZERO).await.unwrap();
    t.run("c1").await;
    t.sb.persist().await;
    let on_disk = std::fs::read(dir.path().join(STATE_FILE)).unwrap();
    assert_eq!(ids_in(&on_disk), ["c5", "c9", "c0", "c1"]);

    // Taken back by another agent: the same order, and the same file.
    drop(t);
    let mut again = sandbox();
    Arc::get_mut(&mut again.sb)
        .unwrap()
        .attach(StateFile::lock(dir.path()).unwrap(), None, &|_, _| {})
        .unwrap();
    let (taken_back, _) = again.sb.state_bytes().await;
    assert_eq!(ids_in(&taken_back.to_vec()), ["c5", "c9", "c0", "c1"]);
}
