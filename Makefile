# pith: build, run, test, bench.
#   make run    build and start the agent on unix:///tmp/pith-agent.sock
#   make test   formatting, lints, unit and whole-agent tests (what CI runs)
#   make bench  RPC latency against stock ttrpc-rust and a plain floor, RSS, binary size

SHELL        := /bin/bash
CARGO        ?= cargo
export PATH  := $(HOME)/.cargo/bin:$(PATH)
RUN_SOCK     ?= /tmp/pith-agent.sock
MUSL_TARGET  := x86_64-unknown-linux-musl
STATIC_BIN   := target/$(MUSL_TARGET)/guest/pith-agent
# Non-PIE static executable for the guest: no start-up relocations.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS ?= -C relocation-model=static

.PHONY: all build run test lint unit bench static toolchain clean test-deps

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

test: lint unit

lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Container tests use a busybox rootfs from Debian's busybox-static.
test-deps:
	@test -x /bin/busybox || { echo "installing busybox-static (test rootfs)"; apt-get update -qq && apt-get install -y -qq busybox-static; }

unit: toolchain test-deps
	$(CARGO) test --workspace

# Static agent for the guest image: musl, size-tuned release profile.
static: toolchain
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	$(CARGO) build --profile guest --target $(MUSL_TARGET) --bin pith-agent
	@ls -l $(STATIC_BIN)

bench: toolchain
	@if rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET); then \
	  $(CARGO) build --profile guest --target $(MUSL_TARGET) --bin pith-agent && musl=1; \
	else echo "NOTE: $(MUSL_TARGET) target unavailable; measuring the gnu build only"; fi; \
	$(CARGO) build --release --bin pith-agent; \
	echo "== stripped release binary size"; \
	if [ -n "$$musl" ]; then printf "  static musl (%s): %s bytes\n" $(STATIC_BIN) $$(stat -c %s $(STATIC_BIN)); \
	  file $(STATIC_BIN) | sed 's/^/  /'; bins="musl=$(CURDIR)/$(STATIC_BIN):"; fi; \
	printf "  gnu, dynamic (target/release/pith-agent): %s bytes\n" $$(stat -c %s target/release/pith-agent); \
	PITH_AGENT_BINS="$${bins}gnu=$(CURDIR)/target/release/pith-agent" $(CARGO) bench --bench rpc_check
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

clean:
	$(CARGO) clean
