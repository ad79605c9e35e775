#!/usr/bin/env bash
# Build prometheus-adapter (sigs.k8s.io/prometheus-adapter) for the kube test tier's metrics
# pipeline (tests/kube/metrics_pipeline.py): it serves custom.metrics.k8s.io and
# external.metrics.k8s.io from Prometheus, so the real HPA controller can scale a Queue.
# The binary lands in a cache outside git, apart from the Kubernetes binaries
# (tools/k8s/build.sh), with its own tag and stamp:
#   ${SLOTFLEET_ADAPTER_CACHE:-$HOME/.cache/slotfleet/prometheus-adapter}/<tag>/bin/adapter
#
# Usage:
#   tools/prometheus-adapter/build.sh                 build (nothing to do on a cache hit)
#   tools/prometheus-adapter/build.sh --print-bin-dir print the bin dir and exit (no build)
#   tools/prometheus-adapter/build.sh --force         rebuild even if the stamp matches
#
# Pinned version: v0.12.0, the newest release the Go module proxy serves. Its go.mod says
# `go 1.22.1`, so our Go 1.26 builds it without a toolchain download.
# How: `go install sigs.k8s.io/prometheus-adapter/cmd/adapter@v0.12.0` fails (the proxy
# answers 403 for the module's version list), so the module is fetched by exact version
# with `go mod download -json`, copied out of the read-only module cache into a writable
# work dir, and built there with its own go.mod and go.sum (the versions its authors
# tested, not re-resolved).
set -euo pipefail

ADAPTER_VERSION="${SLOTFLEET_ADAPTER_VERSION:-v0.12.0}"
CACHE_ROOT="${SLOTFLEET_ADAPTER_CACHE:-$HOME/.cache/slotfleet/prometheus-adapter}"
TAG="prometheus-adapter-${ADAPTER_VERSION}"
OUT="${CACHE_ROOT}/${TAG}"
BIN="${OUT}/bin"
WORK="${OUT}/work"
STAMP="${BIN}/.stamp"
STAMP_TEXT="prometheus-adapter=${ADAPTER_VERSION}"
PARALLEL="${SLOTFLEET_K8S_BUILD_PARALLEL:-2}"
MODULE="sigs.k8s.io/prometheus-adapter"

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --print-bin-dir) echo "$BIN"; exit 0 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[adapter-build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'tools/prometheus-adapter/build.sh: ERROR: %s\n' "$*" >&2; exit 1; }

START=$(date +%s)
if [[ $FORCE == 0 && -x "$BIN/adapter" && -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" ]]; then
  log "cache hit: $BIN ($STAMP_TEXT); nothing to do ($(( $(date +%s) - START ))s)"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.22 on PATH)"
log "go: $(go version); GOPROXY=$(go env GOPROXY)"
mkdir -p "$BIN"
rm -f "$STAMP"

log "go mod download ${MODULE}@${ADAPTER_VERSION}"
src="$(go mod download -json "${MODULE}@${ADAPTER_VERSION}" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -n "$src" && -f "$src/go.mod" ]] \
  || die "the Go module proxy did not serve ${MODULE}@${ADAPTER_VERSION}"

# A fresh writable copy each build (the module cache is read-only).
rm -rf "$WORK"
mkdir -p "$WORK"
cp -R "$src/." "$WORK/"
chmod -R u+w "$WORK"

export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"
log "go build ./cmd/adapter"
(cd "$WORK" && go build -p "$PARALLEL" -trimpath -ldflags "-s -w" -o "$BIN/adapter.new" ./cmd/adapter) \
  || die "building prometheus-adapter failed (is the Go module proxy reachable?)"
mv -f "$BIN/adapter.new" "$BIN/adapter"
rm -rf "$WORK"

# `--help` exits 2 (pflag's ErrHelp), so look at what it prints instead
help_text="$("$BIN/adapter" --help 2>&1 || true)"
[[ "$help_text" == *--prometheus-url* ]] || die "the built adapter does not run: $BIN/adapter --help"
echo "$STAMP_TEXT" > "$STAMP"
log "built in $(( $(date +%s) - START ))s: $BIN/adapter"
