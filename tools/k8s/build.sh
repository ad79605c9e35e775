#!/usr/bin/env bash
# Build the Kubernetes control plane used by the kube test tier (tests/kube/):
# kube-apiserver, kube-controller-manager, etcd and helm, from Go modules served by
# the Go module proxy. Binaries land in a cache outside git:
#   ${SLOTFLEET_K8S_CACHE:-$HOME/.cache/slotfleet/k8s}/<version-tag>/bin
#
# Usage:
#   tools/k8s/build.sh                 build (skips work when the cache matches the pins)
#   tools/k8s/build.sh --print-bin-dir print the bin dir and exit (no build)
#   tools/k8s/build.sh --force         rebuild even if the stamp matches
#
# Pinned versions (override with the env vars below, for trying other versions):
#   Kubernetes v1.37.2: the newest k8s.io/kubernetes the module proxy serves; its go.mod
#     says `go 1.26.0`, so it builds with the Go 1.26.8 on our machines (no GOTOOLCHAIN
#     download), and every staging module it requires at v0.0.0 is served at v0.37.2.
#     (Checked newest-first: v1.37.2 worked, so v1.36.3/v1.35.4/v1.34.4 were not needed;
#     they also declare go <= 1.26.0 and would build as fallbacks.)
#   etcd v3.6.16: newest 3.6.x served; etcd 3.6 is what Kubernetes 1.34+ is tested with.
#     In 3.6 the etcd binary's main package is the repository root module
#     (go.etcd.io/etcd/v3), which is not served as a module, so the wrapper module has
#     its own three-line main that calls go.etcd.io/etcd/server/v3/etcdmain.Main, which
#     is exactly what etcd's own main does.
#   helm v3.22.0: newest Helm 3 served; go 1.26.0 in its go.mod.
set -euo pipefail

K8S_VERSION="${SLOTFLEET_K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${SLOTFLEET_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${SLOTFLEET_HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${SLOTFLEET_K8S_CACHE:-$HOME/.cache/slotfleet/k8s}"
TAG="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
OUT="${CACHE_ROOT}/${TAG}"
BIN="${OUT}/bin"
WORK="${OUT}/work"
STAMP="${BIN}/.stamp"
STAMP_TEXT="kubernetes=${K8S_VERSION} etcd=${ETCD_VERSION} helm=${HELM_VERSION} helm-kube-default=stamped"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/k8s/kube-ldflags.sh
source "$HERE/kube-ldflags.sh"
PARALLEL="${SLOTFLEET_K8S_BUILD_PARALLEL:-2}"

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --print-bin-dir) echo "$BIN"; exit 0 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[k8s-build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'build.sh: ERROR: %s\n' "$*" >&2; exit 1; }

ALL_BINS=(kube-apiserver kube-controller-manager etcd helm)
have_all() {
  local b
  for b in "${ALL_BINS[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
  [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$STAMP_TEXT" ]]
}

START=$(date +%s)
if [[ $FORCE == 0 ]] && have_all; then
  log "cache hit: $BIN ($STAMP_TEXT); nothing to do ($(( $(date +%s) - START ))s)"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.26 on PATH)"
log "go: $(go version); GOPROXY=$(go env GOPROXY); GOMODCACHE=$(go env GOMODCACHE)"
log "building $STAMP_TEXT into $BIN"
mkdir -p "$BIN" "$WORK"
rm -f "$STAMP"

export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"
BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# ---------------------------------------------------------------- kubernetes
build_kube() {
  local t0 dir gomod ver_y
  t0=$(date +%s)
  dir="$WORK/kube"
  mkdir -p "$dir"
  log "kubernetes: go mod download k8s.io/kubernetes@${K8S_VERSION}"
  gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -n "$gomod" && -f "$gomod" ]] || die "module proxy did not serve k8s.io/kubernetes@${K8S_VERSION}"
  ver_y="v0.${K8S_VERSION#v1.}"   # v1.37.2 -> v0.37.2
  log "kubernetes: generating wrapper go.mod in $dir (staging modules -> ${ver_y})"
  "$HERE/gen-kube-gomod.sh" "$gomod" "$K8S_VERSION" > "$dir/go.mod"
  log "kubernetes: $(grep -c ' => ' "$dir/go.mod") staging modules replaced"
  printf 'package tools\n' > "$dir/doc.go"
  local ldflags
  ldflags="$(kube_ldflags "$K8S_VERSION" "$BUILD_DATE")"
  local c
  for c in kube-apiserver kube-controller-manager; do
    log "kubernetes: go build k8s.io/kubernetes/cmd/$c"
    (cd "$dir" && go build -p "$PARALLEL" -trimpath -ldflags "$ldflags" \
      -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c") || die "building $c failed"
  done
  log "kubernetes: done in $(( $(date +%s) - t0 ))s"
}

# ---------------------------------------------------------------------- etcd
build_etcd() {
  local t0 dir
  t0=$(date +%s)
  dir="$WORK/etcd"
  mkdir -p "$dir"
  log "etcd: wrapper module in $dir requiring go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
  cat > "$dir/go.mod" <<GOMOD
module slotfleet.local/etcdbuild

go 1.26.0

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
GOMOD
  cat > "$dir/main.go" <<'GO'
// Command etcd is etcd's own main: etcd 3.6 keeps it in the repository root module,
// which the module proxy does not serve, so this wrapper calls etcdmain directly.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
GO
  (cd "$dir" && go mod tidy >/dev/null 2>&1 || go mod download) || die "etcd: resolving modules failed"
  log "etcd: go build"
  (cd "$dir" && go build -p "$PARALLEL" -trimpath -ldflags "-s -w" -o "$BIN/etcd" .) \
    || die "building etcd failed"
  log "etcd: done in $(( $(date +%s) - t0 ))s"
}

# ---------------------------------------------------------------------- helm
build_helm() {
  local t0 dir
  t0=$(date +%s)
  dir="$WORK/helm"
  mkdir -p "$dir"
  log "helm: wrapper module in $dir requiring helm.sh/helm/v3 ${HELM_VERSION}"
  cat > "$dir/go.mod" <<GOMOD
module slotfleet.local/helmbuild

go 1.26.0

require helm.sh/helm/v3 ${HELM_VERSION}
GOMOD
  printf 'package tools\n' > "$dir/doc.go"
  # Like Helm's own Makefile: the Kubernetes version Helm assumes when it cannot ask a
  # cluster (helm template, helm lint) is one minor past the client-go it was built with.
  local kv kmaj kmin
  kv=$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p' \
    | xargs awk '$1 == "k8s.io/client-go" {print $2}') || die "helm: no client-go version"
  [[ -n "$kv" ]] || die "helm: k8s.io/client-go not found in helm's go.mod"
  kv=${kv#v}; kmaj=$(( ${kv%%.*} + 1 )); kmin=$(echo "$kv" | cut -d. -f2)
  local x="-X helm.sh/helm/v3"
  log "helm: go build helm.sh/helm/v3/cmd/helm (default kube version ${kmaj}.${kmin})"
  (cd "$dir" && go build -p "$PARALLEL" -trimpath \
    -ldflags "-s -w ${x}/internal/version.version=${HELM_VERSION} ${x}/internal/version.gitTreeState=clean ${x}/pkg/chartutil.k8sVersionMajor=${kmaj} ${x}/pkg/chartutil.k8sVersionMinor=${kmin} ${x}/pkg/lint/rules.k8sVersionMajor=${kmaj} ${x}/pkg/lint/rules.k8sVersionMinor=${kmin}" \
    -o "$BIN/helm" helm.sh/helm/v3/cmd/helm) || die "building helm failed"
  log "helm: done in $(( $(date +%s) - t0 ))s"
}

[[ -x "$BIN/etcd" && $FORCE == 0 && -f "$WORK/etcd/.done-${ETCD_VERSION}" ]] || { build_etcd; touch "$WORK/etcd/.done-${ETCD_VERSION}"; }
if [[ $FORCE == 1 || ! -f "$WORK/kube/.done-${K8S_VERSION}" || ! -x "$BIN/kube-apiserver" || ! -x "$BIN/kube-controller-manager" ]]; then
  build_kube; touch "$WORK/kube/.done-${K8S_VERSION}"
fi
[[ -x "$BIN/helm" && $FORCE == 0 && -f "$WORK/helm/.done-${HELM_VERSION}-kv" ]] || { build_helm; touch "$WORK/helm/.done-${HELM_VERSION}-kv"; }

log "versions:"
"$BIN/kube-apiserver" --version
"$BIN/kube-controller-manager" --version
"$BIN/etcd" --version | head -1
"$BIN/helm" version --short
echo "$STAMP_TEXT" > "$STAMP"
log "all built in $(( $(date +%s) - START ))s: $BIN"
