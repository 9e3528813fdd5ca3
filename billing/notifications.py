"""Customer emails. Each is queued once, inside the transaction of the change it reports, and
sent after commit by a Celery task; the tick sweeps up any whose task never ran (broker down).

Which events email the customer is decided here, in ``EMAIL_ON_EVENT``, so services only record
what happened and never think about mail.
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing.models import DunningPolicy, Event, Notification, Organization

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    template: str  # emails/<template>.txt and .html
    subject: str  # formatted with the template context


KINDS: dict[str, Kind] = {
    "invoice_issued": Kind("invoice_issued", "Invoice {invoice.number} from {organization.name}"),
    "payment_receipt": Kind(
        "payment_receipt", "Receipt {payment.receipt_number}: payment received"
    ),
    "payment_failed": Kind("payment_failed", "Your payment to {organization.name} failed"),
    "trial_ending": Kind("trial_ending", "Your trial of {subscription.plan.name} ends soon"),
    "renewal_upcoming": Kind(
        "renewal_upcoming", "Your {subscription.plan.name} subscription renews soon"
    ),
    "card_expiring": Kind("card_expiring", "Your card on file expires soon"),
    "subscription_changed": Kind("subscription_changed", "Your subscription was changed"),
    "subscription_cancelled": Kind("subscription_cancelled", "Your subscription is cancelled"),
    "subscription_reactivated": Kind(
        "subscription_reactivated", "Your subscription is active again"
    ),
}

EMAIL_ON_EVENT: dict[str, str] = {
    "invoice.issued": "invoice_issued",
    "payment.succeeded": "payment_receipt",
    "payment.recorded": "payment_receipt",
    "subscription.past_due": "payment_failed",
    "dunning.retry_failed": "payment_failed",
    "subscription.changed": "subscription_changed",
    "subscription.change_scheduled": "subscription_changed",
    "subscription.cancelled": "subscription_cancelled",
    "subscription.cancel_scheduled": "subscription_cancelled",
    "subscription.reactivated": "subscription_reactivated",
}


# Emails about failed payments, which the merchant's dunning policy can switch off.
DUNNING_EVENTS = frozenset({"subscription.past_due", "dunning.retry_failed"})


def queue_for_event(event: Event) -> Notification | None:
    kind = EMAIL_ON_EVENT.get(event.kind)
    if kind is None or event.customer_id is None:
        return None
    if event.kind in DUNNING_EVENTS and not DunningPolicy.load().send_emails:
        return None
    return notification_queue(
        kind=kind,
        key=f"{kind}:event:{event.pk}",
        customer=event.customer,
        subscription=event.subscription,
        invoice=event.invoice,
        payment=event.payment,
    )


def queue_for_events(events: list[Event]) -> list[Notification]:
    """``queue_for_event`` for a batch of new events: one INSERT and one task for all their
    emails. The events are new, so their keys are too; a conflict would mean a bug and raises."""
    dunning_emails = None
    notifications = []
    for event in events:
        kind = EMAIL_ON_EVENT.get(event.kind)
        if kind is None or event.customer_id is None:
            continue
        if event.kind in DUNNING_EVENTS:
            if dunning_emails is None:
                dunning_emails = DunningPolicy.load().send_emails
            if not dunning_emails:
                continue
        notifications.append(
            Notification(
                key=f"{kind}:event:{event.pk}",
                kind=kind,
                customer_id=event.customer_id,
                subscription_id=event.subscription_id,
                invoice_id=event.invoice_id,
                payment_id=event.payment_id,
            )
        )
    if not notifications:
        return []
    from billing.bulk import bulk_insert

    created = bulk_insert(notifications)
    ids = [notification.pk for notification in created]
    transaction.on_commit(lambda: enqueue_many(ids))
    return created


def notification_queue(*, kind: str, key: str, customer, **subjects) -> Notification | None:
    """Record the email once (by ``key``) and send it after the surrounding transaction commits."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    notification, created = Notification.objects.get_or_create(
        key=key, defaults={"kind": kind, "customer": customer, **subjects}
    )
    if created:
        transaction.on_commit(lambda: enqueue(notification.pk))
    return notification if created else None


def enqueue(notification_id: int) -> None:
    from billing.tasks import send_notification

    try:
        send_notification.delay(notification_id)
    except Exception:  # the broker is down: the tick's sweep sends it later
        logger.warning("could not enqueue notification %s; the tick will send it", notification_id)


def enqueue_many(notification_ids: list[int]) -> None:
    from billing.tasks import send_notifications

    try:
        send_notifications.delay(notification_ids)
    except Exception:  # the broker is down: the tick's sweep sends them later
        logger.warning(
            "could not enqueue %s notifications; the tick will send them", len(notification_ids)
        )


def recipients_of(customers) -> dict[int, list[str]]:
    """Each customer's document recipients: its contacts who receive documents, else its own
    address. One query for any number of customers."""
    from billing.models import ContactPerson

    contacts: dict[int, list[str]] = {}
    for customer_id, email in (
        ContactPerson.objects.filter(
            customer__in=[c.pk for c in customers], receives_documents=True
        )
        .exclude(email="")
        .values_list("customer_id", "email")
    ):
        contacts.setdefault(customer_id, []).append(email)
    return {c.pk: contacts.get(c.pk) or [c.email] for c in customers}


def recipients_for(customer) -> list[str]:
    return recipients_of([customer])[customer.pk]


@dataclass(frozen=True)
class EmailBatch:
    """What a batch of emails shows, read once for the batch instead of once per email: the
    notifications with their subjects, the organization, each customer's recipients."""

    organization: Organization
    notifications: dict[int, Notification]
    recipients: dict[int, list[str]]


def email_batch_load(notification_ids: list[int]) -> EmailBatch:
    """Three queries for a whole batch task's emails (``notification_send`` locks each)."""
    notifications = Notification.objects.select_related(
        "customer", "subscription__plan", "invoice", "payment", "payment_method"
    ).in_bulk(notification_ids)
    customers = {n.customer_id: n.customer for n in notifications.values()}
    return EmailBatch(
        organization=Organization.load(),
        notifications=notifications,
        recipients=recipients_of(list(customers.values())),
    )


def _link(name: str, *args) -> str:
    try:
        return settings.SITE_URL.rstrip("/") + reverse(name, args=args)
    except NoReverseMatch:
        return ""


def notification_send(*, notification_id: int, batch: EmailBatch | None = None) -> bool:
    """Render and send; True if it went out now. A sent notification is never sent again.

    A batch task passes what ``email_batch_load`` read for all its emails; each email is still
    locked, re-checked, sent and marked in a transaction of its own."""
    with transaction.atomic():
        if batch is None:
            # of=("self",): lock only the notification row; PostgreSQL refuses FOR UPDATE on
            # the nullable side of the outer joins to the optional subjects (subscription, …).
            notification = (
                Notification.objects.select_for_update(of=("self",))
                .select_related(
                    "customer", "subscription__plan", "invoice", "payment", "payment_method"
                )
                .get(pk=notification_id)
            )
            organization = Organization.load()
            to = None
        else:
            # The lock and the one column that may have moved since the batch was read.
            locked = list(
                Notification.objects.select_for_update()
                .filter(pk=notification_id)
                .values_list("sent_at", flat=True)
            )
            if not locked or notification_id not in batch.notifications:
                raise Notification.DoesNotExist(f"notification {notification_id} is gone")
            notification = batch.notifications[notification_id]
            notification.sent_at = locked[0]
            organization = batch.organization
            to = batch.recipients[notification.customer_id]
        if notification.sent_at is not None:
            return False
        context = {
            "organization": organization,
            "customer": notification.customer,
            "subscription": notification.subscription,
            "invoice": notification.invoice,
            "payment": notification.payment,
            "payment_method": notification.payment_method,
            "invoice_url": _link("portal:invoice_detail", notification.invoice.public_id)
            if notification.invoice
            else "",
            "subscription_url": _link(
                "portal:subscription_detail", notification.subscription.public_id
            )
            if notification.subscription
            else "",
            # The one page that updates the card, pays the open invoice and reactivates.
            "recover_url": _link("portal:subscription_recover", notification.subscription.public_id)
            if notification.subscription
            else "",
            "payment_methods_url": _link("portal:payment_methods"),
            "portal_url": settings.SITE_URL,
        }
        kind = KINDS[notification.kind]
        subject = kind.subject.format(**context)
        to = to if to is not None else recipients_for(notification.customer)
        message = EmailMultiAlternatives(
            subject=subject,
            body=render_to_string(f"emails/{kind.template}.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=to,
            reply_to=[organization.email] if organization.email else None,
        )
        message.attach_alternative(
            render_to_string(f"emails/{kind.template}.html", context), "text/html"
        )
        message.send()
        notification.subject = subject
        notification.recipients = to
        notification.sent_at = timezone.now()
        notification.save(update_fields=["subject", "recipients", "sent_at"])
    return True
