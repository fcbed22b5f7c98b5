#!/bin/sh
# Linker for the static guest agent (make static sets it as cargo's linker for
# the musl target): cc with the toolchain's own rust-lld, so that
#   * identical functions are folded once (--icf=all), and
#   * the functions the idle agent runs (vm/agent-hot-symbols.txt, made by
#     `make hot-symbols`) are laid out together at the start of the text.
# The kernel maps file pages around each fault (up to 64 KiB at a time), so
# the layout decides how much of the binary an idle agent has resident:
# measured 2.35 MiB of file pages with the functions where they fall, 1.0 MiB
# with them together (see the README's footprint lines).
#
# The list holds symbol names as the profiled build had them; a name whose
# legacy hash suffix changed since is matched without it, so a rebuild with
# new hashes still finds its functions. Without rust-lld (another toolchain
# layout) it links as cc would and says so; a stale list costs only resident
# memory, never correctness.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
hot="$here/agent-hot-symbols.txt"
lld_dir="${PITH_GCC_LD_DIR:-}"
if [ -z "$lld_dir" ] || [ ! -x "$lld_dir/ld.lld" ]; then
  echo "link-guest.sh: NOTE: no rust-lld wrapper (PITH_GCC_LD_DIR=$lld_dir): plain cc link, no hot-symbol order" >&2
  exec cc "$@"
fi
order=$(mktemp "${TMPDIR:-/tmp}/pith-order.XXXXXX")
trap 'rm -f "$order"' EXIT
objs=
for a in "$@"; do
  case "$a" in *.o) [ -f "$a" ] && objs="$objs $a" ;; esac
done
if [ -f "$hot" ] && [ -n "$objs" ]; then
  # Exact names first; a listed name whose hash changed since the list was
  # made (no exact hit for its hash-less base) takes every function of that base.
  # shellcheck disable=SC2086 # one word per object
  nm --defined-only $objs 2>/dev/null | awk '
    function base(s) { sub(/17h[0-9a-f]+E$/, "", s); return s }
    NR == FNR { if (!($0 in rank)) rank[$0] = NR; b = base($0); if (!(b in brank)) brank[b] = NR; next }
    NF >= 3 && $2 ~ /^[tTwW]$/ { n++; sym[n] = $3; if ($3 in rank) exact[base($3)] = 1 }
    END {
      for (i = 1; i <= n; i++) {
        s = sym[i]; b = base(s)
        if (s in rank) print rank[s], s
        else if ((b in brank) && !(b in exact)) print brank[b], s
      }
    }' "$hot" - | sort -n -s -k1,1 | cut -d' ' -f2- > "$order"
fi
# PITH_LINK_DEBUG=PREFIX keeps what this link used: PREFIX.order and PREFIX.args.
if [ -n "${PITH_LINK_DEBUG:-}" ]; then cp "$order" "$PITH_LINK_DEBUG.order" && echo "$@" > "$PITH_LINK_DEBUG.args"; fi
cc -fuse-ld=lld -B"$lld_dir" "$@" -Wl,--icf=all -Wl,--symbol-ordering-file="$order" -Wl,--no-warn-symbol-ordering
