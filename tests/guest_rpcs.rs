//! Guest basics over the real socket: GetGuestDetails, CopyFile, ReseedRandomDev,
//! SetGuestDateTime, OnlineCPUMem. CopyFile writes under a temporary root given
//! by PITH_COPYFILE_ROOTS; sysfs is a fake tree given by PITH_SYSFS_ROOT.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{call, Agent};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use protocols::health::{health_check_response::ServingStatus, CheckRequest, HealthCheckResponse};
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

const SVC: &str = "grpc.AgentService";

/// An agent whose CopyFile root is `<tmp>/copy` and whose sysfs is a fake tree
/// with a 128 MiB memory block size, a probe file, CPUs 0-1 online and CPUs 2-3
/// offline, and memory blocks 0 (online) and 1 (offline).
struct Setup {
    agent: Agent,
    tmp: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("sys");
        let mem = sys.join("devices/system/memory");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("block_size_bytes"), "8000000\n").unwrap();
        std::fs::write(mem.join("probe"), "").unwrap();
        for (i, state) in ["online", "offline"].iter().enumerate() {
            let b = mem.join(format!("memory{i}"));
            std::fs::create_dir(&b).unwrap();
            std::fs::write(b.join("state"), format!("{state}\n")).unwrap();
        }
        let cpu = sys.join("devices/system/cpu");
        for (i, online) in [None, Some("1"), Some("0"), Some("0")].iter().enumerate() {
            let c = cpu.join(format!("cpu{i}"));
            std::fs::create_dir_all(&c).unwrap();
            if let Some(o) = online {
                std::fs::write(c.join("online"), format!("{o}\n")).unwrap();
            }
        }
        let root = tmp.path().join("copy");
        let agent = Agent::start_with(
            &[],
            &[
                ("PITH_COPYFILE_ROOTS", root.to_str().unwrap()),
                ("PITH_SYSFS_ROOT", sys.to_str().unwrap()),
            ],
        );
        Setup { agent, tmp }
    }

    fn root(&self) -> std::path::PathBuf {
        self.tmp.path().join("copy")
    }

    fn sys(&self, rel: &str) -> String {
        std::fs::read_to_string(self.tmp.path().join("sys").join(rel))
            .unwrap()
            .trim()
            .to_string()
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

async fn details(c: &Client) -> GuestDetailsResponse {
    let mut r = GuestDetailsRequest::new();
    r.mem_block_size = true;
    r.mem_hotplug_probe = true;
    call(c, SVC, "GetGuestDetails", &r).await.unwrap()
}

fn copy_req(path: &Path, size: usize, offset: usize, data: &[u8]) -> CopyFileRequest {
    let mut r = CopyFileRequest::new();
    r.path = path.display().to_string();
    r.file_size = size as i64;
    r.file_mode = libc::S_IFREG | 0o640;
    r.dir_mode = 0o750;
    r.uid = -1;
    r.gid = -1;
    r.offset = offset as i64;
    r.data = data.to_vec();
    r
}

async fn copy(c: &Client, r: &CopyFileRequest) -> Result<Empty, (Code, String)> {
    call(c, SVC, "CopyFile", r).await
}

#[tokio::test]
async fn get_guest_details_answers_what_was_asked() {
    let s = Setup::start();
    let c = s.agent.client().await;
    let d = details(&c).await;
    assert_eq!(d.mem_block_size_bytes, 128 << 20);
    assert!(d.support_mem_hotplug_probe);
    let a = d.agent_details.as_ref().expect("agent_details");
    assert_eq!(a.version, pith_agent::AGENT_VERSION);
    assert!(!a.init_daemon, "the test agent is not PID 1");
    assert!(a.supports_seccomp);
    assert_eq!(a.device_handlers, pith_agent::DEVICE_HANDLERS);
    assert_eq!(a.storage_handlers, pith_agent::STORAGE_DRIVERS);

    let plain: GuestDetailsResponse = call(&c, SVC, "GetGuestDetails", &GuestDetailsRequest::new())
        .await
        .unwrap();
    assert_eq!(plain.mem_block_size_bytes, 0);
    assert!(!plain.support_mem_hotplug_probe);
    assert!(plain.agent_details.is_some());
}

#[tokio::test]
async fn copy_file_in_chunks_lands_whole_with_mode_and_owner() {
    let s = Setup::start();
    let c = s.agent.client().await;
    let dest = s.root().join("sandbox/shared/config/app.conf");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let chunk = 128 * 1024;
    let mut offset = 0;
    while offset < body.len() {
        let end = (offset + chunk).min(body.len());
        let mut r = copy_req(&dest, body.len(), offset, &body[offset..end]);
        r.uid = 1000;
        r.gid = 1001;
        let _ = copy(&c, &r).await.unwrap();
        offset = end;
        if offset < body.len() {
            assert!(!dest.exists(), "{} visible after {offset} bytes", dest.display());
        }
    }
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let m = std::fs::metadata(&dest).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    let parent = std::fs::metadata(dest.parent().unwrap()).unwrap();
    assert_eq!(parent.permissions().mode() & 0o7777, 0o750);
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
        assert_eq!((parent.uid(), parent.gid()), (1000, 1001));
    }
    // Only the file: no temporary left beside it.
    assert_eq!(std::fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);

    // A symlink and a directory, by the type bits of file_mode.
    let link = s.root().join("sandbox/shared/config/current");
    let mut r = copy_req(&link, 0, 0, b"app.conf");
    r.file_mode = libc::S_IFLNK | 0o777;
    let _ = copy(&c, &r).await.unwrap();
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("app.conf"));
    let dir = s.root().join("sandbox/shared/empty");
    let mut r = copy_req(&dir, 0, 0, b"");
    r.file_mode = libc::S_IFDIR | 0o700;
    let _ = copy(&c, &r).await.unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o700);
}

#[tokio::test]
async fn copy_file_outside_the_roots_is_invalid_and_the_agent_keeps_serving() {
    let mut s = Setup::start();
    let c = s.agent.client().await;
    let root = s.root();
    std::fs::create_dir_all(&root).unwrap();
    let outside = s.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();

    let bad = [
        Path::new("/etc/pith-guest-rpcs-must-not-exist").to_path_buf(),
        root.join("../outside/f"),
        root.join("sub/../../outside/f"),
        root.join("escape/f"),
        root.join("escape/deeper/f"),
        s.tmp.path().join("copy-sibling/f"),
    ];
    for p in &bad {
        let (code, msg) = copy(&c, &copy_req(p, 1, 0, b"x")).await.unwrap_err();
        assert_eq!(code, Code::INVALID_ARGUMENT, "{}: {msg}", p.display());
        assert!(msg.contains("CopyFile"), "{msg}");
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!Path::new("/etc/pith-guest-rpcs-must-not-exist").exists());
    // A chunk that does not fit the file is refused too.
    let (code, _) = copy(&c, &copy_req(&root.join("f"), 1, 0, b"too long"))
        .await
        .unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT);

    assert!(s.agent.alive());
    let h: HealthCheckResponse = call(&c, "grpc.Health", "Check", &CheckRequest::new()).await.unwrap();
    assert_eq!(h.status.enum_value(), Ok(ServingStatus::SERVING));
    let _ = copy(&c, &copy_req(&root.join("ok"), 2, 0, b"ok")).await.unwrap();
    assert_eq!(std::fs::read(root.join("ok")).unwrap(), b"ok");
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn reseed_random_dev() {
    let s = Setup::start();
    let c = s.agent.client().await;
    let mut r = ReseedRandomDevRequest::new();
    r.data = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    let _: Empty = call(&c, SVC, "ReseedRandomDev", &r).await.unwrap();
}

#[tokio::test]
async fn set_guest_date_time() {
    let s = Setup::start();
    let c = s.agent.client().await;
    // Out of range: refused before the clock is touched.
    let mut bad = SetGuestDateTimeRequest::new();
    bad.Sec = 1;
    bad.Usec = 1_000_000;
    let (code, _) = call::<_, Empty>(&c, SVC, "SetGuestDateTime", &bad).await.unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT);
    // An empty request (Sec unset) would mean 1970: refused.
    let (code, msg) = call::<_, Empty>(&c, SVC, "SetGuestDateTime", &SetGuestDateTimeRequest::new())
        .await
        .unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
}

#[tokio::test]
#[cfg_attr(not(pith_root), ignore = "needs root")]
async fn set_guest_date_time_sets_the_clock() {
    let s = Setup::start();
    let c = s.agent.client().await;
    // Set the clock to what it is (plus half a measured round trip), so the
    // machine's time stays right.
    let t0 = Instant::now();
    let _ = details(&c).await;
    let half_rtt = t0.elapsed() / 2;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + half_rtt;
    let mut r = SetGuestDateTimeRequest::new();
    r.Sec = now.as_secs() as i64;
    r.Usec = now.subsec_micros() as i64;
    let _: Empty = call(&c, SVC, "SetGuestDateTime", &r).await.unwrap();
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let drift = after.abs_diff(now);
    assert!(
        drift < Duration::from_secs(1),
        "clock off by {drift:?} after SetGuestDateTime"
    );
}

#[tokio::test]
async fn online_cpu_mem_over_fake_sysfs() {
    let s = Setup::start();
    let c = s.agent.client().await;
    // Kata's meaning: nb_cpus is the total that should be online. cpu0 and
    // cpu1 are: 3 means one more.
    let mut r = OnlineCPUMemRequest::new();
    r.nb_cpus = 3;
    r.cpu_only = true;
    let _: Empty = call(&c, SVC, "OnlineCPUMem", &r).await.unwrap();
    assert_eq!(s.sys("devices/system/cpu/cpu2/online"), "1");
    assert_eq!(s.sys("devices/system/cpu/cpu3/online"), "0");
    assert_eq!(s.sys("devices/system/memory/memory1/state"), "offline");

    r.nb_cpus = 4;
    r.cpu_only = false;
    let _: Empty = call(&c, SVC, "OnlineCPUMem", &r).await.unwrap();
    assert_eq!(s.sys("devices/system/cpu/cpu3/online"), "1");
    assert_eq!(s.sys("devices/system/memory/memory1/state"), "online");

    // More than exist: after its retries (about 5 s) the agent says so.
    r.nb_cpus = 5;
    r.cpu_only = true;
    let (code, msg) = call::<_, Empty>(&c, SVC, "OnlineCPUMem", &r).await.unwrap_err();
    assert_eq!(code, Code::DEADLINE_EXCEEDED, "{msg}");
    assert!(msg.contains("failed to online 5 CPU(s): 4 online"), "{msg}");
}
