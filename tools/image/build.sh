#!/usr/bin/env bash
# Build the images the `node` test tier runs, without a Docker engine, and cache them by
# content hash:
#
#   slotfleet   the repository's Dockerfile, unchanged (what users build with Docker);
#   examples    examples/Dockerfile: FROM the slotfleet image, plus the `examples`
#               package (the task image examples/queue.yaml runs);
#   pause       tools/image/pause.Dockerfile: the pod sandbox's pause binary, compiled
#               from Kubernetes' own source by tools/k8s/build-node.sh.
#
# How: Debian's buildah with pulls disabled (--pull=never). The Dockerfile's FROM
# (python:3.11-slim) is not pulled from a registry (there is none here): a base image is
# made locally with mmdebstrap (Debian bookworm minbase + python3, pip, ca-certificates;
# python3.11, like the official image) and imported under the FROM's name. RUN steps use
# the host network and the host's CA bundle (mounted read-only), so `pip install` reaches
# the package index as it does on the host; nothing else of the host goes in.
#
# Cache (outside git), by content hash of everything an image is built from:
#   ${SLOTFLEET_IMAGE_CACHE:-$HOME/.cache/slotfleet/image}/
#     base-<key>.tar                     mmdebstrap root filesystem (key: the recipe)
#     <image>-<key>.tar                  docker-archive of each image (what a node imports)
#     storage/  run/                     buildah/podman storage of their own (never
#                                        /var/lib/containers)
# An image whose archive exists is not built again. The slotfleet key covers the
# Dockerfile, .dockerignore, every file under the paths its COPY/ADD lines take from the
# build context, and the base key; the examples key covers examples/Dockerfile, its
# COPY sources and the slotfleet key; the pause key covers the binary and its Dockerfile.
# The two newest archives of each image are kept; older ones and their images go.
# Builds run in a mount namespace of their own, so no mount outlives the script.
#
# Usage:
#   tools/image/build.sh [--json FILE] [--force] [IMAGE...]   (default: all three)
#     --json FILE  write {"<image>": {"name": ..., "archive": ...}, ...} to FILE
#     --force      rebuild even when the archive exists
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tools/image"
CACHE="${SLOTFLEET_IMAGE_CACHE:-$HOME/.cache/slotfleet/image}"
STORE=(--root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver overlay)
#: what the Dockerfile's FROM names (its PYTHON_IMAGE default)
BASE_NAME="docker.io/library/python:3.11-slim"
BASE_SUITE="bookworm"
BASE_PACKAGES="python3,python3-pip,python-is-python3,ca-certificates"
BASE_MIRRORS=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
# pip refuses to install into Debian's Python without this (PEP 668); the official
# python image has no such marker either.
BASE_HOOK='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED'
#: build options every RUN step gets (host network, the host's CA bundle, ulimits the
#: sandbox allows: it has no CAP_SYS_RESOURCE)
RUN_OPTS=(--network host --isolation oci
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
  --ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
KEEP=2

JSON=""
FORCE=0
WANT=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --json) JSON="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    slotfleet|examples|pause) WANT+=("$1"); shift ;;
    *) echo "tools/image/build.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ ${#WANT[@]} -gt 0 ]] || WANT=(slotfleet examples pause)

START=$(date +%s)
log() { printf '[image %3ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
die() { printf 'tools/image/build.sh: ERROR: %s\n' "$*" >&2; exit 1; }
wants() { local w; for w in "${WANT[@]}"; do [[ $w == "$1" ]] && return 0; done; return 1; }

# Own mount namespace: buildah's and podman's overlay mounts end with this process.
if [[ -z "${SLOTFLEET_IMAGE_UNSHARED:-}" ]]; then
  [[ $(id -u) == 0 ]] || die "building images needs root (buildah with overlay storage)"
  command -v unshare >/dev/null || die "unshare (util-linux) is missing"
  args=("${WANT[@]}")
  [[ -z $JSON ]] || args+=(--json "$JSON")
  [[ $FORCE == 0 ]] || args+=(--force)
  SLOTFLEET_IMAGE_UNSHARED=1 exec unshare --mount --propagation private -- "$0" "${args[@]}"
fi
for tool in buildah podman mmdebstrap; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install buildah podman mmdebstrap runc)"
done
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # one build at a time per cache (concurrent test runs share it)

sha() { sha256sum | cut -c1-16; }
# The context paths a Dockerfile's COPY/ADD lines take (not --from=<stage>), one a line.
copy_sources() {
  awk '/^(COPY|ADD)[ \t]/ && $0 !~ /--from=/ {
         for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i
       }' "$1"
}
# Hash of files under the given paths (relative to $1), skipping what .dockerignore drops.
tree_hash() {
  local dir="$1"; shift
  (cd "$dir" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
      ! -name '*.db' ! -name '*.db-wal' ! -name '*.db-shm' -print0 \
    | sort -z | xargs -0 sha256sum) | sha
}
image_exists() { podman "${STORE[@]}" image exists "$1"; }
# An archive that exists may have left the storage (wiped, pruned): load it back.
ensure_loaded() {
  local name="$1" archive="$2"
  image_exists "$name" && return 0
  log "loading $name from $archive"
  podman "${STORE[@]}" load -q -i "$archive" >/dev/null
  image_exists "$name" || die "$archive did not hold $name"
}
save() {
  local name="$1" archive="$2"
  podman "${STORE[@]}" save -q --format docker-archive -o "$archive.tmp" "$name"
  mv "$archive.tmp" "$archive"
  log "saved $name -> $archive ($(du -m "$archive" | cut -f1) MB)"
}
# Keep the $KEEP newest archives of an image (and their images); remove the others.
# Archive names end in the key, and so do image tags.
prune() {
  local image="$1" archive ref keep=()
  mapfile -t archives < <(ls -1t "$CACHE"/*.tar | grep -E "/$image-[0-9a-f]{16}\.tar$" || true)
  for archive in "${archives[@]:0:$KEEP}"; do keep+=("$(basename "$archive" .tar | tail -c 17)"); done
  for archive in "${archives[@]:$KEEP}"; do log "pruning $archive"; rm -f "$archive"; done
  podman "${STORE[@]}" images --format '{{.Repository}}:{{.Tag}}' "localhost/$image" \
    | while read -r ref; do
        [[ " ${keep[*]} " == *" ${ref: -16} "* ]] || podman "${STORE[@]}" rmi -f "$ref" >/dev/null
      done
}

# -------------------------------------------------------------------------- base
base_key="$(printf '%s\n' "$BASE_SUITE" "$BASE_PACKAGES" "$BASE_HOOK" "${BASE_MIRRORS[@]}" | sha)"
base_tar="$CACHE/base-$base_key.tar"
ensure_base() {
  if [[ ! -f $base_tar ]]; then
    log "base: mmdebstrap $BASE_SUITE minbase + $BASE_PACKAGES (about 30-110 s)"
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar --include="$BASE_PACKAGES" \
      --customize-hook="$BASE_HOOK" "$BASE_SUITE" "$base_tar.tmp" "${BASE_MIRRORS[@]}" \
      || die "mmdebstrap failed (is deb.debian.org reachable through apt?)"
    mv "$base_tar.tmp" "$base_tar"
  fi
  local label
  label="$(podman "${STORE[@]}" image inspect --format '{{index .Config.Labels "slotfleet.base"}}' \
    "$BASE_NAME" 2>/dev/null || true)"
  if [[ $label != "$base_key" ]]; then
    log "base: importing $base_tar as $BASE_NAME"
    podman "${STORE[@]}" import -q --change 'CMD ["python3"]' \
      --change "LABEL slotfleet.base=$base_key" "$base_tar" "$BASE_NAME" >/dev/null
  fi
}

declare -A NAMES ARCHIVES

# ---------------------------------------------------------------------- slotfleet
if wants slotfleet || wants examples; then
  mapfile -t sources < <(copy_sources "$ROOT/Dockerfile" | sort -u)
  [[ ${#sources[@]} -gt 0 ]] || die "no COPY lines in the Dockerfile"
  key="$( { cat "$ROOT/Dockerfile" "$ROOT/.dockerignore"; echo "$base_key";
            printf '%s\n' "${RUN_OPTS[@]}"; tree_hash "$ROOT" "${sources[@]}"; } | sha)"
  NAMES[slotfleet]="localhost/slotfleet:$key"
  ARCHIVES[slotfleet]="$CACHE/slotfleet-$key.tar"
  if [[ $FORCE == 1 || ! -f ${ARCHIVES[slotfleet]} ]]; then
    ensure_base
    log "slotfleet: buildah bud --pull=never -f Dockerfile (context: ${sources[*]})"
    buildah "${STORE[@]}" bud --quiet --pull=never "${RUN_OPTS[@]}" \
      -t "${NAMES[slotfleet]}" -f "$ROOT/Dockerfile" "$ROOT" >&2 \
      || die "building the Dockerfile failed"
    save "${NAMES[slotfleet]}" "${ARCHIVES[slotfleet]}"
    prune slotfleet
  else
    log "slotfleet: cached ${ARCHIVES[slotfleet]}"
  fi
fi

# ----------------------------------------------------------------------- examples
if wants examples; then
  mapfile -t sources < <(copy_sources "$ROOT/examples/Dockerfile" | sort -u)
  key="$( { cat "$ROOT/examples/Dockerfile"; echo "${NAMES[slotfleet]}";
            tree_hash "$ROOT/examples" "${sources[@]}"; } | sha)"
  NAMES[examples]="localhost/slotfleet-examples:$key"
  ARCHIVES[examples]="$CACHE/slotfleet-examples-$key.tar"
  if [[ $FORCE == 1 || ! -f ${ARCHIVES[examples]} ]]; then
    ensure_loaded "${NAMES[slotfleet]}" "${ARCHIVES[slotfleet]}"
    log "examples: buildah bud --pull=never -f examples/Dockerfile examples/"
    buildah "${STORE[@]}" bud --quiet --pull=never "${RUN_OPTS[@]}" \
      --build-arg "SLOTFLEET_IMAGE=${NAMES[slotfleet]}" \
      -t "${NAMES[examples]}" -f "$ROOT/examples/Dockerfile" "$ROOT/examples" >&2 \
      || die "building examples/Dockerfile failed"
    save "${NAMES[examples]}" "${ARCHIVES[examples]}"
    prune slotfleet-examples
  else
    log "examples: cached ${ARCHIVES[examples]}"
  fi
fi

# -------------------------------------------------------------------------- pause
if wants pause; then
  node_bin="$("$ROOT/tools/k8s/build-node.sh" --print-bin-dir)"
  [[ -x $node_bin/pause ]] || die "no pause binary in $node_bin: run tools/k8s/build-node.sh"
  key="$( { cat "$HERE/pause.Dockerfile" "$node_bin/pause"; } | sha)"
  NAMES[pause]="localhost/slotfleet-pause:$(cat "$node_bin/pause.tag")-$key"
  ARCHIVES[pause]="$CACHE/slotfleet-pause-$key.tar"
  if [[ $FORCE == 1 || ! -f ${ARCHIVES[pause]} ]]; then
    ctx="$(mktemp -d)"
    cp "$node_bin/pause" "$ctx/pause"
    log "pause: buildah bud FROM scratch"
    buildah "${STORE[@]}" bud --quiet --pull=never -t "${NAMES[pause]}" \
      -f "$HERE/pause.Dockerfile" "$ctx" >&2 || die "building the pause image failed"
    rm -rf "$ctx"
    save "${NAMES[pause]}" "${ARCHIVES[pause]}"
    prune slotfleet-pause
  else
    log "pause: cached ${ARCHIVES[pause]}"
  fi
fi

if [[ -n $JSON ]]; then
  {
    echo "{"
    sep=""
    for image in "${WANT[@]}"; do
      printf '%s  "%s": {"name": "%s", "archive": "%s"}' "$sep" "$image" \
        "${NAMES[$image]}" "${ARCHIVES[$image]}"
      sep=$',\n'
    done
    printf '\n}\n'
  } > "$JSON"
fi
log "done: ${WANT[*]}"
