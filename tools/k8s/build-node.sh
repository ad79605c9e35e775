#!/usr/bin/env bash
# Build what a real node of the `node` test tier runs beside the control plane:
# kubelet, kube-scheduler and kube-proxy from the same pinned k8s.io/kubernetes wrapper
# module as tools/k8s/build.sh (same version, same ldflags, so the Go build cache is
# shared), and the pause binary of the pod sandbox, compiled from
# build/pause/linux/pause.c of that same module (gcc -static, as Kubernetes' own
# build/pause/Makefile does). tools/image/build.sh turns it into the pause image.
#
# The binaries get a cache directory of their own, beside the control plane's and never
# inside it (a run of one script never makes the other rebuild):
#   ${SLOTFLEET_K8S_CACHE:-$HOME/.cache/slotfleet/k8s}/node-k8s-<version>/bin
#       kubelet  kube-scheduler  kube-proxy  pause  .stamp
#
# Usage:
#   tools/k8s/build-node.sh                 build (nothing to do when the stamp matches)
#   tools/k8s/build-node.sh --print-bin-dir print the bin dir and exit (no build)
#   tools/k8s/build-node.sh --force         rebuild even if the stamp matches
# Env: SLOTFLEET_K8S_VERSION (default: the version tools/k8s/build.sh pins)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/k8s/kube-ldflags.sh
source "$HERE/kube-ldflags.sh"
K8S_VERSION="${SLOTFLEET_K8S_VERSION:-$(sed -n 's/^K8S_VERSION="\${SLOTFLEET_K8S_VERSION:-\(v[0-9.]*\)}"$/\1/p' "$HERE/build.sh")}"
[[ -n "$K8S_VERSION" ]] || { echo "build-node.sh: cannot read the pinned version from build.sh" >&2; exit 1; }
CACHE_ROOT="${SLOTFLEET_K8S_CACHE:-$HOME/.cache/slotfleet/k8s}"
OUT="${CACHE_ROOT}/node-k8s-${K8S_VERSION}"
BIN="${OUT}/bin"
WORK="${OUT}/work"
STAMP="${BIN}/.stamp"
COMMANDS=(kubelet kube-scheduler kube-proxy)
STAMP_TEXT="kubernetes=${K8S_VERSION} commands=${COMMANDS[*]} pause=static"
PARALLEL="${SLOTFLEET_K8S_BUILD_PARALLEL:-2}"

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --print-bin-dir) echo "$BIN"; exit 0 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "build-node.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[node-build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'build-node.sh: ERROR: %s\n' "$*" >&2; exit 1; }

have_all() {
  local b
  for b in "${COMMANDS[@]}" pause; do [[ -x "$BIN/$b" ]] || return 1; done
  [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$STAMP_TEXT" ]]
}

START=$(date +%s)
if [[ $FORCE == 0 ]] && have_all; then
  log "cache hit: $BIN ($STAMP_TEXT); nothing to do"
  exit 0
fi
command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26 on PATH)"
command -v gcc >/dev/null 2>&1 || die "gcc is not installed (the pause binary is C; apt-get install gcc libc6-dev)"
mkdir -p "$BIN" "$WORK"
rm -f "$STAMP"
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"

log "go mod download k8s.io/kubernetes@${K8S_VERSION}"
download="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}")"
gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$download")"
srcdir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$download")"
[[ -f "$gomod" && -d "$srcdir" ]] || die "module proxy did not serve k8s.io/kubernetes@${K8S_VERSION}"

# ------------------------------------------------------------ kubelet, scheduler, proxy
"$HERE/gen-kube-gomod.sh" "$gomod" "$K8S_VERSION" > "$WORK/go.mod"
printf 'package tools\n' > "$WORK/doc.go"
ldflags="$(kube_ldflags "$K8S_VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
for c in "${COMMANDS[@]}"; do
  t0=$(date +%s)
  log "go build k8s.io/kubernetes/cmd/$c"
  (cd "$WORK" && go build -p "$PARALLEL" -trimpath -ldflags "$ldflags" \
    -o "$BIN/$c.new" "k8s.io/kubernetes/cmd/$c") || die "building $c failed"
  mv "$BIN/$c.new" "$BIN/$c"
  log "$c: $(( $(date +%s) - t0 ))s"
done

# ------------------------------------------------------------------------------- pause
# Kubernetes' build/pause/Makefile: TAG names the pause version, the binary is static.
pause_src="$srcdir/build/pause/linux/pause.c"
[[ -f "$pause_src" ]] || die "no build/pause/linux/pause.c in k8s.io/kubernetes@${K8S_VERSION}"
pause_tag="$(sed -n 's/^TAG[[:space:]]*?=[[:space:]]*\([0-9.]*\).*/\1/p' "$srcdir/build/pause/Makefile")"
[[ -n "$pause_tag" ]] || die "cannot read the pause TAG from build/pause/Makefile"
log "pause ${pause_tag}: gcc -static $pause_src"
gcc -Os -Wall -Werror -static -DVERSION="v${pause_tag}-slotfleet" -o "$BIN/pause.new" "$pause_src" \
  || die "compiling pause.c failed (is libc6-dev installed?)"
strip "$BIN/pause.new"
mv "$BIN/pause.new" "$BIN/pause"
echo "$pause_tag" > "$BIN/pause.tag"

log "versions:"
for c in "${COMMANDS[@]}"; do "$BIN/$c" --version; done
"$BIN/pause" -v
echo "$STAMP_TEXT" > "$STAMP"
log "all built in $(( $(date +%s) - START ))s: $BIN"
