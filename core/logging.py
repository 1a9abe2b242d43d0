"""Logging that never carries an exception's message: messages can quote values (SQL
parameters, provider answers) that must not reach a log. Lines carry the request id and
the authenticated actor; `KEYWARD_LOG_FORMAT=json` writes each as one JSON object."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime

from core.context import bound_origin_or_none, noted_actor

logger = logging.getLogger("keyward.errors")
access_logger = logging.getLogger("keyward.access")
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")
WITHHELD = "(message withheld)"


def frames_only(exc: BaseException) -> str:
    """Where an exception passed: file, line and function, without source text or message."""
    return "\n".join(
        f"  {frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
    )


def log_unhandled(exc: BaseException) -> None:
    """Log where an unexpected error happened without its message or locals."""
    logger.error("unhandled %s.%s\n%s", type(exc).__module__, type(exc).__name__, frames_only(exc))


class ExceptionTextFilter(logging.Filter):
    """Replaces a record's traceback with frames only, and an exception among its
    arguments with its class name: Celery's own task lines put the exception (or, for a
    retry, its text) in an `exc` argument of their message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):
            record.args = {k: _withheld(k, v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_withheld("", v) for v in record.args)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            name = type(exc).__name__
            record.msg = f"{record.getMessage()}\n{name} (message withheld)\n{frames_only(exc)}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


class RequestContextLogFilter(logging.Filter):
    """Adds the request id to every log record: the current request's, or, for a record
    Django writes about a request after the middleware has finished with it (the
    `django.request` logger's "Internal Server Error" line), that request's."""

    def filter(self, record: logging.LogRecord) -> bool:
        origin = bound_origin_or_none()
        if origin is None:
            origin = getattr(getattr(record, "request", None), "keyward_origin", None)
        record.request_id = getattr(origin, "request_id", "-")
        record.actor = noted_actor() or "-"
        return True


def _withheld(name: object, value: object) -> object:
    if isinstance(value, BaseException):
        return f"{type(value).__name__} {WITHHELD}"
    if name == "exc" and not str(value).endswith(WITHHELD):  # Celery's retry: already text
        retry = _RETRY.match(str(value))  # "Retry in 5s: ValueError('...')": keep the frame
        return f"{retry[1]}: {retry[2]} {WITHHELD}" if retry else WITHHELD
    return value


_RETRY = re.compile(r"(Retry [^:]*): ([A-Za-z_][A-Za-z0-9_.]*)\(")


def log_access(method: str, route: str, status: int, started: float) -> None:
    """The access line of one request: its method, route template (never the raw path,
    which can hold identifiers), status and duration since `started` (perf_counter)."""
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    fields = {"method": method, "route": route, "status": status, "duration_ms": duration_ms}
    access_logger.info("%s %s %s %.2fms", method, route, status, duration_ms, extra=fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, request id, actor,
    and an access line's method, route, status and duration."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": _or_none(getattr(record, "request_id", "-")),
            "actor": _or_none(getattr(record, "actor", "-")),
        }
        document.update((f, getattr(record, f)) for f in ACCESS_FIELDS if hasattr(record, f))
        return json.dumps(document, default=str)


def _or_none(value: str) -> str | None:
    return None if value == "-" else value
