"""Secret-store maintenance tasks."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from stores.local import rewrap_all


@shared_task(name="keyward.kms.rewrap_local_store", acks_late=True)
def rewrap_local_store() -> None:
    """Re-wrap local-store data keys under the newest master key (no-op without one)."""
    if settings.MASTER_KEYS:
        rewrap_all()
