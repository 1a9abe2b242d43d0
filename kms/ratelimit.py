"""Per-principal rate limiting with counters every web replica shares.

A fixed window per principal: Redis (INCR + EXPIRE in one round trip) when
KEYWARD_REDIS_URL is set, otherwise a row in the database. If Redis is unreachable the
limiter lets the request through and logs it: rate limiting protects capacity, it does not
grant access.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import sql
from kms.exceptions import RateLimited
from kms.models import RateCounter

logger = logging.getLogger("keyward.ratelimit")


@lru_cache(maxsize=4)
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def _count_redis(bucket: str, window: int) -> int | None:
    import redis

    try:
        with _redis(settings.REDIS_URL).pipeline(transaction=True) as pipe:
            pipe.incr(bucket)
            pipe.expire(bucket, window + 1, nx=True)
            count, _ = pipe.execute()
        return int(count)
    except redis.RedisError:
        logger.warning("rate limiter: Redis unreachable, request let through")
        return None


def _count_database(bucket: str, window: int) -> int:
    expires = timezone.now() + timedelta(seconds=window + 1)
    statement = (
        "INSERT INTO kms_ratecounter (bucket, count, expires_at) VALUES (%s, 1, %s) "
        "ON CONFLICT (bucket) DO UPDATE SET count = kms_ratecounter.count + 1 RETURNING count"
    )
    with transaction.atomic():
        rows = sql.fetch(
            statement,
            [bucket, sql.param(RateCounter, "expires_at", expires)],
            sql.Columns.of(RateCounter, ["count"]),
        )
    return int(rows[0][0]) if rows else 0


def check_rate(principal_id: str) -> None:
    """Count one request for the principal; RateLimited (429) when over the limit."""
    limit, window = settings.RATE_LIMIT
    if limit == 0:
        return
    now = time.time()
    slot = int(now // window)
    bucket = f"keyward:rate:{principal_id}:{window}:{slot}"
    count = _count_redis(bucket, window) if settings.REDIS_URL else _count_database(bucket, window)
    if count is not None and count > limit:
        raise RateLimited(retry_after=max(1, math.ceil((slot + 1) * window - now)))


def purge_expired_counters() -> int:
    """Delete database counters whose window has passed."""
    deleted, _ = RateCounter.objects.filter(expires_at__lt=timezone.now()).delete()
    return deleted
