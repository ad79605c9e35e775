# Sourced by scripts/demo and scripts/test: make .venv with the project installed.
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SLOTFLEET_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
extras="${1:-}"
stamp="$VENV/.slotfleet-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)${extras}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "==> installing slotfleet${extras:+[$extras]} into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # setuptools warns about every editable install on stderr; a new user need not read it
  PYTHONWARNINGS="ignore:Editable installation" \
    "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
