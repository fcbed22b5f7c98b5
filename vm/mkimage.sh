#!/bin/bash
# make image: the rootfs trees `make rootfs` exported (target/vm/rootfs-<variant>.tar)
# as bootable ext4 disk images, the way Kata's osbuilder image-builder makes its
# `image` guest type:
#   target/vm/rootfs-<variant>.img  a raw disk: an MBR with one Linux partition
#                                   from 1 MiB to the end, ext4 (4 KiB blocks, 3%
#                                   reserved) holding the rootfs and the kernel's
#                                   modules under /lib/modules/<release>
#   target/vm/image-initrd.img      a small initramfs for Debian's kernel, whose
#                                   virtio drivers are modules: it loads them,
#                                   mounts root= read-only and switch_roots to the
#                                   image's /sbin/init (vm/image-init.sh)
#   target/vm/image.kernel_modules  the agent.kernel_modules value to boot with
#
# Like image_builder.sh it checks the tree first (/sbin/init is the agent, or
# systemd with the agent as a service), and in systemd trees removes the units
# Kata removes and leaves /etc/machine-id empty so each boot gets its own.
# Unlike it, no loop device or mount: mkfs.ext4 -d fills the filesystem from
# the directory, and there is no NVDIMM/DAX header (qemu here attaches the
# image as virtio-blk or virtio-scsi).
#
#   ./vm/mkimage.sh [VARIANT...]      default: init service
#   AGENT=path   the agent the images must carry (default: make static's output)
#   IMAGE_FREE_MB=N  free space left in the root filesystem (default 64)
set -euo pipefail
cd "$(dirname "$0")/.."
# The trees and the filesystem images are built in a tmpfs of a private mount
# namespace: fast (no disk writes but the finished image) and gone on every
# exit path, a failure included.
if [ -z "${PITH_MKIMAGE_NS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "make image needs root (the rootfs trees keep their owners and device nodes)" >&2; exit 1; }
  PITH_MKIMAGE_NS=1 exec unshare -m --propagation private "$0" "$@"
fi
WORK=$(mktemp -d /tmp/pith-mkimage.XXXXXX)
trap 'umount -l "$WORK" 2>/dev/null; rmdir "$WORK"' EXIT
mount -t tmpfs -o mode=0700 pith-mkimage "$WORK"
VM=target/vm
AGENT=${AGENT:-target/x86_64-unknown-linux-musl/guest/pith-agent}
FREE_MB=${IMAGE_FREE_MB:-64}
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(init service)
# What the agent loads at boot (each after its depends=); virtio_pci and the
# disk drivers are already loaded by the initramfs by then.
AGENT_MODULES=(virtio_pci vmw_vsock_virtio_transport virtio_scsi sd_mod virtio_blk overlay ext4)
# What the initramfs loads to reach the root disk.
ROOT_MODULES=(virtio_pci virtio_blk virtio_scsi sd_mod)
# Units Kata's image_builder.sh removes from systemd images (no udev: the agent
# handles uevents; no journal, timesync, tmpfiles, utmp, random seed, coredump).
# systemd-journald-audit (a socket of the removed journal, newer than Kata's
# list) goes too, or it fails at boot.
KATA_REMOVED_UNITS=(systemd-udevd systemd-udevd-control systemd-udevd-kernel systemd-udev-trigger
  systemd-coredump@ systemd-journald systemd-journald-dev-log systemd-journal-flush
  systemd-random-seed systemd-timesyncd systemd-tmpfiles-setup systemd-update-utmp
  systemd-journald-audit)
KATA_REMOVED_FILES=(systemd-bless-boot-generator systemd-fstab-generator systemd-getty-generator
  systemd-gpt-auto-generator systemd-tmpfiles-cleanup.timer)

[ -x "$AGENT" ] || { echo "no agent binary at $AGENT (run make static)" >&2; exit 1; }
vm/fetch.sh >/dev/null
missing=
for c in mkfs.ext4:e2fsprogs sfdisk:fdisk depmod:kmod cpio:cpio; do
  command -v "${c%%:*}" >/dev/null || missing="$missing ${c#*:}"
done
if [ -n "$missing" ]; then
  echo "installing$missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
rel=$(cat "$VM/kernel.release")
kmods="$VM/kernel/lib/modules/$rel"
. vm/modules.sh

die() { echo "mkimage: $*" >&2; exit 1; }

# The checks image_builder.sh's check_rootfs makes, and that the agent is the
# one `make static` built.
check_tree() {
  local root=$1 variant=$2 init
  # Resolved inside the tree (its links are absolute paths of the guest).
  init=$(chroot "$root" readlink -f /sbin/init)
  [ -n "$init" ] && [ -x "$root$init" ] || die "$variant: /sbin/init is missing"
  cmp -s "$root/usr/bin/pith-agent" "$AGENT" || die "$variant: /usr/bin/pith-agent is not $AGENT (rerun make rootfs)"
  case "$variant" in
    init) [ "$init" = /usr/bin/pith-agent ] || die "init: /sbin/init is $init, not the agent" ;;
    service)
      [ "$init" = /usr/lib/systemd/systemd ] || die "service: /sbin/init is $init, not systemd"
      [ -L "$root/etc/systemd/system/kata-containers.target.wants/pith-agent.service" ] || die "service: pith-agent.service is not enabled"
      ;;
  esac
  for t in strace iptables iptables-save iptables-restore ip6tables busybox; do
    [ -x "$root/usr/sbin/$t" ] || [ -x "$root/usr/bin/$t" ] || die "$variant: no $t in the rootfs"
  done
}

# The guest kernel's modules, with the modules.dep and modules.alias that
# Debian's package leaves to the installer (depmod).
add_modules() {
  local root=$1
  mkdir -p "$root/lib/modules"
  rm -rf "${root:?}/lib/modules/$rel"
  cp -a "$kmods" "$root/lib/modules/$rel"
  depmod -b "$root" "$rel"
}

# What image_builder.sh's setup_systemd does, plus a tmpfs /tmp (its
# rootfs.sh installs tmp.mount): the root is mounted read-only.
setup_systemd() {
  local root=$1 u
  for u in "${KATA_REMOVED_UNITS[@]}"; do
    find "$root/usr/lib/systemd" "$root/etc/systemd" \( -name "$u.service" -o -name "$u.socket" \) -exec rm -f {} +
  done
  for u in "${KATA_REMOVED_FILES[@]}"; do
    find "$root/usr/lib/systemd" "$root/etc/systemd" -name "$u" -exec rm -f {} +
  done
  : > "$root/etc/machine-id"
  if [ -f "$root/usr/share/systemd/tmp.mount" ]; then
    cp "$root/usr/share/systemd/tmp.mount" "$root/etc/systemd/system/tmp.mount"
    mkdir -p "$root/etc/systemd/system/local-fs.target.wants"
    ln -sf /etc/systemd/system/tmp.mount "$root/etc/systemd/system/local-fs.target.wants/tmp.mount"
  fi
}

# An ext4 filesystem image of the tree, sized like image_builder.sh does: the
# content plus room, grown until mkfs.ext4 -d fits it.
make_fs() {
  local root=$1 fs=$2 used size try
  used=$(du -s -B1M "$root" | cut -f1)
  size=$((used + used / 8 + FREE_MB))
  for try in 1 2 3 4 5; do
    rm -f "$fs"
    truncate -s "${size}M" "$fs"
    if mkfs.ext4 -q -F -b 4096 -m 3 -L pith-root -d "$root" "$fs" 2>"$fs.err"; then
      rm -f "$fs.err"
      # image_builder.sh ends with fsck -D (directory optimisation); exit
      # status 1 means "fixed", which -D always does.
      e2fsck -f -y -D "$fs" >/dev/null 2>&1 || [ $? -le 1 ] || die "e2fsck of $fs failed"
      echo "$size"
      return 0
    fi
    size=$((size + size / 4))
  done
  die "mkfs.ext4 -d $root failed: $(cat "$fs.err")"
}

# The disk: an MBR with one Linux partition at 1 MiB, the filesystem in it.
make_disk() {
  local fs=$1 disk=$2 fs_mb=$3
  rm -f "$disk"
  truncate -s "$((fs_mb + 1))M" "$disk"
  echo 'label: dos
start=2048, type=83' | sfdisk -q "$disk"
  dd if="$fs" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
}

for variant in "${variants[@]}"; do
  start=$(date +%s.%N)
  tar="$VM/rootfs-$variant.tar"
  [ -f "$tar" ] || die "no $tar (run make rootfs)"
  root="$WORK/$variant.root"
  rm -rf "$root" && mkdir -p "$root"
  tar -x --numeric-owner -p -f "$tar" -C "$root"
  # What docker export adds to any container: not part of a guest.
  rm -rf "$root/.dockerenv" "${root:?}/dev/"*
  check_tree "$root" "$variant"
  add_modules "$root"
  [ "$variant" = service ] && setup_systemd "$root"
  fs="$WORK/$variant.ext4"
  fs_mb=$(make_fs "$root" "$fs")
  make_disk "$fs" "$VM/rootfs-$variant.img.tmp" "$fs_mb"
  mv "$VM/rootfs-$variant.img.tmp" "$VM/rootfs-$variant.img"
  rm -rf "$fs" "$root"
  awk -v a="$start" -v b="$(date +%s.%N)" -v f="$VM/rootfs-$variant.img" -v m="$((fs_mb + 1))" \
    -v u="$(du -s -B1M "$VM/rootfs-$variant.img" | cut -f1)" \
    'BEGIN { printf "image: %s (%d MiB, %d MiB allocated) in %.1f s\n", f, m, u, b - a }'
done

# The initramfs that mounts the root disk.
lroot="$WORK/initrd-root"
rm -rf "$lroot"
mkdir -p "$lroot"/{bin,dev,proc,sys,newroot,lib/modules/"$rel"}
install -m 0755 "$VM/busybox" "$lroot/bin/busybox"
install -m 0755 vm/image-init.sh "$lroot/init"
copy_modules "$kmods" "$lroot/lib/modules/$rel" "${ROOT_MODULES[@]}" > "$lroot/modules.load"
(cd "$lroot" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$VM/image-initrd.img.tmp"
mv "$VM/image-initrd.img.tmp" "$VM/image-initrd.img"
(IFS=,; echo "${AGENT_MODULES[*]}") > "$VM/image.kernel_modules"
echo "initramfs: $VM/image-initrd.img ($(stat -c %s "$VM/image-initrd.img") bytes; loads ${ROOT_MODULES[*]} and their dependencies)"
echo "boot with: root=/dev/vda1 (virtio-blk) or root=/dev/sda1 (virtio-scsi) rootfstype=ext4 ro agent.kernel_modules=$(cat "$VM/image.kernel_modules")"
