#!/bin/bash
# Builds target/vm/initrd.img without Docker: a newc cpio initramfs with
#   /init                  the static pith-agent (PID 1)
#   /bin/busybox + applets Debian's busybox-static (from vm/fetch.sh), for the debug console
#   /lib/modules/<rel>/    the kernel modules the guest needs and their dependencies
#   /bin/strace            Debian's strace with the shared libraries it needs
#   /pith-test/rootfs      a busybox container rootfs for the end-to-end test
#   /bin/xtables-legacy-multi  Debian's iptables (as iptables-save/-restore, ip6tables-*) and its libraries
# and writes target/vm/kernel_modules: the agent.kernel_modules value to boot with.
#
#   AGENT=path        agent binary (default: the musl build of `make static`); a
#                     dynamically linked one gets its shared libraries copied along
#   PITH_INITRD_GZIP=1  gzip the archive (smaller file; slower to unpack under TCG)
set -euo pipefail
cd "$(dirname "$0")/.."
VM=target/vm
AGENT=${AGENT:-target/x86_64-unknown-linux-musl/guest/pith-agent}
# Loaded by the agent at boot, in this order (each after its depends=).
MODULES=(virtio_pci vmw_vsock_virtio_transport virtio_scsi sd_mod virtio_blk overlay ext4)

[ -x "$AGENT" ] || { echo "no agent binary at $AGENT (run make static)" >&2; exit 1; }
vm/fetch.sh >/dev/null
command -v cpio >/dev/null || { apt-get install -y -qq cpio >/dev/null; }
command -v modinfo >/dev/null || { apt-get install -y -qq kmod >/dev/null; }

rel=$(cat "$VM/kernel.release")
kmods="$VM/kernel/lib/modules/$rel"
root="$VM/initrd-root"
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,etc,root,lib/modules/"$rel"}
ln -s bin "$root/sbin"
mkdir -p "$root/usr" && ln -s ../bin "$root/usr/bin" && ln -s ../bin "$root/usr/sbin"

# A dynamic binary needs its loader and libraries at the same paths in the
# guest (the host is the same Debian release as the guest's packages).
#   copy_libs BIN [LIBDIR]: with LIBDIR, BIN's own libraries are looked for
#   there too and left out (the caller copies them with the package).
copy_libs() {
  local lib libdir=${2:-}
  LD_LIBRARY_PATH=$libdir ldd "$1" >/dev/null 2>&1 || return 0 # static
  for lib in $(LD_LIBRARY_PATH=$libdir ldd "$1" | grep -o '/[^ ]*'); do
    [ -n "$libdir" ] && [[ $lib == "$libdir"/* ]] && continue
    mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
  done
}
install -m 0755 "$AGENT" "$root/init"
# The gnu fallback when the musl target is missing.
if ldd "$AGENT" >/dev/null 2>&1; then
  copy_libs "$AGENT"
  echo "NOTE: $AGENT is dynamically linked; copied its libraries: $(ldd "$AGENT" | grep -o '/[^ ]*' | tr '\n' ' ')"
fi
install -m 0755 "$VM/busybox" "$root/bin/busybox"
for a in $("$VM/busybox" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
done
# strace for debugging in the guest: Debian's package (installed on the host
# when missing) with its libraries.
dpkg -s strace >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq strace >/dev/null; }
strace_bin=$(dpkg -L strace | grep -m1 '/bin/strace$')
install -m 0755 "$strace_bin" "$root/bin/strace"
copy_libs "$strace_bin"

# ---- networking (src/net): the NIC driver, and iptables for Get/SetIPTables ----
# virtio-net drives the NIC the host gives the VM. Debian's iptables is dynamically
# linked: xtables-legacy-multi (the x_tables backend: fewer kernel modules than
# nf_tables) comes with its libraries, the extensions it dlopen()s and the C library,
# and answers as iptables-save/-restore and ip6tables-save/-restore (/usr/sbin and
# /sbin lead to /bin here). The kernel cannot load the tables' modules on demand
# (no modprobe database), so the agent loads them at boot with the rest.
MODULES+=(virtio_net iptable_filter ip6table_filter xt_tcpudp)
ipt="$VM/iptables-pkg"
ipt_debs=(iptables libxtables12 libip4tc2 libip6tc2)
if [ ! -x "$ipt/usr/sbin/xtables-legacy-multi" ]; then
  (cd "$VM/debs" && { apt-get download -qq "${ipt_debs[@]}" 2>/dev/null || { apt-get update -qq && apt-get download -qq "${ipt_debs[@]}"; }; })
  rm -rf "$ipt" && for p in "${ipt_debs[@]}"; do dpkg-deb -x "$(ls "$VM"/debs/"${p}"_*.deb | tail -1)" "$ipt"; done
fi
ipt=$(realpath "$ipt")
multiarch=usr/lib/x86_64-linux-gnu
install -m 0755 "$ipt/usr/sbin/xtables-legacy-multi" "$root/bin/xtables-legacy-multi"
for t in iptables ip6tables iptables-save iptables-restore ip6tables-save ip6tables-restore; do
  ln -sf xtables-legacy-multi "$root/bin/$t"
done
mkdir -p "$root/$multiarch"
cp -a "$ipt/$multiarch"/lib*.so* "$ipt/$multiarch/xtables" "$root/$multiarch/"
copy_libs "$ipt/usr/sbin/xtables-legacy-multi" "$ipt/$multiarch"
# ---- end of networking ----

echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

# The modules asked for and everything their depends= fields pull in.
. vm/modules.sh
copy_modules "$kmods" "$root/lib/modules/$rel" "${MODULES[@]}" >/dev/null
cp "$kmods/modules.builtin" "$kmods/modules.order" "$root/lib/modules/$rel/"
(IFS=,; echo "${MODULES[*]}") > "$VM/kernel_modules"

# The test container's rootfs: busybox (a hard link: stored once in the archive).
ct="$root/pith-test/rootfs"
mkdir -p "$ct"/{bin,dev,proc,sys,tmp,etc,root}
ln "$root/bin/busybox" "$ct/bin/busybox"
for a in sh echo cat ls sleep uname id true false dmesg dd hostname; do ln -s busybox "$ct/bin/$a"; done
cp "$root/etc/passwd" "$root/etc/group" "$ct/etc/"

out="$VM/initrd.img"
if [ "${PITH_INITRD_GZIP:-0}" = 1 ]; then
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) > "$out.tmp"
else
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$out.tmp"
fi
mv "$out.tmp" "$out"
echo "initrd: $out ($(stat -c %s "$out") bytes; kernel $rel; modules $(find "$root/lib/modules" -name '*.ko' | wc -l) .ko; agent $(stat -c %s "$AGENT") bytes)"
echo "boot with: agent.kernel_modules=$(cat "$VM/kernel_modules")"
