# Sourced by vm/mkinitrd.sh and vm/mkimage.sh: the kernel modules a guest
# needs, with everything their depends= fields pull in. Debian's kernel
# packages ship no modules.dep, so the order comes from modinfo.
#
#   copy_modules KMODS DEST NAME...
#     copies NAME.ko (`-` and `_` alike) and its dependencies from KMODS (an
#     unpacked lib/modules/<release>) into DEST at the same relative paths, and
#     prints the .ko paths (relative to KMODS) in load order: every module after
#     its dependencies. A built-in module (modules.builtin) is skipped; one that
#     is neither a file nor built in is an error.

copy_modules() {
  local kmods=$1 dest=$2
  shift 2
  command -v modinfo >/dev/null || apt-get install -y -qq kmod >/dev/null
  declare -A _state=()
  _visit() {
    local key=${1//-/_} ko deps dep
    case "${_state[$key]:-}" in
      done) return 0 ;;
      busy) echo "module $1: dependency cycle" >&2; return 1 ;;
    esac
    _state[$key]=busy
    ko=$(find "$kmods/kernel" \( -name "$key.ko" -o -name "${key//_/-}.ko" \) -print -quit)
    if [ -z "$ko" ]; then
      grep -q "/${key}.ko$\|/${key//_/-}.ko$" "$kmods/modules.builtin" || { echo "module $1: not in $kmods" >&2; return 1; }
      _state[$key]=done
      return 0 # built into the kernel
    fi
    deps=$(modinfo -F depends "$ko")
    if [ -n "$deps" ]; then
      for dep in ${deps//,/ }; do _visit "$dep" || return 1; done
    fi
    mkdir -p "$dest/$(dirname "${ko#"$kmods"/}")"
    cp "$ko" "$dest/${ko#"$kmods"/}"
    echo "${ko#"$kmods"/}"
    _state[$key]=done
  }
  local m
  for m in "$@"; do _visit "$m" || return 1; done
}
