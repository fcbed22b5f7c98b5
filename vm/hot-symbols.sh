#!/bin/bash
# Writes vm/agent-hot-symbols.txt (make hot-symbols): the functions the static
# guest agent runs, in the order vm/link-guest.sh lays them out.
#   1. start-up and 300 ms idle (the idle resident set),
#   2. then a few calls a host makes all the time (Health.Check, Version,
#      GetGuestDetails, ListInterfaces, ListRoutes) and the SIGTERM shutdown.
# Measured with valgrind's callgrind on BIN (an unstripped guest build); each
# name once, sorted within a part; functions callgrind cannot name are left out.
# Usage: vm/hot-symbols.sh BIN PITHCTL
set -euo pipefail
bin=$1 pithctl=$2
out="$(cd "$(dirname "$0")" && pwd)/agent-hot-symbols.txt"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
d=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$d"' EXIT
sock="$d/agent.sock"
valgrind -q --tool=callgrind --callgrind-out-file="$d/cg.%p" --dump-instr=no --compress-strings=no \
  --demangle=no "$bin" --cmdline /dev/null --log-level warn --state-dir "$d/state" \
  --server-addr "unix://$sock" 2>"$d/valgrind.log" &
pid=$!
for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$d/valgrind.log" >&2; echo "hot-symbols: the agent did not come up" >&2; exit 1; }
sleep 0.3
callgrind_control --dump=idle "$pid" >/dev/null
for _ in 1 2 3; do "$pithctl" --addr "unix://$sock" check >/dev/null; done
"$pithctl" --addr "unix://$sock" version >/dev/null
for m in GetGuestDetails ListInterfaces ListRoutes; do "$pithctl" --addr "unix://$sock" call "$m" '{}' >/dev/null; done
kill -TERM "$pid"
wait "$pid" || true
# Function names in callgrind's files: "fn=NAME" or "cfn=NAME" (with
# --compress-strings=no); an address stands for a function it cannot name.
names() { sed -n -E 's/^c?fn=(\([0-9]+\) )?//p' "$@" | grep -v -e '^(' -e '^0x' | sort -u; }
idle=$(ls "$d"/cg.*.1 2>/dev/null | head -1)
rest=$(ls "$d"/cg.* | grep -v '\.1$' || true)
[ -n "$idle" ] && [ -n "$rest" ] || { ls "$d" >&2; echo "hot-symbols: no callgrind dumps" >&2; exit 1; }
{
  names "$idle"
  names $rest | grep -vxF -f <(names "$idle")
} > "$out"
echo "hot-symbols: $(names "$idle" | wc -l) functions at idle, $(wc -l < "$out") in all -> $out"
