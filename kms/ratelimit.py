"""Per-principal rate limiting with counters every web replica shares.

A fixed window per principal: Redis (INCR + EXPIRE in one round trip) when
KEYWARD_REDIS_URL is set, otherwise a row in the database. The limiter never fails open:
while Redis cannot be reached it counts in the database (KEYWARD_RATE_LIMIT_FALLBACK =
`database`, the default) or refuses with 503 (`refuse`), tries Redis again after a few
seconds, and logs the outage once and the recovery once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import sql
from core.numbers import decimal
from kms.exceptions import RateLimited, RateLimiterUnavailable
from kms.models import RateCounter

logger = logging.getLogger("keyward.ratelimit")


# One command instead of MULTI/INCR/EXPIRE/EXEC: the same atomic count, a quarter of the
# round trips' parsing (EVALSHA, the script loaded once per server).
COUNT = (
    "local n = redis.call('INCR', KEYS[1]) redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX') return n"
)


@lru_cache(maxsize=4)
def _redis(url: str) -> Any:
    """The client and its counting script."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return client.register_script(COUNT)


_RETRY_REDIS_AFTER = 5.0  # seconds between attempts while Redis is down


class _Outage:
    """This process's view of Redis: down since when (0 when up). Only decides whether to
    try Redis and what to log; the counts themselves live in Redis or the database."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since = 0.0

    def skip_redis(self, now: float) -> bool:
        return bool(self.since) and now - self.since < _RETRY_REDIS_AFTER

    def failed(self, now: float) -> None:
        with self.lock:
            if not self.since:
                logger.warning(
                    "rate limiter: Redis unreachable; %s until it answers",
                    "counting in the database"
                    if settings.RATE_LIMIT_FALLBACK == "database"
                    else "refusing requests",
                )
            self.since = now

    def recovered(self) -> None:
        if self.since:
            with self.lock:
                if self.since:
                    logger.warning("rate limiter: Redis reachable again")
                self.since = 0.0


_outage = _Outage()


def _count_redis(bucket: str, window: int) -> int | None:
    """The count in Redis, or None when Redis cannot answer now."""
    import redis

    now = time.monotonic()
    if _outage.skip_redis(now):
        return None
    try:
        count = _redis(settings.REDIS_URL)(keys=[bucket], args=[window + 1])
    except redis.RedisError:
        _outage.failed(now)
        return None
    _outage.recovered()
    return int(count)


@dataclass(frozen=True)
class _Slot:
    """The principal's fixed window now: its counter and what a refusal tells."""

    limit: int
    window: int
    bucket: str
    retry_after: int

    @classmethod
    def now(cls, principal_id: str, rate: tuple[int, int] | None = None) -> _Slot | None:
        """None when rate limiting is off. `rate` is (limit, window in seconds); the
        per-principal KEYWARD_RATE_LIMIT when it is not given."""
        limit, window = rate or settings.RATE_LIMIT
        if limit == 0:
            return None
        now = time.time()
        slot = int(now // window)
        bucket = f"keyward:rate:{principal_id}:{window}:{slot}"
        return cls(limit, window, bucket, max(1, math.ceil((slot + 1) * window - now)))

    def admit(self, count: int) -> None:
        if count > self.limit:
            raise RateLimited(retry_after=self.retry_after)


class _AsyncRedis:
    """The counting script on the redis.asyncio client of this process's event loop (its
    connections belong to the loop that opened them)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: Any = None

    def get(self) -> Any:
        import redis.asyncio

        loop = asyncio.get_running_loop()
        if self.client is None or self.loop is not loop:
            self.loop = loop
            client = redis.asyncio.Redis.from_url(
                settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            self.client = client.register_script(COUNT)
        return self.client


_async_redis = _AsyncRedis()


async def acheck_rate(principal_id: str) -> bool:
    """`check_rate` on the event loop: counts one request in Redis, RateLimited when over
    the limit; False, counting nothing, when Redis cannot answer now (the caller then
    counts the synchronous way, with its fallback)."""
    import redis

    slot = _Slot.now(principal_id)
    if slot is None:
        return True
    if not settings.REDIS_URL or _outage.skip_redis(time.monotonic()):
        return False
    try:
        count = await _async_redis.get()(keys=[slot.bucket], args=[slot.window + 1])
    except (redis.RedisError, OSError):
        _outage.failed(time.monotonic())
        return False
    _outage.recovered()
    slot.admit(int(count))
    return True


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


def check_rate(principal_id: str, rate: tuple[int, int] | None = None) -> None:
    """Count one request for the principal (or any other name, with its own `rate`, as
    (limit, window in seconds)); RateLimited (429) when over the limit."""
    slot = _Slot.now(principal_id, rate)
    if slot is None:
        return
    count = _count_redis(slot.bucket, slot.window) if settings.REDIS_URL else None
    if count is None:
        if settings.REDIS_URL and settings.RATE_LIMIT_FALLBACK == "refuse":
            raise RateLimiterUnavailable()
        count = _count_database(slot.bucket, slot.window)
    slot.admit(count)


def check_sign_in(source: str | None, username: str) -> None:
    """Count one console sign-in attempt against its source address and, apart, against
    the username it names (hashed, so any text fits the bucket), each under
    KEYWARD_LOGIN_RATE_LIMIT; RateLimited past either, RateLimiterUnavailable (or a
    database error) when neither Redis nor the database can count: never admitted
    uncounted."""
    rate = settings.LOGIN_RATE_LIMIT
    named = hashlib.sha256(username.casefold().encode()).hexdigest()[:32]
    check_rate(f"signin-source:{source or '-'}", rate)
    check_rate(f"signin-user:{named}", rate)


def purge_expired_counters() -> int:
    """Delete database counters whose window has passed (failed-authentication counters
    are the summariser's to delete, once their count is in the audit log)."""
    spent = RateCounter.objects.filter(expires_at__lt=timezone.now())
    deleted, _ = spent.exclude(bucket__startswith=AUTH_FAILURES).delete()
    return deleted


# -- failed authentication, per source address --------------------------------------------
AUTH_FAILURES = "keyward:authfail:"


def note_auth_failure(source: str | None, reason: str, now: float | None = None) -> int:
    """Count one failed authentication from `source` for `reason` in this minute, in the
    database every replica shares; returns the count so far. The first of a minute is
    audited on its own, the rest by `take_finished_auth_failures`' summary."""
    minute = int((now or time.time()) // 60)
    bucket = f"{AUTH_FAILURES}{minute}:{source or '-'}:{reason}"[:120]
    return _count_database(bucket, 60)


def take_finished_auth_failures(now: float | None = None) -> list[tuple[int, str, str, int]]:
    """Remove and return the failed-authentication counts of minutes that are over, as
    (minute, source, reason, count); each is taken by one caller only."""
    current = int((now or time.time()) // 60)
    taken = []
    with transaction.atomic():
        rows = RateCounter.objects.select_for_update(skip_locked=True).filter(
            bucket__startswith=AUTH_FAILURES
        )
        for bucket, count in rows.values_list("bucket", "count"):
            minute, _, rest = bucket[len(AUTH_FAILURES) :].partition(":")
            source, _, reason = rest.rpartition(":")
            started = decimal(minute)
            if started is not None and started < current:
                taken.append((started, source, reason, int(count), bucket))
        RateCounter.objects.filter(bucket__in=[t[4] for t in taken]).delete()
    return [t[:4] for t in taken]
