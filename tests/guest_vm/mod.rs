//! What the VM tests share (`vm_e2e.rs` boots the initrd, `vm_image.rs` the
//! disk images): a guest booted under qemu with its vsock backend
//! (vhost-device-vsock, hybrid vsock on a Unix socket), its serial console,
//! `pithctl` over hybrid vsock and through the debug console, the accelerator
//! probe, and strace on the agent inside the guest.
//!
//! Knobs (environment): `PITH_VM_DIR` (default `target/vm`), `PITH_VHOST_VSOCK`
//! (default `target/vm/cargo/bin/vhost-device-vsock`), `PITH_VM_ACCEL`
//! (`tcg`, `kvm`; default: probe KVM once and cache the verdict).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use protobuf::well_known_types::empty::Empty;
use protocols::agent::{CreateContainerRequest, DestroySandboxRequest, RemoveContainerRequest, StartContainerRequest};

use crate::common::call;

const SVC: &str = "grpc.AgentService";

/// The agent's ttrpc port.
pub const AGENT_PORT: u32 = 1024;
/// The agent's debug console port.
pub const CONSOLE_PORT: u32 = 1026;
/// The NIC every boot has, and its PCI slot (its `devicePath` is this slot).
pub const NIC_MAC: &str = "02:42:ac:11:00:02";
/// The PCI slot of [`NIC_MAC`]'s NIC.
pub const NIC_SLOT: &str = "06";
/// Longest wait for the agent's listening line (a TCG boot takes a few
/// seconds with the agent as init, ~15 s with systemd).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the guest images and downloads are (`make initrd`, `make image`).
pub fn vm_dir() -> PathBuf {
    std::env::var_os("PITH_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vm"))
}

/// What to boot: kernel, initramfs, command line and extra qemu arguments
/// (disks). Every guest also gets vhost-user-vsock, a virtio-scsi controller
/// `scsi0`, a virtio-net NIC ([`NIC_MAC`] in slot [`NIC_SLOT`]) and a QMP socket.
pub struct Boot {
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub qemu_args: Vec<String>,
    pub vhost: PathBuf,
    pub qboot: PathBuf,
}

impl Boot {
    /// `vm_dir()/vmlinux` and `initrd` with `append`; panics naming `make_target`
    /// when a file is missing.
    pub fn new(initrd: &str, append: String, make_target: &str) -> Boot {
        let dir = vm_dir();
        let boot = Boot {
            vmlinux: dir.join("vmlinux"),
            initrd: dir.join(initrd),
            append,
            qemu_args: Vec::new(),
            vhost: std::env::var_os("PITH_VHOST_VSOCK")
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join("cargo/bin/vhost-device-vsock")),
            qboot: PathBuf::from("/usr/share/qemu/qboot.rom"),
        };
        boot.require(&[&boot.vmlinux, &boot.initrd, &boot.vhost, &boot.qboot], make_target);
        boot
    }

    /// Panics unless every path exists.
    pub fn require(&self, paths: &[&Path], make_target: &str) {
        for p in paths {
            assert!(
                p.exists(),
                "{} missing: run `make {make_target}` (it builds and installs what is needed)",
                p.display()
            );
        }
    }
}

/// The kernel command line every test guest gets: serial console, cgroup v2,
/// debug logs, the debug console, and the modules the agent loads.
pub fn agent_cmdline(kernel_modules: &str) -> String {
    format!(
        "console=ttyS0 quiet panic=1 cgroup_no_v1=all agent.log=debug agent.debug_console \
         agent.debug_console_vport={CONSOLE_PORT} agent.kernel_modules={kernel_modules}"
    )
}

/// The first line of `vm_dir()/name` (a file `make initrd` or `make image` writes).
pub fn read_vm_file(name: &str) -> String {
    std::fs::read_to_string(vm_dir().join(name))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A booted VM: qemu and its vsock backend, both killed on drop (every exit
/// path, a failed assertion included: a wedged vsock leaves both spinning).
pub struct Vm {
    pub dir: tempfile::TempDir,
    pub qemu: Option<Child>,
    pub backend: Child,
    pub started: Instant,
}

impl Vm {
    pub fn boot(boot: &Boot, accel: &str) -> Vm {
        let dir = tempfile::Builder::new().prefix("pith-vm-").tempdir().unwrap();
        let d = dir.path();
        let backend = Command::new(&boot.vhost)
            .arg("--vm")
            .arg(format!(
                "guest-cid=3,socket={},uds-path={}",
                d.join("vhost.sock").display(),
                d.join("vm.vsock").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("vhost.log")).unwrap())
            .die_with_parent()
            .spawn()
            .expect("start vhost-device-vsock");
        let mut vm = Vm {
            dir,
            qemu: None,
            backend,
            started: Instant::now(),
        };
        wait_for(Duration::from_secs(10), || vm.path("vhost.sock").exists())
            .unwrap_or_else(|| panic!("vhost-device-vsock made no socket; log:\n{}", vm.read("vhost.log")));
        let d = vm.dir.path().to_path_buf();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", &format!("pc,accel={accel},memory-backend=mem")])
            .args([
                "-m",
                "512M",
                "-object",
                "memory-backend-memfd,id=mem,size=512M,share=on",
            ])
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .arg("-bios")
            .arg(&boot.qboot)
            .arg("-kernel")
            .arg(&boot.vmlinux)
            .arg("-initrd")
            .arg(&boot.initrd)
            .args(["-append", &boot.append])
            .arg("-serial")
            .arg(format!("file:{}", d.join("serial.log").display()))
            .arg("-chardev")
            .arg(format!("socket,id=c0,path={}", d.join("vhost.sock").display()))
            .args(["-device", "vhost-user-vsock-pci,chardev=c0"])
            .args(["-device", "virtio-scsi-pci,id=scsi0"])
            // A NIC on a hub with nothing else on it: it reaches nothing outside
            // the VM. Before the callers' devices, which take free slots.
            .args(["-netdev", "hubport,id=n0,hubid=0"])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={NIC_MAC},addr=0x{NIC_SLOT}"),
            ])
            .args(&boot.qemu_args)
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", d.join("qmp.sock").display()))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("qemu.log")).unwrap())
            .stderr(std::fs::File::create(d.join("qemu.err")).unwrap())
            .die_with_parent();
        vm.started = Instant::now();
        vm.qemu = Some(cmd.spawn().expect("start qemu-system-x86_64"));
        vm
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.path(name)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn serial(&self) -> String {
        self.read("serial.log")
    }

    /// Waits for a serial console line containing every needle; `None` on
    /// timeout or when qemu has exited.
    pub fn wait_serial(&mut self, needles: &[&str], timeout: Duration) -> Option<String> {
        self.wait_serial_nth(needles, 1, timeout)
    }

    /// Waits for the `n`th serial console line containing every needle.
    pub fn wait_serial_nth(&mut self, needles: &[&str], n: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .serial()
                .lines()
                .filter(|l| needles.iter().all(|x| l.contains(x)))
                .nth(n - 1)
            {
                return Some(l.to_string());
            }
            if Instant::now() > deadline || self.exited().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.qemu.as_mut().and_then(|q| q.try_wait().unwrap())
    }

    /// Waits up to `timeout` for qemu to exit; panics with the diagnostics if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                return st;
            }
            assert!(
                t.elapsed() < timeout,
                "qemu still running {} s after the stop\n{}",
                timeout.as_secs(),
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn hvsock(&self, port: u32) -> String {
        format!("hvsock://{}:{port}", self.path("vm.vsock").display())
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "--- serial console ---\n{}\n--- qemu stderr ---\n{}\n--- vhost-device-vsock ---\n{}",
            self.serial(),
            self.read("qemu.err"),
            self.read("vhost.log")
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(q) = self.qemu.as_mut() {
            let _ = q.kill();
            let _ = q.wait();
        }
        let _ = self.backend.kill();
        let _ = self.backend.wait();
    }
}

/// Children that get SIGKILL when the test process dies (a timeout's SIGKILL
/// skips every Drop): no qemu left spinning.
trait DieWithParent {
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    fn die_with_parent(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: only prctl(2), async-signal-safe, runs between fork and exec.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn pithctl(addr: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(crate::common::pithctl_bin())
        .args(["--addr", addr, "--timeout", "20"])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pithctl");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs pithctl and returns its stdout; panics with both streams on failure.
pub fn pithctl_ok(vm: &Vm, port: u32, args: &[&str], stdin: Option<&str>) -> String {
    let out = pithctl(&vm.hvsock(port), args, stdin);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pithctl {args:?} failed: {}\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr),
        vm.diagnostics()
    );
    text
}

/// Runs a shell script through the agent's debug console and returns what it
/// printed (stdout and stderr), without the terminal's echo of the script and
/// its prompts: every output line is tagged on its way out (the tag is split
/// by quotes in the script, so the echo never carries it), and only what
/// follows a tag is kept.
pub fn console(vm: &Vm, script: &str) -> String {
    let raw = pithctl_ok(
        vm,
        CONSOLE_PORT,
        &["console"],
        Some(&format!("( {script}\n) 2>&1 | sed 's/^/@@pi''th@@/'\nexit\n")),
    );
    let mut out = String::new();
    for l in strip_escapes(&raw).lines() {
        if let Some((_, l)) = l.split_once("@@pith@@") {
            out.push_str(l.trim_end_matches('\r'));
            out.push('\n');
        }
    }
    out
}

/// The agent's pid, found through the debug console: the `pith-agent`
/// process whose parent is PID 1 (its keeper as init, or systemd).
pub fn agent_pid(vm: &Vm) -> String {
    let out = console(
        vm,
        "for s in /proc/[0-9]*/status; do grep -q '^Name:.pith-agent$' $s && grep -q '^PPid:.1$' $s && \
         echo agentpid:$(basename $(dirname $s)); done",
    );
    let pids: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("agentpid:")).collect();
    assert_eq!(pids.len(), 1, "not one agent under PID 1:\n{out}\n{}", vm.diagnostics());
    pids[0].trim().to_string()
}

/// Text without ANSI escape sequences: CSI (`ESC [ ... final byte`) such as
/// colours and bracketed-paste toggles, and OSC (`ESC ] ... BEL` or `ESC \\`)
/// such as systemctl's hyperlinks.
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('[') => {
                for c in it.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = it.next() {
                    if c == '\x07' || (c == '\x1b' && it.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The accelerator to use: `PITH_VM_ACCEL`, else a cached verdict of whether a
/// KVM boot of `probe` reaches the agent (the KVM here may be a nested one that
/// only runs special kernels), else TCG.
pub fn accel(probe: &Boot) -> String {
    match std::env::var("PITH_VM_ACCEL").as_deref() {
        Ok("tcg") | Ok("kvm") => return std::env::var("PITH_VM_ACCEL").unwrap(),
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return "tcg".into();
    }
    let cache = vm_dir().join("accel");
    if let Ok(v) = std::fs::read_to_string(&cache) {
        return v.trim().to_string();
    }
    let start = Instant::now();
    let mut vm = Vm::boot(probe, "kvm");
    let ok = vm
        .wait_serial(&["listening", "vsock://"], Duration::from_secs(15))
        .is_some();
    drop(vm);
    let verdict = if ok { "kvm" } else { "tcg" };
    println!(
        "KVM probe: {} in {:.1} s -> {verdict} (cached in {})",
        if ok { "booted" } else { "no agent" },
        start.elapsed().as_secs_f64(),
        cache.display()
    );
    let _ = std::fs::write(&cache, verdict);
    verdict.into()
}

/// strace on the agent, driven through the debug console: `start` attaches
/// `strace -f -p PID` (following every thread and every child the agent makes
/// from then on) in the background, `stop` detaches it and returns the trace.
pub struct Strace {
    pid: String,
}

/// Where the trace and strace's own messages go in the guest (a tmpfs).
const STRACE_LOG: &str = "/run/pith-strace.log";
const STRACE_ERR: &str = "/run/pith-strace.err";
const STRACE_PID: &str = "/run/pith-strace.pid";

impl Strace {
    /// Attaches to `pid` and waits (up to 30 s) until strace says it is attached.
    pub fn start(vm: &Vm, pid: &str) -> Strace {
        let t = Instant::now();
        // The shell writes its pid and becomes strace; setsid keeps strace out
        // of the console's session, which ends before the trace does.
        let out = console(
            vm,
            &format!(
                "setsid sh -c 'echo $$ > {STRACE_PID}; exec strace -f -tt \
                 -e trace=clone,clone3,fork,vfork,execve,execveat -o {STRACE_LOG} -p {pid}' \
                 </dev/null >/dev/null 2>{STRACE_ERR} &\n\
                 i=0; until grep -q attached {STRACE_ERR} 2>/dev/null; do i=$((i+1)); [ $i -le 300 ] || break; sleep 0.1; done\n\
                 echo \"strace-$(cat {STRACE_ERR})\""
            ),
        );
        assert!(
            out.contains(&format!("strace-strace: Process {pid} attached")),
            "strace did not attach to {pid}:\n{out}\n{}",
            vm.diagnostics()
        );
        println!("strace -f -p {pid}: attached in {} ms", t.elapsed().as_millis());
        Strace { pid: pid.to_string() }
    }

    /// Detaches (SIGINT) and returns the trace.
    pub fn stop(self, vm: &Vm) -> String {
        let t = Instant::now();
        let out = console(
            vm,
            &format!(
                "p=$(cat {STRACE_PID}); kill -INT $p\n\
                 i=0; while [ -d /proc/$p ]; do i=$((i+1)); [ $i -le 100 ] || break; sleep 0.1; done\n\
                 cat {STRACE_LOG}"
            ),
        );
        assert!(
            !out.is_empty(),
            "strace on {} wrote nothing\n{}",
            self.pid,
            vm.diagnostics()
        );
        println!(
            "strace -f -p {}: detached and read in {} ms",
            self.pid,
            t.elapsed().as_millis()
        );
        out
    }
}

/// Checks a trace of the agent across CreateContainer + StartContainer: the
/// clone(2) that made the container (new namespaces), the container init
/// executing, and the container's process `argv0` executed. Returns the lines.
pub fn container_syscalls(trace: &str, argv0: &str) -> Vec<String> {
    let clone = trace
        .lines()
        .find(|l| (l.contains("clone(") || l.contains("clone3(")) && l.contains("CLONE_NEWNS"));
    let init_exec = trace.lines().find(|l| l.contains("execveat("));
    let process_exec = trace
        .lines()
        .find(|l| l.contains("execve(") && l.contains(&format!("[\"{argv0}\"")));
    let found = [clone, init_exec, process_exec];
    assert!(
        found.iter().all(|l| l.is_some()),
        "the trace lacks the container's clone (CLONE_NEWNS) {:?}, its init's execveat {:?} or the \
         execve of {argv0} {:?}:\n{trace}",
        found[0],
        found[1],
        found[2]
    );
    found.iter().map(|l| l.unwrap().trim().to_string()).collect()
}

/// Wall-clock time per phase of a test, for its summary line (what each step
/// of a VM test costs in CI).
pub struct Phases {
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    pub fn start() -> Phases {
        Phases {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Ends the phase called `name`.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }

    /// `name 1.2 s, ...` for every phase.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(n, d)| format!("{n} {:.1} s", d.as_secs_f64()))
            .collect();
        parts.join(", ")
    }

    /// The sum of all phases, in seconds.
    pub fn total(&self) -> f64 {
        self.done.iter().map(|(_, d)| d.as_secs_f64()).sum()
    }
}

/// Runs `f` with a ttrpc client connected to the agent over hybrid vsock.
pub fn with_agent<T>(vm: &Vm, f: impl AsyncFnOnce(ttrpc::r#async::Client) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr: protocols::addr::Address = vm.hvsock(AGENT_PORT).parse().unwrap();
    rt.block_on(async {
        let c = pithctl::client::connect(&addr, Duration::from_secs(20))
            .await
            .expect("connect");
        f(c).await
    })
}

/// CreateContainer (the diagnostics on failure) and StartContainer.
pub async fn create_and_start(c: &ttrpc::r#async::Client, vm: &Vm, req: &CreateContainerRequest) {
    let _: Empty = call(c, SVC, "CreateContainer", req)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e:?}\n{}", vm.diagnostics()));
    let mut s = StartContainerRequest::new();
    s.container_id = req.container_id.clone();
    let _: Empty = call(c, SVC, "StartContainer", &s).await.expect("StartContainer");
}

/// DestroySandbox, after which the agent ends and the VM powers off: qemu
/// must exit 0 within `timeout`, the kernel having said so.
pub fn destroy_sandbox_and_power_off(vm: &mut Vm, timeout: Duration) {
    with_agent(vm, async |c| {
        let _: Empty = call(&c, SVC, "DestroySandbox", &DestroySandboxRequest::new())
            .await
            .unwrap_or_else(|e| panic!("DestroySandbox: {e:?}\n{}", vm.diagnostics()));
    });
    let status = vm.wait_exit(timeout);
    assert!(status.success(), "qemu exited with {status}\n{}", vm.diagnostics());
    assert!(vm.serial().contains("reboot: Power down"), "{}", vm.diagnostics());
}

pub async fn read_stdout(c: &ttrpc::r#async::Client, id: &str, exec_id: &str) -> String {
    String::from_utf8_lossy(&crate::common::containers::read_all(c, id, exec_id, "ReadStdout").await).into_owned()
}

/// RemoveContainer of `id` with `timeout` seconds for its processes to end; panics naming `id`.
pub async fn remove_container(c: &ttrpc::r#async::Client, id: &str, timeout: u32) {
    let mut r = RemoveContainerRequest::new();
    r.container_id = id.into();
    r.timeout = timeout;
    let _: Empty = call(c, SVC, "RemoveContainer", &r)
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e:?}"));
}

pub async fn wait_process(c: &ttrpc::r#async::Client, id: &str, exec_id: &str) -> i32 {
    crate::common::containers::wait(c, id, exec_id)
        .await
        .expect("WaitProcess")
}
