#!/bin/busybox sh
# /init of the small initramfs that boots a pith disk image (vm/mkimage.sh).
# Debian's kernel has virtio-pci, virtio-blk and virtio-scsi as modules, so it
# cannot mount a root on a virtio disk by itself (Kata's own guest kernel has
# them built in and needs no initramfs). This loads them (/modules.load lists
# the .ko files in dependency order), mounts the root= device read-only as Kata
# does, and hands PID 1 to the image's /sbin/init: the agent, or systemd.
# On any failure it says why and exits: the kernel panics and, with panic=N,
# the VM ends instead of hanging.

/bin/busybox mkdir -p /dev /proc /sys /newroot
/bin/busybox mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys

fail() { echo "image-init: $*"; exit 1; }

while read -r ko; do
  insmod "/lib/modules/$(uname -r)/$ko" || fail "insmod $ko failed"
done < /modules.load

root= fstype=ext4 mode=ro flags= init=/sbin/init
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root=${arg#root=} ;;
    rootfstype=*) fstype=${arg#rootfstype=} ;;
    rootflags=*) flags=,${arg#rootflags=} ;;
    rw) mode=rw ;;
    ro) mode=ro ;;
    init=*) init=${arg#init=} ;;
  esac
done
case "$root" in
  /dev/*) ;;
  *) fail "root=$root: give a device path (root=/dev/vda1, root=/dev/sda1)" ;;
esac

# The disk appears once its driver has probed the PCI device: wait up to 30 s.
i=0
while [ ! -b "$root" ]; do
  i=$((i + 1))
  [ $i -le 300 ] || fail "no $root after 30 s; block devices: $(ls /sys/class/block | tr '\n' ' ')"
  sleep 0.1
done
mount -t "$fstype" -o "$mode$flags" "$root" /newroot || fail "mount $root ($fstype, $mode$flags) failed"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "no $init on $root"

# The new init finds /dev populated (moved, not remounted) and mounts /proc
# and /sys itself.
umount /proc /sys
mount -o move /dev /newroot/dev || fail "move /dev to the new root failed"
exec switch_root /newroot "$init"
