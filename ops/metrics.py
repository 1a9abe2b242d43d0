"""GET /metrics in the Prometheus text format. Every figure is read from the shared
database, so any replica answers the same; no label ever carries a secret or a name."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from audit import queries as audit_queries
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


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        "\n".join(_lines()) + "\n", content_type="text/plain; version=0.0.4; charset=utf-8"
    )
