//! Golden requests from older and newer protocol revisions.
//!
//! The `.bin` files under `tests/fixtures/golden/` were encoded by Google's
//! Python protobuf from the `.proto` revision beside each of them (see the
//! README there). They are decoded here with today's generated types, and
//! executed against a running agent: a host from another revision must get the
//! values it sent, defaults for what it did not know, its unknown fields kept,
//! and a proper ttrpc answer.
//!
//! Never regenerate a `.bin` to make a test pass: the bytes are the contract.

mod common;

use std::collections::BTreeMap;

use common::{call, call_raw, Agent};
use protobuf::well_known_types::empty::Empty;
use protobuf::{CodedInputStream, Message, MessageFull, UnknownFields, UnknownValueRef};
use protocols::agent::CreateSandboxRequest;
use protocols::health::{health_check_response::ServingStatus, CheckRequest, HealthCheckResponse};
use protocols::levels::{self, LevelRange};
use protocols::pith::{HelloRequest, HelloResponse, StatusRequest, StatusResponse};
use protocols::types::FSGroupChangePolicy;
use ttrpc::proto::Code;

// ---------------------------------------------------------------------------
// helpers

fn golden(rel: &str) -> Vec<u8> {
    let path = common::fixture(&format!("golden/{rel}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Reads one base-128 varint at `*pos`.
fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
        assert!(shift < 64, "varint too long");
    }
}

/// Splits an encoded message into its top-level records: the field number and
/// the whole record as it is on the wire (tag included). A wire scanner of its
/// own, so that it does not trust the decoder under test.
fn records(bytes: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let tag = read_varint(bytes, &mut pos);
        match tag & 7 {
            0 => {
                read_varint(bytes, &mut pos);
            }
            1 => pos += 8,
            2 => {
                let len = read_varint(bytes, &mut pos) as usize;
                pos += len;
            }
            5 => pos += 4,
            wt => panic!("wire type {wt} at byte {start}"),
        }
        assert!(pos <= bytes.len(), "record at byte {start} is truncated");
        out.push(((tag >> 3) as u32, &bytes[start..pos]));
    }
    out
}

/// The payload of a length-delimited record (tag and length stripped).
fn payload(record: &[u8]) -> &[u8] {
    let mut pos = 0;
    let tag = read_varint(record, &mut pos);
    assert_eq!(tag & 7, 2, "not length-delimited");
    let len = read_varint(record, &mut pos) as usize;
    assert_eq!(pos + len, record.len());
    &record[pos..]
}

/// The records of `bytes` whose field number `M` does not know, by number, in
/// wire order.
fn unknown_records<M: MessageFull>(bytes: &[u8]) -> BTreeMap<u32, Vec<Vec<u8>>> {
    let d = M::descriptor();
    let mut out: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    for (n, rec) in records(bytes) {
        if d.field_by_number(n).is_none() {
            out.entry(n).or_default().push(rec.to_vec());
        }
    }
    out
}

/// Unknown fields by number, values in wire order.
fn unknowns(u: &UnknownFields) -> BTreeMap<u32, Vec<UnknownValueRef<'_>>> {
    let mut out: BTreeMap<u32, Vec<UnknownValueRef<'_>>> = BTreeMap::new();
    for (n, v) in u {
        out.entry(n).or_default().push(v);
    }
    out
}

/// Decodes a length-delimited unknown value holding a message: every field of
/// it lands in the unknown fields of an `Empty`.
fn nested(v: &UnknownValueRef<'_>) -> Empty {
    match v {
        UnknownValueRef::LengthDelimited(b) => Empty::parse_from_bytes(b).unwrap(),
        other => panic!("expected a length-delimited value, got {other:?}"),
    }
}

/// Decodes a packed repeated varint field kept as one length-delimited value.
fn packed_u32(v: &UnknownValueRef<'_>) -> Vec<u32> {
    let UnknownValueRef::LengthDelimited(b) = v else {
        panic!("expected a packed (length-delimited) value, got {v:?}");
    };
    let mut is = CodedInputStream::from_bytes(b);
    let mut out = Vec::new();
    while !is.eof().unwrap() {
        out.push(is.read_raw_varint32().unwrap());
    }
    out
}

fn ld(s: &str) -> UnknownValueRef<'_> {
    UnknownValueRef::LengthDelimited(s.as_bytes())
}

async fn health_check(c: &ttrpc::r#async::Client) {
    let r: HealthCheckResponse = call(c, "grpc.Health", "Check", &CheckRequest::new())
        .await
        .expect("grpc.Health/Check");
    assert_eq!(r.status.enum_value(), Ok(ServingStatus::SERVING));
}

// ---------------------------------------------------------------------------
// the fixtures themselves

#[test]
fn every_golden_request_has_its_schema_and_text_form() {
    for msg in ["create_sandbox", "hello"] {
        for rev in ["old", "new"] {
            for ext in ["bin", "txt", "proto"] {
                let p = common::fixture(&format!("golden/{msg}/{rev}.{ext}"));
                let len = std::fs::metadata(&p)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                    .len();
                assert!(len > 0, "{} is empty", p.display());
            }
        }
    }
    // Where the old Kata schema came from is written down next to it.
    let old = std::fs::read_to_string(common::fixture("golden/create_sandbox/old.proto")).unwrap();
    assert!(
        old.contains("kata-containers/agent") && old.contains("d9aa453b51c54458a4478db0e5c5227a15a444ef"),
        "old.proto must name its source"
    );
}

// ---------------------------------------------------------------------------
// grpc.CreateSandboxRequest: decode

#[test]
fn old_create_sandbox_request_decodes_with_defaults_for_later_fields() {
    let bytes = golden("create_sandbox/old.bin");
    let m = CreateSandboxRequest::parse_from_bytes(&bytes).unwrap();

    assert_eq!(m.hostname, "web-7f9c");
    assert_eq!(
        m.dns,
        strings(&[
            "nameserver 10.96.0.10",
            "search default.svc.cluster.local svc.cluster.local cluster.local",
            "options ndots:5",
        ])
    );
    assert!(m.sandbox_pidns);
    assert_eq!(m.sandbox_id, "3f1c0a52d6e84b9c");
    assert_eq!(m.guest_hook_path, "/usr/share/oci/hooks");

    assert_eq!(m.storages.len(), 2);
    let s = &m.storages[0];
    assert_eq!(s.driver, "9p");
    assert_eq!(s.driver_options, strings(&["virtio_9p_msize=8192"]));
    assert_eq!(s.source, "kataShared");
    assert_eq!(s.fstype, "9p");
    assert_eq!(
        s.options,
        strings(&["trans=virtio", "version=9p2000.L", "cache=mmap", "nodev"])
    );
    assert_eq!(s.mount_point, "/run/kata-containers/shared/containers/");
    let s = &m.storages[1];
    assert_eq!(s.driver, "ephemeral");
    assert!(s.driver_options.is_empty());
    assert_eq!(s.source, "shm");
    assert_eq!(s.fstype, "tmpfs");
    assert_eq!(
        s.options,
        strings(&["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"])
    );
    assert_eq!(s.mount_point, "/run/kata-containers/sandbox/shm");

    // Added after that revision: defaults.
    assert!(m.kernel_modules.is_empty());
    for s in &m.storages {
        assert!(s.fs_group.is_none(), "fs_group set on {}", s.driver);
        assert!(!s.shared, "shared set on {}", s.driver);
        assert!(s.unknown_fields().iter().next().is_none());
    }
    // Nothing in it is unknown today.
    assert!(m.unknown_fields().iter().next().is_none());
}

#[test]
fn new_create_sandbox_request_keeps_future_fields_as_unknown() {
    let bytes = golden("create_sandbox/new.bin");
    let m = CreateSandboxRequest::parse_from_bytes(&bytes).unwrap();

    assert_eq!(m.hostname, "db-0");
    assert_eq!(
        m.dns,
        strings(&["nameserver 10.96.0.10", "search db.svc.cluster.local"])
    );
    assert!(m.sandbox_pidns);
    assert_eq!(m.sandbox_id, "9b2e4c7d1a0f4e36");

    assert_eq!(m.storages.len(), 2);
    let s = &m.storages[0];
    assert_eq!(s.driver, "virtio-fs");
    assert!(s.driver_options.is_empty());
    assert_eq!(s.source, "kataShared");
    assert_eq!(s.fstype, "virtiofs");
    assert_eq!(s.options, strings(&["nodev"]));
    assert_eq!(s.mount_point, "/run/kata-containers/shared/containers/");
    assert!(s.fs_group.is_none());
    assert!(!s.shared);
    assert!(s.unknown_fields().iter().next().is_none());
    let s = &m.storages[1];
    assert_eq!(s.driver, "blk");
    assert_eq!(s.driver_options, strings(&["block_device_driver=virtio-blk"]));
    assert_eq!(s.source, "/dev/vdb");
    assert_eq!(s.fstype, "ext4");
    assert_eq!(s.options, strings(&["rw", "noatime"]));
    assert_eq!(s.mount_point, "/run/kata-containers/sandbox/storage/pvc-1");
    assert_eq!(s.fs_group.group_id, 2000);
    assert_eq!(
        s.fs_group.group_change_policy.enum_value(),
        Ok(FSGroupChangePolicy::OnRootMismatch)
    );
    assert!(s.shared);
    // Storage.encryption_key_id (9) is a future field of the nested message.
    assert_eq!(
        unknowns(s.unknown_fields()),
        BTreeMap::from([(9, vec![ld("kbs:///default/key/pvc-1")])])
    );

    assert_eq!(m.kernel_modules.len(), 2);
    assert_eq!(m.kernel_modules[0].name, "nvidia");
    assert_eq!(
        m.kernel_modules[0].parameters,
        strings(&["NVreg_OpenRmEnableUnsupportedGpus=1", "NVreg_EnableGpuFirmware=1"])
    );
    assert_eq!(m.kernel_modules[1].name, "e1000e");
    assert!(m.kernel_modules[1].parameters.is_empty());

    // guest_hook_path (6) is removed in that revision: never on the wire, so default.
    assert!(records(&bytes).iter().all(|(n, _)| *n != 6));
    assert_eq!(m.guest_hook_path, "");

    // The future fields, by number, one of each wire shape.
    let u = unknowns(m.unknown_fields());
    assert_eq!(u.keys().copied().collect::<Vec<_>>(), vec![8, 9, 10, 11, 12, 20]);
    assert_eq!(u[&8], vec![ld("kata-qemu-snp")]); // string runtime_class
    assert_eq!(u[&9], vec![UnknownValueRef::Varint(45)]); // uint32 boot_timeout_secs
    assert_eq!(u[&10].len(), 1); // SandboxNetwork network
    let net = nested(&u[&10][0]);
    assert_eq!(
        unknowns(net.unknown_fields()),
        BTreeMap::from([
            (1, vec![ld("/var/run/netns/cni-5f0b")]),
            (2, vec![UnknownValueRef::Varint(1450)]),
        ])
    );
    assert_eq!(
        u[&11],
        vec![ld("net.ipv4.ip_forward=1"), ld("kernel.shm_rmid_forced=1")]
    ); // repeated string sysctls
    assert_eq!(u[&12].len(), 1); // repeated uint32 online_cpus, packed
    assert_eq!(packed_u32(&u[&12][0]), vec![0, 1, 2, 3, 130]);
    assert_eq!(u[&20], vec![UnknownValueRef::Fixed64(0x0123_4567_89AB_CDEF)]); // fixed64 launch_nonce
}

#[test]
fn create_sandbox_round_trip_preserves_unknown_field_bytes() {
    // Old revision: nothing unknown, and the re-encoding is byte for byte the same.
    let old = golden("create_sandbox/old.bin");
    let m = CreateSandboxRequest::parse_from_bytes(&old).unwrap();
    assert_eq!(m.write_to_bytes().unwrap(), old);

    // New revision: every unknown record comes back with the same bytes.
    let new = golden("create_sandbox/new.bin");
    let m = CreateSandboxRequest::parse_from_bytes(&new).unwrap();
    let again = m.write_to_bytes().unwrap();
    assert_eq!(again.len(), new.len());
    let want = unknown_records::<CreateSandboxRequest>(&new);
    assert_eq!(want.keys().copied().collect::<Vec<_>>(), vec![8, 9, 10, 11, 12, 20]);
    assert_eq!(unknown_records::<CreateSandboxRequest>(&again), want);

    // Also inside a nested message: the second Storage's field 9.
    let storages = |b: &[u8]| -> Vec<Vec<u8>> {
        records(b)
            .into_iter()
            .filter(|(n, _)| *n == 3)
            .map(|(_, r)| payload(r).to_vec())
            .collect()
    };
    let (s_new, s_again) = (storages(&new), storages(&again));
    assert_eq!(s_new.len(), 2);
    assert_eq!(s_again.len(), 2);
    let want = unknown_records::<protocols::agent::Storage>(&s_new[1]);
    assert_eq!(want.keys().copied().collect::<Vec<_>>(), vec![9]);
    assert_eq!(unknown_records::<protocols::agent::Storage>(&s_again[1]), want);

    // And decoding the re-encoding gives the same message, unknown fields included.
    assert_eq!(CreateSandboxRequest::parse_from_bytes(&again).unwrap(), m);
}

// ---------------------------------------------------------------------------
// grpc.CreateSandboxRequest: execute

#[tokio::test]
async fn golden_create_sandbox_requests_get_a_status_not_a_transport_failure() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    // Both requests decode and run for real. Each asks for something this test
    // machine does not have, so each fails cleanly at that step, naming it, and
    // leaves nothing behind (no DNS written, nothing mounted, no sandbox):
    // the old one a 9p share, the new one the nvidia kernel module.
    for (rev, missing) in [("old", "9p"), ("new", "nvidia")] {
        let bytes = golden(&format!("create_sandbox/{rev}.bin"));
        // call_raw panics on a transport failure; a status comes back as Err.
        let r = call_raw(&c, "grpc.AgentService", "CreateSandbox", bytes).await;
        let (code, msg) = r.expect_err("the machine has neither 9p nor nvidia");
        assert!(code != Code::UNIMPLEMENTED && code != Code::OK, "{rev}: {code:?} {msg}");
        assert!(msg.contains(missing), "{rev}: {msg}");
        assert_eq!(
            std::fs::read_to_string(agent.resolv_conf()).unwrap(),
            common::GUEST_RESOLV_CONF,
            "{rev}: DNS set up by a failed CreateSandbox"
        );
        // Same connection, still healthy.
        health_check(&c).await;
    }
    // The failures left no half-made sandbox: a plain one is created now.
    let mut ok = CreateSandboxRequest::new();
    ok.hostname = "after-golden".into();
    ok.dns = vec!["nameserver 10.0.0.1".into()];
    call_raw(&c, "grpc.AgentService", "CreateSandbox", ok.write_to_bytes().unwrap())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(agent.resolv_conf()).unwrap(),
        "nameserver 10.0.0.1\n"
    );

    // Control: the same bytes cut short do not decode.
    let mut cut = golden("create_sandbox/new.bin");
    cut.truncate(cut.len() - 3);
    let (code, msg) = call_raw(&c, "grpc.AgentService", "CreateSandbox", cut)
        .await
        .unwrap_err();
    assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
    health_check(&c).await;
}

// ---------------------------------------------------------------------------
// pith.HelloRequest: decode and execute

/// Sends a golden Hello and decodes the answer.
async fn hello(c: &ttrpc::r#async::Client, bytes: Vec<u8>) -> HelloResponse {
    let resp = call_raw(c, "pith.Negotiation", "Hello", bytes)
        .await
        .unwrap_or_else(|(code, msg)| panic!("Hello: {code:?} {msg}"));
    HelloResponse::parse_from_bytes(&resp).unwrap()
}

#[tokio::test]
async fn old_hello_request_negotiates_the_level_it_asked_for() {
    let bytes = golden("hello/old.bin");
    let h = HelloRequest::parse_from_bytes(&bytes).unwrap();
    assert_eq!((h.min_level, h.max_level), (1, 1));
    // Fields the v0 host did not have: defaults.
    assert_eq!(h.host_name, "");
    assert_eq!(h.host_version, "");
    assert!(h.wanted_features.is_empty());
    assert!(h.unknown_fields().iter().next().is_none());

    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let r = hello(&c, bytes).await;
    assert_eq!(r.level, 1);
    assert_eq!(r.features, strings(&levels::features_at(1)));
    assert!(r.features.contains(&"kata-agent-api".to_string()));
    assert!(r.missing_features.is_empty());
    assert_eq!(
        (r.agent_min_level, r.agent_max_level),
        (levels::MIN_LEVEL, levels::MAX_LEVEL)
    );
    assert_eq!(r.agent_version, pith_agent::AGENT_VERSION);

    // The session is at level 1: level-2 calls are refused, Kata calls work.
    let (code, msg) = call::<_, StatusResponse>(&c, "pith.Introspection", "Status", &StatusRequest::new())
        .await
        .unwrap_err();
    assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
    health_check(&c).await;
}

#[tokio::test]
async fn new_hello_request_negotiates_and_ignores_future_fields() {
    let bytes = golden("hello/new.bin");
    let h = HelloRequest::parse_from_bytes(&bytes).unwrap();
    assert_eq!(h.host_name, "containerd-shim-pith-v9");
    assert_eq!((h.min_level, h.max_level), (1, 5));
    assert_eq!(h.wanted_features, strings(&["introspection", "teleport"]));
    // host_version (2) is removed in that revision: never on the wire, so default.
    assert!(records(&bytes).iter().all(|(n, _)| *n != 2));
    assert_eq!(h.host_version, "");
    let u = unknowns(h.unknown_fields());
    assert_eq!(u.keys().copied().collect::<Vec<_>>(), vec![6, 7, 8, 9, 10]);
    assert_eq!(u[&6], vec![ld("0f3e9a1")]); // string host_commit
    assert_eq!(u[&7], vec![UnknownValueRef::Varint(1_234_567_890_123)]); // uint64 session_nonce
    assert_eq!(u[&8].len(), 1); // HostLimits limits
    assert_eq!(
        unknowns(nested(&u[&8][0]).unknown_fields()),
        BTreeMap::from([
            (1, vec![UnknownValueRef::Varint(4_194_304)]),
            (2, vec![UnknownValueRef::Varint(64)]),
        ])
    );
    assert_eq!(u[&9].len(), 1); // repeated uint32 preferred_levels, packed
    assert_eq!(packed_u32(&u[&9][0]), vec![5, 4, 2]);
    assert_eq!(u[&10], vec![ld("streaming-logs"), ld("sealed-secrets")]); // repeated string capabilities

    // The host asked for [1, 5]: the agent picks the highest level it shares.
    let want = levels::negotiate(LevelRange { min: 1, max: 5 }, LevelRange::AGENT).unwrap();
    assert_eq!(want, levels::MAX_LEVEL.min(5));
    assert!(want >= levels::LEVEL_INTROSPECTION);

    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let r = hello(&c, bytes).await;
    assert_eq!(r.level, want);
    assert_eq!(r.features, strings(&levels::features_at(want)));
    assert!(r.features.contains(&"introspection".to_string()));
    assert_eq!(r.missing_features, strings(&["teleport"]));
    assert_eq!(
        (r.agent_min_level, r.agent_max_level),
        (levels::MIN_LEVEL, levels::MAX_LEVEL)
    );

    // The session the agent recorded: the host's name, and no version (the
    // removed field reads as its default).
    let s: StatusResponse = call(&c, "pith.Introspection", "Status", &StatusRequest::new())
        .await
        .unwrap_or_else(|(code, msg)| panic!("Status: {code:?} {msg}"));
    assert_eq!(s.level, want);
    assert_eq!(s.host_name, "containerd-shim-pith-v9");
    assert_eq!(s.host_version, "");
    health_check(&c).await;
}
