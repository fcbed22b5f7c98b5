//! The guest image end to end: boot `target/vm/vmlinux` + `target/vm/initrd.img`
//! (`make initrd`) under qemu with the agent as PID 1, and drive it from the
//! host over hybrid vsock (vhost-device-vsock) as a Firecracker or Cloud
//! Hypervisor runtime would: health, negotiation, sandbox, a container from the
//! busybox rootfs in the initrd, exec, removal, block and NIC hot-plug,
//! networking (interfaces, routes, iptables), the debug console, and the
//! agent powering the VM off.
//!
//! Needs qemu-system-x86 and vhost-device-vsock; `make vm-e2e` installs them
//! and runs this with `--ignored`. Knobs (environment):
//! * `PITH_VM_DIR`: where the image is (default `target/vm`);
//! * `PITH_VHOST_VSOCK`: the backend binary (default `target/vm/cargo/bin/vhost-device-vsock`);
//! * `PITH_VM_ACCEL`: `tcg`, `kvm` or `auto` (default: probe KVM once, cache the verdict);
//! * `PITH_E2E_SANDBOX=0`: skip CreateSandbox/DestroySandbox and stop the
//!   agent with SIGTERM through the debug console instead.

mod common;
mod guest_vm;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::call;
use guest_vm::{
    accel, agent_cmdline, pithctl_ok, read_stdout, read_vm_file, remove_container, wait_process, Boot, Strace, Vm,
    AGENT_PORT, BOOT_TIMEOUT, CONSOLE_PORT, NIC_MAC, NIC_SLOT,
};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;

const SVC: &str = "grpc.AgentService";

/// The initrd guest: `make initrd`'s image with the modules it lists.
fn image() -> Boot {
    Boot::new("initrd.img", agent_cmdline(&read_vm_file("kernel_modules")), "vm-e2e")
}

/// A container on the busybox rootfs inside the initrd.
fn container_request(id: &str, args: &[&str]) -> CreateContainerRequest {
    let mut req = common::container_request(PathBuf::from("/pith-test/rootfs"), id, args);
    // The sandbox's hostname applies (oci-spec's default spec names one).
    req.OCI.as_mut().unwrap().Hostname.clear();
    req
}

#[test]
#[ignore = "boots a VM: run with `make vm-e2e`"]
fn guest_image_end_to_end() {
    let img = image();
    let sandbox = std::env::var("PITH_E2E_SANDBOX").map(|v| v != "0").unwrap_or(true);
    let accel = accel(&img);
    let cycle = Instant::now();
    let guest_cycle = std::cell::Cell::new(None);
    let mut vm = Vm::boot(&img, &accel);

    // 1. Boot: wait for the agent's listening line before the first CONNECT
    //    (an early CONNECT can wedge vhost-device-vsock for the whole VM).
    let listening = vm
        .wait_serial(&["listening", "vsock://-1:1024"], BOOT_TIMEOUT)
        .unwrap_or_else(|| panic!("agent never listened on vsock\n{}", vm.diagnostics()));
    let t_listen = vm.started.elapsed();
    vm.wait_serial(&["debug console listening"], Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no debug console\n{}", vm.diagnostics()));
    println!(
        "accel {accel}: qemu start -> agent listening: {} ms",
        t_listen.as_millis()
    );
    let serial = vm.serial();
    let agent_lines: Vec<&str> = serial.lines().filter(|l| l.contains("\"pith-agent\"")).collect();
    println!("agent's startup lines on the serial console:");
    for l in agent_lines.iter().take(8) {
        println!("  {l}");
    }
    assert!(serial.contains("\"msg\":\"starting\""), "{}", vm.diagnostics());
    assert!(serial.contains("\"init_mode\":true"), "{}", vm.diagnostics());
    assert!(serial.contains("kernel modules loaded"), "{}", vm.diagnostics());
    assert!(
        !serial.contains("\"level\":\"WARN\""),
        "warnings at boot:\n{}",
        vm.diagnostics()
    );
    assert!(listening.contains("vsock://-1:1024"));

    // 2. Health and negotiation through the real pithctl over hybrid vsock.
    let t = Instant::now();
    let check = pithctl_ok(&vm, AGENT_PORT, &["check"], None);
    assert!(check.contains("SERVING"), "{check}");
    println!("pithctl check: {} ms: {}", t.elapsed().as_millis(), check.trim());
    let version = pithctl_ok(&vm, AGENT_PORT, &["version"], None);
    assert!(version.contains(pith_agent::AGENT_VERSION), "{version}");
    let hello = pithctl_ok(&vm, AGENT_PORT, &["hello"], None);
    assert!(hello.to_lowercase().contains("level"), "{hello}");
    println!(
        "pithctl version: {}\npithctl hello: {}",
        version.trim(),
        hello.replace('\n', " ")
    );

    // 3. The debug console: a shell in the guest, here with piped stdin.
    let console = pithctl_ok(
        &vm,
        CONSOLE_PORT,
        &["console"],
        Some(
            "dmesg | grep -m3 'pith-agent: INFO'; dmesg | grep -m1 'pith-keeper: INFO'; cat /proc/1/comm; \
             echo pith-$((6*7)); exit\n",
        ),
    );
    assert!(console.contains("pith-42"), "debug console output:\n{console}");
    assert!(
        console.contains("pith-keeper: INFO init: mounted filesystems"),
        "the keeper's lines are not in dmesg:\n{console}"
    );
    assert!(
        console.contains("pith-agent: INFO starting"),
        "the agent's lines are not in dmesg:\n{console}"
    );
    println!("debug console (dmesg through it):");
    for l in console.lines().filter(|l| {
        l.trim_start().starts_with('[') && (l.contains("pith-agent: INFO") || l.contains("pith-keeper: INFO"))
    }) {
        println!("  {}", l.trim());
    }

    guest_vm::with_agent(&vm, async |c| {
        // 4. The sandbox (a runtime's first call).
        if sandbox {
            let out = pithctl_ok(
                &vm,
                AGENT_PORT,
                &[
                    "call",
                    "CreateSandbox",
                    r#"{"sandboxId":"e2e","hostname":"pith-e2e","kernelModules":[{"name":"overlay"}]}"#,
                ],
                None,
            );
            println!("CreateSandbox: {}", out.trim());
        } else {
            println!("NOTE: PITH_E2E_SANDBOX=0: CreateSandbox/DestroySandbox skipped");
        }

        // 5. A container from the rootfs in the initrd: echo, its stdout, its exit code,
        //    with strace (through the debug console) on the agent meanwhile.
        let agent = guest_vm::agent_pid(&vm);
        let strace = Strace::start(&vm, &agent);
        let t = Instant::now();
        let id = "e2e-echo";
        let req = container_request(id, &["sh", "-c", "echo hello from the guest; sleep 2; exit 3"]);
        guest_vm::create_and_start(&c, &vm, &req).await;

        // 6. Exec into it while it runs: cgroup v2 membership shows rustjail's v2 path.
        let mut e = ExecProcessRequest::new();
        e.container_id = id.into();
        e.exec_id = "x1".into();
        let mut spec = container_request(id, &["sh", "-c", "echo exec-ok; hostname; cat /proc/self/cgroup"]);
        e.process = spec.OCI.take().unwrap().Process;
        let _: Empty = call(&c, SVC, "ExecProcess", &e).await.expect("ExecProcess");
        let exec_out = read_stdout(&c, id, "x1").await;
        assert!(exec_out.starts_with("exec-ok\n"), "{exec_out}");
        assert!(exec_out.contains("0::/"), "not in a cgroup v2 hierarchy: {exec_out}");
        if sandbox {
            assert!(
                exec_out.contains("\npith-e2e\n"),
                "not the sandbox's hostname: {exec_out}"
            );
        }
        assert_eq!(wait_process(&c, id, "x1").await, 0);

        let out = read_stdout(&c, id, id).await;
        assert_eq!(out, "hello from the guest\n");
        assert_eq!(wait_process(&c, id, id).await, 3);
        let trace = strace.stop(&vm);
        println!("strace -f -p {agent} (the agent) during CreateContainer, StartContainer, ExecProcess:");
        for l in guest_vm::container_syscalls(&trace, "sh") {
            println!("  {l}");
        }
        println!(
            "container: stdout {out:?}, exit code 3, exec {:?} ({} ms)",
            exec_out.trim(),
            t.elapsed().as_millis()
        );

        remove_container(&c, id, 5).await;

        // 6a. The container cycle on the guest's cgroup v2 path (clone3
        // CLONE_INTO_CGROUP), printed at the end next to the host's.
        let kata_true = |id: &str| common::containers::as_kata_sends(container_request(id, &["true"]));
        guest_cycle.set(Some(common::containers::cycle_medians(&c, kata_true, CYCLES).await));

        // 6b. Block device hot-plug into a running container: pithctl hotplug (QMP
        // blockdev-add + device_add scsi-hd, then pith.Devices/AddBlockDevice), read the
        // disk in the container (its cgroup v2 device program allows it), hotunplug.
        let id = "e2e-disk";
        let _: Empty = call(&c, SVC, "CreateContainer", &container_request(id, &["sleep", "60"]))
            .await
            .expect("CreateContainer e2e-disk");
        let mut s = StartContainerRequest::new();
        s.container_id = id.into();
        let _: Empty = call(&c, SVC, "StartContainer", &s)
            .await
            .expect("StartContainer e2e-disk");

        // 6'. An exec on a terminal: its output moves from the pty into the
        // keeper-held stage pipe by splice, which the guest's kernel must allow
        // (else the agent reads the pty directly and says so once in its log).
        let mut e = ExecProcessRequest::new();
        e.container_id = id.into();
        e.exec_id = "x2".into();
        let mut spec = container_request(id, &["sh", "-c", "echo tty-ok; test -t 1 && echo is-a-tty"]);
        e.process = spec.OCI.take().unwrap().Process;
        e.process.as_mut().unwrap().Terminal = true;
        let _: Empty = call(&c, SVC, "ExecProcess", &e)
            .await
            .expect("ExecProcess on a terminal");
        let tty_out = read_stdout(&c, id, "x2").await;
        assert_eq!(tty_out, "tty-ok\r\nis-a-tty\r\n");
        assert_eq!(wait_process(&c, id, "x2").await, 0);
        let refused = pithctl_ok(
            &vm,
            CONSOLE_PORT,
            &["console"],
            Some("echo refused=$(dmesg | grep -c 'splice from a terminal refused'); exit\n"),
        );
        assert!(
            refused.contains("refused=0"),
            "the guest kernel refused splice from a pty:\n{refused}"
        );
        println!(
            "exec on a terminal: {:?} (staged through the keeper-held pipe)",
            tty_out.trim_end()
        );

        let disk = vm.path("disk1.raw");
        let mut bytes = b"pith-vm-disk\n".to_vec();
        bytes.resize(1 << 20, 0);
        std::fs::write(&disk, bytes).unwrap();
        let qmp = vm.path("qmp.sock").display().to_string();
        let t = Instant::now();
        let disk_arg = disk.to_str().unwrap();
        let scsi_plug = [
            "hotplug",
            "--qmp",
            &qmp,
            "--scsi-id",
            "0",
            "--lun",
            "1",
            "--path",
            "/dev/xvdb",
            id,
            disk_arg,
        ];
        let scsi_unplug = ["hotunplug", "--qmp", &qmp, "--path", "/dev/xvdb", id];
        let plugged = pithctl_ok(&vm, AGENT_PORT, &scsi_plug, None);
        let t_plug = t.elapsed();
        assert!(plugged.contains("\"containerPath\":\"/dev/xvdb\""), "{plugged}");
        let exec = |exec_id: &str, script: &str| {
            let mut e = ExecProcessRequest::new();
            e.container_id = id.into();
            e.exec_id = exec_id.into();
            let mut spec = container_request(id, &["sh", "-c", script]);
            e.process = spec.OCI.take().unwrap().Process;
            e
        };
        let _: Empty = call(
            &c,
            SVC,
            "ExecProcess",
            // Read the host's marker, and write one for the host to find at 4 KiB.
            &exec(
                "d1",
                "test -b /dev/xvdb && read -r l < /dev/xvdb && echo \"$l\" && \
                 echo pith-written-by-scsi | dd of=/dev/xvdb bs=4096 seek=1 conv=notrunc,fsync 2>/dev/null",
            ),
        )
        .await
        .expect("ExecProcess d1");
        let read_back = read_stdout(&c, id, "d1").await;
        assert_eq!(wait_process(&c, id, "d1").await, 0, "{read_back}\n{}", vm.diagnostics());
        assert_eq!(read_back, "pith-vm-disk\n");
        let t = Instant::now();
        let unplugged = pithctl_ok(&vm, AGENT_PORT, &scsi_unplug, None);
        let t_unplug = t.elapsed();
        let _: Empty = call(&c, SVC, "ExecProcess", &exec("d2", "test -e /dev/xvdb"))
            .await
            .expect("ExecProcess d2");
        assert_ne!(wait_process(&c, id, "d2").await, 0, "node still there after hotunplug");
        // What the container wrote is in the host's disk image.
        let image = std::fs::read(&disk).unwrap();
        assert_eq!(
            &image[4096..4096 + 21],
            b"pith-written-by-scsi\n",
            "the container's write is not in {}",
            disk.display()
        );
        println!(
            "hot-plug: pithctl hotplug {} ms ({}), read and written in the container, host read it back, hotunplug {} ms ({})",
            t_plug.as_millis(),
            plugged.trim(),
            t_unplug.as_millis(),
            unplugged.trim()
        );
        // Latency, as make bench asks for it in the VM: four more SCSI cycles,
        // each timed from pithctl hotplug's start (QMP blockdev-add, device_add,
        // then AddBlockDevice) to the node being usable in the container.
        let mut plug_ms = vec![t_plug.as_millis()];
        for _ in 0..4 {
            let t = Instant::now();
            pithctl_ok(&vm, AGENT_PORT, &scsi_plug, None);
            plug_ms.push(t.elapsed().as_millis());
            pithctl_ok(&vm, AGENT_PORT, &scsi_unplug, None);
        }
        plug_ms.sort_unstable();
        println!(
            "VM hot-plug latency, SCSI, QMP device_add to usable node: median of 5 = {} ms ({plug_ms:?})",
            plug_ms[2]
        );
        // The same with virtio-blk: the PCI path comes from query-pci.
        let disk2 = vm.path("disk2.raw");
        let mut bytes = b"pith-vm-blk\n".to_vec();
        bytes.resize(1 << 20, 0);
        std::fs::write(&disk2, bytes).unwrap();
        let t = Instant::now();
        let plugged = pithctl_ok(
            &vm,
            AGENT_PORT,
            &[
                "hotplug",
                "--qmp",
                &qmp,
                "--bus",
                "blk",
                "--name",
                "pithblk1",
                "--path",
                "/dev/xvdc",
                id,
                disk2.to_str().unwrap(),
            ],
            None,
        );
        let t_plug = t.elapsed();
        let _: Empty = call(
            &c,
            SVC,
            "ExecProcess",
            &exec(
                "d3",
                "read -r l < /dev/xvdc && echo \"$l\" && \
                 echo pith-written-by-blk | dd of=/dev/xvdc bs=4096 seek=1 conv=notrunc,fsync 2>/dev/null",
            ),
        )
        .await
        .expect("ExecProcess d3");
        let read_back = read_stdout(&c, id, "d3").await;
        assert_eq!(wait_process(&c, id, "d3").await, 0, "{read_back}\n{}", vm.diagnostics());
        assert_eq!(read_back, "pith-vm-blk\n");
        pithctl_ok(
            &vm,
            AGENT_PORT,
            &[
                "hotunplug",
                "--qmp",
                &qmp,
                "--name",
                "pithblk1",
                "--path",
                "/dev/xvdc",
                id,
            ],
            None,
        );
        let image = std::fs::read(&disk2).unwrap();
        assert_eq!(
            &image[4096..4096 + 20],
            b"pith-written-by-blk\n",
            "the container's write is not in {}",
            disk2.display()
        );
        println!(
            "hot-plug virtio-blk: pithctl hotplug {} ms ({}), container wrote, host read it back",
            t_plug.as_millis(),
            plugged.trim()
        );

        remove_container(&c, id, 1).await;

        // 6c. Networking: the NIC, a hot-plugged second one, routes, iptables.
        network_in_the_vm(&c, &vm).await;

        // 6d. The agent killed: its keeper (PID 1) starts a new one, which
        //     takes the container back; a new connection finds it.
        let c = if sandbox {
            agent_crash_in_the_vm(c, &vm).await
        } else {
            c
        };

        // 6e. A live upgrade of the agent (its keeper is PID 1): the binary
        //     copied in with CopyFile, the same connection and pid afterwards.
        if sandbox {
            agent_upgrade_in_the_vm(&c, &vm).await;
        }

        // 7. The end: DestroySandbox, after which the keeper (PID 1) powers off.
        if sandbox {
            let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
                .await
                .unwrap_or_else(|e| panic!("DestroySandbox: {e:?}\n{}", vm.diagnostics()));
        }
    });
    if !sandbox {
        // Until the agent stops on DestroySandbox: SIGTERM to PID 1 by hand.
        pithctl_ok(&vm, CONSOLE_PORT, &["console"], Some("kill -TERM 1; exit\n"));
    }
    let t_stop = Instant::now();
    let status = vm.wait_exit(Duration::from_secs(30));
    let serial = vm.serial();
    assert!(status.success(), "qemu exited with {status}\n{}", vm.diagnostics());
    assert!(serial.contains("powering off"), "{}", vm.diagnostics());
    assert!(serial.contains("reboot: Power down"), "{}", vm.diagnostics());
    println!("stop -> qemu exited 0: {} ms", t_stop.elapsed().as_millis());
    println!("whole cycle (boot .. power off): {} ms", cycle.elapsed().as_millis());
    if let Some((create, total)) = guest_cycle.get() {
        println!(
            "container cycle (create+start+wait+remove of /bin/true), median of {CYCLES}: \
             in the guest (cgroup v2, {accel}) {total:.2} ms, CreateContainer {create:.2} ms; {}",
            host_cycle()
        );
    }
}

/// Cycles timed for the figure above, in the guest and on the host.
const CYCLES: usize = 20;

/// The same cycle on the host (its cgroups, hybrid v1 here), through the
/// agent binary the image holds (`make static`'s) when there is one.
fn host_cycle() -> String {
    if !nix::unistd::geteuid().is_root() {
        return "on the host: not measured (needs root)".into();
    }
    let static_bin =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/x86_64-unknown-linux-musl/guest/pith-agent");
    let bin = if static_bin.is_file() {
        static_bin
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_pith-agent"))
    };
    let agent = common::Agent::start_bin(&bin, &[], &[], &[]);
    let rootfs = common::busybox_rootfs(agent.dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (create, total) = rt.block_on(async {
        let c = agent.client().await;
        let _: Empty = call(&c, SVC, "CreateSandbox", &CreateSandboxRequest::new())
            .await
            .expect("CreateSandbox on the host");
        let req = |id: &str| {
            let mut r = common::container_request(rootfs.clone(), id, &["true"]);
            r.OCI.as_mut().unwrap().Hostname.clear();
            common::containers::as_kata_sends(r)
        };
        let m = common::containers::cycle_medians(&c, req, CYCLES).await;
        let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
            .await
            .expect("DestroySandbox on the host");
        m
    });
    format!(
        "on the host ({}, {}) {total:.2} ms, CreateContainer {create:.2} ms",
        rustjail::cgroups::Manager::new(None, "probe").map_or("cgroups?", |m| m.version()),
        bin.display()
    )
}

/// `kill -9` of the agent through the debug console while a container waits
/// on its stdin: the guest keeps running (its init is the keeper, not the
/// agent), a new agent serves the port (held by the keeper across the
/// restart), and the container answers through it: StatsContainer, stdin
/// written and its stdout read through the descriptors the keeper held, its
/// exit code. Also prints the keeper's and the agent's memory. Returns a
/// client of the new agent.
async fn agent_crash_in_the_vm(c: ttrpc::r#async::Client, vm: &Vm) -> ttrpc::r#async::Client {
    use protocols::health::{CheckRequest, HealthCheckResponse};
    let step = Instant::now();
    let id = "e2e-crash";
    let mut req = container_request(id, &["sh", "-c", "echo before; read l; echo \"got $l\"; exit 5"]);
    req.OCI.as_mut().unwrap().Process.as_mut().unwrap().Terminal = false;
    guest_vm::create_and_start(&c, vm, &req).await;
    let mut r = ReadStreamRequest::new();
    r.container_id = id.into();
    r.exec_id = id.into();
    r.len = 4096;
    let first: ReadStreamResponse = call(&c, SVC, "ReadStdout", &r).await.expect("ReadStdout");
    assert_eq!(first.data, b"before\n");

    let agent = guest_vm::agent_pid(vm);
    let mem = guest_vm::console(
        vm,
        &format!(
            "for p in 1 {agent}; do echo \"mem $p $(grep '^VmRSS' /proc/$p/status | tr -s ' \t' ' ') \
             $(grep '^Pss:' /proc/$p/smaps_rollup | tr -s ' \t' ' ')\"; done"
        ),
    );
    println!("memory in the guest (pid 1 = keeper, {agent} = agent, one container):");
    for l in mem.lines().filter(|l| l.starts_with("mem ")) {
        println!("  {l}");
    }
    // The console's shell is the agent's child (its session ends with the
    // agent): the kill comes from a process of its own, once the session is over.
    guest_vm::console(
        vm,
        &format!("setsid sh -c 'sleep 0.5; kill -KILL {agent}' </dev/null >/dev/null 2>&1 &"),
    );
    drop(c);
    let ended = guest_vm::wait_for(Duration::from_secs(30), || {
        vm.serial().contains("the agent ended (Signal(9))")
    });
    assert!(
        ended.is_some(),
        "the keeper never saw the agent die\n{}",
        vm.diagnostics()
    );
    let t = Instant::now();
    let addr: protocols::addr::Address = vm.hvsock(AGENT_PORT).parse().unwrap();
    let c = pithctl::client::connect(&addr, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("reconnect: {e}\n{}", vm.diagnostics()));
    let _: HealthCheckResponse = call(&c, "grpc.Health", "Check", &CheckRequest::new())
        .await
        .unwrap_or_else(|e| panic!("Check after the restart: {e:?}\n{}", vm.diagnostics()));
    let t_back = t.elapsed();
    let serial = vm.serial();
    assert!(!serial.contains("Kernel panic"), "{}", vm.diagnostics());
    assert!(
        serial
            .lines()
            .any(|l| l.contains("state taken back") && l.contains("\"containers\":1")),
        "the new agent did not take the container back:\n{}",
        vm.diagnostics()
    );
    let new_agent = guest_vm::agent_pid(vm);
    assert_ne!(new_agent, agent, "the same agent pid after the restart");

    let mut st = StatsContainerRequest::new();
    st.container_id = id.into();
    let _: StatsContainerResponse = call(&c, SVC, "StatsContainer", &st)
        .await
        .unwrap_or_else(|e| panic!("StatsContainer after the restart: {e:?}\n{}", vm.diagnostics()));
    let mut w = WriteStreamRequest::new();
    w.container_id = id.into();
    w.exec_id = id.into();
    w.data = b"kept\n".to_vec();
    let _: WriteStreamResponse = call(&c, SVC, "WriteStdin", &w).await.expect("WriteStdin");
    assert_eq!(read_stdout(&c, id, id).await, "got kept\n");
    assert_eq!(wait_process(&c, id, id).await, 5);
    remove_container(&c, id, 5).await;
    println!(
        "kill -9 of the agent (pid {agent}): guest still up, new agent {new_agent}; keeper's line seen -> \
         Check answered on a new connection: {} ms; the container's stdin, stdout and exit code 5 through it \
         (the whole step: {} ms)",
        t_back.as_millis(),
        step.elapsed().as_millis()
    );
    c
}

/// A live upgrade of the agent in the guest while a container waits on its
/// stdin and a WaitProcess is pending on the connection: the guest's agent
/// binary copied in with CopyFile (an upgrade to the same version), then
/// `pith.Lifecycle/Upgrade`. The agent keeps its pid (an `execve` in place
/// under the keeper, PID 1), the kernel notices nothing, the connection and
/// the pending call carry on, the container answers.
async fn agent_upgrade_in_the_vm(c: &ttrpc::r#async::Client, vm: &Vm) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = [
        "target/x86_64-unknown-linux-musl/guest/pith-agent",
        "target/guest/pith-agent",
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.exists())
    .expect("the guest's agent binary (make initrd builds it)");
    let id = "e2e-upgrade";
    let mut req = container_request(id, &["sh", "-c", "read l; echo \"got $l\"; exit 6"]);
    req.OCI.as_mut().unwrap().Process.as_mut().unwrap().Terminal = false;
    guest_vm::create_and_start(c, vm, &req).await;
    let c2 = c.clone();
    let waiting = tokio::spawn(async move {
        let mut w = WaitProcessRequest::new();
        w.container_id = id.into();
        w.exec_id = id.into();
        let mut r = ttrpc::proto::Request::new();
        r.service = SVC.into();
        r.method = "WaitProcess".into();
        r.payload = protobuf::Message::write_to_bytes(&w).unwrap();
        let resp = c2.request(r).await.expect("WaitProcess across the upgrade");
        <WaitProcessResponse as protobuf::Message>::parse_from_bytes(&resp.payload)
            .unwrap()
            .status
    });
    let agent = guest_vm::agent_pid(vm);
    let timeout = Duration::from_secs(30);
    pithctl::upgrade::negotiate(c, timeout).await.expect("Hello at level 4");
    let t_copy = Instant::now();
    let guest_path = pithctl::upgrade::DEFAULT_GUEST_PATH;
    pithctl::upgrade::copy_in(c, &bin, guest_path, timeout)
        .await
        .unwrap_or_else(|e| panic!("CopyFile of the agent: {e}\n{}", vm.diagnostics()));
    let copied = t_copy.elapsed();
    let t = Instant::now();
    let up = pithctl::upgrade::upgrade(c, guest_path, Duration::from_secs(20), timeout)
        .await
        .unwrap_or_else(|e| panic!("Upgrade: {e}\n{}", vm.diagnostics()));
    let took = t.elapsed();
    assert!(up.connections_carried >= 1 && up.calls_carried >= 1, "{up:?}");
    let serial = vm.serial();
    assert!(!serial.contains("Kernel panic"), "{}", vm.diagnostics());
    assert!(
        serial.contains("the new agent binary took over"),
        "{}",
        vm.diagnostics()
    );
    assert_eq!(guest_vm::agent_pid(vm), agent, "the agent's pid changed");
    let mut w = WriteStreamRequest::new();
    w.container_id = id.into();
    w.exec_id = id.into();
    w.data = b"upgraded\n".to_vec();
    let _: WriteStreamResponse = call(c, SVC, "WriteStdin", &w)
        .await
        .expect("WriteStdin after the upgrade");
    assert_eq!(read_stdout(c, id, id).await, "got upgraded\n");
    assert_eq!(waiting.await.unwrap(), 6, "the WaitProcess sent before the upgrade");
    remove_container(c, id, 5).await;
    println!(
        "live upgrade of the agent (pid {agent}, keeper = PID 1): CopyFile of {} ({} bytes) {} ms; Upgrade {} ms \
         (the agent's pause {:.2} ms), {} -> {}, same pid, same connection, {} call(s) carried; the container's \
         stdin, stdout and exit code 6 through it",
        bin.display(),
        std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0),
        copied.as_millis(),
        took.as_millis(),
        up.pause_us as f64 / 1e3,
        up.old_version,
        up.new_version,
        up.calls_carried,
    );
}

/// One QMP command on a fresh connection (capabilities negotiated first);
/// panics unless qemu answers `return`.
fn qmp(vm: &Vm, cmd: &str) {
    use std::io::BufRead;
    use std::io::Write;
    let sock = std::os::unix::net::UnixStream::connect(vm.path("qmp.sock")).expect("connect QMP");
    let mut r = std::io::BufReader::new(sock.try_clone().unwrap());
    let mut w = sock;
    let mut line = String::new();
    r.read_line(&mut line).unwrap(); // greeting
    for c in [r#"{"execute":"qmp_capabilities"}"#, cmd] {
        writeln!(w, "{c}").unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.contains("\"return\"") {
                break;
            }
            assert!(!line.contains("\"error\"") && !line.is_empty(), "QMP {c}: {line}");
        }
    }
}

/// Guest networking in the VM as Kata's runtimes drive it: the cold-plugged
/// virtio-net NIC configured through UpdateInterface (found by MAC, its PCI
/// path given) and UpdateRoutes, read back with ListInterfaces/ListRoutes and
/// from inside a container that shares the VM's network namespace; a NIC
/// hot-plugged through QMP, waited for by `devicePath`; iptables round trip.
async fn network_in_the_vm(c: &ttrpc::r#async::Client, vm: &Vm) {
    use protocols::types::{IPAddress, Interface, Route};
    let iface = |mac: &str, name: &str, path: &str, addr: &str| {
        let mut i = Interface::new();
        i.device = name.into();
        i.name = name.into();
        i.hwAddr = mac.into();
        i.devicePath = path.into();
        i.mtu = 1450;
        i.type_ = "veth".into();
        let mut a = IPAddress::new();
        a.address = addr.into();
        a.mask = "16".into();
        i.IPAddresses.push(a);
        let mut r = UpdateInterfaceRequest::new();
        r.interface = protobuf::MessageField::some(i);
        r
    };
    let t = Instant::now();
    let got: Interface = call(
        c,
        SVC,
        "UpdateInterface",
        &iface(NIC_MAC, "eth0", NIC_SLOT, "10.88.0.5"),
    )
    .await
    .unwrap_or_else(|e| panic!("UpdateInterface: {e:?}\n{}", vm.diagnostics()));
    assert_eq!(got.name, "eth0");
    let t_iface = t.elapsed();
    let mut routes = Routes::new();
    for (dest, mtu) in [("", 0), ("10.96.0.0/12", 1400)] {
        let mut r = Route::new();
        r.dest = dest.into();
        r.gateway = "10.88.0.1".into();
        r.device = "eth0".into();
        r.mtu = mtu;
        routes.Routes.push(r);
    }
    let mut req = UpdateRoutesRequest::new();
    req.routes = protobuf::MessageField::some(routes);
    let t = Instant::now();
    let _: Routes = call(c, SVC, "UpdateRoutes", &req).await.expect("UpdateRoutes");
    let t_routes = t.elapsed();

    let list: Interfaces = call(c, SVC, "ListInterfaces", &ListInterfacesRequest::new())
        .await
        .expect("ListInterfaces");
    let eth0 = list.Interfaces.iter().find(|i| i.name == "eth0").expect("eth0 listed");
    assert_eq!((eth0.hwAddr.as_str(), eth0.mtu), (NIC_MAC, 1450));
    assert!(eth0
        .IPAddresses
        .iter()
        .any(|a| a.address == "10.88.0.5" && a.mask == "16"));
    let listed: Routes = call(c, SVC, "ListRoutes", &ListRoutesRequest::new())
        .await
        .expect("ListRoutes");
    let has = |dest: &str| {
        listed
            .Routes
            .iter()
            .find(|r| r.dest == dest && r.gateway == "10.88.0.1" && r.device == "eth0")
            .cloned()
    };
    assert!(has("0.0.0.0/0").is_some(), "{listed:?}");
    assert_eq!(has("10.96.0.0/12").expect("10.96.0.0/12").mtu, 1400);

    // A second NIC hot-plugged while the agent already waits for it by PCI path;
    // the kernel calls it eth1, the host net1 (as a Multus network would).
    let t = Instant::now();
    qmp(
        vm,
        r#"{"execute":"netdev_add","arguments":{"type":"hubport","id":"n1","hubid":1}}"#,
    );
    qmp(
        vm,
        r#"{"execute":"device_add","arguments":{"driver":"virtio-net-pci","id":"nic1","netdev":"n1","mac":"02:42:ac:11:00:03","addr":"0x7"}}"#,
    );
    let _: Interface = call(
        c,
        SVC,
        "UpdateInterface",
        &iface("02:42:ac:11:00:03", "net1", "07", "10.89.0.5"),
    )
    .await
    .unwrap_or_else(|e| panic!("UpdateInterface of the hot-plugged NIC: {e:?}\n{}", vm.diagnostics()));
    let t_hot = t.elapsed();

    // Inside a container that shares the VM's network namespace (as Kata's are).
    let id = "e2e-net";
    let mut req = container_request(id, &["sh", "-c", "busybox ip -o addr show; cat /proc/net/route"]);
    if let Some(linux) = req.OCI.as_mut().unwrap().Linux.as_mut() {
        linux.Namespaces.retain(|n| n.Type != "network");
    }
    let _: Empty = call(c, SVC, "CreateContainer", &req)
        .await
        .expect("CreateContainer e2e-net");
    let mut s = StartContainerRequest::new();
    s.container_id = id.into();
    let _: Empty = call(c, SVC, "StartContainer", &s)
        .await
        .expect("StartContainer e2e-net");
    let out = read_stdout(c, id, id).await;
    assert_eq!(wait_process(c, id, id).await, 0, "{out}");
    assert!(out.contains("eth0    inet 10.88.0.5/16"), "{out}");
    assert!(out.contains("net1    inet 10.89.0.5/16"), "{out}");
    // /proc/net/route: the default route through eth0, gateway 10.88.0.1 (little-endian hex).
    assert!(out.lines().any(|l| l.starts_with("eth0\t00000000\t0100580A")), "{out}");
    let mut r = RemoveContainerRequest::new();
    r.container_id = id.into();
    r.timeout = 5;
    let _: Empty = call(c, SVC, "RemoveContainer", &r)
        .await
        .expect("RemoveContainer e2e-net");

    // iptables from the image (legacy x_tables backend, modules loaded at boot).
    let mut set = SetIPTablesRequest::new();
    set.data = b"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A INPUT -s 10.99.0.0/16 -p tcp -m tcp --dport 80 -j DROP\nCOMMIT\n"
        .to_vec();
    let _: SetIPTablesResponse = call(c, SVC, "SetIPTables", &set)
        .await
        .unwrap_or_else(|e| panic!("SetIPTables: {e:?}\n{}", vm.diagnostics()));
    let got: GetIPTablesResponse = call(c, SVC, "GetIPTables", &GetIPTablesRequest::new())
        .await
        .expect("GetIPTables");
    let text = String::from_utf8_lossy(&got.data);
    assert!(
        text.contains("-A INPUT -s 10.99.0.0/16 -p tcp -m tcp --dport 80 -j DROP"),
        "{text}"
    );
    let mut get6 = GetIPTablesRequest::new();
    get6.is_ipv6 = true;
    let _: GetIPTablesResponse = call(c, SVC, "GetIPTables", &get6).await.expect("GetIPTables v6");
    println!(
        "network: UpdateInterface {} ms, UpdateRoutes {} ms, hot-plugged NIC (QMP device_add to configured) {} ms; \
         container sees eth0/net1 and the routes; iptables round trip ok",
        t_iface.as_millis(),
        t_routes.as_millis(),
        t_hot.as_millis()
    );
}

/// A guest on cgroup v1 (no `cgroup_no_v1=all`: what a Kata guest gets unless
/// its kernel parameters ask for v2): the agent mounts a hierarchy per
/// controller, containers run in it, and an exec joins its container's
/// cgroups. CreateContainer back to back and after 300 ms idle is printed
/// (the v1 path joins each hierarchy, where the v2 path joins nothing).
#[test]
#[ignore = "boots a VM: run with `make vm-e2e`"]
fn guest_on_cgroup_v1() {
    let cmdline = agent_cmdline(&read_vm_file("kernel_modules")).replace("cgroup_no_v1=all ", "");
    assert!(!cmdline.contains("cgroup_no_v1"), "{cmdline}");
    let img = Boot::new("initrd.img", cmdline, "vm-e2e");
    let accel = accel(&img);
    let mut vm = Vm::boot(&img, &accel);
    vm.wait_serial(&["listening", "vsock://-1:1024"], BOOT_TIMEOUT)
        .unwrap_or_else(|| panic!("agent never listened on vsock\n{}", vm.diagnostics()));
    let mounts = pithctl_ok(
        &vm,
        CONSOLE_PORT,
        &["console"],
        Some("grep ' cgroup ' /proc/mounts; exit\n"),
    );
    let v1: Vec<&str> = mounts.lines().filter(|l| l.contains(" cgroup ")).collect();
    println!("cgroup v1 guest, its hierarchies:");
    for l in &v1 {
        println!("  {}", l.trim());
    }
    assert!(v1.iter().any(|l| l.contains("/sys/fs/cgroup/memory")), "{mounts}");
    assert!(v1.iter().any(|l| l.contains("/sys/fs/cgroup/freezer")), "{mounts}");
    guest_vm::with_agent(&vm, async |c| {
        let out = pithctl_ok(
            &vm,
            AGENT_PORT,
            &[
                "call",
                "CreateSandbox",
                r#"{"sandboxId":"e2e-v1","hostname":"pith-v1"}"#,
            ],
            None,
        );
        println!("CreateSandbox: {}", out.trim());
        let kata_true = |id: &str| common::containers::as_kata_sends(container_request(id, &["true"]));
        let (back_to_back, _) = common::containers::cycle_medians(&c, kata_true, 8).await;
        let (after_idle, _) =
            common::containers::cycle_medians_after(&c, kata_true, 8, Duration::from_millis(300)).await;
        println!(
            "CreateContainer of /bin/true in the v1 guest, median of 8: back to back {back_to_back:.2} ms, \
             after 300 ms idle {after_idle:.2} ms"
        );
        // An exec joins the container's cgroups in every hierarchy.
        let id = "v1-exec";
        let req = common::containers::as_kata_sends(container_request(id, &["sleep", "30"]));
        guest_vm::create_and_start(&c, &vm, &req).await;
        let mut e = ExecProcessRequest::new();
        e.container_id = id.into();
        e.exec_id = "x1".into();
        let mut spec = container_request(id, &["sh", "-c", "echo exec-ok; cat /proc/self/cgroup"]);
        e.process = spec.OCI.take().unwrap().Process;
        let _: Empty = call(&c, SVC, "ExecProcess", &e).await.expect("ExecProcess");
        let exec_out = read_stdout(&c, id, "x1").await;
        assert!(exec_out.starts_with("exec-ok\n"), "{exec_out}");
        let memory = exec_out.lines().find(|l| l.contains(":memory:")).unwrap_or_default();
        assert!(
            memory.contains(":memory:/") && memory.ends_with(id),
            "the exec is in the container's memory cgroup, not the root: {exec_out}"
        );
        println!("exec in the v1 guest: {}", memory.trim());
        assert_eq!(wait_process(&c, id, "x1").await, 0);
        remove_container(&c, id, 0).await;
    });
    guest_vm::destroy_sandbox_and_power_off(&mut vm, Duration::from_secs(30));
}
