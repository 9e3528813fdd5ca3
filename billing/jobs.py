"""Due work: what the Celery tick fans out and ``manage.py billing_run`` runs inline.

Each kind of work is a query for due ids (keyset-paginated, so a million rows never load at
once) and a runner that calls one service for one id. Renewals and dunning retries also have a
set-based runner for a whole batch (billing/services/renewals.py, ``dunning_retry_many``) that
hands the ids it does not handle back to the one-by-one runner. Runners are safe to repeat and
to run concurrently: the service locks the row and re-checks its state, and unique constraints
(one invoice per period, one payment per key, one attempt per number) have the last word.
"""

import datetime
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q, QuerySet

from billing import clock
from billing.enums import (
    InvoiceKind,
    InvoiceStatus,
    PaymentAttemptStatus,
    PaymentMode,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.errors import BillingError
from billing.models import (
    Invoice,
    Notification,
    Organization,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
)

logger = logging.getLogger(__name__)

S = SubscriptionStatus
BATCH_SIZE = settings.BILLING_BATCH_SIZE
# A payment still pending this long after it began lost its worker: reconcile it by key. An
# auto-charged invoice this old that no charge ever began for lost its worker too: charge it.
RECONCILE_AFTER = datetime.timedelta(minutes=5)
# Invoices a subscription's card pays as soon as they are issued (the services charge them).
AUTO_CHARGED_KINDS = (InvoiceKind.RECURRING, InvoiceKind.PRORATION)
# A notification not sent this long after it was queued lost its task (broker down).
RESEND_AFTER = datetime.timedelta(minutes=2)


@dataclass(frozen=True)
class Job:
    name: str
    due: Callable[[datetime.datetime, datetime.date], QuerySet]
    run: Callable[[int], str]
    # A set-based runner for a whole batch: returns its counts and the ids it leaves to ``run``.
    run_many: Callable[[list[int]], tuple[Counter, list[int]]] | None = None


# ----------------------------------------------------------------------------- runners
def _subscription(pk: int) -> Subscription:
    return Subscription.objects.get(pk=pk)


def run_start(pk: int) -> str:
    from billing.services.subscriptions import subscription_start

    return _payment_label(subscription_start(subscription=_subscription(pk)), "started")


def run_trial_end(pk: int) -> str:
    from billing.services.subscriptions import subscription_end_trial

    outcome = subscription_end_trial(subscription=_subscription(pk))
    return _payment_label(outcome, f"trial_{outcome.subscription.status}")


def run_pause(pk: int) -> str:
    from billing.services.subscriptions import subscription_pause
    from portal.models import PortalPreferences

    credit = PortalPreferences.load().credit_unused_pause_time
    subscription_pause(subscription=_subscription(pk), credit_unused=credit)
    return "paused"


def run_resume(pk: int) -> str:
    from billing.services.subscriptions import subscription_resume

    return _payment_label(subscription_resume(subscription=_subscription(pk)), "resumed")


def run_renew(pk: int) -> str:
    from billing.services.subscriptions import subscription_renew

    outcome = subscription_renew(subscription=_subscription(pk))
    if outcome is None:
        return "nothing_due"
    if outcome.payment is None and outcome.subscription.status == S.CANCELLED:
        return "cancelled_at_term_end"
    return _payment_label(outcome, "renewed")


def run_renew_many(ids: list[int]) -> tuple[Counter, list[int]]:
    from billing.services.renewals import subscriptions_renew_many

    batch = subscriptions_renew_many(ids)
    return batch.counts, batch.one_by_one


def _payment_label(outcome, label: str) -> str:
    payment = getattr(outcome, "payment", None)
    if payment is None:
        return label
    return (
        f"{label}_charged"
        if payment.status == PaymentStatus.SUCCEEDED
        else f"{label}_charge_{payment.status}"
    )


def run_dunning(pk: int) -> str:
    from billing.services.dunning import dunning_retry

    attempt = dunning_retry(attempt=PaymentAttempt.objects.get(pk=pk))
    return f"dunning_{attempt.status}"


def run_dunning_many(ids: list[int]) -> tuple[Counter, list[int]]:
    from billing.services.dunning import dunning_retry_many

    return dunning_retry_many(ids)


def run_reconcile(pk: int) -> str:
    from billing.services.payments import payment_reconcile

    payment = payment_reconcile(payment=Payment.objects.get(pk=pk))
    return f"reconciled_{payment.status}"


def run_collect(pk: int) -> str:
    """Charge an auto-charged invoice whose first charge never began (the worker died between
    the renewal's commit and the charge). The key is the one that charge would have used, so
    a charge that did begin meanwhile is found by it, never doubled."""
    from billing.services.dunning import dunning_start
    from billing.services.payments import payment_collect
    from billing.services.subscriptions import invoice_attempt_key

    invoice = Invoice.objects.select_related("customer", "subscription__payment_method").get(pk=pk)
    subscription = invoice.subscription
    if (
        subscription is None
        or not (subscription.auto_charge and subscription.payment_method_id)
        or invoice.status != InvoiceStatus.OPEN
        or invoice.payment_attempts.exists()
    ):
        return "collect_not_needed"
    payment = payment_collect(
        payer=invoice.customer,
        invoices=[invoice],
        method=subscription.payment_method,
        idempotency_key=invoice_attempt_key(invoice),
    )
    if payment.status == PaymentStatus.FAILED:
        dunning_start(invoice=invoice, payment=payment)
    if payment.status == PaymentStatus.SUCCEEDED:
        return "collected_charged"
    return f"collected_charge_{payment.status}"


def run_notification(pk: int) -> str:
    from billing.notifications import notification_send

    return "email_sent" if notification_send(notification_id=pk) else "email_already_sent"


def run_trial_reminder(pk: int) -> str:
    from billing.notifications import notification_queue

    sub = Subscription.objects.select_related("customer").get(pk=pk)
    queued = notification_queue(
        kind="trial_ending",
        key=f"trial_ending:{sub.pk}:{sub.trial_end}",
        customer=sub.customer,
        subscription=sub,
    )
    return "reminder_queued" if queued else "reminder_already_sent"


def run_renewal_reminder(pk: int) -> str:
    from billing.notifications import notification_queue

    sub = Subscription.objects.select_related("customer").get(pk=pk)
    queued = notification_queue(
        kind="renewal_upcoming",
        key=f"renewal_upcoming:{sub.pk}:{sub.current_term_end}",
        customer=sub.customer,
        subscription=sub,
    )
    return "reminder_queued" if queued else "reminder_already_sent"


def run_card_reminder(pk: int) -> str:
    from billing.notifications import notification_queue

    method = PaymentMethod.objects.select_related("customer").get(pk=pk)
    queued = notification_queue(
        kind="card_expiring",
        key=f"card_expiring:{method.pk}:{method.exp_year}-{method.exp_month:02d}",
        customer=method.customer,
        payment_method=method,
    )
    return "reminder_queued" if queued else "reminder_already_sent"


# ----------------------------------------------------------------------------- due queries
def _organization() -> Organization:
    return Organization.load()


def _days(n: int) -> datetime.timedelta:
    return datetime.timedelta(days=n)


JOBS: tuple[Job, ...] = (
    # Order matters within one run: start and end trials, apply pauses, then renew.
    Job(
        "start",
        lambda now, today: Subscription.objects.filter(status=S.FUTURE, start_date__lte=today),
        run_start,
    ),
    Job(
        "trial_end",
        lambda now, today: Subscription.objects.filter(status=S.IN_TRIAL, trial_end__lte=today),
        run_trial_end,
    ),
    Job(
        "pause",
        lambda now, today: Subscription.objects.filter(status=S.LIVE, pause_at__lte=today),
        run_pause,
    ),
    Job(
        "resume",
        lambda now, today: Subscription.objects.filter(status=S.PAUSED, resume_at__lte=today),
        run_resume,
    ),
    Job(
        "renew",
        lambda now, today: Subscription.objects.filter(
            status__in=(S.LIVE, S.NON_RENEWING, S.PAST_DUE), current_term_end__lte=today
        ).exclude(pause_at__lte=today),
        run_renew,
        run_renew_many,
    ),
    Job(
        "dunning",
        lambda now, today: PaymentAttempt.objects.filter(
            status=PaymentAttemptStatus.SCHEDULED, scheduled_for__lte=now
        ),
        run_dunning,
        run_dunning_many,
    ),
    Job(
        "reconcile",
        lambda now, today: Payment.objects.filter(
            status__in=(PaymentStatus.PENDING, PaymentStatus.UNKNOWN),
            created_at__lte=now - RECONCILE_AFTER,
        ),
        run_reconcile,
    ),
    Job(
        "collect",
        lambda now, today: (
            Invoice.objects.filter(
                status=InvoiceStatus.OPEN,
                kind__in=AUTO_CHARGED_KINDS,
                finalized_at__lte=now - RECONCILE_AFTER,
                subscription__auto_charge=True,
                subscription__payment_method__isnull=False,
                subscription__status__in=(S.LIVE, S.NON_RENEWING, S.PAST_DUE),
                payment_lock__isnull=True,
            )
            .exclude(payment_attempts__isnull=False)
            .exclude(payment_allocations__payment__mode=PaymentMode.CARD)
        ),
        run_collect,
    ),
    Job(
        "trial_reminder",
        lambda now, today: Subscription.objects.filter(
            status=S.IN_TRIAL,
            trial_end__gt=today,
            trial_end__lte=today + _days(_organization().trial_reminder_days),
        ),
        run_trial_reminder,
    ),
    Job(
        "renewal_reminder",
        lambda now, today: (
            Subscription.objects.filter(
                status=S.LIVE,
                cancel_at__isnull=True,
                current_term_end__gt=today,
                current_term_end__lte=today + _days(_organization().renewal_reminder_days),
            )
            if _organization().renewal_reminder_days
            else Subscription.objects.none()
        ),
        run_renewal_reminder,
    ),
    Job(
        "card_reminder",
        lambda now, today: PaymentMethod.objects.filter(
            Q(exp_year=today.year, exp_month=today.month),
            subscriptions__status__in=(S.LIVE, S.NON_RENEWING, S.IN_TRIAL, S.PAST_DUE),
            subscriptions__auto_charge=True,
        ).distinct(),
        run_card_reminder,
    ),
    Job(
        "email",
        lambda now, today: Notification.objects.filter(
            sent_at__isnull=True, created_at__lte=now - RESEND_AFTER
        ),
        run_notification,
    ),
)
JOBS_BY_NAME = {job.name: job for job in JOBS}


def due_ids(
    job: Job, *, now: datetime.datetime, batch_size: int | None = None
) -> Iterator[list[int]]:
    """Batches of due ids in primary-key order (keyset pagination: no OFFSET, no big lists)."""
    # Read at call time, not bound as a default, so ops and tests can change the batch size.
    batch_size = batch_size or BATCH_SIZE
    with clock.as_of(now):
        today = clock.billing_today()
        after = 0
        while True:
            ids = list(
                job.due(now, today)
                .filter(pk__gt=after)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return
            yield ids
            after = ids[-1]


def run_batch(job_name: str, ids: list[int], *, now: datetime.datetime | None = None) -> Counter:
    """Run one job for each id; one failure never rolls back or stops its neighbours."""
    job = JOBS_BY_NAME[job_name]
    results: Counter = Counter()
    with clock.as_of(now or clock.now()):
        if job.run_many is not None:
            counts, ids = job.run_many(ids)
            results.update(counts)
        for pk in ids:
            try:
                results[job.run(pk)] += 1
            except BillingError as error:
                # The state moved on since the id was found (another runner, a customer click).
                results["skipped"] += 1
                logger.info("%s %s skipped: %s", job_name, pk, error.message)
            except Exception:
                results["errors"] += 1
                logger.exception("%s %s failed", job_name, pk)
    return results


def run_due(
    *,
    now: datetime.datetime,
    jobs: tuple[str, ...] | None = None,
    on_batch: Callable[[str, int], None] | None = None,
) -> Counter:
    """Everything due as of ``now``, inline (billing_run, tests, the demo)."""
    totals: Counter = Counter()
    for job in JOBS:
        if jobs is not None and job.name not in jobs:
            continue
        for ids in due_ids(job, now=now):
            totals.update(run_batch(job.name, ids, now=now))
            if on_batch:
                on_batch(job.name, len(ids))
    return totals


def count_due(*, now: datetime.datetime) -> dict[str, int]:
    with clock.as_of(now):
        today = clock.billing_today()
        return {job.name: job.due(now, today).count() for job in JOBS}
