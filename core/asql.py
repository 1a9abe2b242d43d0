"""The statements of `core.sql` on an event loop: psycopg's asyncio connection pool, with
the connection settings and value adaptation of Django's own PostgreSQL connections.

For code that must not hold a thread while it waits (the proxy). The pool's connections
are made from the backend's own `get_connection_params()` (the same database, role,
adapters, time-zone loader and prepared-statement setting), in autocommit, so every
statement commits on its own, as a Django connection outside `atomic()` does. Parameters
are adapted by their fields and rows converted by `sql.Columns`, exactly as `core.sql`
does. PostgreSQL only: on SQLite (`enabled()` is False) callers keep the thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core import sql
from core.errors import ServiceUnavailable

POOL_WAIT_SECONDS = 30.0  # how long a statement waits for a free connection
P = ParamSpec("P")
T = TypeVar("T")


def in_thread(function: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """`function` for an event loop, run in a pool thread (never Django's one
    thread-sensitive thread, so calls do not queue behind each other); the thread's own
    database connection is closed when broken or too old, as after a request."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(run, thread_sensitive=False)


class DatabaseUnavailable(Exception):
    """The statement could not run: no connection, or the database refused it."""


class PoolExhausted(ServiceUnavailable):
    """Every connection of the pool stayed busy for the whole wait: the worker is
    overloaded, not the database down."""

    code = "overloaded"
    message = "Keyward is too busy to take this call now; try again shortly."
    retry_after = 1


def enabled() -> bool:
    """Whether this deployment runs statements on the event loop."""
    return _vendor() == "postgresql" and settings.PROXY_DB_POOL_SIZE > 0


@functools.cache
def _vendor() -> str:
    # Fixed for the life of the process; `connection` is a per-thread lookup on each use.
    return connection.vendor


class _Pools:
    """One pool per event loop: a server runs one loop per worker; a new loop (as in
    tests) gets a pool of its own."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool: AsyncConnectionPool[Any] | None = None

    async def get(self) -> AsyncConnectionPool[Any]:
        loop = asyncio.get_running_loop()
        if self.pool is None or self.loop is not loop:
            self.loop, self.pool = loop, _new_pool()
            await self.pool.open()
        return self.pool

    async def close(self) -> None:
        if self.pool is not None and self.loop is asyncio.get_running_loop():
            await self.pool.close()
        self.loop = self.pool = None


def _new_pool() -> AsyncConnectionPool[Any]:
    params = connection.get_connection_params()
    cursor = params.pop("cursor_factory")
    # Django's client-side binding cursor, or its server-side binding one, as configured.
    client_side = issubclass(cursor, psycopg.ClientCursor)
    params["cursor_factory"] = psycopg.AsyncClientCursor if client_side else psycopg.AsyncCursor
    params["autocommit"] = True
    return AsyncConnectionPool(
        kwargs=params,
        min_size=1,
        max_size=settings.PROXY_DB_POOL_SIZE,
        timeout=POOL_WAIT_SECONDS,
        open=False,
        name="keyward-proxy",
    )


_pools = _Pools()


async def close() -> None:
    """Close this loop's pool (at the server's shutdown)."""
    await _pools.close()


async def fetch_raw(statement: str, params: Sequence[sql.Param]) -> list[tuple[Any, ...]]:
    """`sql.fetch_raw` on the event loop."""
    try:
        pool = await _pools.get()
        async with pool.connection() as conn, conn.cursor() as cursor:
            await cursor.execute(statement, sql.adapt(params))
            return list(await cursor.fetchall())
    except PoolTimeout:
        raise PoolExhausted() from None
    except (psycopg.Error, OSError) as exc:
        raise DatabaseUnavailable() from exc


async def execute(statement: str, params: Sequence[sql.Param]) -> int:
    """`sql.execute` on the event loop: the number of rows the statement changed."""
    try:
        pool = await _pools.get()
        async with pool.connection() as conn, conn.cursor() as cursor:
            await cursor.execute(statement, sql.adapt(params))
            return int(cursor.rowcount)
    except PoolTimeout:
        raise PoolExhausted() from None
    except (psycopg.Error, OSError) as exc:
        raise DatabaseUnavailable() from exc
