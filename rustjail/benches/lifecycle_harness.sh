#!/bin/bash
# `make bench`: the shared lifecycle harness (create, start, `state` until
# stopped, `delete -f` of /bin/true, one process per command, interleaved)
# with rustjail, crun and runc on one busybox bundle, then rustjail's median
# as a ratio of crun's and runc's from that same run.
#
# usage: lifecycle_harness.sh RUSTJAIL HARNESS [CYCLES]
# Run as root in a mount namespace where /sys/fs/cgroup/unified is unmounted
# (crun 1.8 refuses the hybrid layout); the Makefile does that.
set -euo pipefail
rustjail=$1 harness=$2 cycles=${3:-100}
dir=$(mktemp -d /tmp/rustjail-harness.XXXXXX)
trap 'rm -rf "$dir" /tmp/bench-root-rustjail /tmp/bench-root-crun /tmp/bench-root-runc' EXIT
mkdir -p "$dir/rootfs/bin"
cp /bin/busybox "$dir/rootfs/bin/busybox"
ln -s busybox "$dir/rootfs/bin/true"
"$rustjail" spec --bundle "$dir"
python3 - "$dir/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(p, "w"))
EOF
runtimes=("$rustjail")
for rt in crun runc; do
  if command -v "$rt" >/dev/null; then runtimes+=("$(command -v "$rt")"); else echo "NOTE: $rt not installed: no ratio against it"; fi
done
out=$(python3 "$harness" "$dir" "$cycles" "${runtimes[@]}")
echo "$out" | sed 's/^/  /'
echo "$out" | awk -v n="$cycles" '
  { median[$1] = $3 }
  END {
    if (!("rustjail" in median)) exit 1
    for (rt in median) if (rt != "rustjail")
      printf "  rustjail/%s median ratio: %.2f (%s cycles; goal <= 0.8 against crun)\n", rt, median["rustjail"] / median[rt], n
  }'
