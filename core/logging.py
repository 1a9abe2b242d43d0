"""Logging that never carries an exception's message: messages can quote values (SQL
parameters, provider answers) that must not reach a log."""

from __future__ import annotations

import logging
import traceback

from core.context import bound_origin_or_none

logger = logging.getLogger("keyward.errors")


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
    """Replaces a record's traceback with frames only."""

    def filter(self, record: logging.LogRecord) -> bool:
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
        return True
