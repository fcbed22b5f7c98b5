//! A pod through the agent's RPCs, as a Kata runtime drives one: CreateSandbox,
//! containers sharing the sandbox's namespaces, terminals, streaming, OOM
//! events, pause/resume, stats, process lists, and DestroySandbox leaving
//! nothing behind. Real busybox containers; root only.

mod common;

use std::time::Duration;

use common::containers::*;
use common::{call, Agent};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

/// An agent (its CreateSandbox writes DNS to a private file, see the fixture).
fn agent() -> Agent {
    Agent::start(&[])
}

async fn create_sandbox(c: &Client, id: &str, hostname: &str, pidns: bool) {
    let mut req = CreateSandboxRequest::new();
    req.sandbox_id = id.into();
    req.hostname = hostname.into();
    req.sandbox_pidns = pidns;
    req.dns = vec!["nameserver 10.9.8.7".into(), "search pith.test".into()];
    let _: Empty = call(c, SVC, "CreateSandbox", &req).await.unwrap();
}

/// The agent's exit status once it has stopped by itself (as it does after
/// DestroySandbox), waiting up to 10 s; `None` while it still runs.
async fn stopped(agent: &mut Agent) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.alive() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if agent.alive() {
        return None;
    }
    agent.child.take().map(|mut c| c.wait().unwrap())
}

fn with_terminal(mut req: CreateContainerRequest) -> CreateContainerRequest {
    req.OCI.as_mut().unwrap().Process.as_mut().unwrap().Terminal = true;
    req
}

async fn exec(c: &Client, id: &str, exec_id: &str, args: &[&str], tty: bool) {
    let mut p = protocols::oci::Process::new();
    p.Args = args.iter().map(|s| s.to_string()).collect();
    p.Cwd = "/".into();
    p.Env = vec!["PATH=/bin".into(), "TERM=dumb".into()];
    p.Terminal = tty;
    let mut req = ExecProcessRequest::new();
    req.container_id = id.into();
    req.exec_id = exec_id.into();
    req.process = protobuf::MessageField::some(p);
    let _: Empty = call(c, SVC, "ExecProcess", &req).await.unwrap();
}

async fn write_stdin(c: &Client, id: &str, exec_id: &str, data: &[u8]) {
    let mut w = WriteStreamRequest::new();
    w.container_id = id.into();
    w.exec_id = exec_id.into();
    w.data = data.to_vec();
    let r: WriteStreamResponse = call(c, SVC, "WriteStdin", &w).await.unwrap();
    assert_eq!(r.len as usize, data.len());
}

/// Reads stdout until `needle` shows up (or the stream ends); returns what was read.
async fn read_until(c: &Client, id: &str, exec_id: &str, needle: &str) -> String {
    let mut out = String::new();
    while !out.contains(needle) {
        let mut r = ReadStreamRequest::new();
        r.container_id = id.into();
        r.exec_id = exec_id.into();
        r.len = 4096;
        let resp: ReadStreamResponse = call(c, SVC, "ReadStdout", &r).await.unwrap();
        if resp.data.is_empty() {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&resp.data));
    }
    out
}

async fn cpu_usage(c: &Client, id: &str) -> u64 {
    let mut r = StatsContainerRequest::new();
    r.container_id = id.into();
    let s: StatsContainerResponse = call(c, SVC, "StatsContainer", &r).await.unwrap();
    s.cgroup_stats.cpu_stats.cpu_usage.total_usage
}

fn alive(pid: i32) -> bool {
    // A zombie still has /proc/<pid>; it is gone once reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Cgroup directories named `id` under any hierarchy of the host.
fn cgroup_dirs(id: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    for h in hierarchies.flatten() {
        let mut stack = vec![h.path()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if e.file_name() == id {
                        found.push(e.path());
                    }
                    stack.push(e.path());
                }
            }
        }
    }
    found
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn pod_shares_pid_uts_namespaces_and_destroy_leaves_nothing() {
    let mut agent = agent();
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    // Unique, so that the hostname seen below is this sandbox's (tests run in
    // parallel, and other test runs may share the machine); the holder check
    // looks at this agent's children only.
    let hostname = unique("pith-pod");
    create_sandbox(&c, &unique("sb"), &hostname, true).await;
    // A second CreateSandbox is refused.
    let (code, _) = call::<_, Empty>(&c, SVC, "CreateSandbox", &CreateSandboxRequest::new())
        .await
        .unwrap_err();
    assert_eq!(code, Code::ALREADY_EXISTS);

    let pause = unique("pause");
    create_and_start(&c, &dir.path().join("p"), &pause, &["sleep", "1000"]).await;
    let app = unique("app");
    create_and_start(
        &c,
        &dir.path().join("a"),
        &app,
        &[
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; sleep 1000",
        ],
    )
    .await;
    let out = read_until(&c, &app, &app, "pith-pod").await;
    // PID 1 of the app's namespace is the pause container's sleep.
    assert!(out.starts_with("sleep 1000"), "{out:?}");
    assert!(out.contains("pith-pod"), "{out:?}");
    // An exec in the app container with a terminal, doing real work, to have more to clean up.
    exec(&c, &app, "e1", &["sleep", "1000"], true).await;

    let mut pids = pids_of(&c, &pause).await;
    pids.extend(pids_of(&c, &app).await);
    assert!(pids.len() >= 3, "{pids:?}");
    assert!(pids.iter().all(|&p| alive(p)));
    // This agent's namespace holder (other tests run agents with holders too).
    let holders = holders_of(agent.child.as_ref().unwrap().id() as i32);
    assert_eq!(holders.len(), 1, "one namespace holder: {holders:?}");

    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap();
    // The agent stops after DestroySandbox, as Kata's does.
    let status = stopped(&mut agent)
        .await
        .expect("agent still running after DestroySandbox");
    assert!(status.success(), "{status:?}");

    // No process, cgroup, mount or file of the sandbox is left.
    for p in &pids {
        assert!(!alive(*p), "pid {p} survived DestroySandbox");
    }
    for id in [&pause, &app] {
        assert_eq!(cgroup_dirs(id), Vec::<std::path::PathBuf>::new(), "cgroup of {id}");
    }
    let state = agent.dir.path().join("state");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(state.to_str().unwrap()),
        "mounts under {} left:\n{mountinfo}",
        state.display()
    );
    for sub in ["bundles", "containers"] {
        let left: Vec<_> = std::fs::read_dir(state.join(sub)).unwrap().flatten().collect();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
    assert!(!state.join("consoles").exists());
    // No namespace holder left either: nothing of ours holds the hostname.
    assert!(
        holders.iter().all(|&h| !alive(h)),
        "holder {holders:?} survived DestroySandbox"
    );
}

/// A DestroySandbox repeated before the agent has stopped (a host retrying a
/// call whose answer it lost) is answered too, and the agent still stops: the
/// second call's stop signal once waited forever on the first's.
#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn a_repeated_destroy_sandbox_is_answered_and_the_agent_stops() {
    let mut agent = agent();
    let c = agent.client().await;
    let retry = agent.client().await;
    create_sandbox(&c, &unique("sb"), &unique("pith-again"), false).await;
    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap();
    // At once: within the moment the agent leaves for the first answer.
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        call::<_, Empty>(&retry, SVC, "DestroySandbox", &DestroySandboxRequest::new()),
    )
    .await;
    assert!(matches!(again, Ok(Ok(_))), "second DestroySandbox: {again:?}");
    let status = stopped(&mut agent)
        .await
        .expect("agent still running after two DestroySandbox calls");
    assert!(status.success(), "{status:?}");
}

/// The namespace holders among `agent`'s children (rustjail's helper mode in
/// their environment).
fn holders_of(agent: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let ppid = std::fs::read_to_string(e.path().join("stat")).ok().and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok())
        });
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if ppid == Some(agent) && env.split(|&b| b == 0).any(|v| v == b"_RUSTJAIL_MODE=ns-holder") {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn dns_is_written_and_hostname_is_private_to_the_sandbox() {
    let agent = agent();
    let resolv = agent.resolv_conf();
    let c = agent.client().await;
    let host_name_before = nix::unistd::gethostname().unwrap();
    // A kernel module that does not exist: a clear error, and the sandbox is not created.
    let mut bad = CreateSandboxRequest::new();
    let mut m = KernelModule::new();
    m.name = "pith_no_such_module".into();
    bad.kernel_modules = vec![m];
    let (code, msg) = call::<_, Empty>(&c, SVC, "CreateSandbox", &bad).await.unwrap_err();
    assert_ne!(code, Code::OK);
    assert!(msg.contains("pith_no_such_module"), "{msg}");
    assert_eq!(std::fs::read_to_string(&resolv).unwrap(), common::GUEST_RESOLV_CONF);
    create_sandbox(&c, "sb", "pith-private", false).await;
    // As kata-agent: written to the sandbox's file, bind-mounted over the
    // guest's (whose root may be read-only).
    let want = "nameserver 10.9.8.7\nsearch pith.test\n";
    assert_eq!(std::fs::read_to_string(&resolv).unwrap(), want);
    let sandbox_file = resolv.parent().unwrap().join("sandbox/resolv.conf");
    assert_eq!(std::fs::read_to_string(&sandbox_file).unwrap(), want);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(resolv.to_str().unwrap())),
        "{} is a mount point",
        resolv.display()
    );
    assert_eq!(nix::unistd::gethostname().unwrap(), host_name_before);
    let dir = tempfile::tempdir().unwrap();
    let id = unique("host");
    create_and_start(&c, dir.path(), &id, &["hostname"]).await;
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0);
    assert_eq!(read_all(&c, &id, &id, "ReadStdout").await, b"pith-private\n");
    remove(&c, &id).await;
    // DestroySandbox unmounts it: the guest's file is back.
    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&resolv).unwrap(), common::GUEST_RESOLV_CONF);
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn exec_with_a_terminal_sees_window_resizes() {
    let agent = agent();
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("tty");
    create_and_start(&c, dir.path(), &id, &["sleep", "1000"]).await;
    exec(&c, &id, "sh1", &["sh"], true).await;
    let mut resize = TtyWinResizeRequest::new();
    resize.container_id = id.clone();
    resize.exec_id = "sh1".into();
    resize.row = 40;
    resize.column = 100;
    let _: Empty = call(&c, SVC, "TtyWinResize", &resize).await.unwrap();
    write_stdin(&c, &id, "sh1", b"stty size; tty\n").await;
    let out = read_until(&c, &id, "sh1", "/dev/pts/").await;
    assert!(out.contains("40 100"), "{out:?}");
    resize.row = 33;
    resize.column = 77;
    let _: Empty = call(&c, SVC, "TtyWinResize", &resize).await.unwrap();
    write_stdin(&c, &id, "sh1", b"stty size; exit 7\n").await;
    let out = read_until(&c, &id, "sh1", "33 77").await;
    assert!(out.contains("33 77"), "{out:?}");
    assert_eq!(wait(&c, &id, "sh1").await.unwrap(), 7);
    // A process without a terminal cannot be resized.
    resize.exec_id = String::new();
    assert_eq!(
        call::<_, Empty>(&c, SVC, "TtyWinResize", &resize).await.unwrap_err().0,
        Code::FAILED_PRECONDITION
    );
    remove(&c, &id).await;

    // A container whose init has a terminal: output arrives on stdout, CloseStdin is ^D.
    let id = unique("ttyinit");
    let req = with_terminal(create_req(&dir.path().join("t"), &id, &["cat"]));
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.clone();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();
    write_stdin(&c, &id, &id, b"typed\n").await;
    let out = read_until(&c, &id, &id, "typed\r\ntyped\r\n").await;
    assert!(out.contains("typed\r\ntyped\r\n"), "{out:?}");
    let mut close = CloseStdinRequest::new();
    close.container_id = id.clone();
    let _: Empty = call(&c, SVC, "CloseStdin", &close).await.unwrap();
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0);
    remove(&c, &id).await;
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn hundred_mib_stream_through_read_stdout_keeps_its_checksum() {
    let agent = agent();
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("stream");
    create_and_start(
        &c,
        dir.path(),
        &id,
        &[
            "sh",
            "-c",
            "exec 3>&1; head -c 104857600 /dev/urandom | tee /proc/self/fd/3 | md5sum >&2",
        ],
    )
    .await;
    let got = dir.path().join("got");
    let mut f = std::fs::File::create(&got).unwrap();
    let mut total = 0usize;
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = id.clone();
        r.exec_id = id.clone();
        r.len = 1 << 20;
        let resp: ReadStreamResponse = call(&c, SVC, "ReadStdout", &r).await.unwrap();
        if resp.data.is_empty() {
            break;
        }
        total += resp.data.len();
        std::io::Write::write_all(&mut f, &resp.data).unwrap();
    }
    drop(f);
    assert_eq!(total, 100 << 20);
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0);
    let theirs = String::from_utf8(read_all(&c, &id, &id, "ReadStderr").await).unwrap();
    let ours = std::process::Command::new("md5sum").arg(&got).output().unwrap();
    let ours = String::from_utf8(ours.stdout).unwrap();
    assert_eq!(
        theirs.split_whitespace().next().unwrap(),
        ours.split_whitespace().next().unwrap()
    );
    remove(&c, &id).await;
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn oom_kill_is_reported_by_get_oom_event() {
    let agent = agent();
    let c = agent.client().await;
    let waiter = agent.client().await;
    let oom =
        tokio::spawn(async move { call::<_, OOMEvent>(&waiter, SVC, "GetOOMEvent", &GetOOMEventRequest::new()).await });
    let dir = tempfile::tempdir().unwrap();
    let id = unique("oom");
    let mut req = create_req(
        dir.path(),
        &id,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
    );
    let linux = req.OCI.as_mut().unwrap().Linux.mut_or_insert_default();
    let mem = linux.Resources.mut_or_insert_default().Memory.mut_or_insert_default();
    mem.Limit = 32 << 20;
    mem.Swap = 32 << 20;
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.clone();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 137);
    let event = tokio::time::timeout(Duration::from_secs(10), oom)
        .await
        .expect("no OOM event within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(event.container_id, id);
    remove(&c, &id).await;
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn pause_resume_stats_and_process_list() {
    let agent = agent();
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("busy");
    create_and_start(&c, dir.path(), &id, &["sh", "-c", "while :; do :; done"]).await;
    let t0 = cpu_usage(&c, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t1 = cpu_usage(&c, &id).await;
    assert!(t1 > t0, "CPU usage did not move while busy: {t0} -> {t1}");

    let mut p = PauseContainerRequest::new();
    p.container_id = id.clone();
    let _: Empty = call(&c, SVC, "PauseContainer", &p).await.unwrap();
    // Pausing twice is a state error, not a crash.
    assert_eq!(
        call::<_, Empty>(&c, SVC, "PauseContainer", &p).await.unwrap_err().0,
        Code::FAILED_PRECONDITION
    );
    let f0 = cpu_usage(&c, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f1 = cpu_usage(&c, &id).await;
    assert_eq!(f0, f1, "CPU usage moved while paused");
    let mut r = ResumeContainerRequest::new();
    r.container_id = id.clone();
    let _: Empty = call(&c, SVC, "ResumeContainer", &r).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cpu_usage(&c, &id).await > f1, "CPU usage did not move after resume");

    // Process list: JSON pids, and a ps-like table naming the command.
    let pids = pids_of(&c, &id).await;
    assert_eq!(pids.len(), 1, "{pids:?}");
    let mut l = ListProcessesRequest::new();
    l.container_id = id.clone();
    l.format = "table".into();
    let table: ListProcessesResponse = call(&c, SVC, "ListProcesses", &l).await.unwrap();
    let table = String::from_utf8(table.process_list).unwrap();
    assert!(table.starts_with("UID"), "{table}");
    assert!(
        table.contains(&pids[0].to_string()) && table.contains("while :"),
        "{table}"
    );
    l.format = "yaml".into();
    assert_eq!(
        call::<_, ListProcessesResponse>(&c, SVC, "ListProcesses", &l)
            .await
            .unwrap_err()
            .0,
        Code::INVALID_ARGUMENT
    );

    // UpdateContainer changes a limit in the container's cgroup.
    let mut u = UpdateContainerRequest::new();
    u.container_id = id.clone();
    u.resources.mut_or_insert_default().Pids.mut_or_insert_default().Limit = 17;
    let _: Empty = call(&c, SVC, "UpdateContainer", &u).await.unwrap();
    let pids_max: Vec<String> = cgroup_dirs(&id)
        .into_iter()
        .filter_map(|d| std::fs::read_to_string(d.join("pids.max")).ok())
        .collect();
    assert_eq!(pids_max, ["17\n"]);

    // Unknown container ids are NOT_FOUND for every container RPC.
    let mut s = StatsContainerRequest::new();
    s.container_id = "nope".into();
    assert_eq!(
        call::<_, StatsContainerResponse>(&c, SVC, "StatsContainer", &s)
            .await
            .unwrap_err()
            .0,
        Code::NOT_FOUND
    );
    p.container_id = "nope".into();
    assert_eq!(
        call::<_, Empty>(&c, SVC, "PauseContainer", &p).await.unwrap_err().0,
        Code::NOT_FOUND
    );
    remove(&c, &id).await;
}

fn storage(driver: &str, source: &str, mount_point: &std::path::Path, options: &[&str]) -> Storage {
    let mut s = Storage::new();
    s.driver = driver.into();
    s.source = source.into();
    s.fstype = if driver == "ephemeral" {
        "tmpfs".into()
    } else {
        "bind".into()
    };
    s.options = options.iter().map(|o| o.to_string()).collect();
    s.mount_point = mount_point.display().to_string();
    s
}

fn mounted(path: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == path.to_str())
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn storages_are_mounted_for_their_users_and_released() {
    // Kata's runtimes put storages under /run/kata-containers; this test's go
    // under its own directory, which it adds to the allowed list.
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start_with(&[], &[("PITH_STORAGE_ROOTS", dir.path().to_str().unwrap())]);
    let c = agent.client().await;
    let shm = dir.path().join("sandbox-shm");
    let mut req = CreateSandboxRequest::new();
    req.sandbox_id = "sb".into();
    req.storages = vec![storage("ephemeral", "tmpfs", &shm, &["size=1m"])];
    let _: Empty = call(&c, SVC, "CreateSandbox", &req).await.unwrap();
    assert!(mounted(&shm), "sandbox tmpfs not mounted at {}", shm.display());

    // A host directory bound in through a container storage, then into the container.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello"), "from the storage\n").unwrap();
    let mp = dir.path().join("mnt").join("c1");
    let id = unique("stor");
    let mut create = create_req(&dir.path().join("r"), &id, &["cat", "/data/hello"]);
    create.storages = vec![storage("bind", data.to_str().unwrap(), &mp, &["ro"])];
    let mut m = protocols::oci::Mount::new();
    m.destination = "/data".into();
    m.source = mp.display().to_string();
    m.type_ = "bind".into();
    m.options = vec!["rbind".into(), "ro".into()];
    create.OCI.as_mut().unwrap().Mounts.push(m);
    let _: Empty = call(&c, SVC, "CreateContainer", &create).await.unwrap();
    assert!(mounted(&mp));
    let mut s = StartContainerRequest::new();
    s.container_id = id.clone();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();
    assert_eq!(wait(&c, &id, &id).await.unwrap(), 0);
    assert_eq!(read_all(&c, &id, &id, "ReadStdout").await, b"from the storage\n");
    remove(&c, &id).await;
    assert!(!mounted(&mp), "container storage still mounted after RemoveContainer");
    assert!(mounted(&shm), "sandbox storage must outlive the container");

    // A container whose storage fails leaves nothing mounted.
    let bad_id = unique("badstor");
    let mut bad = create_req(&dir.path().join("b"), &bad_id, &["true"]);
    let mp_ok = dir.path().join("mnt").join("ok");
    bad.storages = vec![
        storage("bind", data.to_str().unwrap(), &mp_ok, &[]),
        storage("nosuchdriver", "x", &dir.path().join("mnt").join("bad"), &[]),
    ];
    let (code, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &bad).await.unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("nosuchdriver"), "{msg}");
    assert!(!mounted(&mp_ok), "first storage not rolled back");

    // A storage outside the allowed directories is refused, naming the field.
    let out_id = unique("outside");
    let mut out = create_req(&dir.path().join("o"), &out_id, &["true"]);
    out.storages = vec![storage(
        "ephemeral",
        "tmpfs",
        std::path::Path::new("/etc/pith-must-not-exist"),
        &[],
    )];
    let (code, msg) = call::<_, Empty>(&c, SVC, "CreateContainer", &out).await.unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
    assert!(
        msg.contains("mount_point: /etc/pith-must-not-exist is not under"),
        "{msg}"
    );
    assert!(!std::path::Path::new("/etc/pith-must-not-exist").exists());

    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap();
    let _ = stopped(&mut agent).await;
    assert!(!mounted(&shm), "sandbox storage still mounted after DestroySandbox");
}
