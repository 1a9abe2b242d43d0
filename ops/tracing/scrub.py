"""The last line of defence before a span leaves the process: every name, attribute, event
and status text is rewritten so that nothing shaped like a credential, no query string, no
captured header and no statement parameter is exported, whatever an instrumentation
recorded."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import AttributeValue

REDACTED = "[REDACTED]"
CREDENTIAL = re.compile(
    r"kw[apt]_[0-9A-Za-z]+"  # Keyward's own credentials
    r"|(?:sk-|gsk_|AIza)[0-9A-Za-z_\-]{8,}"  # OpenAI, Anthropic, Groq and Google keys
    r"|\bhv[sbr]\.[0-9A-Za-z_\-]{20,}|\b[sbr]\.[0-9A-Za-z]{24}\b"  # Vault and OpenBao tokens
    r"|(?i:bearer|basic)\s+\S+"  # an Authorization header's value
    r"|\b[0-9A-Za-z]{32,}\b"  # a bare key (Azure, Mistral, Cohere) or anything as long
)
# Attributes whose value is a URL or a request target: their query string is dropped.
URL_KEYS = frozenset({"url.full", "http.url", "http.target"})
DROPPED_PREFIXES = (
    "url.query",
    "http.request.header.",
    "http.response.header.",
    "db.statement.parameters",
    "db.query.parameter.",
)


def scrub_text(text: str) -> str:
    return CREDENTIAL.sub(REDACTED, text)


def _scrub_value(key: str, value: AttributeValue) -> AttributeValue:
    if isinstance(value, str):
        if key in URL_KEYS:
            value = value.partition("?")[0]
        return scrub_text(value)
    if isinstance(value, Sequence) and value and isinstance(value[0], str):
        return tuple(scrub_text(str(item)) for item in value)
    return value


def scrub_attributes(attributes: Mapping[str, AttributeValue] | None) -> dict[str, AttributeValue]:
    """The attributes without the dropped keys, every text scrubbed."""
    return {
        key: _scrub_value(key, value)
        for key, value in (attributes or {}).items()
        if not key.startswith(DROPPED_PREFIXES)
    }


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """A copy of a finished span with its name, attributes, events, links and status scrubbed."""
    status = span.status
    if status.description:
        status = Status(status.status_code, scrub_text(status.description))
    return ReadableSpan(
        name=scrub_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=[
            Event(scrub_text(e.name), scrub_attributes(e.attributes), e.timestamp)
            for e in span.events
        ],
        links=[Link(link.context, scrub_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanProcessor(SpanProcessor):
    """Hands a scrubbed copy of every finished span to the processor that exports it."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(scrubbed(span))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
