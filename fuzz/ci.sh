#!/bin/bash
# make fuzz-ci: every fuzz target for SECONDS on its committed corpus (new
# inputs go to a scratch copy under target/fuzz-ci/<target>), JOBS targets at
# a time, one line per target; a crash prints the log's tail and where the
# input was saved, and fails the run.
# Usage: fuzz/ci.sh BIN_DIR SECONDS JOBS TARGET...
set -euo pipefail
bins=$1 secs=$2 jobs=$3
shift 3

one() {
  local t=$1 work=target/fuzz-ci/$1
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  if TMPDIR=$PWD/$work "$bins/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
      "$work/corpus" "fuzz/corpus/$t" >"$work/log" 2>&1; then
    echo ok >"$work/status"
  else
    echo crash >"$work/status"
  fi
}
export -f one
export bins secs

printf '%s\n' "$@" | xargs -P "$jobs" -I{} bash -c 'one "$1"' _ {}
failed=0
for t in "$@"; do
  work=target/fuzz-ci/$t
  if [ "$(cat "$work/status" 2>/dev/null)" != ok ]; then
    tail -40 "$work/log"
    echo "FUZZ CRASH in $t: input saved under $work/artifacts/"
    failed=1
    continue
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
  cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1)
  printf "fuzz %-14s %9s executions in %ss, %s, no crash\n" "$t" "$runs" "$secs" "$cov"
done
exit $failed
