"""Proxied calls on native async I/O: the common case of `do_open_proxy_call` and the
call's event, with the database on psycopg's asyncio pool (`core.asql`), the rate limit on
redis.asyncio and the secret read on the store's own async read, so that a call holds no
thread while it waits.

The fast path only ever admits: anything that is not the plain case (a credential that
does not verify, a refusal, a use to note, a pinned version, Redis down) returns None, and
the caller runs the synchronous `do_open_proxy_call`, which checks everything again and
refuses with its audit event, or handles the rest. A use is counted only after every
other check, so no use is counted twice; a call refused as used up is counted against the
rate limit here and again by the synchronous refusal.

The secret read is the longest wait of a call. For a token this process admitted before,
presented with that token's own secret (checked against the digest noted with the hint),
it begins at once, beside the token's lookup, from where the token's key was found last
(the store, path and current version: no secret, and only a hint): it is used only when
the token then verifies and its key is still there at that version; otherwise it is
dropped and the read made again. A refused or inactive token's hint is forgotten. No
secret outlives the call that read it.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings

from audit.actors import Actor
from audit.recorder import arecord
from core import asql
from kms.actions.keys import aread_secret
from kms.actions.tokens import COUNT_USE, ProxyCall, count_use_params, proxy_event
from kms.keychoice import source_of
from kms.models import ProviderKey, ScopedToken
from kms.providers import get_adapter
from kms.queries import aload_token_probed, inactive_reason
from kms.ratelimit import acheck_rate
from stores.registry import get_store
from tenants import credentials

Where = tuple[str, str, int]  # a key's store, path in it, and current version


@dataclass(frozen=True)
class _Hint:
    """Where a verified token's key lived, and the token's stored digest, so that only a
    presentation of that token's own secret begins a read."""

    where: Where
    pepper_id: int
    digest: str

    def matches(self, parsed: credentials.Parsed) -> bool:
        if self.pepper_id not in settings.PEPPERS:  # the pepper was retired meanwhile
            return False
        presented = credentials.digest(parsed.plaintext, self.pepper_id)
        return hmac.compare_digest(presented, self.digest)


class _Hints:
    """Hints by the token's lookup id; bounded, the least recently used dropped first.
    Per process, and never trusted: the token is verified against the database anyway."""

    SIZE = 4096

    def __init__(self) -> None:
        self._hints: OrderedDict[str, _Hint] = OrderedDict()

    def get(self, lookup_id: str) -> _Hint | None:
        return self._hints.get(lookup_id)

    def note(self, lookup_id: str, hint: _Hint) -> None:
        self._hints[lookup_id] = hint
        self._hints.move_to_end(lookup_id)
        if len(self._hints) > self.SIZE:
            self._hints.popitem(last=False)

    def forget(self, lookup_id: str) -> None:
        self._hints.pop(lookup_id, None)


_hints = _Hints()


def _where(key: ProviderKey) -> Where:
    return (key.store, key.store_path, key.current_version)


def begin_read(parsed: credentials.Parsed) -> tuple[Where | None, asyncio.Task[str] | None]:
    """The read a presented token's hint names, begun now, when the presented secret is
    the one the hint was noted for; else nothing is read."""
    hint = _hints.get(parsed.key_id)
    if hint is None or not hint.matches(parsed):
        return None, None
    store, path, version = hint.where
    return hint.where, asyncio.ensure_future(get_store(store).aget(path, version))


def _drop(read: asyncio.Task[str] | None) -> None:
    """Abandon a read begun for a call that will not use it (its outcome, a secret or a
    failure, goes nowhere)."""
    if read is not None:
        read.cancel()
        read.add_done_callback(lambda done: done.cancelled() or done.exception())


async def aopen_proxy_call(presented: str, provider: str) -> tuple[ProxyCall, Actor] | None:
    """The call a `kwt_` token with the `proxy` scope may make to `provider`, its use
    counted; None when the synchronous path must decide. DatabaseUnavailable when the
    token could not be read or no event could be written now (the synchronous path then
    answers, 503 when the log is down); RateLimited (429) over the principal's limit."""
    parsed = credentials.parse(presented)
    if parsed is None or parsed.prefix != credentials.TOKEN_PREFIX:
        return None
    hinted, early = begin_read(parsed)
    try:
        return await _open(parsed, provider, hinted, early)
    finally:
        _drop(early)  # when the call did not use it (once used, it is done: nothing to drop)


async def _open(
    parsed: credentials.Parsed,
    provider: str,
    hinted: Where | None,
    early: asyncio.Task[str] | None,
) -> tuple[ProxyCall, Actor] | None:
    try:
        # With the audit log's probe: the event is written when the call ends, so none
        # starts while the log is down.
        token: ScopedToken = await credentials.averify(parsed, aload_token_probed)
    except credentials.Rejected:
        _hints.forget(parsed.key_id)
        return None
    key = token.provider_key
    if (
        credentials.use_to_note(token, parsed.plaintext)
        or "proxy" not in token.scopes
        or key.provider != provider
        or token.key_version not in (None, key.current_version)  # grace needs a query
        or inactive_reason(token) is not None
    ):
        _hints.forget(parsed.key_id)
        return None
    actor = Actor("token", str(token.id))
    where = _where(key)
    _hints.note(parsed.key_id, _Hint(where, token.pepper_id, token.digest))
    begun: Awaitable[str] | None = early if hinted == where else None
    # Independent of each other, so one wait for both rather than two in a row. A secret
    # read for a call refused here never leaves this function.
    admitted, secret = await asyncio.gather(
        acheck_rate(str(token.principal_id)),
        aread_secret(
            key,
            key.current_version,
            actor=actor,
            purpose="proxy.request",
            begun=begun,
            tenant=token.tenant.slug,
        ),
        return_exceptions=True,
    )
    for outcome in (admitted, secret):  # the refusal of the first check that refused
        if isinstance(outcome, BaseException):
            raise outcome
    if admitted is False:  # Redis could not count it: the synchronous path, with its fallback
        return None
    if token.max_uses is not None and not await asql.execute(COUNT_USE, count_use_params(token)):
        return None  # used up meanwhile: the synchronous path refuses, audited
    call = ProxyCall(
        provider=key.provider,
        base_url=get_adapter(key.provider).proxy_base(key.base_url),
        tenant=token.tenant.slug,
        key_id=str(key.id),
        key_version=key.current_version,
        token_id=str(token.id),
        principal=str(token.principal_id),
        models=tuple(token.allowed_models),
        credential_source=source_of(token.tenant, key).value,
        secret=cast(str, secret),
    )
    return call, actor


async def arecord_proxy_call(call: ProxyCall, outcome: dict[str, Any], *, actor: Actor) -> None:
    """`do_record_proxy_call` on the event loop."""
    await arecord("proxy.request", actor=actor, **proxy_event(call, outcome))
