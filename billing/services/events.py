"""Recording the audit trail. Called by services inside their transaction, never by views."""

from collections.abc import Sequence
from typing import Any

from billing.books_cache import books_changed, customers_of_events
from billing.enums import ActorKind
from billing.models import Event


def actor_kind_for(actor) -> str:
    """Who acted: a staff user, a customer's portal user, or the system (``actor=None``)."""
    if actor is None:
        return ActorKind.SYSTEM
    return ActorKind.STAFF if actor.is_staff else ActorKind.CUSTOMER


def event_build(
    *,
    kind: str,
    description: str,
    actor=None,
    customer=None,
    subscription=None,
    invoice=None,
    payment=None,
    credit_note=None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    customer_id: int | None = None,
    subscription_id: int | None = None,
) -> Event:
    """One unsaved event; the customer defaults to the subject's customer so timelines find it.

    Batch jobs pass ``customer_id`` and ``subscription_id`` instead of rows they have not loaded.
    """
    if customer is None and customer_id is None:
        subject = subscription or invoice or payment or credit_note
        customer = getattr(subject, "customer", None)
    data: dict[str, Any] = {}
    if before is not None:
        data["before"] = before
    if after is not None:
        data["after"] = after
    subjects = {
        "customer": customer,
        "subscription": subscription,
        "invoice": invoice,
        "payment": payment,
        "credit_note": credit_note,
    }
    # By id, with the rows given kept as the event's related objects (as a select_related
    # would): a batch builds thousands of events, and each related-object assignment checks
    # more than a new event needs.
    event = Event(
        kind=kind,
        description=description[:300],
        actor_kind=actor_kind_for(actor),
        actor_user=actor if actor is not None and actor.is_authenticated else None,
        customer_id=customer.pk if customer is not None else customer_id,
        subscription_id=subscription.pk if subscription is not None else subscription_id,
        invoice_id=invoice.pk if invoice is not None else None,
        payment_id=payment.pk if payment is not None else None,
        credit_note_id=credit_note.pk if credit_note is not None else None,
        data=data,
    )
    related = event._state.fields_cache
    for name, subject in subjects.items():
        if subject is not None:
            if subject.pk is None:
                setattr(event, name, subject)  # saved later: its id is taken when the event is
            else:
                related[name] = subject
    return event


def event_record(*, notify: bool = True, **fields) -> Event:
    """Append one event (``event_build``'s arguments) and queue the email it calls for."""
    event = event_build(**fields)
    event.save()
    books_changed(customers_of_events([event]))
    # Emails that report this change go out once, after the transaction commits.
    from billing.notifications import queue_for_event

    if notify:
        queue_for_event(event)
    return event


def events_record_many(events: Sequence[Event]) -> list[Event]:
    """Append many built events in one INSERT and queue their emails in one more (batch jobs)."""
    from billing.bulk import bulk_insert
    from billing.notifications import queue_for_events

    created = bulk_insert(events)
    books_changed(customers_of_events(created))
    queue_for_events(created)
    return created
