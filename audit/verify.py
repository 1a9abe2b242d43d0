"""Verifying the chains stored in the database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from audit.chain import HASHED_FIELDS, ChainResult, verify_events
from audit.models import AuditEvent

_COLUMNS = (*HASHED_FIELDS, "prev_hash", "hash")


def chains() -> list[str]:
    return list(AuditEvent.objects.order_by().values_list("chain", flat=True).distinct())


def _events(chain: str) -> Iterator[dict[str, Any]]:
    rows = AuditEvent.objects.filter(chain=chain).order_by("seq").values_list(*_COLUMNS)
    for row in rows.iterator(chunk_size=5000):
        yield dict(zip(_COLUMNS, row, strict=True))


def verify_chain(chain: str) -> ChainResult:
    return verify_events(chain, _events(chain))


def verify_all() -> list[ChainResult]:
    """Every chain's result, in chain-name order."""
    return [verify_chain(chain) for chain in sorted(chains())]
