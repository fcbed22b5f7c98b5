#!/bin/sh
# RUSTC_WRAPPER for `make fuzz-build`: adds the coverage instrumentation
# (FUZZ_RUSTFLAGS) to the crates named in FUZZ_CRATES only, and only where
# they are built for the target (cargo passes --target): the same crate built
# for a build script stays plain, since a build script links no libFuzzer.
# Every other dependency, build script and proc macro compiles as usual:
# instrumenting the whole tree doubled a cold build for coverage of code the
# targets do not aim at.
# Called as: rustc-wrapper.sh RUSTC ARGS...
rustc=$1
shift
name= target=
prev=
for a in "$@"; do
  case "$prev" in
    --crate-name) name=$a ;;
    --target) target=$a ;;
  esac
  prev=$a
done
case " $FUZZ_CRATES " in
  *" $name "*)
    if [ -n "$name" ] && [ -n "$target" ]; then
      # shellcheck disable=SC2086 # FUZZ_RUSTFLAGS is a list of flags
      exec "$rustc" "$@" $FUZZ_RUSTFLAGS
    fi ;;
esac
exec "$rustc" "$@"
