"""Refusal timing: does a refused credential's answer time tell a known lookup id (with a
wrong secret) from an unknown one?

Over one keep-alive connection, the two credentials of each kind are presented in
alternation (the order flipped every round, so drift hits both alike): a scoped token on
`POST /api/v1/exchange` and a principal secret on `POST /api/v1/tokens`. Reported per kind:
the median and p90 of each, and the ratio of the medians (1.0 = indistinguishable). Both
must be refused (401, or 429 once the source is past its auth-failure limit: the
credential is still checked first); anything else is an error.
"""

from __future__ import annotations

import http.client
import time
from typing import Any
from urllib.parse import urlsplit

from benchmarks.common import median, percentile

PATHS = {"token": "/api/v1/exchange", "principal": "/api/v1/tokens"}
BODY = b'{"tenant": "bench", "provider": "openai", "scopes": ["release"]}'


def measure(base: str, refused: dict[str, dict[str, str]], rounds: int) -> dict[str, Any]:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    out: dict[str, Any] = {"rounds": rounds, "errors": 0}
    try:
        for kind, credentials in refused.items():
            samples: dict[str, list[float]] = {name: [] for name in credentials}
            names = sorted(credentials)
            for i in range(rounds + rounds // 10):  # the first tenth warms up
                for name in names if i % 2 else reversed(names):
                    elapsed, status = _once(connection, PATHS[kind], credentials[name])
                    if status not in (401, 429):
                        out["errors"] += 1
                    if i >= rounds // 10:
                        samples[name].append(elapsed * 1000)
            figures = {
                name: {
                    "p50_ms": round(median(s), 4),
                    "p90_ms": round(percentile(s, 90), 4),
                }
                for name, s in samples.items()
            }
            ratio = figures["wrong_secret"]["p50_ms"] / figures["unknown_id"]["p50_ms"]
            out[kind] = {**figures, "wrong_to_unknown": round(ratio, 3)}
    finally:
        connection.close()
    return out


def _once(connection: http.client.HTTPConnection, path: str, credential: str) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
    started = time.perf_counter()
    connection.request("POST", path, body=BODY, headers=headers)
    response = connection.getresponse()
    response.read()
    return time.perf_counter() - started, response.status
