"""Celery entry points. They take ids, call one service each, and are safe to run twice.

``tick`` runs every minute (beat) and fans the due work out as batches of ids; workers run the
batches. Late acknowledgement and rejection on worker loss mean a killed worker's batch is
delivered again — harmless, because every runner re-checks state under a row lock.
"""

import logging

from celery import shared_task
from django.core.cache import cache
from django.db import DatabaseError, OperationalError

from billing import clock, jobs

logger = logging.getLogger(__name__)

TICK_LOCK = "billing:tick"


@shared_task(acks_late=True, ignore_result=True)
def tick() -> dict[str, int]:
    """Find due work and enqueue it in batches. Overlapping ticks skip (a lock in the cache)."""
    if not cache.add(TICK_LOCK, 1, timeout=55):
        return {}
    now = clock.now()
    fanned: dict[str, int] = {}
    try:
        for job in jobs.JOBS:
            for ids in jobs.due_ids(job, now=now):
                run_batch.delay(job.name, ids)
                fanned[job.name] = fanned.get(job.name, 0) + len(ids)
    finally:
        cache.delete(TICK_LOCK)
    if fanned:
        logger.info("tick fanned out %s", fanned)
    return fanned


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, DatabaseError),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=8,
    ignore_result=True,
)
def run_batch(job_name: str, ids: list[int]) -> dict[str, int]:
    return dict(jobs.run_batch(job_name, ids))


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OSError, OperationalError),
    retry_backoff=True,
    max_retries=5,
    ignore_result=True,
)
def send_notification(notification_id: int) -> bool:
    from billing.notifications import notification_send

    return notification_send(notification_id=notification_id)
