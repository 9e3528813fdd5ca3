"""Credits: credit notes (what each paid or refunded) and payments not yet applied."""

from decimal import Decimal

from django.db.models import Prefetch
from django.shortcuts import render

from billing.enums import CreditNoteStatus, RefundStatus
from billing.models import CreditAllocation, CreditNote, Payment, Refund
from billing.money import ZERO
from billing.selectors import (
    COUNTING_PAYMENT_STATUSES,
    credit_notes_with_remaining,
    payments_with_unapplied,
)
from portal.access import portal_view


def _credit_notes(portal) -> list[CreditNote]:
    """Every credit note of the scope, newest first, with its allocations and refunds: three
    queries whatever the count."""
    allocations = CreditAllocation.objects.select_related("invoice").order_by("created_at", "id")
    refunds = Refund.objects.exclude(status=RefundStatus.FAILED).order_by("created_at", "id")
    return list(
        credit_notes_with_remaining(portal.scope(CreditNote.objects.all()))
        .select_related("customer")
        .prefetch_related(
            Prefetch("allocations", queryset=allocations),
            Prefetch("refunds", queryset=refunds),
        )
        .order_by("-issue_date", "-id")
    )


def _unused_by_customer(portal, notes, payments) -> list[tuple[str, Decimal]]:
    """A parent's unused credit per company (its own and each visible branch's)."""
    left = dict.fromkeys(portal.customer_ids, ZERO)
    for note in notes:
        if note.status == CreditNoteStatus.ISSUED and note.remaining > 0:
            left[note.customer_id] += note.remaining
    for payment in payments:
        left[payment.customer_id] += payment.unapplied
    return [(name, left[pk]) for pk, name in portal.visible]


@portal_view(preference="show_credits")
def credit_list(request):
    portal = request.portal
    notes = _credit_notes(portal)
    payments = list(
        payments_with_unapplied(
            portal.scope(Payment.objects.filter(status__in=COUNTING_PAYMENT_STATUSES))
        )
        .filter(unapplied__gt=0)
        .select_related("customer")
        .order_by("-received_on", "-id")
    )
    usable = [n for n in notes if n.status == CreditNoteStatus.ISSUED and n.remaining > 0]
    unused_notes = sum((note.remaining for note in usable), ZERO)
    unused_payments = sum((payment.unapplied for payment in payments), ZERO)
    context = {
        "by_customer": _unused_by_customer(portal, notes, payments) if portal.is_parent else [],
        "notes": notes,
        "payments": payments,
        "unused_notes": unused_notes,
        "unused_payments": unused_payments,
        "unused_total": unused_notes + unused_payments,
    }
    return render(request, "portal/credits/list.html", context)
