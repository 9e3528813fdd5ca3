"""Celery entry points. They take ids, call one service each, and are safe to run twice.

``tick`` runs every minute (beat) and fans the due work out as batches of ids; workers run the
batches. Late acknowledgement and rejection on worker loss mean a killed worker's batch is
delivered again — harmless, because every runner re-checks state under a row lock.
"""

import contextlib
import gc
import logging

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.core.cache import cache
from django.db import DatabaseError, OperationalError

from billing import clock, jobs

logger = logging.getLogger(__name__)

TICK_LOCK = "billing:tick"
# While a job's batches from an earlier tick are still queued or running, the next tick does
# not enqueue that job again: the same ids would only queue up behind themselves, every minute,
# for as long as the backlog lasts. The count expires, so a lost one delays the job, never stops it.
IN_FLIGHT_KEY = "billing:tick:in-flight:{job}"
IN_FLIGHT_TIMEOUT = 15 * 60


# Emails: redelivered if a worker dies, retried with backoff while the mail server is away.
EMAIL_TASK_OPTIONS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OSError, OperationalError),
    "retry_backoff": True,
    "max_retries": 5,
    "ignore_result": True,
}


@worker_ready.connect
@worker_process_init.connect
def _freeze_startup_objects(**kwargs) -> None:
    """Move what the worker loaded at start (Django, Celery, every module) out of the cyclic
    garbage collector's reach: it lives as long as the process, yet each full collection walks
    it — about a tenth of a second per batch of renewals. Later objects are collected as usual."""
    gc.collect()
    gc.freeze()


def _in_flight_key(job_name: str) -> str:
    return IN_FLIGHT_KEY.format(job=job_name)


@shared_task(acks_late=True, ignore_result=True)
def tick() -> dict[str, int]:
    """Find due work and enqueue it in batches. Overlapping ticks skip (a lock in the cache);
    so does a job whose batches from an earlier tick are not all done yet."""
    if not cache.add(TICK_LOCK, 1, timeout=55):
        return {}
    now = clock.now()
    fanned: dict[str, int] = {}
    try:
        for job in jobs.JOBS:
            key = _in_flight_key(job.name)
            if (cache.get(key) or 0) > 0:
                continue
            # Start the count afresh: a batch delivered twice counts down twice.
            cache.delete(key)
            for ids in jobs.due_ids(job, now=now):
                # Counted before it is enqueued, so the worker always finds the count to lower.
                if not cache.add(key, 1, timeout=IN_FLIGHT_TIMEOUT):
                    cache.incr(key)
                try:
                    run_batch.delay(job.name, ids)
                except Exception:
                    cache.decr(key)
                    raise
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
    try:
        return dict(jobs.run_batch(job_name, ids))
    finally:
        # ValueError: the count expired, or the batch came from ops rather than the tick.
        with contextlib.suppress(ValueError):
            cache.decr(_in_flight_key(job_name))


@shared_task(**EMAIL_TASK_OPTIONS)
def send_notification(notification_id: int) -> bool:
    from billing.notifications import notification_send

    return notification_send(notification_id=notification_id)


@shared_task(**EMAIL_TASK_OPTIONS)
def send_notifications(notification_ids: list[int]) -> int:
    """The emails a batch job queued: one task for the batch. A retry resends none that went
    out (each is marked sent in its own transaction), and one failure does not stop the rest."""
    from billing.notifications import email_batch_load, notification_send

    sent, failed = 0, None
    batch = email_batch_load(notification_ids)
    for notification_id in notification_ids:
        try:
            sent += notification_send(notification_id=notification_id, batch=batch)
        except (OSError, OperationalError) as error:
            failed = error
            logger.warning("notification %s not sent: %s", notification_id, error)
        except Exception:
            # Not transient (a template error, say): log it, send the others; the tick's
            # sweep tries it again.
            logger.exception("notification %s not sent", notification_id)
    if failed is not None:
        raise failed  # retried with backoff; those already sent are skipped
    return sent
