"""GET /metrics in the Prometheus text format. Every figure is read from the shared
database, so any replica answers the same; no label ever carries a secret or a name."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from audit.models import ChainCheck
from kms.models import KeyStatus, ProviderKey, ScopedToken


def _lines() -> list[str]:
    checks = ChainCheck.objects.all()
    broken = checks.filter(ok=False).count()
    last = max((c.checked_at for c in checks), default=None)
    by_status = dict(
        ProviderKey.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    live = ScopedToken.objects.filter(revoked_at=None, expires_at__gt=timezone.now()).count()
    lines = [
        "# HELP keyward_audit_chains_broken Audit chains that failed their last verification.",
        "# TYPE keyward_audit_chains_broken gauge",
        f"keyward_audit_chains_broken {broken}",
        "# HELP keyward_audit_last_verification_timestamp_seconds Last verification of the chains.",
        "# TYPE keyward_audit_last_verification_timestamp_seconds gauge",
        f"keyward_audit_last_verification_timestamp_seconds {last.timestamp() if last else 0:.0f}",
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
