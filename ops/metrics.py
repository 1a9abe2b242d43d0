"""GET /metrics in the Prometheus text format: the counters and histograms every process on
this host wrote (core.metrics, multiprocess mode), the depth of the Celery queue read from
the broker, and gauges read from the shared database (the same on every replica). No label
ever carries a secret or a name."""

from __future__ import annotations

from pathlib import Path

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from audit import queries as audit_queries
from core import metrics as process_metrics
from kms import queries as kms_queries
from kms.models import KeyStatus


def _lines() -> list[str]:
    broken, last = audit_queries.verification_summary()
    pending, oldest = audit_queries.pending_summary()
    waited = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    by_status = kms_queries.key_counts_by_status()
    live = kms_queries.live_token_count()
    lines = [
        "# HELP keyward_audit_chains_broken Audit chains that failed their last verification.",
        "# TYPE keyward_audit_chains_broken gauge",
        f"keyward_audit_chains_broken {broken}",
        "# HELP keyward_audit_last_verification_timestamp_seconds Last verification of the chains.",
        "# TYPE keyward_audit_last_verification_timestamp_seconds gauge",
        f"keyward_audit_last_verification_timestamp_seconds {last.timestamp() if last else 0:.0f}",
        "# HELP keyward_audit_events_pending Audit events written but not yet in a chain.",
        "# TYPE keyward_audit_events_pending gauge",
        f"keyward_audit_events_pending {pending}",
        "# HELP keyward_audit_oldest_pending_seconds How long the oldest pending event has waited.",
        "# TYPE keyward_audit_oldest_pending_seconds gauge",
        f"keyward_audit_oldest_pending_seconds {waited:.3f}",
        "# HELP keyward_provider_keys Provider keys by status.",
        "# TYPE keyward_provider_keys gauge",
    ]
    lines += [
        f'keyward_provider_keys{{status="{s}"}} {by_status.get(s, 0)}' for s in KeyStatus.values
    ]
    lines += [
        "# HELP keyward_tokens_live Scoped tokens neither expired nor revoked.",
        "# TYPE keyward_tokens_live gauge",
        f"keyward_tokens_live {live}",
    ]
    return lines


# kombu's Redis transport keeps a queue in one list per priority step (0, 3, 6, 9).
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_depth(queue: str) -> int | None:
    """Messages waiting in `queue` (not those a worker holds, nor countdowns it waits on):
    LLEN on Redis, the message files of the embedded filesystem broker, None otherwise or
    when the broker does not answer."""
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        return _redis_depth(url, queue)
    if url.startswith("filesystem://"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        return sum(1 for p in folder.glob("*.msg") if p.name.partition(".")[2] == f"{queue}.msg")
    return None


def _redis_depth(url: str, queue: str) -> int | None:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        with client.pipeline(transaction=False) as pipe:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
            return sum(int(n) for n in pipe.execute())
    except redis.RedisError:
        return None
    finally:
        client.close()


def _queue_lines() -> list[str]:
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    depth = queue_depth(queue)
    if depth is None:
        return []
    label = queue.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return [
        "# HELP keyward_celery_queue_depth Jobs waiting in the broker's queue.",
        "# TYPE keyward_celery_queue_depth gauge",
        f'keyward_celery_queue_depth{{queue="{label}"}} {depth}',
    ]


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    text = "\n".join(_lines() + _queue_lines()) + "\n"
    return HttpResponse(
        process_metrics.exposition() + text.encode(),
        content_type="text/plain; version=0.0.4; charset=utf-8",
    )
