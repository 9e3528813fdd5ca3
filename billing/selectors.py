"""Reads shared by the portal, the admin and the services. Balances are sums of rows.

An invoice's amount paid is the sum of allocations of succeeded payments; its credits applied,
the sum of allocations of issued credit notes. Allocations to a void invoice no longer count
against their payment or credit note, so voiding an invoice hands that money back as credit.
"""

from decimal import Decimal

from django.db.models import (
    Case,
    DecimalField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from billing.enums import CreditNoteStatus, InvoiceStatus, PaymentStatus, RefundStatus
from billing.models import (
    CreditAllocation,
    CreditNote,
    Customer,
    Invoice,
    Payment,
    PaymentAllocation,
    Refund,
)
from billing.money import ZERO

MONEY = DecimalField(max_digits=14, decimal_places=2)
# A payment's money counts once it succeeded; a later refund is a separate movement.
COUNTING_PAYMENT_STATUSES = (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED)
LIVE_REFUND_STATUSES = (RefundStatus.PENDING, RefundStatus.SUCCEEDED)


def _sum_of(queryset: QuerySet, column: str = "amount") -> Subquery:
    """A correlated ``SUM(column)`` subquery, 0 when there are no rows."""
    aggregate = (
        queryset.order_by()
        .annotate(_group=Value(1))
        .values("_group")
        .annotate(total=Sum(column))
        .values("total")
    )
    return Coalesce(Subquery(aggregate, output_field=MONEY), Value(ZERO), output_field=MONEY)


def invoice_paid_expression():
    return _sum_of(
        PaymentAllocation.objects.filter(
            invoice=OuterRef("pk"), payment__status__in=COUNTING_PAYMENT_STATUSES
        )
    )


def invoice_credited_expression():
    return _sum_of(
        CreditAllocation.objects.filter(
            invoice=OuterRef("pk"), credit_note__status=CreditNoteStatus.ISSUED
        )
    )


def invoices_with_amounts(queryset: QuerySet[Invoice] | None = None) -> QuerySet[Invoice]:
    """Annotate ``amount_paid``, ``credits_applied`` and ``balance_due`` in one query."""
    queryset = Invoice.objects.all() if queryset is None else queryset
    return queryset.annotate(
        amount_paid=invoice_paid_expression(),
        credits_applied=invoice_credited_expression(),
    ).annotate(
        # A void invoice owes nothing, whatever was applied to it before.
        balance_due=Case(
            When(status=InvoiceStatus.VOID, then=Value(ZERO)),
            default=ExpressionWrapper(
                F("total") - F("amount_paid") - F("credits_applied"), output_field=MONEY
            ),
            output_field=MONEY,
        )
    )


def invoice_balance(invoice: Invoice) -> tuple[Decimal, Decimal, Decimal]:
    """(amount paid, credits applied, balance due) of one invoice, read fresh from the rows."""
    row = invoices_with_amounts(Invoice.objects.filter(pk=invoice.pk)).values(
        "amount_paid", "credits_applied", "balance_due"
    )[0]
    return row["amount_paid"], row["credits_applied"], row["balance_due"]


def payments_with_unapplied(queryset: QuerySet[Payment] | None = None) -> QuerySet[Payment]:
    """Annotate ``unapplied``: what a payment still holds as customer credit."""
    queryset = Payment.objects.all() if queryset is None else queryset
    allocated = _sum_of(
        PaymentAllocation.objects.filter(payment=OuterRef("pk")).exclude(
            invoice__status=InvoiceStatus.VOID
        )
    )
    refunded = _sum_of(
        Refund.objects.filter(
            payment=OuterRef("pk"), credit_note__isnull=True, status__in=LIVE_REFUND_STATUSES
        )
    )
    return queryset.annotate(allocated=allocated, refunded_direct=refunded).annotate(
        unapplied=ExpressionWrapper(
            F("amount") - F("allocated") - F("refunded_direct"), output_field=MONEY
        )
    )


def credit_notes_with_remaining(
    queryset: QuerySet[CreditNote] | None = None,
) -> QuerySet[CreditNote]:
    """Annotate ``remaining``: what a credit note can still pay or refund."""
    queryset = CreditNote.objects.all() if queryset is None else queryset
    allocated = _sum_of(
        CreditAllocation.objects.filter(credit_note=OuterRef("pk")).exclude(
            invoice__status=InvoiceStatus.VOID
        )
    )
    refunded = _sum_of(
        Refund.objects.filter(credit_note=OuterRef("pk"), status__in=LIVE_REFUND_STATUSES)
    )
    return queryset.annotate(applied=allocated, refunded=refunded).annotate(
        remaining=ExpressionWrapper(F("amount") - F("applied") - F("refunded"), output_field=MONEY)
    )


def available_credits(customers: list[Customer]) -> tuple[list[CreditNote], list[Payment]]:
    """Issued credit notes and succeeded (or refunded) payments with money left, oldest first."""
    notes = list(
        credit_notes_with_remaining(
            CreditNote.objects.filter(customer__in=customers, status=CreditNoteStatus.ISSUED)
        )
        .filter(remaining__gt=0)
        .order_by("issue_date", "id")
    )
    # A refunded payment can still hold money: a refund paid out from a credit note takes the
    # note's balance, not the payment's (as customer_balance counts it).
    payments = list(
        payments_with_unapplied(
            Payment.objects.filter(customer__in=customers, status__in=COUNTING_PAYMENT_STATUSES)
        )
        .filter(unapplied__gt=0)
        .order_by("created_at", "id")
    )
    return notes, payments


def customer_credit_balance(customer: Customer) -> Decimal:
    notes, payments = available_credits([customer])
    return sum((n.remaining for n in notes), ZERO) + sum((p.unapplied for p in payments), ZERO)


def customer_balance(customer: Customer) -> Decimal:
    """What the customer owes (negative: in credit) = invoices − payments − credits + refunds."""
    invoiced = (
        Invoice.objects.filter(customer=customer)
        .exclude(status__in=(InvoiceStatus.DRAFT, InvoiceStatus.VOID))
        .aggregate(s=Coalesce(Sum("total"), Value(ZERO), output_field=MONEY))["s"]
    )
    paid = Payment.objects.filter(
        customer=customer, status__in=COUNTING_PAYMENT_STATUSES
    ).aggregate(s=Coalesce(Sum("amount"), Value(ZERO), output_field=MONEY))["s"]
    credited = CreditNote.objects.filter(
        customer=customer, status=CreditNoteStatus.ISSUED
    ).aggregate(s=Coalesce(Sum("amount"), Value(ZERO), output_field=MONEY))["s"]
    refunded = Refund.objects.filter(
        payment__customer=customer, status=RefundStatus.SUCCEEDED
    ).aggregate(s=Coalesce(Sum("amount"), Value(ZERO), output_field=MONEY))["s"]
    return invoiced - paid - credited + refunded


def open_invoices(customers: list[Customer]) -> QuerySet[Invoice]:
    """Invoices still to be paid (open or uncollectible with a balance), oldest first."""
    return (
        invoices_with_amounts(
            Invoice.objects.filter(
                Q(status=InvoiceStatus.OPEN) | Q(status=InvoiceStatus.UNCOLLECTIBLE),
                customer__in=customers,
            )
        )
        .filter(balance_due__gt=0)
        .order_by("due_date", "issue_date", "id")
    )


def outstanding_summary(customer_ids, today) -> dict[str, Decimal]:
    """Total still owed and the overdue part of it, over open invoices, in one query."""
    rows = invoices_with_amounts(
        Invoice.objects.filter(
            customer__in=customer_ids,
            status__in=(InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE),
        )
    ).aggregate(
        outstanding=Coalesce(Sum("balance_due"), Value(ZERO), output_field=MONEY),
        overdue=Coalesce(
            Sum("balance_due", filter=Q(due_date__lt=today)), Value(ZERO), output_field=MONEY
        ),
    )
    return rows


def credit_balance_of(customer_id: int) -> Decimal:
    """Unused credit (credit notes' remaining + unapplied payments) in one query."""
    notes = (
        credit_notes_with_remaining(
            CreditNote.objects.filter(customer_id=customer_id, status=CreditNoteStatus.ISSUED)
        )
        .values("customer_id")
        .annotate(total=Sum("remaining"))
        .values("total")
    )
    payments = (
        payments_with_unapplied(
            Payment.objects.filter(customer_id=customer_id, status=PaymentStatus.SUCCEEDED)
        )
        .values("customer_id")
        .annotate(total=Sum("unapplied"))
        .values("total")
    )
    row = (
        Customer.objects.filter(pk=customer_id)
        .annotate(
            credit_notes_left=Coalesce(
                Subquery(notes, output_field=MONEY), Value(ZERO), output_field=MONEY
            ),
            payments_unapplied=Coalesce(
                Subquery(payments, output_field=MONEY), Value(ZERO), output_field=MONEY
            ),
        )
        .values("credit_notes_left", "payments_unapplied")
        .first()
    )
    return (row["credit_notes_left"] + row["payments_unapplied"]) if row else ZERO


def monthly_activity(customer_ids, *, first_month) -> list[dict]:
    """Amounts billed (finalized, not void) and paid per month since ``first_month``: one query."""
    from django.db.models.functions import TruncMonth

    billed = (
        Invoice.objects.filter(customer__in=customer_ids, issue_date__gte=first_month)
        .exclude(status__in=(InvoiceStatus.DRAFT, InvoiceStatus.VOID))
        .annotate(month=TruncMonth("issue_date"))
        .values("month")
        .annotate(billed=Sum("total"), paid=Value(ZERO, output_field=MONEY))
        .values("month", "billed", "paid")
        .order_by()
    )
    paid = (
        Payment.objects.filter(
            customer__in=customer_ids,
            status__in=COUNTING_PAYMENT_STATUSES,
            received_on__gte=first_month,
        )
        .annotate(month=TruncMonth("received_on"))
        .values("month")
        .annotate(billed=Value(ZERO, output_field=MONEY), paid=Sum("amount"))
        .values("month", "billed", "paid")
        .order_by()
    )
    by_month: dict = {}
    for row in billed.union(paid, all=True):
        month = row["month"]
        entry = by_month.setdefault(month, {"month": month, "billed": ZERO, "paid": ZERO})
        entry["billed"] += row["billed"] or ZERO
        entry["paid"] += row["paid"] or ZERO
    return [by_month[m] for m in sorted(by_month)]
