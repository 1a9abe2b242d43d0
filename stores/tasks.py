"""Secret-store maintenance tasks."""

from __future__ import annotations

from celery import shared_task

from audit.actors import Actor
from stores.actions import do_rewrap_master_key


@shared_task(name="keyward.kms.rewrap_local_store", acks_late=True)
def rewrap_local_store() -> None:
    """Re-wrap local-store data keys under the newest master key (no-op without one)."""
    do_rewrap_master_key(actor=Actor.system("jobs"))
