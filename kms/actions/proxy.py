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
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from audit.actors import Actor
from audit.recorder import aprobe, arecord
from core import asql
from kms.actions.keys import aread_secret
from kms.actions.tokens import COUNT_USE, ProxyCall, count_use_params, proxy_event
from kms.models import ScopedToken
from kms.providers import get_adapter
from kms.queries import aload_token, inactive_reason
from kms.ratelimit import acheck_rate
from tenants import credentials


async def aopen_proxy_call(presented: str, provider: str) -> tuple[ProxyCall, Actor] | None:
    """The call a `kwt_` token with the `proxy` scope may make to `provider`, its use
    counted; None when the synchronous path must decide. AuditUnavailable (503) when no
    event could be written now; RateLimited (429) over the principal's limit."""
    parsed = credentials.parse(presented)
    if parsed is None or parsed.prefix != credentials.TOKEN_PREFIX:
        return None
    try:
        token: ScopedToken = await credentials.averify(parsed, aload_token)
    except credentials.Rejected:
        return None
    key = token.provider_key
    if (
        credentials.use_to_note(token, parsed.plaintext)
        or "proxy" not in token.scopes
        or key.provider != provider
        or token.key_version not in (None, key.current_version)  # grace needs a query
        or inactive_reason(token) is not None
    ):
        return None
    actor = Actor("token", str(token.id))
    # Independent of each other, so one wait for the three rather than three in a row. A
    # secret read for a call refused here never leaves this function.
    admitted, probed, secret = await asyncio.gather(
        acheck_rate(str(token.principal_id)),
        aprobe(),  # the event is written when the call ends: none starts while the log is down
        aread_secret(key, key.current_version, actor=actor, purpose="proxy.request"),
        return_exceptions=True,
    )
    for outcome in (admitted, probed, secret):  # the refusal of the first check that refused
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
        secret=cast(str, secret),
    )
    return call, actor


async def arecord_proxy_call(call: ProxyCall, outcome: dict[str, Any], *, actor: Actor) -> None:
    """`do_record_proxy_call` on the event loop."""
    await arecord("proxy.request", actor=actor, **proxy_event(call, outcome))
