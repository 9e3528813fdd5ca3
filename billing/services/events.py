"""Recording the audit trail. Called by services inside their transaction, never by views."""

from typing import Any

from billing.enums import ActorKind
from billing.models import Event


def actor_kind_for(actor) -> str:
    """Who acted: a staff user, a customer's portal user, or the system (``actor=None``)."""
    if actor is None:
        return ActorKind.SYSTEM
    return ActorKind.STAFF if actor.is_staff else ActorKind.CUSTOMER


def event_record(
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
    notify: bool = True,
) -> Event:
    """Append one event; the customer defaults to the subject's customer so timelines find it."""
    if customer is None:
        subject = subscription or invoice or payment or credit_note
        customer = getattr(subject, "customer", None)
    data: dict[str, Any] = {}
    if before is not None:
        data["before"] = before
    if after is not None:
        data["after"] = after
    event = Event.objects.create(
        kind=kind,
        description=description[:300],
        actor_kind=actor_kind_for(actor),
        actor_user=actor if actor is not None and actor.is_authenticated else None,
        customer=customer,
        subscription=subscription,
        invoice=invoice,
        payment=payment,
        credit_note=credit_note,
        data=data,
    )
    # Emails that report this change go out once, after the transaction commits.
    from billing.notifications import queue_for_event

    if notify:
        queue_for_event(event)
    return event
