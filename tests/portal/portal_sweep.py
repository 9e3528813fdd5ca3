"""Support for the sweeps over every portal URL (query budgets, IDOR, CSRF): not fixtures.

``portal_routes()`` walks the URL patterns under the ``portal`` namespace, so a page added
later is swept without anyone remembering to list it. A route whose parameter is an id says
which kind of object it names by the path before the id (``invoices/<id>/pay/`` → an invoice);
a new kind of id fails loudly here until it is taught to ``ROUTE_KINDS``.
"""

import datetime
from dataclasses import dataclass, field
from decimal import Decimal

from django.apps import apps
from django.db.models import Max
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import UUIDConverter
from django.utils import timezone

from billing.enums import CancelReason, Interval, SubscriptionStatus
from billing.periods import boundary
from portal.models import PortalPreferences, RetentionOffer
from tests.factories import (
    ContactPersonFactory,
    CouponFactory,
    CreditNoteFactory,
    InvoiceFactory,
    PaymentAllocationFactory,
    PaymentFactory,
    PaymentMethodFactory,
    PlanFactory,
    ScheduledChangeFactory,
    SubscriptionFactory,
)

# The path before a route's first id → the kind of object the id names.
ROUTE_KINDS = {
    "invoices/": "invoice",
    "payments/": "payment",
    "payment-methods/": "payment_method",
    "company/contacts/": "contact",
    "subscriptions/": "subscription",
}


# Subscription pages about one state get a subscription in it (the rest: a live one).
SUBSCRIPTION_STATES = {
    "portal:subscription_convert": "in_trial",
    "portal:subscription_extend": "expired",
    "portal:subscription_resume": "paused",
    "portal:subscription_cancel_undo": "non_renewing",
    "portal:subscription_reactivate": "cancelled",
    "portal:subscription_recover": "dunning",
}


@dataclass(frozen=True)
class Route:
    name: str  # "portal:invoice_detail"
    route: str  # "invoices/<uuid:public_id>/", inside the portal's prefix
    ids: tuple[str, ...]  # the names of its id (uuid) parameters
    others: tuple[str, ...] = field(default=())  # any other parameters (none so far)

    @property
    def key(self) -> str | None:
        """Which of ``objects_of``'s objects the route's id takes: its kind, and for
        subscription pages the state the page is about (a trial to convert, ...)."""
        kind = self.kind
        state = SUBSCRIPTION_STATES.get(self.name) if kind == "subscription" else None
        return f"{kind}:{state}" if state else kind

    @property
    def kind(self) -> str | None:
        if not self.ids:
            return None
        kind = ROUTE_KINDS.get(self.route.split("<", 1)[0])
        if kind is None or len(self.ids) > 1:
            raise LookupError(f"{self.name} ({self.route}): teach tests/portal/portal_sweep.py")
        return kind

    def url(self, objects: dict | None = None) -> str:
        """The route's URL; its ids taken from ``objects`` ({kind: model instance})."""
        if self.others:
            raise LookupError(f"{self.name} takes {self.others}: teach the sweep a value")
        kwargs = dict.fromkeys(self.ids, objects[self.key].public_id) if self.ids else {}
        return reverse(self.name, kwargs=kwargs)


def _walk(patterns, namespace: str, prefix: str = ""):
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}:{entry.namespace}" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, inner, route)
        elif isinstance(entry, URLPattern) and entry.name:
            converters = getattr(entry.pattern, "converters", {})
            ids = tuple(n for n, c in converters.items() if isinstance(c, UUIDConverter))
            others = tuple(n for n, c in converters.items() if not isinstance(c, UUIDConverter))
            yield Route(f"{namespace}:{entry.name}", route, ids, others)


def portal_routes() -> list[Route]:
    """Every named route of the portal, in URLconf order."""
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "portal":
            return list(_walk(entry.url_patterns, "portal"))
    raise LookupError("no portal namespace in the URLconf")


def objects_of(customer, *, today: datetime.date | None = None) -> dict:
    """One object of every kind a portal URL can name, all belonging to ``customer``: one
    invoice (100.00, 40.00 of it paid), the succeeded payment (with a receipt) that paid it, a
    card, a contact, a credit note, and subscriptions: live (with a scheduled change) and one
    in each state of SUBSCRIPTION_STATES. The invoice belongs to the subscription that dunning
    cancelled within its term, so the recovery page has something to pay."""
    today = today or datetime.date.today()
    card = PaymentMethodFactory(customer=customer, is_default=True)
    plan = PlanFactory(with_trial=True)
    start = today - datetime.timedelta(days=10)
    term = {
        "plan": plan,
        "start_date": start,
        "current_term_end": boundary(start, Interval.MONTH, 1, 1),
    }
    live = SubscriptionFactory(customer=customer, payment_method=card, **term)
    ScheduledChangeFactory(subscription=live, plan=plan, quantity=1)
    dunning = SubscriptionFactory(
        customer=customer,
        status=SubscriptionStatus.CANCELLED,
        cancel_reason=CancelReason.DUNNING,
        cancelled_at=timezone.now(),
        payment_method=card,
        **term,
    )
    # The customer's one invoice: the dunning-cancelled subscription's, 40.00 of it paid.
    invoice = InvoiceFactory(customer=customer, subscription=dunning, issue_date=start)
    payment = PaymentFactory(customer=customer, received_on=today, amount=Decimal("40.00"))
    PaymentAllocationFactory(payment=payment, invoice=invoice, amount=Decimal("40.00"))
    long_ago = today - datetime.timedelta(days=100)
    subscriptions = {
        "subscription": live,
        "subscription:in_trial": SubscriptionFactory(
            customer=customer,
            in_trial=True,
            plan=plan,
            start_date=today - datetime.timedelta(days=3),
            trial_start=today - datetime.timedelta(days=3),
            trial_end=today + datetime.timedelta(days=11),
        ),
        "subscription:expired": SubscriptionFactory(
            customer=customer, expired=True, cancel_reason=CancelReason.TRIAL_ENDED, plan=plan
        ),
        "subscription:paused": SubscriptionFactory(
            customer=customer, paused=True, paused_at=today, pause_at=today, **term
        ),
        "subscription:non_renewing": SubscriptionFactory(
            customer=customer, non_renewing=True, **term
        ),
        "subscription:cancelled": SubscriptionFactory(
            customer=customer,
            cancelled=True,
            plan=plan,
            start_date=long_ago,
            current_term_end=boundary(long_ago, Interval.MONTH, 1, 1),
        ),
        "subscription:dunning": dunning,
    }
    return {
        "invoice": invoice,
        "payment": payment,
        "payment_method": card,
        "contact": ContactPersonFactory(customer=customer),
        "credit_note": CreditNoteFactory(customer=customer, amount=Decimal("20.00")),
        **subscriptions,
    }


def preferences_everything_on() -> None:
    """Every portal module and action on, with a retention coupon (the "stay" page needs one)."""
    preferences = PortalPreferences.load()
    preferences.retention_offer = RetentionOffer.COUPON
    preferences.retention_coupon = CouponFactory(code="STAY10")
    preferences.save()


def database_state() -> dict[str, tuple]:
    """Per model: its row count and, when it has one, its latest ``updated_at``, so an update
    shows as well as an insert or a delete."""
    state = {}
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        rows = model._default_manager.all()
        names = {f.name for f in model._meta.concrete_fields}
        latest = rows.aggregate(m=Max("updated_at"))["m"] if "updated_at" in names else None
        state[model._meta.label] = (rows.count(), latest)
    return state


def changes(before: dict, after: dict) -> dict:
    return {
        label: (before[label], after[label]) for label in before if before[label] != after[label]
    }
