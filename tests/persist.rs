//! The persisted state and crash recovery, through the real agent binary:
//! `kill -9` of an agent running under its keeper, and the new agent takes
//! every container back; a second agent on a state directory is refused; a
//! damaged or too new state file keeps Health answering, refuses sandbox
//! calls with FAILED_PRECONDITION and is never overwritten.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::containers::{create_and_start, mounts_at, pids_of, read_all, remove, sh, storage, wait, SVC};
use common::{call, Agent};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use protobuf::well_known_types::empty::Empty;
use protobuf::Message;
use protocols::agent::*;
use protocols::health::{CheckRequest, HealthCheckResponse};
use protocols::pith::{HelloRequest, HelloResponse, StatusRequest, StatusResponse};
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

async fn status(c: &Client) -> StatusResponse {
    call(c, "pith.Introspection", "Status", &StatusRequest::new())
        .await
        .unwrap()
}

/// Process state letter (R, S, Z...) of `pid`, None once it is gone.
fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The pipes process `pid` (or "self") holds open.
fn pipes_of(pid: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.starts_with("pipe:"))
        .collect()
}

/// Waits until `cond` holds (a process to end, an agent to answer): no time is asserted.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The agent's pid, if an agent answers on `c` (transport errors too are a no:
/// the old agent may still be dying).
async fn pid_on(c: &Client) -> Option<u32> {
    let mut r = ttrpc::proto::Request::new();
    r.service = "pith.Introspection".into();
    r.method = "Status".into();
    r.timeout_nano = Duration::from_secs(5).as_nanos() as i64;
    let resp = c.request(r).await.ok()?;
    Some(StatusResponse::parse_from_bytes(&resp.payload).ok()?.pid)
}

/// A client of the agent that replaced `old_pid`, once it serves.
async fn new_agent(agent: &Agent, old_pid: u32) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = pithctl::client::connect(&agent.address(), Duration::from_secs(1)).await {
            if pid_on(&c).await.is_some_and(|p| p != old_pid) {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new agent within 30 s; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_once(c: &Client, id: &str) -> Vec<u8> {
    let mut r = ReadStreamRequest::new();
    r.container_id = id.into();
    r.exec_id = id.into();
    r.len = 1 << 20;
    let resp: ReadStreamResponse = call(c, SVC, "ReadStdout", &r).await.unwrap();
    resp.data
}

async fn signal(c: &Client, id: &str, sig: u32) -> Result<Empty, (Code, String)> {
    let mut s = SignalProcessRequest::new();
    s.container_id = id.into();
    s.exec_id = id.into();
    s.signal = sig;
    call(c, SVC, "SignalProcess", &s).await
}

async fn container_call(c: &Client, method: &str, id: &str) -> Result<Empty, (Code, String)> {
    match method {
        "PauseContainer" => {
            let mut r = PauseContainerRequest::new();
            r.container_id = id.into();
            call(c, SVC, method, &r).await
        }
        _ => {
            let mut r = ResumeContainerRequest::new();
            r.container_id = id.into();
            call(c, SVC, method, &r).await
        }
    }
}

/// Agrees on level 2 (Introspection/Status, the agent's pid) as host `name`.
async fn hello_level_2(c: &Client, name: &str) {
    let mut h = HelloRequest::new();
    h.host_name = name.into();
    h.min_level = 2;
    h.max_level = 2;
    let _: HelloResponse = call(c, "pith.Negotiation", "Hello", &h).await.unwrap();
}

/// Waits for a file to appear in the container's rootfs, then prints or exits.
const WAIT_GO: &str = "while [ ! -e /go ]; do sleep 0.05; done";

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn an_agent_killed_with_sigkill_loses_no_container() {
    let mut agent = Agent::start(&["--keeper"]);
    let dir = agent.dir.path().to_path_buf();
    let c = agent.client().await;
    // Level 2 (for Introspection/Status); a new agent must keep it.
    hello_level_2(&c, "persist-test").await;
    let mut sb = CreateSandboxRequest::new();
    sb.hostname = "kept-pod".into();
    sb.sandbox_id = "sb-kept".into();
    let _: Empty = call(&c, SVC, "CreateSandbox", &sb).await.unwrap();
    let before = fds_now(agent.child.as_ref().unwrap().id() as i32, status(&c).await.pid);
    let run_script = format!("echo before; {WAIT_GO}; echo after; exec sleep 1000");
    create_and_start(&c, &dir.join("run"), "run", &["sh", "-c", &run_script]).await;
    create_and_start(
        &c,
        &dir.join("gap"),
        "gap",
        &["sh", "-c", &format!("{WAIT_GO}; exit 7")],
    )
    .await;
    assert_eq!(read_once(&c, "run").await, b"before\n");
    let gap_pid = pids_of(&c, "gap").await[0];
    let old = status(&c).await.pid;
    drop(c);

    // Hold the keeper so the gap is long enough to matter: the agent dies,
    // then the "gap" container exits and "run" writes while no agent runs.
    let keeper = Pid::from_raw(agent.child.as_ref().unwrap().id() as i32);
    kill(keeper, Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    until("the agent to die", || proc_state(old as i32).is_none_or(|s| s == 'Z'));
    for name in ["run", "gap"] {
        std::fs::write(dir.join(name).join("rootfs/go"), "").unwrap();
    }
    until("the gap container to exit", || {
        proc_state(gap_pid).is_none_or(|s| s == 'Z')
    });
    kill(keeper, Signal::SIGCONT).unwrap();

    let c = new_agent(&agent, old).await;
    // The log is written by the agent's own thread: wait for the line.
    let log = agent.wait_log("state taken back");
    assert!(log.contains("state taken back"), "{log}");
    assert_eq!(status(&c).await.host_name, "persist-test", "the session is kept");
    // The exit during the gap, with its real status.
    assert_eq!(wait(&c, "gap", "gap").await, Ok(7));
    // Output written during the gap is there, once.
    assert_eq!(read_once(&c, "run").await, b"after\n");
    // Exec into a recovered container, in the pod's UTS namespace.
    let (code, out) = sh(&c, &dir.join("run"), "run", "hostname").await;
    assert_eq!((code, out.as_str()), (0, "kept-pod\n"));
    // A new container still joins the kept namespace holder.
    create_and_start(&c, &dir.join("new"), "new", &["hostname"]).await;
    assert_eq!(read_all(&c, "new", "new", "ReadStdout").await, b"kept-pod\n");
    assert_eq!(wait(&c, "new", "new").await, Ok(0));
    // Stats, pause, resume, signal.
    let mut st = StatsContainerRequest::new();
    st.container_id = "run".into();
    let _: StatsContainerResponse = call(&c, SVC, "StatsContainer", &st).await.unwrap();
    container_call(&c, "PauseContainer", "run").await.unwrap();
    container_call(&c, "ResumeContainer", "run").await.unwrap();
    signal(&c, "run", 0).await.unwrap();
    signal(&c, "run", 9).await.unwrap();
    assert_eq!(wait(&c, "run", "run").await, Ok(137));
    for id in ["run", "gap", "new"] {
        remove(&c, id).await;
    }
    for id in ["run", "gap", "new"] {
        assert_nothing_left(id, &dir.join(id), keeper.as_raw(), status(&c).await.pid, &before);
    }
    // Nothing left behind: the keeper's children are the agent and the
    // namespace holder, and it holds no container's pipe any more.
    let st = status(&c).await;
    let holder = serde_json::from_str::<serde_json::Value>(&st.sandbox_json).unwrap()["pod"]["ns_holder"]
        .as_i64()
        .unwrap();
    let mut kids = common::children(keeper.as_raw());
    kids.sort();
    let mut want = vec![st.pid as i32, holder as i32];
    want.sort();
    assert_eq!(kids, want);
    // (Pipes the test itself inherited, and so everyone below it, do not count.)
    let ours = pipes_of("self");
    let pipes: Vec<String> = pipes_of(&keeper.to_string())
        .into_iter()
        .filter(|p| !ours.contains(p))
        .collect();
    assert!(pipes.is_empty(), "the keeper still holds {pipes:?}");
    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap();
    drop(c);
    let st = agent.terminate();
    assert!(st.success(), "the keeper ends with the agent's clean exit: {st:?}");
}

#[tokio::test]
async fn a_second_agent_on_the_state_directory_is_refused() {
    let agent = Agent::start(&[]);
    let state = agent.dir.path().join("state");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pith-agent"))
        .arg("--server-addr")
        .arg(format!("unix://{}", agent.dir.path().join("second.sock").display()))
        .arg("--cmdline")
        .arg(agent.dir.path().join("cmdline"))
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds the lock"), "{err}");
    assert!(err.contains(&state.join("sandbox.lock").display().to_string()), "{err}");
    // The first one still serves.
    let c = agent.client().await;
    let _: HealthCheckResponse = call(&c, "grpc.Health", "Check", &CheckRequest::new()).await.unwrap();
}

fn golden_v1() -> Vec<u8> {
    std::fs::read(common::fixture("persist/v1.json")).unwrap()
}

/// Starts an agent on a state directory holding `bytes` as its state file;
/// checks that Health answers and CreateContainer is refused with
/// FAILED_PRECONDITION containing each of `needles`, and that the file is
/// untouched. Returns the refusal's message.
async fn refused_with(bytes: Vec<u8>, needles: &[&str]) -> String {
    let file: std::sync::Mutex<Option<PathBuf>> = Default::default();
    let agent = Agent::start_prepared(&[], &[], &|state: &Path| {
        std::fs::write(state.join("sandbox.json"), &bytes).unwrap();
        *file.lock().unwrap() = Some(state.join("sandbox.json"));
    });
    let path = file.lock().unwrap().clone().unwrap();
    let c = agent.client().await;
    let _: HealthCheckResponse = call(&c, "grpc.Health", "Check", &CheckRequest::new()).await.unwrap();
    let req = common::containers::create_req(&agent.dir.path().join("c"), "c1", &["true"]);
    let (code, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &req).await.unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in {msg}");
    }
    let (code, _) = call::<_, Empty>(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was overwritten");
    msg
}

#[tokio::test]
async fn a_truncated_state_file_is_refused_and_kept() {
    let mut bytes = golden_v1();
    bytes.truncate(bytes.len() / 3);
    refused_with(bytes, &["is damaged", "EOF"]).await;
}

#[tokio::test]
async fn a_state_file_too_new_for_this_agent_is_refused_and_kept() {
    let mut j: serde_json::Value = serde_json::from_slice(&golden_v1()).unwrap();
    j["persist_version"] = 99.into();
    j["min_reader_version"] = 98.into();
    let msg = refused_with(
        serde_json::to_vec_pretty(&j).unwrap(),
        &["persist_version 99", "at least version 98"],
    )
    .await;
    assert!(msg.contains("this agent reads versions 1 to"), "{msg}");
}

fn add_device(id: &str, path: &str) -> protocols::pith::AddBlockDeviceRequest {
    let mut r = protocols::pith::AddBlockDeviceRequest::new();
    r.container_id = id.into();
    r.type_ = "path".into();
    r.address = path.into();
    r.container_path = "/dev/hotdisk".into();
    r.mode = 0o640;
    r.access = "rwm".into();
    r
}

/// Storages and a hot-plugged device survive a `kill -9` of the agent: nothing
/// is mounted twice, a storage taken back is shared (counted) with a new
/// container, the device stays allowed and listed, and everything is released
/// at the end.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn storages_and_devices_survive_a_killed_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = common::loopdev::Loop::new(tmp.path());
    let agent = Agent::start_with(
        &["--keeper", "--hotplug-timeout", "1"],
        &[("PITH_STORAGE_ROOTS", tmp.path().to_str().unwrap())],
    );
    let c = agent.client().await;
    let mut h = HelloRequest::new();
    (h.min_level, h.max_level) = (3, 3);
    let _: HelloResponse = call(&c, "pith.Negotiation", "Hello", &h).await.unwrap();
    let shm = tmp.path().join("shm");
    let mut sb = CreateSandboxRequest::new();
    sb.sandbox_id = "sb".into();
    sb.storages = vec![storage("ephemeral", "tmpfs", &shm)];
    let _: Empty = call(&c, SVC, "CreateSandbox", &sb).await.unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mp = tmp.path().join("mnt");
    let with_storage = |id: &str| {
        let mut r = common::containers::create_req(&tmp.path().join(id), id, &["sleep", "1000"]);
        r.storages = vec![storage("bind", data.to_str().unwrap(), &mp)];
        r
    };
    let _: Empty = call(&c, SVC, "CreateContainer", &with_storage("c")).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = "c".into();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();
    let dev = disk.dev.to_string_lossy().into_owned();
    let _: protocols::pith::BlockDeviceResponse = call(&c, "pith.Devices", "AddBlockDevice", &add_device("c", &dev))
        .await
        .unwrap();
    let read_disk = "dd if=/dev/hotdisk of=/dev/null bs=512 count=1";
    assert_eq!(sh(&c, &tmp.path().join("c"), "c", read_disk).await.0, 0);
    let old = status(&c).await.pid;
    drop(c);

    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let c = new_agent(&agent, old).await;
    assert_eq!((mounts_at(&shm), mounts_at(&mp)), (1, 1), "nothing mounted twice");
    // The device is still allowed in the container's cgroup, and listed.
    let (code, out) = sh(&c, &tmp.path().join("c"), "c", read_disk).await;
    assert_eq!(code, 0, "{out}");
    assert!(status(&c).await.sandbox_json.contains("/dev/hotdisk"));
    // A new container with the same storage shares the mount taken back.
    let _: Empty = call(&c, SVC, "CreateContainer", &with_storage("d")).await.unwrap();
    assert_eq!(mounts_at(&mp), 1);
    let mut rm = protocols::pith::RemoveBlockDeviceRequest::new();
    rm.container_id = "c".into();
    rm.container_path = "/dev/hotdisk".into();
    let _: protocols::pith::BlockDeviceResponse = call(&c, "pith.Devices", "RemoveBlockDevice", &rm).await.unwrap();
    assert_ne!(sh(&c, &tmp.path().join("c"), "c", read_disk).await.0, 0);
    remove(&c, "d").await;
    assert_eq!(mounts_at(&mp), 1, "still used by c");
    remove(&c, "c").await;
    assert_eq!(mounts_at(&mp), 0);
    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap();
    assert_eq!(mounts_at(&shm), 0);
}

/// Whether `path` is a mount point in the mount namespace of `pid`.
fn mounted_in(pid: i32, path: &Path) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

/// What main added to the pod survives too: the network a Kata runtime set
/// up (the kernel keeps it: a new agent lists it) and the DNS bind-mounted
/// over the guest's resolv.conf (the state file keeps that it is mounted, so
/// the new agent's DestroySandbox unmounts it).
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn the_network_and_dns_survive_a_killed_agent() {
    use protocols::types::{IPAddress, Interface, Route};
    let ns = common::netns::Netns::new("persist");
    ns.veth("ens3", "02:42:ac:11:00:09", "host0");
    let agent = Agent::start_in(&ns.exec_prefix(), &["--keeper"], &[]);
    // `ip netns exec` gives the agent a mount namespace of its own: look there.
    let keeper = agent.child.as_ref().unwrap().id() as i32;
    let resolv = agent.resolv_conf();
    let c = agent.client().await;
    hello_level_2(&c, "").await;
    let mut sb = CreateSandboxRequest::new();
    sb.sandbox_id = "sb-net".into();
    sb.dns = vec!["nameserver 10.9.8.7".into()];
    let _: Empty = call(&c, SVC, "CreateSandbox", &sb).await.unwrap();
    assert!(mounted_in(keeper, &resolv));
    let mut a = IPAddress::new();
    a.address = "10.88.0.5".into();
    a.mask = "16".into();
    let mut i = Interface::new();
    i.device = "eth0".into();
    i.name = "eth0".into();
    i.hwAddr = "02:42:ac:11:00:09".into();
    i.IPAddresses = vec![a];
    i.mtu = 1450;
    let mut ui = UpdateInterfaceRequest::new();
    ui.interface = protobuf::MessageField::some(i);
    let _: Interface = call(&c, SVC, "UpdateInterface", &ui).await.unwrap();
    let mut r = Route::new();
    r.gateway = "10.88.0.1".into();
    r.device = "eth0".into();
    let mut rs = Routes::new();
    rs.Routes = vec![r];
    let mut ur = UpdateRoutesRequest::new();
    ur.routes = protobuf::MessageField::some(rs);
    let _: Routes = call(&c, SVC, "UpdateRoutes", &ur).await.unwrap();
    let old = status(&c).await.pid;
    drop(c);

    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let c = new_agent(&agent, old).await;
    let ifaces: Interfaces = call(&c, SVC, "ListInterfaces", &ListInterfacesRequest::new())
        .await
        .unwrap();
    let eth0 = ifaces
        .Interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .expect("eth0 listed");
    assert_eq!(eth0.hwAddr, "02:42:ac:11:00:09");
    assert_eq!(eth0.mtu, 1450);
    assert!(
        eth0.IPAddresses
            .iter()
            .any(|a| a.address == "10.88.0.5" && a.mask == "16"),
        "{eth0:?}"
    );
    let routes: Routes = call(&c, SVC, "ListRoutes", &ListRoutesRequest::new()).await.unwrap();
    assert!(
        routes
            .Routes
            .iter()
            .any(|r| r.gateway == "10.88.0.1" && r.device == "eth0"),
        "{routes:?}"
    );
    assert!(mounted_in(keeper, &resolv), "still mounted after the crash");
    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap();
    assert!(
        !mounted_in(keeper, &resolv),
        "the new agent's DestroySandbox unmounts the DNS; log:\n{}",
        agent.log()
    );
}

/// An agent restarted without a keeper (systemd's Restart=, whose
/// KillMode=mixed kills what the dead agent left, the namespace holder too)
/// takes the pod back and ends it at once: DestroySandbox does not wait for a
/// holder whose end nobody will ever report (it waited 10 s, the host's whole
/// deadline, in vm-image's service test).
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_restart_without_keeper_finds_the_namespace_holder_gone() {
    let mut first = Agent::start(&[]);
    let c = first.client().await;
    hello_level_2(&c, "").await;
    let mut sb = CreateSandboxRequest::new();
    sb.sandbox_id = "sb-service".into();
    sb.hostname = "service-pod".into();
    let _: Empty = call(&c, SVC, "CreateSandbox", &sb).await.unwrap();
    let st = status(&c).await;
    let holder = serde_json::from_str::<serde_json::Value>(&st.sandbox_json).unwrap()["pod"]["ns_holder"]
        .as_i64()
        .expect("a namespace holder") as i32;
    drop(c);
    kill(Pid::from_raw(st.pid as i32), Signal::SIGKILL).unwrap();
    first.child.take().unwrap().wait().unwrap();
    kill(Pid::from_raw(holder), Signal::SIGKILL).unwrap();
    until("the holder to be gone", || {
        proc_state(holder).is_none_or(|s| s == 'Z' || s == 'X')
    });
    let state = first.dir.path().join("state/sandbox.json");
    let second = Agent::start_prepared(&[], &[], &|dir: &Path| {
        std::fs::copy(&state, dir.join("sandbox.json")).unwrap();
    });
    let c = second.client().await;
    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap_or_else(|e| panic!("DestroySandbox: {e:?}; log:\n{}", second.log()));
    let log = second.log();
    assert!(log.contains("state taken back"), "{log}");
    assert!(log.contains("the namespace holder ended while no agent ran"), "{log}");
}

/// One ReadStdout of up to 1 MiB of container `id`; None when the call
/// failed (the agent died under it: the connection ended first).
async fn try_read(c: &Client, id: &str) -> Option<Result<Vec<u8>, Code>> {
    let mut r = ReadStreamRequest::new();
    r.container_id = id.into();
    r.exec_id = id.into();
    r.len = 1 << 20;
    let mut req = ttrpc::proto::Request::new();
    req.service = SVC.into();
    req.method = "ReadStdout".into();
    req.payload = r.write_to_bytes().unwrap();
    req.timeout_nano = Duration::from_secs(60).as_nanos() as i64;
    match c.request(req).await {
        Ok(resp) => Some(Ok(ReadStreamResponse::parse_from_bytes(&resp.payload).unwrap().data)),
        Err(ttrpc::Error::RpcStatus(s)) => Some(Err(s.code())),
        Err(_) => None,
    }
}

/// md5sum of `data`, by the host's md5sum.
fn md5(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Reads the stdout of container `id` (its init) to its end, and kills the
/// agent with SIGKILL during a read once `kills[i].0` bytes were read, that
/// many µs (`kills[i].1`) into the read. A frame the host received whole
/// counts; a cut one is read again from the new agent. Returns the bytes,
/// the client of the last agent and the number of reads a kill cut.
async fn read_across_kills(
    agent: &Agent,
    mut c: Client,
    id: &str,
    kills: &[(usize, u64)],
    size: usize,
) -> (Vec<u8>, Client, usize) {
    let mut got: Vec<u8> = Vec::with_capacity(size + (1 << 20));
    let mut next = 0;
    let mut lost_calls = 0;
    loop {
        let read = if next < kills.len() && got.len() >= kills[next].0 {
            let (_, delay_us) = kills[next];
            next += 1;
            let old = status(&c).await.pid;
            let (cc, owned_id) = (c.clone(), id.to_string());
            let call = tokio::spawn(async move { try_read(&cc, &owned_id).await });
            tokio::time::sleep(Duration::from_micros(delay_us)).await;
            kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
            let r = call.await.unwrap();
            eprintln!(
                "kill at {} bytes, {delay_us} us into a read: {}",
                got.len(),
                match &r {
                    Some(Ok(d)) => format!("the frame arrived whole ({} bytes)", d.len()),
                    Some(Err(code)) => format!("answered {code:?}"),
                    None => "the read was cut".into(),
                }
            );
            c = new_agent(agent, old).await;
            match r {
                Some(r) => r,
                None => {
                    lost_calls += 1;
                    continue;
                }
            }
        } else {
            try_read(&c, id).await.expect("no agent was killed")
        };
        let data = read.expect("ReadStdout");
        if data.is_empty() {
            break;
        }
        got.extend_from_slice(&data);
    }
    assert_eq!(next, kills.len(), "every kill happened");
    (got, c, lost_calls)
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_100_mib_stdout_stream_is_read_exactly_once_across_kill_9() {
    // 100 MiB of numbered lines, so that a byte lost, doubled or misplaced
    // shows. (Not `yes | head`: the container inherits SIGPIPE ignored, and
    // yes would spin on EPIPE once head is done.)
    const LINES: u32 = 12_885_412;
    const GEN: &str = "seq 1 12885412";
    let Kept {
        agent,
        dir,
        c,
        keeper,
        before,
    } = kept_sandbox("stream-test", "sb-stream").await;
    let script = format!("{WAIT_GO}; {GEN}; exit 3");
    create_and_start(&c, &dir.join("big"), "big", &["sh", "-c", &script]).await;
    let want: Vec<u8> = (1..=LINES).flat_map(|i| format!("{i}\n").into_bytes()).collect();
    const TOTAL: usize = 104_857_605;
    assert_eq!(want.len(), TOTAL);
    std::fs::write(dir.join("big/rootfs/go"), "").unwrap();

    // Kill the agent while a read is in flight, after different amounts and
    // at different moments of the read (staging, splicing, settling). Four:
    // the keeper gives up on an agent that crashes five times in 10 s.
    let kills: [(usize, u64); 4] = [(3 << 20, 0), (29 << 20, 150), (55 << 20, 700), (83 << 20, 2000)];
    let (got, c, lost_calls) = read_across_kills(&agent, c, "big", &kills, TOTAL).await;
    assert_eq!(wait(&c, "big", "big").await, Ok(3));
    assert_eq!(
        got.len(),
        TOTAL,
        "no byte lost or doubled ({lost_calls} reads cut by a kill)"
    );
    assert_eq!(md5(&got), md5(&want));
    remove_and_end("big", agent, c, keeper, &before).await;
}

/// For a failed leak check: each `socket:[N]` in `links` as `ss -xa` shows
/// it (its path, its peer's inode) and the processes that hold the peer.
fn socket_peers(links: &[String]) -> String {
    let ss = std::process::Command::new("ss")
        .args(["-xa"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let holders = |inode: &str| -> Vec<String> {
        let want = format!("socket:[{inode}]");
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|p| {
                let pid = p.file_name().into_string().ok()?;
                pid.parse::<u32>().ok()?;
                let fds = std::fs::read_dir(p.path().join("fd")).ok()?;
                let holds = fds
                    .flatten()
                    .any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l.to_string_lossy() == want));
                let comm = std::fs::read_to_string(p.path().join("cmdline")).unwrap_or_default();
                holds.then(|| format!("{pid} {}", comm.replace('\0', " ").trim()))
            })
            .collect()
    };
    links
        .iter()
        .filter_map(|l| l.strip_prefix("socket:[")?.strip_suffix(']'))
        .map(|inode| {
            let line = ss
                .lines()
                // Netid State Recv-Q Send-Q Local Inode Peer PeerInode
                .find(|l| l.split_whitespace().nth(5) == Some(inode))
                .unwrap_or("(not in ss -xa)");
            let peer = line.split_whitespace().last().unwrap_or("");
            format!(
                "[{inode}: {} | peer held by {:?}]",
                line.split_whitespace().collect::<Vec<_>>().join(" "),
                holders(peer)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything process `pid` has open, by what it links to.
fn fds_of(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    v.sort();
    v
}

/// The keeper's and the agent's descriptors (the agent may be a new process:
/// what it holds is compared, not its pid).
struct Fds {
    keeper: Vec<String>,
    agent: Vec<String>,
}

fn fds_now(keeper: i32, agent: u32) -> Fds {
    Fds {
        keeper: fds_of(keeper),
        agent: fds_of(agent as i32),
    }
}

/// An agent under its keeper with a sandbox, at level 2, and what the keeper
/// and the agent hold before any container.
struct Kept {
    agent: Agent,
    dir: PathBuf,
    c: Client,
    keeper: i32,
    before: Fds,
}

async fn kept_sandbox(host: &str, sandbox_id: &str) -> Kept {
    let agent = Agent::start(&["--keeper"]);
    let dir = agent.dir.path().to_path_buf();
    let c = agent.client().await;
    hello_level_2(&c, host).await;
    let keeper = agent.child.as_ref().unwrap().id() as i32;
    let sockets = || fds_of(keeper).iter().filter(|l| l.starts_with("socket:")).count();
    let alone = sockets();
    let mut sb = CreateSandboxRequest::new();
    sb.sandbox_id = sandbox_id.into();
    let _: Empty = call(&c, SVC, "CreateSandbox", &sb).await.unwrap();
    // The agent hands the keeper the namespace holder's channel without
    // waiting for it to be taken: it counts once the keeper holds it.
    for _ in 0..100 {
        if sockets() > alone {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = fds_now(keeper, status(&c).await.pid);
    Kept {
        agent,
        dir,
        c,
        keeper,
        before,
    }
}

/// After container `id` (under `dir`) is removed: no process, mount or
/// cgroup of it is left, and the keeper and the agent hold what they held
/// before it was made (as many descriptors, to the same kind of things:
/// socket and pipe inode numbers may differ for a new agent; rustjail's
/// copy of the agent's binary, kept once made, does not count).
/// Removes container `id`, checks that nothing of it is left (see
/// [`assert_nothing_left`]), destroys the sandbox and stops the agent.
async fn remove_and_end(id: &str, mut agent: Agent, c: Client, keeper: i32, before: &Fds) {
    remove(&c, id).await;
    let dir = agent.dir.path().join(id);
    assert_nothing_left(id, &dir, keeper, status(&c).await.pid, before);
    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap();
    drop(c);
    assert!(agent.terminate().success());
}

fn assert_nothing_left(id: &str, dir: &Path, keeper: i32, agent: u32, before: &Fds) {
    let kind = |v: &[String]| -> Vec<String> {
        let mut k: Vec<String> = v
            .iter()
            .filter(|l| !l.starts_with("/memfd:rustjail-init"))
            .map(|l| l.split(':').next().unwrap().to_string())
            .collect();
        k.sort();
        k
    };
    // The agent tells the keeper to drop a container's descriptors before it
    // answers RemoveContainer, but the keeper acts on it in its own time; the
    // agent closes the container's mount namespace after its answer.
    let mut now = fds_now(keeper, agent);
    for _ in 0..50 {
        if kind(&now.keeper) == kind(&before.keeper) && kind(&now.agent) == kind(&before.agent) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        now = fds_now(keeper, agent);
    }
    assert_eq!(
        kind(&now.keeper),
        kind(&before.keeper),
        "keeper: {:?} then {:?}; its sockets and their peers' holders: {}",
        before.keeper,
        now.keeper,
        socket_peers(&now.keeper)
    );
    assert_eq!(
        kind(&now.agent),
        kind(&before.agent),
        "agent: {:?} then {:?}",
        before.agent,
        now.agent
    );
    assert!(
        !now.agent
            .iter()
            .chain(&now.keeper)
            .any(|l| l.contains("pith-out-journal")),
        "an output journal is still open"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.display().to_string();
    assert!(!mounts.lines().any(|l| l.contains(&d)), "mounts left under {d}");
    // The cgroup's directories are removed right after the answer.
    for ctrl in ["memory", "pids", "cpu", "devices", "freezer"] {
        let cg = Path::new("/sys/fs/cgroup").join(ctrl).join(id);
        for _ in 0..50 {
            if !cg.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(!cg.exists(), "cgroup left: {}", cg.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_terminal_keeps_working_across_kill_9() {
    let Kept {
        agent,
        dir,
        mut c,
        keeper,
        before,
    } = kept_sandbox("tty-test", "sb-tty").await;

    let id = "tty";
    let script = "while read l; do echo \"got $l\"; stty size; done";
    let mut req = common::containers::create_req(&dir.join(id), id, &["sh", "-c", script]);
    req.OCI.as_mut().unwrap().Process.as_mut().unwrap().Terminal = true;
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.into();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();

    async fn line(c: &Client, id: &str, rows: u32, cols: u32, text: &str) -> String {
        let mut r = TtyWinResizeRequest::new();
        r.container_id = id.into();
        r.exec_id = id.into();
        r.row = rows;
        r.column = cols;
        let _: Empty = call(c, SVC, "TtyWinResize", &r).await.unwrap();
        let mut w = WriteStreamRequest::new();
        w.container_id = id.into();
        w.exec_id = id.into();
        w.data = format!("{text}\n").into_bytes();
        let _: WriteStreamResponse = call(c, SVC, "WriteStdin", &w).await.unwrap();
        let want = format!("{rows} {cols}");
        let mut out = String::new();
        while !out.contains(&want) {
            let data = read_once(c, id).await;
            assert!(!data.is_empty(), "the terminal ended: {out:?}");
            out.push_str(&String::from_utf8_lossy(&data));
        }
        out
    }
    let out = line(&c, id, 30, 90, "one").await;
    assert!(out.contains("got one"), "{out:?}");

    let old = status(&c).await.pid;
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    c = new_agent(&agent, old).await;
    let out = line(&c, id, 41, 123, "two").await;
    assert!(out.contains("got two"), "{out:?}");
    assert!(
        !out.contains("got one"),
        "output read before the crash is not read again: {out:?}"
    );

    // CloseStdin is ^D on a terminal: the loop ends, the container exits 0.
    let mut cs = CloseStdinRequest::new();
    cs.container_id = id.into();
    cs.exec_id = id.into();
    let _: Empty = call(&c, SVC, "CloseStdin", &cs).await.unwrap();
    assert_eq!(wait(&c, id, id).await, Ok(0));
    remove_and_end(id, agent, c, keeper, &before).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_terminal_stream_is_read_exactly_once_across_kill_9() {
    // Numbered lines through a terminal, whose line discipline makes each
    // "\n" "\r\n" (ONLCR): the host must get exactly that transformation.
    const LINES: u32 = 2_000_000;
    let Kept {
        agent,
        dir,
        c,
        keeper,
        before,
    } = kept_sandbox("tty-stream-test", "sb-tty-stream").await;
    let id = "pty-big";
    let script = format!("{WAIT_GO}; seq 1 {LINES}; exit 3");
    let mut req = common::containers::create_req(&dir.join(id), id, &["sh", "-c", &script]);
    req.OCI.as_mut().unwrap().Process.as_mut().unwrap().Terminal = true;
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.into();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();
    let want: Vec<u8> = (1..=LINES).flat_map(|i| format!("{i}\r\n").into_bytes()).collect();
    std::fs::write(dir.join(id).join("rootfs/go"), "").unwrap();

    // A terminal hands over a few KiB per read: kills at different
    // moments of a read, at different points of the stream.
    let kills: [(usize, u64); 4] = [(1 << 20, 0), (4 << 20, 50), (8 << 20, 150), (12 << 20, 400)];
    let (got, c, lost_calls) = read_across_kills(&agent, c, id, &kills, want.len()).await;
    assert_eq!(wait(&c, id, id).await, Ok(3));
    assert_eq!(
        got.len(),
        want.len(),
        "no byte lost or doubled ({lost_calls} reads cut by a kill)"
    );
    assert_eq!(md5(&got), md5(&want));
    // Each new agent took the stage back from the keeper; bytes waiting in
    // it were out of the terminal, not yet delivered, when the kill landed:
    // a direct read of the terminal would have lost them.
    let log = agent.log();
    let taken: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("terminal stage taken back"))
        .collect();
    assert_eq!(taken.len(), kills.len(), "{log}");
    for l in &taken {
        eprintln!("{l}");
    }
    eprintln!(
        "{} bytes through the terminal, every byte once, across {} kills ({lost_calls} reads cut)",
        got.len(),
        kills.len()
    );
    remove_and_end(id, agent, c, keeper, &before).await;
}
