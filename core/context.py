"""Where an audited action comes from: the request id and source address of the current
request (or job), carried in a context variable so services need not pass them around."""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    request_id: str
    source_ip: str | None = None


_origin: contextvars.ContextVar[Origin | None] = contextvars.ContextVar(
    "keyward_origin", default=None
)


def new_request_id() -> str:
    return uuid.uuid4().hex


def bound_origin_or_none() -> Origin | None:
    return _origin.get()


def current_origin() -> Origin:
    """The origin of the running request or job; a fresh id when there is none."""
    origin = _origin.get()
    return origin if origin is not None else Origin(request_id=new_request_id())


Entered = tuple[contextvars.Token[Origin | None], contextvars.Token[str | None]]


def enter_origin(origin: Origin) -> Entered:
    """Make `origin` the current one, with no actor yet, until `leave_origin`: for code that
    cannot hold a with-block open across its work (Celery's prerun and postrun signals)."""
    return _origin.set(origin), _actor.set(None)


def leave_origin(entered: Entered) -> None:
    """Give back the origin and actor that were current before `enter_origin`."""
    origin, actor = entered
    _actor.reset(actor)
    _origin.reset(origin)


@contextmanager
def bound_origin(origin: Origin) -> Iterator[Origin]:
    entered = enter_origin(origin)
    try:
        yield origin
    finally:
        leave_origin(entered)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def well_formed_request_id(value: object) -> bool:
    """Whether a request id from outside (a header, a job's message) may be kept as is."""
    return isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None


# Who the current request authenticated as (`type:id`, as the audit log names actors), for
# its log lines; None before authentication and outside requests.
_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar("keyward_actor", default=None)


def note_actor(actor_type: str, actor_id: str) -> None:
    _actor.set(f"{actor_type}:{actor_id}")


def noted_actor() -> str | None:
    return _actor.get()
