//! Container helpers shared by the whole-agent tests: a busybox
//! CreateContainerRequest, create + start, read a stream to its end, wait,
//! remove, a container's pids and their v1 cgroup directories.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

use super::{busybox_rootfs, call};

/// Runs `sh -c script` in container `id`; returns exit status and stdout+stderr.
pub async fn sh(c: &Client, dir: &Path, id: &str, script: &str) -> (i32, String) {
    let exec_id = unique("x");
    let mut e = ExecProcessRequest::new();
    e.container_id = id.into();
    e.exec_id = exec_id.clone();
    let mut spec = create_req(
        &dir.join("exec").join(&exec_id),
        id,
        &["sh", "-c", &format!("exec 2>&1; {script}")],
    );
    e.process = spec.OCI.take().unwrap().Process;
    let _: Empty = call(c, SVC, "ExecProcess", &e).await.unwrap();
    let out = String::from_utf8_lossy(&read_all(c, id, &exec_id, "ReadStdout").await).into_owned();
    (wait(c, id, &exec_id).await.unwrap(), out)
}

pub const SVC: &str = "grpc.AgentService";

/// A storage of `driver` from `source` at `mount_point` (`ephemeral`: a
/// tmpfs; anything else a bind mount).
pub fn storage(driver: &str, source: &str, mount_point: &Path) -> Storage {
    let mut s = Storage::new();
    s.driver = driver.into();
    s.source = source.into();
    s.fstype = if driver == "ephemeral" { "tmpfs" } else { "bind" }.into();
    s.mount_point = mount_point.display().to_string();
    s
}

/// How many mounts sit at `path` (in this process's mount namespace).
pub fn mounts_at(path: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == path.to_str())
        .count()
}

pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A CreateContainerRequest for a busybox container running `args`.
pub fn create_req(dir: &std::path::Path, id: &str, args: &[&str]) -> CreateContainerRequest {
    let mut req = super::container_request(busybox_rootfs(dir), id, args);
    // The sandbox's hostname, not oci-spec's placeholder.
    req.OCI.as_mut().unwrap().Hostname.clear();
    req
}

pub async fn create_and_start(c: &Client, dir: &std::path::Path, id: &str, args: &[&str]) {
    let _: Empty = call(c, SVC, "CreateContainer", &create_req(dir, id, args))
        .await
        .unwrap();
    let mut s = StartContainerRequest::new();
    s.container_id = id.into();
    let _: Empty = call(c, SVC, "StartContainer", &s).await.unwrap();
}

/// The host pids of container `id` (ListProcesses, json).
pub async fn pids_of(c: &Client, id: &str) -> Vec<i32> {
    let mut r = ListProcessesRequest::new();
    r.container_id = id.into();
    r.format = "json".into();
    let resp: ListProcessesResponse = call(c, SVC, "ListProcesses", &r).await.unwrap();
    serde_json::from_slice(&resp.process_list).unwrap()
}

/// The directory of process `pid`'s v1 cgroup of `controller` (None on cgroup v2).
pub fn v1_cgroup_dir(pid: i32, controller: &str) -> Option<PathBuf> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = cg.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        ctrl.split(',').any(|c| c == controller).then(|| path.to_string())
    })?;
    Some(
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(rel.trim_start_matches('/')),
    )
}

pub async fn read_all(c: &Client, id: &str, exec_id: &str, method: &str) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = id.into();
        r.exec_id = exec_id.into();
        r.len = 1 << 20;
        let resp: ReadStreamResponse = call(c, SVC, method, &r).await.unwrap();
        if resp.data.is_empty() {
            return out;
        }
        out.extend_from_slice(&resp.data);
    }
}

pub async fn wait(c: &Client, id: &str, exec_id: &str) -> Result<i32, (Code, String)> {
    let mut w = WaitProcessRequest::new();
    w.container_id = id.into();
    w.exec_id = exec_id.into();
    call::<_, WaitProcessResponse>(c, SVC, "WaitProcess", &w)
        .await
        .map(|r| r.status)
}

pub async fn remove(c: &Client, id: &str) {
    let mut r = RemoveContainerRequest::new();
    r.container_id = id.into();
    r.timeout = 1;
    let _: Empty = call(c, SVC, "RemoveContainer", &r).await.unwrap();
}

/// `req` as a Kata host sends it (the Go runtime's `constrainGRPCSpec`):
/// without the network and cgroup namespaces.
pub fn as_kata_sends(mut req: CreateContainerRequest) -> CreateContainerRequest {
    if let Some(linux) = req.OCI.as_mut().and_then(|s| s.Linux.as_mut()) {
        linux.Namespaces.retain(|n| n.Type != "network" && n.Type != "cgroup");
    }
    req
}

/// `n` create → start → wait → remove cycles of the container `req(id)`
/// (which must exit 0), after two for warm-up; medians in ms of
/// CreateContainer and of the whole cycle. A figure to print, never to assert on.
pub async fn cycle_medians(c: &Client, req: impl Fn(&str) -> CreateContainerRequest, n: usize) -> (f64, f64) {
    cycle_medians_after(c, req, n, std::time::Duration::ZERO).await
}

/// [`cycle_medians`], idling `gap` before each cycle (warm-up included).
pub async fn cycle_medians_after(
    c: &Client,
    req: impl Fn(&str) -> CreateContainerRequest,
    n: usize,
    gap: std::time::Duration,
) -> (f64, f64) {
    let (mut create, mut total) = (Vec::new(), Vec::new());
    for i in 0..n + 2 {
        let id = unique("cycle");
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let t = std::time::Instant::now();
        let _: Empty = call(c, SVC, "CreateContainer", &req(&id)).await.unwrap();
        let created = t.elapsed();
        let mut s = StartContainerRequest::new();
        s.container_id = id.clone();
        let _: Empty = call(c, SVC, "StartContainer", &s).await.unwrap();
        assert_eq!(wait(c, &id, &id).await, Ok(0), "container {id}");
        remove(c, &id).await;
        if i >= 2 {
            create.push(created.as_secs_f64() * 1e3);
            total.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    (median(create), median(total))
}
