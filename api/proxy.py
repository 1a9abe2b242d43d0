"""`ANY /api/v1/proxy/{provider}/{path}`: a provider call forwarded with the tenant's key
injected, so the key never leaves Keyward.

A plain ASGI application (no Django request handler): the upstream call is native async
I/O (aiohttp's client with pooled connections), and the response, server-sent events
included, goes back chunk by chunk as it arrives, so a long stream holds no thread. The
checks before the call (the token, its scope, key, grant and tenant, the use count, the
rate limit, the secret read) and the audit event after it run the same code as the rest
of the API, off the event loop.

Keyward's own refusals carry the one error shape and `X-Keyward-Refusal: <code>`; a
provider's answer, errors included, is passed through as it came.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from multidict import CIMultiDict

from api.middleware import CONTROL_CHARACTERS, origin_of
from api.observe import ProxyObserver, observe_proxy_call
from api.plain import Forbidden, authenticate, failure_response
from audit.actors import Actor
from core import asql
from core.context import bound_origin, note_actor
from core.errors import DomainError, InvalidInput, ServiceUnavailable
from core.logging import log_access
from core.numbers import decimal
from kms import egress
from kms.actions.proxy import aopen_proxy_call, arecord_proxy_call
from kms.actions.tokens import (
    ProxyCall,
    do_check_proxy_model,
    do_open_proxy_call,
    do_record_proxy_call,
)
from kms.exceptions import ForbiddenBaseUrl
from kms.models import ScopedToken
from kms.providers import ADAPTERS, get_adapter
from kms.ratelimit import check_rate
from stores.registry import aclose_stores

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("keyward.proxy")
PREFIX = "/api/v1/proxy/"
ROUTE = PREFIX + "<provider>/<path>"  # what access lines name: a template, never the path
# Never forwarded: the caller's credentials (Keyward's token, or a key of its own), cookies,
# and what belongs to one connection (RFC 9110 7.6.1), which the client sets itself.
DROPPED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "x-request-id",
    }
)
# Headers of the provider's answer that belong to its connection to Keyward.
NOT_RETURNED = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "set-cookie",
        "keyward-credential-source",  # Keyward's to say, never the provider's
    }
)
USAGE_TAIL = 64 * 1024  # how much of the end of an answer is kept to read its usage


class BadRequestLine(DomainError):
    code = "bad_request"
    message = "The URL holds control characters."


class UnknownProvider(DomainError):
    status = 404
    code = "unknown_provider"
    message = "No such provider."


class UpstreamUnreachable(DomainError):
    status = 502
    code = "upstream_unreachable"
    message = "The provider could not be reached."


class ClientGone(DomainError):
    status = 400
    code = "client_gone"
    message = "The client went away before its request was complete."


class BodyTooLarge(DomainError):
    status = 413
    code = "body_too_large"
    message = "The request body is too large."


# -- the checks, in a thread ---------------------------------------------------------------
def open_call(request: HttpRequest, provider: str) -> tuple[ProxyCall, Actor] | HttpResponse:
    """The call a `kwt_` token with the `proxy` scope may make, or the refusal to send."""
    caller = None
    try:
        if provider not in ADAPTERS:
            raise UnknownProvider()
        _token_from_sdk_header(request)
        caller = authenticate(request)
        if not isinstance(caller.credential, ScopedToken):
            raise Forbidden()
        check_rate(str(caller.user.id))
        if "key" in request.GET:
            raise InvalidInput(
                "A key= query parameter is refused: Keyward adds the key.",
                fields={"key": ["Not allowed."]},
            )
        return do_open_proxy_call(caller.credential, provider, actor=caller.actor), caller.actor
    except Exception as exc:
        return _refused(failure_response(request, exc, caller))


def _token_from_sdk_header(request: HttpRequest) -> None:
    """A provider SDK sends its "API key" in its provider's header (`x-api-key`, `api-key`,
    `x-goog-api-key`); a `kwt_` token given to it as that key is read from there when no
    Authorization header is sent. Either way, none of these headers is forwarded."""
    if request.META.get("HTTP_AUTHORIZATION"):
        return
    for name in ("HTTP_X_API_KEY", "HTTP_API_KEY", "HTTP_X_GOOG_API_KEY"):
        value = request.META.get(name, "")
        if value.startswith("kwt_"):
            request.META["HTTP_AUTHORIZATION"] = f"Bearer {value}"
            return


def _refused(response: HttpResponse) -> HttpResponse:
    """Mark a refusal as Keyward's own. (The refusals sent from the event loop are never a
    401 or 403, whose refusal events would need the database there.)"""
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "error"
    response["X-Keyward-Refusal"] = code
    return response


def check_model(
    request: HttpRequest, call: ProxyCall, model: str | None, actor: Actor
) -> HttpResponse:
    """The audited refusal of a model the token does not allow."""
    try:
        do_check_proxy_model(call, model, actor=actor)
    except DomainError as exc:
        return _refused(failure_response(request, exc, None))
    raise AssertionError("a model outside the allowlist was not refused")


async def _open(request: HttpRequest, provider: str) -> tuple[ProxyCall, Actor] | HttpResponse:
    """The checks on native async I/O where the database allows (PostgreSQL); whatever
    that path leaves undecided (refusals above all), and everything on SQLite, runs the
    synchronous checks in Django's thread."""
    if asql.enabled() and provider in ADAPTERS and "key" not in request.GET:
        _token_from_sdk_header(request)
        scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer":
            try:
                opened = await aopen_proxy_call(presented.strip(), provider)
            except asql.DatabaseUnavailable:
                opened = None  # the synchronous path answers as the rest of the API does
            except DomainError as exc:  # 503 or 429: no refusal event to write
                return _refused(failure_response(request, exc, None))
            if opened is not None:
                return opened
    return await sync_to_async(open_call)(request, provider)


def close_call(call: ProxyCall, outcome: dict[str, Any], actor: Actor) -> None:
    do_record_proxy_call(call, outcome, actor=actor)


async def _write_event(call: ProxyCall, outcome: dict[str, Any], actor: Actor) -> None:
    if asql.enabled():
        await arecord_proxy_call(call, outcome, actor=actor)
    else:
        await sync_to_async(close_call)(call, outcome, actor)


# -- the application -------------------------------------------------------------------------
class Proxy:
    """The ASGI application; one pooled aiohttp session per process."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The connection pool of this process's event loop (a server runs one; a new
        loop, as in tests, gets a pool of its own). aiohttp rather than httpx: measured
        here, a proxied request costs 0.33 ms of CPU through it against 1.6 ms through
        httpx's AsyncClient, and that CPU is spent on the loop every stream shares."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=settings.PROXY_CONNECT_TIMEOUT_SECONDS,
                    sock_read=settings.PROXY_READ_TIMEOUT_SECONDS,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # one tenant's cookies never reach another's
                auto_decompress=False,  # the answer goes back as the provider encoded it
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            )
        return self._session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await self.handle(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Close the pools this process holds on the running event loop: the upstream
        connections, the secret stores' and the database's."""
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
            self._session = None
        await aclose_stores()
        await asql.close()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        observer = ProxyObserver(send, str(scope["method"]), ROUTE)  # its status and time
        request = ASGIRequest(scope, io.BytesIO())  # headers and query; the body is read here
        origin = origin_of(request)
        stamped = _with_request_id(observer.send, origin.request_id)
        with bound_origin(origin):  # carried into the threads of the checks and the event
            try:
                await self._handle(scope, request, receive, stamped)
            finally:
                observer.done()
                log_access(observer.method, ROUTE, observer.status, observer.started)

    async def _handle(
        self, scope: Scope, request: HttpRequest, receive: Receive, send: Send
    ) -> None:
        line = str(scope["path"]) + request.META["QUERY_STRING"]
        if CONTROL_CHARACTERS.search(line):
            await _refuse(send, request, BadRequestLine())
            return
        provider, _, rest = str(scope["path"]).removeprefix(PREFIX).partition("/")
        opened = await _open(request, provider)
        if isinstance(opened, HttpResponse):
            await _send_django(send, opened)
            return
        call, actor = opened
        note_actor(actor.type, actor.id)
        incoming = Incoming(receive, request)
        try:
            incoming.check_length()
            body = await incoming.read() if _buffered(request, call) else incoming
        except DomainError as exc:
            await _refuse(send, request, exc)
            return
        model = _model_in_path(call.provider, rest) or _model(body)
        if not call.allows(model):
            await _send_django(send, await sync_to_async(check_model)(request, call, model, actor))
            return
        outcome: dict[str, Any] = {
            "method": scope["method"],
            "path": "/" + rest,
            "model": model[:200] if model else None,
        }
        started = time.monotonic()
        forward = asyncio.ensure_future(self._forward(scope, request, call, body, outcome, send))
        gone = asyncio.ensure_future(incoming.disconnected())
        try:
            await asyncio.wait({forward, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not forward.done():  # the client went away: stop the upstream call too
                outcome["client_disconnected"] = True
                forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward
        finally:
            gone.cancel()
            outcome["latency_ms"] = round((time.monotonic() - started) * 1000)
            observe_proxy_call(call.provider, outcome.get("upstream_status"))
            await _close(call, outcome, actor)

    async def _forward(
        self,
        scope: Scope,
        request: HttpRequest,
        call: ProxyCall,
        body: bytes | Incoming,
        outcome: dict[str, Any],
        send: Send,
    ) -> None:
        rest = outcome["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        outcome["upstream_status"] = None
        try:
            destination = egress.pin(call.base_url + rest)
        except ForbiddenBaseUrl as exc:
            await _refuse(send, request, exc)
            return
        headers = [
            (name, value) for name, value in request.headers.items() if name.lower() not in DROPPED
        ]
        if isinstance(body, Incoming) and request.headers.get("content-length"):
            headers.append(("content-length", request.headers["content-length"]))
        headers += list(_auth_headers(call, request).items())
        headers += list(destination.headers().items())
        try:
            response = await self.session.request(
                scope["method"],
                destination.url + (f"?{query}" if query else ""),
                headers=CIMultiDict(headers),
                data=body if isinstance(body, bytes) else body.chunks(),
                server_hostname=destination.tls_name(),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError):
            failed = body.failure if isinstance(body, Incoming) else None
            await _refuse(
                send, request, failed or UpstreamUnreachable()
            )  # its body, or the provider
            return
        outcome["upstream_status"] = response.status
        tail = bytearray()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [
                        *(
                            (name.lower(), value)
                            for name, value in response.raw_headers
                            if name.decode("latin-1").lower() not in NOT_RETURNED
                        ),
                        (CREDENTIAL_SOURCE, call.credential_source.encode()),
                    ],
                }
            )
            async for chunk in response.content.iter_any():
                tail.extend(chunk)
                del tail[:-USAGE_TAIL]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            response.release()
            outcome["usage"] = _usage(bytes(tail), response.headers.get("content-type", ""))


# Whose key answered: the tenant's own or the platform's (lower case, as ASGI wants).
CREDENTIAL_SOURCE = b"keyward-credential-source"
CLOSE_RETRIES = (0.2, 1.0, 5.0)  # seconds before each new attempt to write a call's event


async def _close(call: ProxyCall, outcome: dict[str, Any], actor: Actor) -> None:
    """Write the call's event; the log was writable when the call began, so a failure now
    is a fault that began during the call: retried, then logged (no secret in the line)."""
    for delay in (*CLOSE_RETRIES, None):
        try:
            await _write_event(call, outcome, actor)
            return
        except ServiceUnavailable:  # the audit log, or a pool busy for the whole wait
            if delay is None:
                logger.error("proxy.request event of token %s could not be written", call.token_id)
                return
            await asyncio.sleep(delay)


def _with_request_id(send: Send, request_id: str) -> Send:
    async def stamped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", request_id.encode("ascii")),
            ]
        await send(message)

    return stamped


def _auth_headers(call: ProxyCall, request: HttpRequest) -> dict[str, str]:
    """The provider's own authentication with the tenant's key; Anthropic's version and
    beta headers are the caller's when it sends them."""
    headers = get_adapter(call.provider).auth_headers(call.secret)
    if call.provider == "anthropic":
        for name in ("anthropic-version", "anthropic-beta"):
            if request.headers.get(name):
                headers[name] = request.headers[name]
    return headers


class Incoming:
    """The request body as it arrives, held to the size limit: read whole, or passed
    upstream chunk by chunk as the client sends it."""

    def __init__(self, receive: Receive, request: HttpRequest) -> None:
        self.receive = receive
        self.complete = asyncio.Event()
        self.limit = settings.PROXY_MAX_BODY_BYTES
        self.failure: DomainError | None = None  # why streaming the body upstream stopped
        declared = request.headers.get("content-length", "")
        # A length of more digits than any size this service takes is over the limit too;
        # a declared 0 is an empty body.
        value = decimal(declared)
        self.declared = (
            value if value is not None else (self.limit + 1 if declared.isdigit() else 0)
        )

    def check_length(self) -> None:
        """Refuse a declared length over the limit before anything is read or sent."""
        if self.declared > self.limit:
            raise BodyTooLarge()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":  # gone before it sent it all
                raise self._failed(ClientGone())
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise self._failed(BodyTooLarge())
            if chunk:
                yield chunk
            if not message.get("more_body"):
                self.complete.set()
                return

    def _failed(self, failure: DomainError) -> DomainError:
        self.failure = failure
        return failure

    async def disconnected(self) -> None:
        """Returns when the client has gone, once its body has been read."""
        await self.complete.wait()
        while (await self.receive())["type"] != "http.disconnect":
            pass


def _buffered(request: HttpRequest, call: ProxyCall) -> bool:
    """A JSON body is read whole, for the model it names; under a model allowlist every
    body is, so that a JSON body sent as another type is checked too. Other bodies
    (uploads) are streamed; no body at all stays none, not an empty chunked one."""
    headers = request.headers
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    return not has_body or bool(call.models) or "json" in headers.get("content-type", "").lower()


_GEMINI_MODEL = re.compile(r"/models/([^/:]+)")


def _model_in_path(provider: str, rest: str) -> str | None:
    """Gemini names the model in the path (`/v1beta/models/<model>:generateContent`)."""
    found = _GEMINI_MODEL.search("/" + rest) if provider == "google" else None
    return found.group(1) if found else None


def _model(body: bytes | Incoming) -> str | None:
    """The `model` a JSON body names."""
    if not isinstance(body, bytes) or not body.lstrip().startswith(b"{"):
        return None
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None


def _usage(tail: bytes, content_type: str) -> dict[str, int] | None:
    """Token counts from a JSON answer, or from the events of a stream that carry them,
    later counts over earlier ones (Anthropic sends input tokens first and output tokens
    last); `usage` for OpenAI-style and Anthropic answers, `usageMetadata` for Gemini."""
    text = tail.decode("utf-8", "replace")
    documents = (
        [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        if "event-stream" in content_type
        else [text]
    )
    counts: dict[str, int] = {}
    for document in documents:
        if "sage" not in document:
            continue
        try:
            parsed = json.loads(document)
        except ValueError:
            continue
        if not isinstance(parsed, dict):
            continue
        found = parsed.get("usage") or parsed.get("usageMetadata")
        if found is None and isinstance(parsed.get("message"), dict):
            found = parsed["message"].get("usage")  # Anthropic's message_start
        if isinstance(found, dict):
            counts.update((k, v) for k, v in found.items() if isinstance(v, int) and len(k) <= 64)
    return counts or None


async def _refuse(send: Send, request: HttpRequest, exc: Exception) -> None:
    await _send_django(send, _refused(failure_response(request, exc, None)))


async def _send_django(send: Send, response: HttpResponse) -> None:
    headers = [(b"content-type", response["Content-Type"].encode("latin-1"))]
    headers += [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.items()
        if name.lower() != "content-type"
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content, "more_body": False})


application = Proxy()
