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

ensure_services() {  # PostgreSQL and Redis on loopback, started when not already up
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        echo "keyward: starting PostgreSQL" >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
        for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        echo "keyward: starting Redis" >&2
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
        for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
    fi
}

ensure_chromium() {  # Debian's Chromium for the console's browser tests (never `playwright install`)
    [ -x /usr/bin/chromium ] && return 0
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "keyward: installing chromium with apt-get" >&2
        if apt-get update -qq >&2 && apt-get install -y -qq chromium >&2; then
            return 0
        fi
    fi
    echo "keyward: /usr/bin/chromium is missing and could not be installed (Debian, as root:" \
        "apt-get install -y chromium); the console's browser tests will be skipped" >&2
}
