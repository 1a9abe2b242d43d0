"""Liveness, readiness and the JSON fallbacks for non-API errors."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import current_app
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from stores.health import secret_store_ready

logger = logging.getLogger("keyward.ops")


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the process lives; touches nothing else."""
    return JsonResponse({"status": "ok"})


def _database() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return bool(cursor.fetchone() == (1,))


def _secret_store() -> bool:
    return secret_store_ready()


def _broker() -> bool:
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
    return True


CHECKS: dict[str, Callable[[], bool]] = {
    "database": _database,
    "secret_store": _secret_store,
    "broker": _broker,
}


def _run(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:
        return False


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 only when every dependency answers; otherwise 503 naming what is down."""
    results = {name: "ok" if _run(check) else "down" for name, check in CHECKS.items()}
    down = sorted(name for name, state in results.items() if state != "ok")
    if down:
        logger.warning("not ready: %s", ", ".join(down))
        response = JsonResponse(
            {"status": "unavailable", "down": down, "checks": results}, status=503
        )
        response["Retry-After"] = "5"
        return response
    return JsonResponse({"status": "ok", "checks": results})
