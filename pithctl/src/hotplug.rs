//! `pithctl hotplug` / `hotunplug`: plug a disk image into the VM through QMP
//! (`blockdev-add` + `device_add scsi-hd` or `virtio-blk-pci`), then into a
//! running container through `pith.Devices/AddBlockDevice`; and the reverse
//! (`RemoveBlockDevice`, `device_del`, wait for `DEVICE_DELETED`, `blockdev-del`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use pithctl::client::call;
use protocols::pith::{
    AddBlockDeviceRequest, BlockDeviceResponse, HelloRequest, HelloResponse, RemoveBlockDeviceRequest,
};
use serde_json::{json, Value};
use ttrpc::r#async::Client;

/// `pithctl hotplug`.
#[derive(Args, Debug)]
pub struct PlugArgs {
    /// Container id.
    pub container: String,
    /// Disk image on the host (raw).
    pub image: PathBuf,
    /// QMP socket of the VM (qemu -qmp unix:PATH,server=on,wait=off).
    #[arg(long)]
    pub qmp: PathBuf,
    /// scsi (virtio-scsi, scsi-hd) or blk (virtio-blk-pci).
    #[arg(long, default_value = "scsi")]
    pub bus: String,
    /// Device id in the VM (also names the block node, `<name>-drive`).
    #[arg(long, default_value = "pithdisk1")]
    pub name: String,
    /// SCSI bus of the virtio-scsi controller.
    #[arg(long, default_value = "scsi0.0")]
    pub scsi_bus: String,
    /// SCSI target id.
    #[arg(long, default_value_t = 0)]
    pub scsi_id: u32,
    /// SCSI LUN.
    #[arg(long, default_value_t = 1)]
    pub lun: u32,
    /// Path of the node inside the container.
    #[arg(long, default_value = "/dev/xvdb")]
    pub path: String,
    /// Permission bits of the node, octal.
    #[arg(long, default_value = "660")]
    pub mode: String,
    /// Owner of the node.
    #[arg(long, default_value_t = 0)]
    pub uid: u32,
    /// Group of the node.
    #[arg(long, default_value_t = 0)]
    pub gid: u32,
}

/// `pithctl hotunplug`.
#[derive(Args, Debug)]
pub struct UnplugArgs {
    /// Container id.
    pub container: String,
    /// QMP socket of the VM.
    #[arg(long)]
    pub qmp: PathBuf,
    /// Device id given to hotplug.
    #[arg(long, default_value = "pithdisk1")]
    pub name: String,
    /// Path of the node inside the container.
    #[arg(long, default_value = "/dev/xvdb")]
    pub path: String,
}

/// A QMP connection (one command at a time; events are kept for [`Qmp::wait_event`]).
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let s = UnixStream::connect(path).with_context(|| format!("connect to QMP socket {}", path.display()))?;
        s.set_read_timeout(Some(timeout)).context("set QMP read timeout")?;
        let mut q = Qmp {
            reader: BufReader::new(s.try_clone().context("dup QMP socket")?),
            writer: s,
            events: Vec::new(),
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            bail!("{}: not a QMP greeting: {greeting}", path.display());
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).context("read from QMP")? == 0 {
            bail!("QMP connection closed");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))
    }

    /// Runs a command; returns its `return` value, or its `error` as an error.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value> {
        let mut msg = json!({ "execute": cmd });
        if args.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = args;
        }
        writeln!(self.writer, "{msg}").with_context(|| format!("send QMP {cmd}"))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!(
                    "QMP {cmd}: {}",
                    e.get("desc").and_then(Value::as_str).unwrap_or("error")
                );
            }
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }

    /// Waits for event `name` whose `data.device` is `device`.
    pub fn wait_event(&mut self, name: &str, device: &str, timeout: Duration) -> Result<()> {
        let is = |v: &Value| v["event"] == name && v["data"]["device"] == device;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(is) {
                self.events.remove(i);
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("no QMP {name} event for {device} within {timeout:?}");
            }
            let v = self
                .read()
                .with_context(|| format!("wait for QMP {name} of {device}"))?;
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }
}

/// The PCI path (`bb/dd`, hex slots from the root bus) of the device with
/// qdev id `id` in a `query-pci` answer, searching behind bridges.
pub fn pci_path(query_pci: &Value, id: &str) -> Option<String> {
    fn search(devices: &Value, id: &str, prefix: &[u64]) -> Option<Vec<u64>> {
        for d in devices.as_array()? {
            let slot = d["slot"].as_u64()?;
            let mut here = prefix.to_vec();
            here.push(slot);
            if d["qdev_id"] == id {
                return Some(here);
            }
            if let Some(found) = search(&d["pci_bridge"]["devices"], id, &here) {
                return Some(found);
            }
        }
        None
    }
    let root = query_pci.as_array()?.iter().find(|b| b["bus"] == 0)?;
    let slots = search(&root["devices"], id, &[])?;
    Some(slots.iter().map(|s| format!("{s:02x}")).collect::<Vec<_>>().join("/"))
}

async fn negotiate(c: &Client, timeout: Duration) -> Result<()> {
    let mut h = HelloRequest::new();
    h.host_name = "pithctl".into();
    h.host_version = pithctl::VERSION.into();
    (h.min_level, h.max_level) = (protocols::levels::LEVEL_BLOCK_HOTPLUG, protocols::levels::MAX_LEVEL);
    h.wanted_features = vec!["block-hotplug".into()];
    let _: HelloResponse = call(c, "pith.Negotiation", "Hello", &h, timeout).await?;
    Ok(())
}

fn answer(r: &BlockDeviceResponse) -> String {
    json!({"guestPath": r.guest_path, "major": r.major, "minor": r.minor, "containerPath": r.container_path})
        .to_string()
}

/// Plugs `a.image` into the VM and the container; prints the agent's answer as JSON.
pub async fn plug(c: &Client, a: PlugArgs, timeout: Duration) -> Result<String> {
    let mode = u32::from_str_radix(&a.mode, 8).with_context(|| format!("--mode {:?}: want octal", a.mode))?;
    let image = std::fs::canonicalize(&a.image).with_context(|| format!("disk image {}", a.image.display()))?;
    let mut q = Qmp::connect(&a.qmp, timeout)?;
    let node = format!("{}-drive", a.name);
    q.execute(
        "blockdev-add",
        json!({"node-name": node, "driver": "raw", "file": {"driver": "file", "filename": image}}),
    )?;
    let (kind, address) = match a.bus.as_str() {
        "scsi" => {
            q.execute(
                "device_add",
                json!({"driver": "scsi-hd", "id": a.name, "bus": a.scsi_bus, "drive": node,
                       "channel": 0, "scsi-id": a.scsi_id, "lun": a.lun}),
            )?;
            ("scsi", format!("{}:{}", a.scsi_id, a.lun))
        }
        "blk" => {
            q.execute(
                "device_add",
                json!({"driver": "virtio-blk-pci", "id": a.name, "drive": node}),
            )?;
            let pci = q.execute("query-pci", json!({}))?;
            let path = pci_path(&pci, &a.name).ok_or_else(|| anyhow!("query-pci does not list device {}", a.name))?;
            ("blk", path)
        }
        other => bail!("--bus {other:?}: want scsi or blk"),
    };
    negotiate(c, timeout).await?;
    let mut r = AddBlockDeviceRequest::new();
    r.container_id = a.container.clone();
    (r.type_, r.address) = (kind.into(), address);
    r.container_path = a.path.clone();
    (r.mode, r.uid, r.gid) = (mode, a.uid, a.gid);
    // The agent waits up to its own hotplug timeout; give it that and some.
    let resp: BlockDeviceResponse = call(
        c,
        "pith.Devices",
        "AddBlockDevice",
        &r,
        timeout.max(Duration::from_secs(10)),
    )
    .await?;
    Ok(answer(&resp))
}

/// Removes the node from the container, then the disk from the VM.
pub async fn unplug(c: &Client, a: UnplugArgs, timeout: Duration) -> Result<String> {
    negotiate(c, timeout).await?;
    let mut r = RemoveBlockDeviceRequest::new();
    r.container_id = a.container.clone();
    r.container_path = a.path.clone();
    let resp: BlockDeviceResponse = call(c, "pith.Devices", "RemoveBlockDevice", &r, timeout).await?;
    let mut q = Qmp::connect(&a.qmp, timeout)?;
    q.execute("device_del", json!({"id": a.name}))?;
    q.wait_event("DEVICE_DELETED", &a.name, timeout.max(Duration::from_secs(5)))?;
    q.execute("blockdev-del", json!({"node-name": format!("{}-drive", a.name)}))?;
    Ok(answer(&resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn pci_path_behind_bridges() {
        let q = json!([{"bus": 0, "devices": [
            {"slot": 1, "qdev_id": ""},
            {"slot": 2, "qdev_id": "br0", "pci_bridge": {"devices": [
                {"slot": 3, "qdev_id": "vb2"}]}},
            {"slot": 5, "qdev_id": "vb1"}]}]);
        assert_eq!(pci_path(&q, "vb1").as_deref(), Some("05"));
        assert_eq!(pci_path(&q, "vb2").as_deref(), Some("02/03"));
        assert_eq!(pci_path(&q, "nope"), None);
    }

    /// A fake QMP server: answers every command with an empty return, sends
    /// DEVICE_DELETED (after an unrelated event) for device_del; records commands.
    fn fake_qmp(dir: &Path) -> (PathBuf, std::thread::JoinHandle<Vec<Value>>) {
        let sock = dir.join("qmp.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut seen = Vec::new();
            for line in BufReader::new(s).lines() {
                let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
                let cmd = v["execute"].as_str().unwrap().to_string();
                seen.push(v.clone());
                if cmd == "blockdev-del" && v["arguments"]["node-name"] == "missing" {
                    writeln!(w, r#"{{"error": {{"class": "GenericError", "desc": "no node"}}}}"#).unwrap();
                    continue;
                }
                writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
                if cmd == "device_del" {
                    writeln!(w, r#"{{"event": "DEVICE_DELETED", "data": {{"device": "other"}}}}"#).unwrap();
                    writeln!(
                        w,
                        r#"{{"event": "DEVICE_DELETED", "data": {{"device": "{}"}}}}"#,
                        v["arguments"]["id"].as_str().unwrap()
                    )
                    .unwrap();
                }
            }
            seen
        });
        (sock, t)
    }

    #[test]
    fn qmp_unplug_sequence_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, server) = fake_qmp(dir.path());
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
        q.execute("device_del", json!({"id": "d1"})).unwrap();
        q.wait_event("DEVICE_DELETED", "d1", Duration::from_secs(5)).unwrap();
        q.execute("blockdev-del", json!({"node-name": "d1-drive"})).unwrap();
        let e = q.execute("blockdev-del", json!({"node-name": "missing"})).unwrap_err();
        assert_eq!(e.to_string(), "QMP blockdev-del: no node");
        drop(q);
        let seen: Vec<String> = server
            .join()
            .unwrap()
            .iter()
            .map(|v| v["execute"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(seen, ["qmp_capabilities", "device_del", "blockdev-del", "blockdev-del"]);
    }
}
