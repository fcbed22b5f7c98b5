#!/bin/bash
# make rootfs: builds Dockerfile.rootfs for both variants and exports each tree
# to target/vm/rootfs-<variant>.tar (what `make image` turns into disk images).
#
# * Installs what is missing: Debian's docker.io (dockerd, containerd, runc)
#   and mmdebstrap.
# * Uses the Docker daemon that answers (DOCKER_HOST or the default socket);
#   when none does, starts its own: private socket, data root and exec root
#   under target/docker, vfs storage, no iptables, no bridge. Its data and
#   exec roots are a tmpfs in a private mount namespace (vfs copies every
#   layer: ~1.5 GB that would take minutes to write and delete on a shared
#   disk), so stopping it, on every exit path, leaves nothing behind.
# * The base image comes from Debian's packages, never a registry:
#   mmdebstrap --variant=minbase bookworm (cached as target/vm/debian-base.tar),
#   docker import as pith-debian:bookworm.
# * The agent is `make static`'s binary (AGENT), passed in through the build
#   context; each exported tree is checked to carry exactly that file.
#
#   ./vm/rootfs.sh [VARIANT...]       default: init service
#   ROOTFS_IMAGE=name                 image name (default pith-rootfs; tags :init, :service)
set -euo pipefail
cd "$(dirname "$0")/.."
VM=target/vm
DD=$PWD/target/docker
AGENT=${AGENT:-target/x86_64-unknown-linux-musl/guest/pith-agent}
IMAGE=${ROOTFS_IMAGE:-pith-rootfs}
BASE=pith-debian:bookworm
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(init service)

[ "$(id -u)" = 0 ] || { echo "make rootfs needs root (dockerd, mmdebstrap)" >&2; exit 1; }
[ -x "$AGENT" ] || { echo "no agent binary at $AGENT (run make static)" >&2; exit 1; }
mkdir -p "$VM"
missing=
command -v dockerd >/dev/null || missing="$missing docker.io"
command -v mmdebstrap >/dev/null || missing="$missing mmdebstrap"
if [ -n "$missing" ]; then
  echo "installing$missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Debian's client goes with Debian's daemon (a newer client elsewhere on PATH
# would want buildx for `docker build`).
DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}
docker() { "$DOCKER" "$@"; }

own_pid=
stop_own_dockerd() {
  [ -n "$own_pid" ] || return 0
  local c
  # The containerd it started, to be sure it goes too should dockerd die hard.
  c=$(pgrep -P "$own_pid" -x containerd 2>/dev/null || true)
  kill -TERM "$own_pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$own_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$own_pid" 2>/dev/null || true
  wait "$own_pid" 2>/dev/null || true
  for p in $c; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  own_pid=
  # Its tmpfs went with its mount namespace; the mount points stay empty.
  rm -rf "$DD"
  echo "rootfs: stopped the private dockerd"
}
cleanup() {
  local rc=$?
  [ -n "${cid:-}" ] && docker rm -f "$cid" >/dev/null 2>&1
  rm -rf "$VM"/rootfs-*.tar.tmp "$VM/debian-base.tar.tmp"
  stop_own_dockerd
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

t0=$(date +%s.%N)
if docker info >/dev/null 2>&1; then
  echo "rootfs: using the Docker daemon that answers ($(docker info -f '{{.Name}} {{.ServerVersion}} {{.Driver}}'))"
else
  rm -rf "$DD" && mkdir -p "$DD/state"
  # setpriv, unshare and sh exec: $! is dockerd's pid. Its parent-death
  # signal stops it even when this script is killed outright (SIGKILL skips
  # the trap).
  setpriv --pdeathsig TERM unshare -m --propagation private sh -c '
    mount -t tmpfs -o size=8g,mode=0710 pith-docker "$0/state" || exit 1
    exec dockerd --host "unix://$0/docker.sock" --data-root "$0/state/data" --exec-root "$0/state/exec" \
      --pidfile "$0/state/dockerd.pid" --storage-driver=vfs --iptables=false --bridge=none' "$DD" \
    >"$DD/dockerd.log" 2>&1 &
  own_pid=$!
  export DOCKER_HOST="unix://$DD/docker.sock"
  for _ in $(seq 1 300); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$own_pid" 2>/dev/null || { cat "$DD/dockerd.log" >&2; echo "rootfs: dockerd exited" >&2; exit 1; }
    sleep 0.2
  done
  docker info >/dev/null 2>&1 || { tail -20 "$DD/dockerd.log" >&2; echo "rootfs: dockerd did not answer within 60 s" >&2; exit 1; }
  echo "rootfs: started a private dockerd (vfs, data root $DD/state/data on a private tmpfs)"
fi
stamp() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }

# The base image, from Debian's packages: minbase with merged /usr (no
# usrmerge, hence no perl), without documentation, man pages and locales (as
# debian:bookworm-slim leaves them out), apt pointed at the release, its
# updates and its security updates.
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  t=$(date +%s.%N)
  if [ ! -s "$VM/debian-base.tar" ]; then
    mmdebstrap --quiet --format=tar --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      bookworm "$VM/debian-base.tar.tmp" \
      "deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian bookworm-updates main" \
      "deb http://deb.debian.org/debian-security bookworm-security main" \
      >"$VM/debian-base.log" 2>&1 ||
      { tail -30 "$VM/debian-base.log" >&2; echo "rootfs: mmdebstrap failed (log: $VM/debian-base.log)" >&2; exit 1; }
    mv "$VM/debian-base.tar.tmp" "$VM/debian-base.tar"
  fi
  docker import "$VM/debian-base.tar" "$BASE" >/dev/null
  echo "rootfs: base image $BASE from Debian's packages in $(stamp "$t")"
fi

for v in "${variants[@]}"; do
  t=$(date +%s.%N)
  docker build --network host -f Dockerfile.rootfs --build-arg VARIANT="$v" \
    --build-arg BASE_IMAGE="$BASE" -t "$IMAGE:$v" . >"$VM/rootfs-$v.log" 2>&1 ||
    { tail -40 "$VM/rootfs-$v.log" >&2; echo "rootfs: docker build of $v failed (log: $VM/rootfs-$v.log)" >&2; exit 1; }
  cid=$(docker create "$IMAGE:$v" /usr/bin/pith-agent)
  docker export -o "$VM/rootfs-$v.tar.tmp" "$cid"
  docker rm "$cid" >/dev/null
  cid=
  tar -xOf "$VM/rootfs-$v.tar.tmp" usr/bin/pith-agent | cmp -s - "$AGENT" ||
    { echo "rootfs: $IMAGE:$v does not carry $AGENT" >&2; exit 1; }
  mv "$VM/rootfs-$v.tar.tmp" "$VM/rootfs-$v.tar"
  echo "rootfs: $IMAGE:$v -> $VM/rootfs-$v.tar ($(($(stat -c %s "$VM/rootfs-$v.tar") >> 20)) MiB) in $(stamp "$t")"
done
echo "rootfs: done in $(stamp "$t0")"
