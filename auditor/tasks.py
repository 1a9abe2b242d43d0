"""Celery tasks of the audit log."""

from __future__ import annotations

from celery import shared_task

from auditor import jobs


@shared_task(name="keyward.audit.verify_chains", acks_late=True)
def verify_chains() -> None:
    jobs.verify_chains()


@shared_task(name="keyward.audit.sign_checkpoints", acks_late=True)
def sign_checkpoints() -> None:
    jobs.sign_checkpoints()
