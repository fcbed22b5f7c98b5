#!/bin/bash
# Fetches what a guest image needs from Debian's archive and unpacks it under
# target/vm (a cache: a rerun with everything present does nothing):
#   target/vm/kernel/       the kernel package unpacked (boot/vmlinuz-*, lib/modules/*)
#   target/vm/vmlinux       the uncompressed ELF kernel (qboot boots it directly)
#   target/vm/busybox       Debian's busybox-static binary (not the host's)
#   target/vm/kernel.release  the kernel's release string (uname -r in the guest)
# Kernel flavour: PITH_VM_KERNEL_PKG (default linux-image-cloud-amd64, resolved to
# its versioned package).
set -euo pipefail
cd "$(dirname "$0")/.."
VM=target/vm
mkdir -p "$VM/debs"
need_update() { [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ] || apt-get update -qq; }

if [ ! -x "$VM/busybox" ]; then
  need_update
  (cd "$VM/debs" && apt-get download -qq busybox-static)
  rm -rf "$VM/busybox-pkg" && dpkg-deb -x "$VM"/debs/busybox-static_*.deb "$VM/busybox-pkg"
  cp "$VM/busybox-pkg/bin/busybox" "$VM/busybox"
fi

if [ ! -s "$VM/kernel.release" ]; then
  need_update
  meta=${PITH_VM_KERNEL_PKG:-linux-image-cloud-amd64}
  # The meta package depends on exactly one versioned image package.
  pkg=$(apt-cache depends "$meta" | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
  [ -n "$pkg" ] || pkg=$meta
  echo "fetching $pkg"
  (cd "$VM/debs" && apt-get download -qq "$pkg")
  rm -rf "$VM/kernel" && dpkg-deb -x "$VM"/debs/"$pkg"_*.deb "$VM/kernel"
  ls "$VM/kernel/lib/modules" | head -1 > "$VM/kernel.release.tmp"
  mv "$VM/kernel.release.tmp" "$VM/kernel.release"
fi

if [ ! -s "$VM/vmlinux" ]; then
  rel=$(cat "$VM/kernel.release")
  bz="$VM/kernel/boot/vmlinuz-$rel"
  # A bzImage carries the compressed kernel at payload_offset/payload_length of
  # its setup header (boot protocol 2.08+); the magic says which compressor.
  python3 -c '
import struct, sys
d = open(sys.argv[1], "rb").read()
setup_sects = d[0x1f1] or 4
off, length = struct.unpack_from("<II", d, 0x248)
start = (setup_sects + 1) * 512 + off
sys.stdout.buffer.write(d[start:start + length])' "$bz" > "$VM/payload.tmp"
  case "$(head -c4 "$VM/payload.tmp" | od -An -tx1 | tr -d ' ')" in
    02214c18) dec="lz4 -dc" ;;   # lz4 legacy frame (Debian's 6.1 kernels)
    28b52ffd) dec="zstd -dc" ;;
    fd377a58) dec="xz -dc" ;;
    1f8b*) dec="gzip -dc" ;;
    *) echo "unknown kernel payload compression in $bz" >&2; exit 1 ;;
  esac
  command -v "${dec%% *}" >/dev/null || apt-get install -y -qq "${dec%% *}" >/dev/null
  # The payload ends with the decompressed size, which some tools call trailing
  # garbage: judge by the output, not the exit code.
  $dec "$VM/payload.tmp" > "$VM/vmlinux.tmp" 2>/dev/null || true
  rm -f "$VM/payload.tmp"
  [ "$(head -c4 "$VM/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || { echo "could not decompress $bz with $dec" >&2; exit 1; }
  mv "$VM/vmlinux.tmp" "$VM/vmlinux"
fi
echo "kernel $(cat "$VM/kernel.release"): $VM/vmlinux ($(stat -c %s "$VM/vmlinux") bytes); busybox: $VM/busybox"
