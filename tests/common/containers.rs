//! Container helpers shared by the whole-agent tests: a busybox
//! CreateContainerRequest, create + start, read a stream to its end, wait, remove.

#![allow(dead_code)]

use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;
use ttrpc::proto::Code;
use ttrpc::r#async::Client;

use super::{busybox_rootfs, call};

pub const SVC: &str = "grpc.AgentService";

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
    let rootfs = busybox_rootfs(dir);
    let mut spec = oci_spec::runtime::Spec::default();
    let mut root = spec.root().clone().unwrap();
    root.set_path(rootfs);
    spec.set_root(Some(root));
    // The sandbox's hostname, not oci-spec's placeholder.
    spec.set_hostname(None);
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p.set_terminal(Some(false));
    spec.set_process(Some(p));
    let mut req = CreateContainerRequest::new();
    req.container_id = id.to_string();
    req.exec_id = id.to_string();
    req.OCI = protobuf::MessageField::some(pith_agent::oci_convert::from_oci(&spec));
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
