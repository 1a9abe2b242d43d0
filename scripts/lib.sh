# Shared by scripts/run, scripts/test and scripts/check: a project virtualenv in .venv,
# (re)installed whenever pyproject.toml changes.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KEYWARD_VENV:-$ROOT/.venv}"

ensure_venv() {  # $1: extras, e.g. "dev" or ""
    local extras="${1:-}" spec="$ROOT" stamp
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    stamp="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-${extras:-base}"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    if ! grep -qx "$stamp" "$VENV/.keyward-installed" 2>/dev/null; then
        echo "keyward: installing dependencies into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
        "$VENV/bin/python" -m pip install --quiet -e "$spec" >&2
        echo "$stamp" >> "$VENV/.keyward-installed"
    fi
}
