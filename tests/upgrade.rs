//! Live upgrade through the real binaries: this build and "the next
//! release" (the same source built with the `next-build` feature: another
//! version, persist version 4), an agent under its keeper, a client shaped
//! like Kata's shim (one connection, a WaitProcess pending, a ReadStdout loop
//! on a container printing a counter every millisecond). The agent upgrades,
//! rolls back from a binary that dies at start, and downgrades; the
//! connection, the calls, the containers, the device and the storages carry
//! on through all three.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::containers::{create_and_start, mounts_at, sh, storage, SVC};
use common::{call, Agent};
use protobuf::well_known_types::empty::Empty;
use protobuf::Message;
use protocols::agent::*;
use protocols::health::{CheckRequest, VersionCheckResponse};
use protocols::pith::{StatusRequest, StatusResponse, UpgradeResponse};
use ttrpc::proto::{Code, Request};
use ttrpc::r#async::Client;

/// The next-release build: `make test` builds it beside the agent
/// (`target/<profile>/pith-agent-next`); otherwise it is built here, in its
/// own target directory (the outer cargo holds this one).
fn next_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PITH_AGENT_NEXT_BIN") {
        return PathBuf::from(p);
    }
    let ours = Path::new(env!("CARGO_BIN_EXE_pith-agent"));
    let beside = ours.with_file_name("pith-agent-next");
    if beside.exists() {
        return beside;
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = ours.parent().unwrap().parent().unwrap().join("next");
            let st = std::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--bin",
                    "pith-agent",
                    "--features",
                    "next-build",
                    "--target-dir",
                ])
                .arg(&target)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo");
            assert!(st.success(), "cargo build --features next-build failed");
            target.join("debug/pith-agent")
        })
        .clone()
}

/// A call as Kata's shim makes WaitProcess and ReadStdout: no deadline.
async fn call_forever<Req: Message, Resp: Message>(
    c: &Client,
    method: &str,
    req: &Req,
) -> Result<Resp, (Code, String)> {
    let mut r = Request::new();
    r.service = SVC.into();
    r.method = method.into();
    r.payload = req.write_to_bytes().unwrap();
    match c.request(r).await {
        Ok(resp) => Ok(Resp::parse_from_bytes(&resp.payload).unwrap()),
        Err(ttrpc::Error::RpcStatus(s)) => Err((s.code(), s.message.clone())),
        Err(e) => panic!("{method}: transport error {e} (the connection broke)"),
    }
}

async fn version(c: &Client) -> String {
    let v: VersionCheckResponse = call(c, "grpc.Health", "Version", &CheckRequest::new()).await.unwrap();
    v.agent_version
}

async fn agent_pid(c: &Client) -> u32 {
    let s: StatusResponse = call(c, "pith.Introspection", "Status", &StatusRequest::new())
        .await
        .unwrap();
    s.pid
}

/// Copies the binary at `local` into the guest at `guest` with CopyFile, as a host does.
async fn copy_in(c: &Client, local: &Path, guest: &Path) {
    pithctl::upgrade::copy_in(c, local, guest.to_str().unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
}

async fn upgrade(c: &Client, binary: &Path) -> Result<UpgradeResponse, String> {
    pithctl::upgrade::upgrade(
        c,
        binary.to_str().unwrap(),
        Duration::from_secs(10),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| e.to_string())
}

/// Reads the counter container's stdout to its end (one ReadStdout at a
/// time, as the shim does); returns every line.
async fn read_counter(c: Client, id: String) -> Vec<u64> {
    let mut text = Vec::new();
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = id.clone();
        r.exec_id = id.clone();
        r.len = 32 * 1024;
        match call_forever::<_, ReadStreamResponse>(&c, "ReadStdout", &r).await {
            Ok(resp) if resp.data.is_empty() => break,
            Ok(resp) => text.extend_from_slice(&resp.data),
            Err(e) => panic!("ReadStdout: {e:?}"),
        }
    }
    String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a counter line: {l:?}")))
        .collect()
}

/// A binary that answers the check as a next release would, then dies at start.
fn broken_binary(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("broken-agent");
    let script = "#!/bin/sh\n\
        if [ \"$1\" = --upgrade-check ]; then\n\
        echo '{\"agent_version\":\"9.9.9-broken\",\"persist_version\":4,\"min_reader_version\":1,\"handover_version\":1}'\n\
        exit 0\nfi\n\
        echo 'broken build: cannot start' >&2\nexit 1\n";
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn persist_version(state_dir: &Path) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(state_dir.join("sandbox.json")).unwrap()).unwrap();
    v["persist_version"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn upgrade_rollback_and_downgrade_keep_the_connection_calls_and_containers() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = common::loopdev::Loop::new(tmp.path());
    let guest = tmp.path().join("guest");
    std::fs::create_dir(&guest).unwrap();
    let agent = Agent::start_with(
        &["--keeper", "--hotplug-timeout", "1"],
        &[
            ("PITH_STORAGE_ROOTS", tmp.path().to_str().unwrap()),
            ("PITH_COPYFILE_ROOTS", guest.to_str().unwrap()),
        ],
    );
    let state_dir = agent.dir.path().join("state");
    let c = agent.client().await;
    pithctl::upgrade::negotiate(&c, Duration::from_secs(5)).await.unwrap();
    let shm = tmp.path().join("shm");
    let mut sb = CreateSandboxRequest::new();
    sb.sandbox_id = "sb-up".into();
    sb.hostname = "up-pod".into();
    sb.storages = vec![storage("ephemeral", "tmpfs", &shm)];
    let _: Empty = call(&c, SVC, "CreateSandbox", &sb).await.unwrap();

    // The idle container, with a bind storage and a hot-plugged device.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mp = tmp.path().join("mnt");
    let idle = "trap 'exit 3' TERM; while :; do sleep 1; done";
    let mut req = common::containers::create_req(&tmp.path().join("idle"), "idle", &["sh", "-c", idle]);
    req.storages = vec![storage("bind", data.to_str().unwrap(), &mp)];
    let _: Empty = call(&c, SVC, "CreateContainer", &req).await.unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = "idle".into();
    let _: Empty = call(&c, SVC, "StartContainer", &s).await.unwrap();
    let mut dev = protocols::pith::AddBlockDeviceRequest::new();
    dev.container_id = "idle".into();
    dev.type_ = "path".into();
    dev.address = disk.dev.to_string_lossy().into_owned();
    dev.container_path = "/dev/hotdisk".into();
    let _: protocols::pith::BlockDeviceResponse = call(&c, "pith.Devices", "AddBlockDevice", &dev).await.unwrap();
    let read_disk = "dd if=/dev/hotdisk of=/dev/null bs=512 count=1";
    assert_eq!(sh(&c, &tmp.path().join("idle"), "idle", read_disk).await.0, 0);

    // The counter, read by a loop on the same connection; a WaitProcess on
    // the idle container pending all along.
    let counter = "i=0; while :; do echo $i; i=$((i+1)); busybox usleep 1000; done";
    create_and_start(&c, &tmp.path().join("counter"), "counter", &["sh", "-c", counter]).await;
    let reader = tokio::spawn(read_counter(c.clone(), "counter".into()));
    let c2 = c.clone();
    let waiting = tokio::spawn(async move {
        let mut w = WaitProcessRequest::new();
        w.container_id = "idle".into();
        w.exec_id = "idle".into();
        call_forever::<_, WaitProcessResponse>(&c2, "WaitProcess", &w).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = agent_pid(&c).await;
    let old_version = version(&c).await;

    // 1. Upgrade to the next release, copied in with CopyFile.
    let next = guest.join("pith-agent-next");
    copy_in(&c, &next_bin(), &next).await;
    // Checks sent all along, on the same connection: those sent during the
    // hand-over wait in the kernel and are answered afterwards.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c3, stop3) = (c.clone(), stop.clone());
    let checks = tokio::spawn(async move {
        let mut n = 0;
        while !stop3.load(std::sync::atomic::Ordering::Relaxed) {
            let _: protocols::health::HealthCheckResponse = call(&c3, "grpc.Health", "Check", &CheckRequest::new())
                .await
                .expect("a Check across the upgrade");
            n += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        n
    });
    let up = upgrade(&c, &next)
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", agent.log()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(checks.await.unwrap() > 0);
    assert_eq!(up.old_version, old_version);
    assert!(up.new_version.ends_with("+next"), "{up:?}");
    assert!(up.connections_carried >= 1 && up.calls_carried >= 1, "{up:?}");
    assert_eq!(
        version(&c).await,
        up.new_version,
        "Version shows the new agent, on the same connection"
    );
    assert_eq!(agent_pid(&c).await, pid, "the same process");
    assert_eq!(persist_version(&state_dir), 4, "the next release writes its own format");
    assert_eq!(
        sh(&c, &tmp.path().join("idle"), "idle", read_disk).await.0,
        0,
        "the device is still allowed"
    );
    assert!(sh(&c, &tmp.path().join("idle"), "idle", "hostname")
        .await
        .1
        .contains("up-pod"));
    assert_eq!(
        (mounts_at(&shm), mounts_at(&mp)),
        (1, 1),
        "storages kept, not mounted twice"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. A binary that dies at start: the previous one serves again, the call says why.
    let err = upgrade(&c, &broken_binary(&guest)).await.unwrap_err();
    assert!(err.contains("ABORTED"), "{err}");
    assert!(err.contains("exit status 1"), "{err}");
    assert!(
        err.contains(&format!("pith-agent {} serves again", up.new_version)),
        "{err}"
    );
    assert_eq!(version(&c).await, up.new_version);
    assert_eq!(sh(&c, &tmp.path().join("idle"), "idle", read_disk).await.0, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3. Downgrade to this build: it reads the v4 file (its min_reader_version is 1).
    let this = guest.join("pith-agent");
    copy_in(&c, Path::new(env!("CARGO_BIN_EXE_pith-agent")), &this).await;
    let down = upgrade(&c, &this)
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", agent.log()));
    assert_eq!(down.new_version, old_version);
    assert_eq!(version(&c).await, old_version);
    assert_eq!(persist_version(&state_dir), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each replaced agent's last line was written before its execve, whole.
    let log = agent.log();
    let last_words: Vec<&str> = log.lines().filter(|l| l.contains("upgrade: handing over")).collect();
    assert_eq!(last_words.len(), 3, "one per hand-over; log:\n{log}");
    for line in last_words {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }

    // The WaitProcess from before the first upgrade gets the real status.
    let mut sig = SignalProcessRequest::new();
    sig.container_id = "idle".into();
    sig.exec_id = "idle".into();
    sig.signal = 15;
    let _: Empty = call(&c, SVC, "SignalProcess", &sig).await.unwrap();
    assert_eq!(
        waiting.await.unwrap(),
        Ok(WaitProcessResponse {
            status: 3,
            ..Default::default()
        })
    );
    // Every counter value once, in order, across the three hand-overs.
    sig.container_id = "counter".into();
    sig.exec_id = "counter".into();
    sig.signal = 9;
    let _: Empty = call(&c, SVC, "SignalProcess", &sig).await.unwrap();
    let seen = reader.await.unwrap();
    assert!(seen.len() > 500, "the counter ran: {} values", seen.len());
    let first_wrong = seen.iter().enumerate().find(|(i, v)| **v != *i as u64);
    assert_eq!(first_wrong, None, "a value lost or repeated");
    let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
        .await
        .unwrap();
    assert_eq!((mounts_at(&shm), mounts_at(&mp)), (0, 0));
}

/// A new binary that starts but never gets ready is killed at the bound and
/// the previous one serves again, on the same connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_binary_that_never_gets_ready_is_rolled_back_at_the_bound() {
    use std::os::unix::fs::PermissionsExt;
    let agent = Agent::start(&["--keeper"]);
    let c = agent.client().await;
    pithctl::upgrade::negotiate(&c, Duration::from_secs(5)).await.unwrap();
    let stuck = agent.dir.path().join("stuck-agent");
    let id = pith_agent_identity();
    std::fs::write(
        &stuck,
        format!("#!/bin/sh\n[ \"$1\" = --upgrade-check ] && {{ echo '{id}'; exit 0; }}\nexec sleep 1000\n"),
    )
    .unwrap();
    std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = pithctl::upgrade::upgrade(
        &c,
        stuck.to_str().unwrap(),
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ABORTED") && err.contains("not ready within 500 ms"),
        "{err}"
    );
    assert_eq!(
        version(&c).await,
        pith_agent::AGENT_VERSION,
        "the previous binary serves, same connection"
    );
}

/// This build's answer to `--upgrade-check`.
fn pith_agent_identity() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pith-agent"))
        .arg("--upgrade-check")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Refusals change nothing: no keeper, a level below 4, a binary that does
/// not know the check, one whose state could not be read back.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_that_cannot_work_is_refused_and_the_agent_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Agent::start(&[]);
    let c = plain.client().await;
    let at_1 = upgrade(&c, Path::new("/bin/true")).await.unwrap_err();
    assert!(
        at_1.contains("FAILED_PRECONDITION") && at_1.contains("needs API level 4"),
        "{at_1}"
    );
    pithctl::upgrade::negotiate(&c, Duration::from_secs(5)).await.unwrap();
    let no_keeper = upgrade(&c, Path::new(env!("CARGO_BIN_EXE_pith-agent")))
        .await
        .unwrap_err();
    assert!(
        no_keeper.contains("FAILED_PRECONDITION") && no_keeper.contains("--keeper"),
        "{no_keeper}"
    );

    let kept = Agent::start(&["--keeper"]);
    let c = kept.client().await;
    pithctl::upgrade::negotiate(&c, Duration::from_secs(5)).await.unwrap();
    let pid = agent_pid(&c).await;
    let relative = upgrade(&c, Path::new("pith-agent")).await.unwrap_err();
    assert!(
        relative.contains("INVALID_ARGUMENT") && relative.contains("absolute"),
        "{relative}"
    );
    let old = {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join("old-agent");
        std::fs::write(
            &p,
            "#!/bin/sh\necho \"error: unexpected argument '$1' found\" >&2\nexit 2\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let unknown = upgrade(&c, &old).await.unwrap_err();
    assert!(
        unknown.contains("FAILED_PRECONDITION") && unknown.contains("unexpected argument '--upgrade-check'"),
        "{unknown}"
    );
    let far = {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join("far-agent");
        let id = r#"{"agent_version":"7.0.0","persist_version":9,"min_reader_version":9,"handover_version":1}"#;
        std::fs::write(&p, format!("#!/bin/sh\necho '{id}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let far = upgrade(&c, &far).await.unwrap_err();
    assert!(
        far.contains("FAILED_PRECONDITION") && far.contains("could not take the state back"),
        "{far}"
    );
    assert_eq!(agent_pid(&c).await, pid, "the same agent serves, untouched");
    let _: protocols::health::HealthCheckResponse =
        call(&c, "grpc.Health", "Check", &CheckRequest::new()).await.unwrap();
}
