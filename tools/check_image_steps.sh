#!/usr/bin/env bash
# Prove the Dockerfile's steps without Docker (this machine cannot build images):
#
#   1. copy exactly what the builder stage COPYs (read from the Dockerfile) into a temp
#      build context, so a file the image needs but the COPY lines miss fails here too;
#   2. build the wheel there as the builder stage does (pip wheel --no-deps);
#   3. check the wheel holds the package (py.typed, store migrations) and no tests;
#   4. create a FRESH virtualenv with the base interpreter (not the dev .venv), install only
#      the wheel (dependencies from the package index, as the runtime stage does), `pip check`;
#   5. run the installed console script from outside the source tree: `slotfleet --help`,
#      import the operator and worker packages, and `slotfleet crds --check` against this
#      repository's generated files when that command exists.
#
# Fails loudly (non-zero exit, the failing step named) on any error. Unlike the image it
# keeps pip's cache, so a warm cache makes it quick; nothing is written into the repository.
#
# Usage: tools/check_image_steps.sh [--keep]     (--keep: leave the temp dir for inspection)
# Env:   PYTHON  base interpreter (default: python3.11, the image's Python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "check_image_steps.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

STEP="setup"
START=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/slotfleet-image-check.XXXXXX")"
cleanup() {
  local code=$?
  if [[ $code -ne 0 ]]; then
    printf '\ncheck_image_steps.sh: FAILED at step: %s (exit %d); work dir %s\n' \
      "$STEP" "$code" "$WORK" >&2
  elif [[ $KEEP == 0 ]]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
log() { printf '[image-check %3ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
die() { printf 'check_image_steps.sh: ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || die "$PYTHON is not Python 3.11, the image's Python"

# ------------------------------------------------------------------ 1. build context
STEP="build context from the Dockerfile's COPY lines"
CONTEXT="$WORK/context"
mkdir -p "$CONTEXT"
# COPY lines of the builder stage (not COPY --from=...): every word but the last is a source
mapfile -t SOURCES < <(awk '
  /^FROM / { stage = ($0 ~ / AS builder/) }
  stage && /^COPY / && $0 !~ /--from=/ { for (i = 2; i < NF; i++) print $i }
' "$ROOT/Dockerfile")
[[ ${#SOURCES[@]} -gt 0 ]] || die "no COPY lines found in the builder stage of the Dockerfile"
for src in "${SOURCES[@]}"; do
  [[ -e "$ROOT/$src" ]] || die "the Dockerfile copies $src, which does not exist"
  # what .dockerignore drops from slotfleet/: caches and local databases
  tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.db' \
    --exclude='*.db-wal' --exclude='*.db-shm' -cf - "$src" | tar -C "$CONTEXT" -xf -
done
log "context: ${SOURCES[*]}"

# ------------------------------------------------------------------ 2. wheel
STEP="pip wheel --no-deps (builder stage)"
"$PYTHON" -m venv "$WORK/buildenv"
"$WORK/buildenv/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$CONTEXT"
mapfile -t WHEELS < <(find "$WORK/dist" -name 'slotfleet-*.whl')
[[ ${#WHEELS[@]} -eq 1 ]] || die "expected one slotfleet wheel, found ${#WHEELS[@]}"
WHEEL="${WHEELS[0]}"
log "built $(basename "$WHEEL")"

# ------------------------------------------------------------------ 3. wheel contents
STEP="wheel contents"
"$PYTHON" - "$WHEEL" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
problems = []
for needed in ("slotfleet/__init__.py", "slotfleet/py.typed", "slotfleet/cli/main.py"):
    if needed not in names:
        problems.append(f"missing {needed}")
if not any(n.startswith("slotfleet/store/migrations/") and n.endswith(".sql") for n in names):
    print("note: no store migrations (*.sql) in the wheel", file=sys.stderr)
stray = [n for n in names if n.split("/")[0] not in ("slotfleet",) and ".dist-info/" not in n]
if stray:
    problems.append(f"files outside the package: {stray[:5]}")
if any("__pycache__" in n or n.endswith(".pyc") for n in names):
    problems.append("compiled bytecode in the wheel")
if not any(n.endswith("entry_points.txt") for n in names):
    problems.append("no entry_points.txt (the slotfleet console script)")
if problems:
    sys.exit("wheel: " + "; ".join(problems))
print(f"wheel: {len(names)} files, package only")
PY

# ------------------------------------------------------------------ 4. fresh runtime env
STEP="fresh virtualenv + pip install of the wheel (runtime stage)"
"$PYTHON" -m venv "$WORK/runtime"
RT="$WORK/runtime/bin"
"$RT/python" -m pip install --quiet "$WHEEL"
STEP="pip check"
"$RT/python" -m pip check
log "installed into a fresh virtualenv: $("$RT/python" -m pip list --format=freeze | wc -l) packages"

# ------------------------------------------------------------------ 5. run it
# Outside the source tree and with the image's environment, so nothing resolves to the repo.
cd "$WORK"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
unset PYTHONPATH VIRTUAL_ENV
STEP="installed package location"
"$RT/python" - "$ROOT" <<'PY'
import sys
from pathlib import Path

import slotfleet

where = Path(slotfleet.__file__).resolve()
if Path(sys.argv[1]).resolve() in where.parents:
    sys.exit(f"slotfleet imported from the source tree ({where}), not the installed wheel")
print(f"slotfleet imported from {where.parent}")
PY
STEP="import the runtime packages"
"$RT/python" -c 'import slotfleet.cli.main, slotfleet.worker, slotfleet.operator, slotfleet.store'
STEP="slotfleet --help (the image's ENTRYPOINT + CMD)"
"$RT/slotfleet" --help >"$WORK/help.txt"
head -3 "$WORK/help.txt"
if grep -qE '^[[:space:]]+crds\b|[{,]crds[,}]' "$WORK/help.txt"; then
  STEP="slotfleet crds --check (installed models vs the repository's generated CRD files)"
  "$RT/slotfleet" crds --check --root "$ROOT"
  log "slotfleet crds --check: generated files match the installed models"
else
  log "slotfleet crds not available; skipped its check"
fi
STEP="done"
log "OK: the Dockerfile's steps work (wheel $(basename "$WHEEL"))"
