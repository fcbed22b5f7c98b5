#!/bin/bash
# Writes vm/agent-hot-symbols.txt (make hot-symbols): the functions the static
# guest agent runs, in the order vm/link-guest.sh lays them out.
#   0. the keeper's functions (`--keeper`: the agent's parent, a second process
#      mapping the same binary): every function reachable by direct calls from
#      its loop and from the agent's end of its channel, found in the
#      disassembly. Valgrind cannot follow the keeper's exec of /proc/self/exe
#      (it would load itself), hence no profile; together at the start, they
#      keep the keeper's resident text to a few 64 KiB windows;
#   1. start-up and 300 ms idle (the idle resident set),
#   2. then a few calls a host makes all the time (Health.Check, Version,
#      GetGuestDetails, ListInterfaces, ListRoutes) and the SIGTERM shutdown;
#   3. a container's init (`rustjail::init::run`, every container start and
#      exec runs it from a fresh copy of this binary): reachable by direct
#      calls, as the keeper's. Together, its page faults are a few 64 KiB
#      windows instead of one per scattered function.
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
# Direct calls and tail jumps ("call"/"jmp" to "<name>" or "<name+off>") from
# the roots, transitively; calls through pointers are not followed (their
# targets are mostly formatting code the idle agent runs anyway).
reachable() {
  objdump -d --no-show-raw-insn "$bin" | awk -v roots="$1" '
    /^[0-9a-f]+ <.*>:$/ { f = substr($2, 2, length($2) - 3); fn[f] = 1; next }
    f != "" && match($0, /[ \t](call|jmp)[ \t]+[0-9a-f]+ <[^>]+>/) {
      t = substr($0, RSTART, RLENGTH); sub(/^.*</, "", t); sub(/(\+0x[0-9a-f]+)?>$/, "", t)
      if (t != f) edge[f] = edge[f] " " t
    }
    END {
      n = split(roots, r, ",")
      for (g in fn) for (i = 1; i <= n; i++) if (index(g, r[i])) { seen[g] = 1; q[++qn] = g }
      for (h = 1; h <= qn; h++) {
        m = split(edge[q[h]], e, " ")
        for (i = 1; i <= m; i++) if (!(e[i] in seen)) { seen[e[i]] = 1; q[++qn] = e[i] }
      }
      for (g in seen) print g
    }' | sort -u
}
reachable 6keeper6parent3run,6keeper4link > "$d/keeper"
reachable 8rustjail4init3run > "$d/init"
[ -s "$d/keeper" ] || { echo "hot-symbols: no keeper functions found in $bin" >&2; exit 1; }
[ -s "$d/init" ] || { echo "hot-symbols: no container init functions found in $bin" >&2; exit 1; }
{
  cat "$d/keeper"
  names "$idle" | grep -vxF -f "$d/keeper"
  names $rest | grep -vxF -f <(cat "$d/keeper"; names "$idle")
  grep -vxF -f <(cat "$d/keeper"; names "$idle"; names $rest) "$d/init" || true
} > "$out"
echo "hot-symbols: $(wc -l < "$d/keeper") keeper functions, $(names "$idle" | wc -l) at idle," \
  "$(wc -l < "$d/init") in a container's init, $(wc -l < "$out") in all -> $out"
