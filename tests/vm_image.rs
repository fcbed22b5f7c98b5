//! The disk images end to end (`make image`, Kata's `image` guest type): each
//! variant boots from its ext4 disk with the kernel of `vm/fetch.sh` and the
//! small `image-initrd.img` (loads the virtio modules, mounts `root=`
//! read-only, hands PID 1 to the image's `/sbin/init`), and is driven from the
//! host over hybrid vsock:
//! * `init` (root on virtio-blk): the agent's binary is PID 1 (its keeper);
//! * `service` (root on virtio-scsi): systemd starts `pith-agent.service` with
//!   Kata's hardening, and restarts the agent after a `kill -9`.
//!
//! In both: the root is the disk, the agent's lines are in `dmesg`, strace and
//! iptables are there, a container runs and its output and exit code come
//! back, and `strace -f -p <agent>` (through the debug console) sees the
//! container's clone and execs. Each prints `image <variant>: ok (<seconds>)`.
//!
//! Needs qemu-system-x86 and vhost-device-vsock; `make vm-image` builds the
//! images and runs this with `--ignored`. Knobs: see `tests/guest_vm/mod.rs`.

mod common;
mod guest_vm;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::call;
use guest_vm::{
    accel, agent_cmdline, console, pithctl, pithctl_ok, read_stdout, read_vm_file, vm_dir, wait_process, Boot, Phases,
    Strace, Vm, AGENT_PORT, BOOT_TIMEOUT, CONSOLE_PORT,
};
use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;

const SVC: &str = "grpc.AgentService";
/// Where the test builds its container's root filesystem in the guest (a tmpfs).
const CT_ROOTFS: &str = "/run/pith-test/rootfs";

/// The disk the root filesystem is on.
#[derive(Clone, Copy)]
enum Bus {
    VirtioBlk,
    VirtioScsi,
}

/// `rootfs-<variant>.img` as the root disk on `bus`, with the loader initramfs.
fn boot(variant: &str, bus: Bus, extra_cmdline: &str) -> (Boot, &'static str) {
    let disk = vm_dir().join(format!("rootfs-{variant}.img"));
    let root = match bus {
        Bus::VirtioBlk => "/dev/vda1",
        Bus::VirtioScsi => "/dev/sda1",
    };
    let append = format!(
        "{} root={root} rootfstype=ext4 ro{extra_cmdline}",
        agent_cmdline(&read_vm_file("image.kernel_modules"))
    );
    let mut b = Boot::new("image-initrd.img", append, "vm-image");
    b.require(&[&disk], "vm-image");
    // snapshot=on: the guest's writes never reach the image file.
    b.qemu_args = vec![
        "-drive".into(),
        format!("file={},if=none,id=root,format=raw,snapshot=on", disk.display()),
        "-device".into(),
        match bus {
            Bus::VirtioBlk => "virtio-blk-pci,drive=root".into(),
            Bus::VirtioScsi => "scsi-hd,drive=root,bus=scsi0.0,channel=0,scsi-id=0,lun=0".into(),
        },
    ];
    (b, root)
}

/// Boots and waits for the agent and its debug console; returns the VM and
/// the time from qemu's start to the agent listening.
fn boot_to_agent(b: &Boot) -> (Vm, Duration) {
    let accel = accel(b);
    let mut vm = Vm::boot(b, &accel);
    vm.wait_serial(&["listening", "vsock://-1:1024"], BOOT_TIMEOUT)
        .unwrap_or_else(|| panic!("agent never listened on vsock\n{}", vm.diagnostics()));
    let t = vm.started.elapsed();
    vm.wait_serial(&["debug console listening"], Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no debug console\n{}", vm.diagnostics()));
    println!("accel {accel}: qemu start -> agent listening: {} ms", t.as_millis());
    (vm, t)
}

/// What every image must show through the debug console: root on the disk,
/// read-only; the agent's lines in dmesg; strace and iptables from Debian,
/// iptables working on nf_tables loaded from the image's modules (modprobe
/// through the modules.dep that `make image` generated).
fn check_guest(vm: &Vm, root: &str) {
    let out = console(
        vm,
        "echo \"root:$(grep ' / ' /proc/mounts | cut -d' ' -f1-4)\"; dmesg | grep -m3 'pith-agent: INFO'; \
         strace -V | head -1; busybox modprobe nf_tables && iptables-save -V && iptables-restore -V && \
         ip6tables -V && ip6tables -S INPUT",
    );
    assert!(
        out.contains(&format!("root:{root} / ext4 ro")),
        "the root is not {root} (ext4, read-only):\n{out}"
    );
    assert!(
        out.contains("pith-agent: INFO starting"),
        "the agent's lines are not in dmesg:\n{out}"
    );
    for tool in [
        "strace -- version",
        "iptables-save v",
        "iptables-restore v",
        "ip6tables v",
        "-P INPUT ACCEPT",
    ] {
        assert!(out.contains(tool), "no `{tool}` in the guest:\n{out}");
    }
    for l in out.lines().filter(|l| {
        l.starts_with("root:")
            || (l.starts_with('[') && l.contains("pith-agent: INFO"))
            || l.starts_with("strace -- version")
            || l.starts_with("ip")
            || l.starts_with("-P INPUT")
    }) {
        println!("  guest: {}", l.trim());
    }
}

/// A busybox root filesystem for the test container, made in the guest from
/// the image's own busybox (the image carries no test files).
fn make_container_rootfs(vm: &Vm) {
    let out = console(
        vm,
        &format!(
            "mkdir -p {CT_ROOTFS}/bin {CT_ROOTFS}/proc {CT_ROOTFS}/dev {CT_ROOTFS}/sys {CT_ROOTFS}/tmp && \
             cp /bin/busybox {CT_ROOTFS}/bin/ && for a in sh echo cat sleep hostname; do ln -sf busybox {CT_ROOTFS}/bin/$a; done && \
             echo \"rootfs-$((6*7))\""
        ),
    );
    assert!(out.contains("rootfs-42"), "could not make {CT_ROOTFS}:\n{out}");
}

fn container_request(id: &str, args: &[&str]) -> CreateContainerRequest {
    let mut req = common::container_request(PathBuf::from(CT_ROOTFS), id, args);
    let oci = req.OCI.as_mut().unwrap();
    // The sandbox's hostname applies (oci-spec's default spec names one).
    oci.Hostname.clear();
    // An absolute cgroup path, as Kata runtimes send (and as kata-agent makes
    // of an empty one: "/<id>"). A relative one would be put under the
    // agent's own cgroup, which in the service variant is systemd's
    // pith-agent.service, where cgroup v2 refuses it.
    oci.Linux.as_mut().unwrap().CgroupsPath = format!("/{id}");
    req
}

/// CreateSandbox, then a container with strace on the agent (`agent_pid`)
/// across its CreateContainer and StartContainer: its output, its exit code,
/// and the clone/exec lines of the trace.
fn run_container(vm: &Vm, agent_pid: &str, variant: &str) {
    let out = pithctl_ok(
        vm,
        AGENT_PORT,
        &[
            "call",
            "CreateSandbox",
            &format!(r#"{{"sandboxId":"image-{variant}","hostname":"pith-{variant}"}}"#),
        ],
        None,
    );
    println!("CreateSandbox: {}", out.trim());
    make_container_rootfs(vm);
    guest_vm::with_agent(vm, async |c| {
        let strace = Strace::start(vm, agent_pid);
        let t = Instant::now();
        let id = "image-echo";
        let req = container_request(id, &["sh", "-c", "echo hello from $(hostname); exit 3"]);
        guest_vm::create_and_start(&c, vm, &req).await;
        let out = read_stdout(&c, id, id).await;
        assert_eq!(out, format!("hello from pith-{variant}\n"));
        assert_eq!(wait_process(&c, id, id).await, 3);
        let t_container = t.elapsed();
        let trace = strace.stop(vm);
        println!(
            "container: stdout {out:?}, exit code 3 ({} ms, under strace); strace -f -p {agent_pid}:",
            t_container.as_millis()
        );
        for l in guest_vm::container_syscalls(&trace, "sh") {
            println!("  {l}");
        }
        let mut r = RemoveContainerRequest::new();
        r.container_id = id.into();
        r.timeout = 5;
        let _: Empty = call(&c, SVC, "RemoveContainer", &r).await.expect("RemoveContainer");
    });
}

#[test]
#[ignore = "boots a VM: run with `make vm-image`"]
fn image_init() {
    let mut ph = Phases::start();
    let (b, root) = boot("init", Bus::VirtioBlk, "");
    let (mut vm, _) = boot_to_agent(&b);
    ph.mark("boot");
    let serial = vm.serial();
    assert!(serial.contains("\"init_mode\":true"), "{}", vm.diagnostics());
    assert!(
        !serial.contains("\"level\":\"WARN\""),
        "warnings at boot:\n{}",
        vm.diagnostics()
    );
    let check = pithctl_ok(&vm, AGENT_PORT, &["check"], None);
    assert!(check.contains("SERVING"), "{check}");
    let pid1 = console(&vm, "echo \"pid1:$(readlink -f /proc/1/exe)\"");
    assert!(
        pid1.contains("pid1:/usr/bin/pith-agent"),
        "PID 1 is not the agent:\n{pid1}"
    );
    check_guest(&vm, root);
    ph.mark("checks");
    // PID 1 is the keeper; the agent is its child.
    run_container(&vm, &guest_vm::agent_pid(&vm), "init");
    ph.mark("container under strace");

    // DestroySandbox ends the agent, and its keeper (PID 1) powers the VM off.
    guest_vm::destroy_sandbox_and_power_off(&mut vm, Duration::from_secs(30));
    ph.mark("power off");
    println!("phases: {}", ph.summary());
    println!("image init: ok ({:.1})", ph.total());
}

/// The agent: the pith-agent child of the keeper `keeper`.
fn agent_child(vm: &Vm, keeper: &str) -> String {
    let out = console(
        vm,
        &format!(
            "for p in $(cat /proc/{keeper}/task/{keeper}/children); do \
             grep -q '^Name:.pith-agent$' /proc/$p/status && echo \"agent:$p\"; done"
        ),
    );
    out.lines()
        .find_map(|l| l.trim().strip_prefix("agent:").map(str::to_string))
        .unwrap_or_else(|| {
            panic!(
                "no pith-agent child of the keeper {keeper}:\n{out}\n{}",
                vm.diagnostics()
            )
        })
}

/// `systemctl show pith-agent -p NAME` for each name, as `NAME=value` lines.
fn unit_properties(vm: &Vm, names: &[&str]) -> Vec<(String, String)> {
    let out = console(
        vm,
        &format!("systemctl show pith-agent -p {} | sed 's/^/pr''op:/'", names.join(",")),
    );
    // Anywhere in the line: the terminal's escape sequences may come first.
    out.lines()
        .filter_map(|l| l.split_once("prop:").map(|(_, p)| p.trim()))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn property(props: &[(String, String)], name: &str) -> String {
    props
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {props:?}"))
}

#[test]
#[ignore = "boots a VM: run with `make vm-image`"]
fn image_service() {
    let mut ph = Phases::start();
    let (b, root) = boot("service", Bus::VirtioScsi, " agent.log_kmsg");
    let (mut vm, _) = boot_to_agent(&b);
    ph.mark("boot");
    assert!(vm.serial().contains("\"init_mode\":false"), "{}", vm.diagnostics());
    let check = pithctl_ok(&vm, AGENT_PORT, &["check"], None);
    assert!(check.contains("SERVING"), "{check}");

    // systemd is PID 1, the boot finished with no failed unit, and the agent
    // runs with Kata's hardening.
    let state = console(
        &vm,
        "echo \"pid1:$(readlink -f /proc/1/exe)\"; echo \"state:$(systemctl is-system-running --wait)\"; \
         systemctl --failed --no-legend --plain | sed 's/^/fail''ed:/'",
    );
    assert!(state.contains("pid1:/usr/lib/systemd/systemd"), "{state}");
    assert!(
        state.contains("state:running") && !state.contains("failed:"),
        "the boot is not clean:\n{state}\n{}",
        vm.diagnostics()
    );
    let props = unit_properties(
        &vm,
        &[
            "MainPID",
            "ActiveState",
            "NRestarts",
            "OOMScoreAdjust",
            "LimitNOFILE",
            "Restart",
            "StartLimitAction",
        ],
    );
    println!("pith-agent.service: {props:?}");
    assert_eq!(property(&props, "ActiveState"), "active");
    assert_eq!(property(&props, "OOMScoreAdjust"), "-997");
    assert_eq!(property(&props, "Restart"), "on-failure");
    assert_eq!(property(&props, "StartLimitAction"), "poweroff");
    assert_eq!(property(&props, "LimitNOFILE"), "infinity");
    assert_eq!(property(&props, "NRestarts"), "0");
    // The unit's main process is the keeper; the agent is its child.
    let keeper = property(&props, "MainPID");
    let pid = agent_child(&vm, &keeper);
    // No descriptor limit: systemd gives the kernel's ceiling, fs.nr_open.
    let limits = console(
        &vm,
        &format!(
            "echo \"oom:$(cat /proc/{pid}/oom_score_adj)\"; echo \"nr_open:$(cat /proc/sys/fs/nr_open)\"; \
             grep 'open files' /proc/{pid}/limits"
        ),
    );
    assert!(limits.contains("oom:-997"), "{limits}");
    let nr_open = limits
        .lines()
        .find_map(|l| l.split_once("nr_open:").map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{limits}"));
    let agent_limit = limits
        .lines()
        .find_map(|l| {
            l.split_once("Max open files")
                .map(|(_, v)| v.split_whitespace().next().map(String::from))
        })
        .flatten()
        .unwrap_or_else(|| panic!("{limits}"));
    assert_eq!(agent_limit, nr_open, "{limits}");
    ph.mark("systemd and unit checks");
    check_guest(&vm, root);
    ph.mark("checks");
    run_container(&vm, &pid, "service");
    ph.mark("container under strace");

    // kill -9 of the agent: its keeper (the unit's main process) starts a
    // new one, which listens again; systemd sees nothing.
    let t = Instant::now();
    // The console's shell is the agent's child (its relay dies with it): no status to check.
    let _ = pithctl(
        &vm.hvsock(CONSOLE_PORT),
        &["console"],
        Some(&format!("kill -9 {pid}; sleep 10\nexit\n")),
    );
    vm.wait_serial_nth(&["listening", "vsock://-1:1024"], 2, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the agent did not come back after kill -9\n{}", vm.diagnostics()));
    let t_restart = t.elapsed();
    vm.wait_serial_nth(&["debug console listening"], 2, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no debug console after the restart\n{}", vm.diagnostics()));
    let check = pithctl_ok(&vm, AGENT_PORT, &["check"], None);
    assert!(check.contains("SERVING"), "{check}");
    let after = unit_properties(&vm, &["MainPID", "NRestarts", "ActiveState"]);
    assert_eq!(property(&after, "NRestarts"), "0", "{after:?}");
    assert_eq!(property(&after, "ActiveState"), "active", "{after:?}");
    assert_eq!(property(&after, "MainPID"), keeper, "{after:?}");
    let new_agent = agent_child(&vm, &keeper);
    assert_ne!(new_agent, pid, "the same agent after kill -9");
    println!(
        "kill -9 {pid}: the keeper ({keeper}, the unit's main process) started the agent again as {new_agent} \
         (systemd: NRestarts=0, same MainPID), listening again after {} ms",
        t_restart.as_millis()
    );
    ph.mark("kill -9 and restart");

    // The runtime's last call: DestroySandbox ends the agent cleanly, and the
    // unit's ExecStopPost powers the VM off (as the agent does as init).
    guest_vm::destroy_sandbox_and_power_off(&mut vm, Duration::from_secs(60));
    ph.mark("power off");
    println!("phases: {}", ph.summary());
    println!("image service: ok ({:.1})", ph.total());
}

#[test]
fn strip_escapes_drops_terminal_sequences() {
    // bash's bracketed-paste toggles, a colour, and systemctl's OSC 8 hyperlink.
    let raw = "\x1b[?2004lroot:/dev/vda1\n\x1b[0;1;32m●\x1b[0m unit \x1b]8;;file://x/u\x1b\\/u\x1b]8;;\x1b\\ end\x07";
    assert_eq!(guest_vm::strip_escapes(raw), "root:/dev/vda1\n● unit /u end\x07");
}
