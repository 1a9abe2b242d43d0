"""Shared helpers: percentiles, medians, machine description, a dedicated database."""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SUPERUSER_URL = os.environ.get(
    "KEYWARD_BENCH_PG_SUPERUSER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
OWNER, APP = "keyward_owner", "keyward_app"


def percentile(samples: list[float], pct: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    summary = {f"p{p}_ms": round(percentile(samples_ms, p), 3) for p in (50, 95, 99)}
    summary["max_ms"] = round(max(samples_ms), 3) if samples_ms else float("nan")
    return summary


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str]:
    import celery
    import django

    with psycopg.connect(SUPERUSER_URL) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "django": django.get_version(),
        "celery": celery.__version__,
        "postgresql": str(row[0]) if row else "?",
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def database_name() -> str:
    """A database of its own for each run, so runs side by side never share rows."""
    return f"keyward_bench_{datetime.now(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(3)}"


def fresh_database(name: str, service_env: dict[str, str] | None = None) -> dict[str, str]:
    """Create the empty database `name`, migrate it as the owner role, and return the
    environment under which the application role uses it. The harness passes on no
    KEYWARD_ variable of its own environment: `service_env` (the `--service-env` option)
    is the one way to change the service's configuration for a run."""
    with psycopg.connect(SUPERUSER_URL, autocommit=True) as conn:
        for role, options in ((OWNER, "LOGIN CREATEDB"), (APP, "LOGIN")):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                conn.execute(f'CREATE ROLE "{role}" {options}')
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{OWNER}"')
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    base.update(
        KEYWARD_QUIET_EMBEDDED="1",
        KEYWARD_DB_APP_ROLE=APP,
        KEYWARD_BROKER_URL="redis://127.0.0.1:6379/14",
        KEYWARD_DATA_DIR=str(ROOT / "var" / "bench"),
        # Signed checkpoints belong with their database (each run's has its own keys).
        KEYWARD_AUDIT_CHECKPOINT_DIR=str(_checkpoints(name)),
        **(service_env or {}),
    )
    migrate_env = {**base, "KEYWARD_DATABASE_URL": f"postgres://{OWNER}@127.0.0.1:5432/{name}"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=migrate_env, check=True
    )
    with psycopg.connect(SUPERUSER_URL.rsplit("/", 1)[0] + f"/{name}", autocommit=True) as conn:
        # A logged table like audit_event, so the baseline pays the same commit (WAL flush).
        conn.execute(
            "CREATE TABLE bench_plain (id bigserial PRIMARY KEY, tenant text, actor text,"
            " target text, details jsonb, at timestamptz DEFAULT now())"
        )
        conn.execute(f'GRANT INSERT, SELECT ON bench_plain TO "{APP}"')
        conn.execute(f'GRANT USAGE ON SEQUENCE bench_plain_id_seq TO "{APP}"')
    return {**base, "KEYWARD_DATABASE_URL": f"postgres://{APP}@127.0.0.1:5432/{name}"}


def _checkpoints(name: str) -> Path:
    return ROOT / "var" / "bench" / "checkpoints" / name


def drop_database(name: str) -> None:
    with psycopg.connect(SUPERUSER_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    shutil.rmtree(_checkpoints(name), ignore_errors=True)


def seed(module: str, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Run a seeding module (`python -m module FILE`) in the service's environment and
    read back the credentials it wrote to FILE (mode 0600), never to standard output."""
    seed_file = workdir / f"{module.rsplit('.', 1)[-1]}.json"
    subprocess.run(
        [sys.executable, "-m", module, str(seed_file)],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    creds: dict[str, Any] = json.loads(seed_file.read_text())
    return creds
