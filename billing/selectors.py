"""Reads shared by the portal, the admin and the services. Balances are sums of rows.

An invoice's amount paid is the sum of allocations of succeeded payments; its credits applied,
the sum of allocations of issued credit notes. Allocations to a void invoice no longer count
against their payment or credit note, so voiding an invoice hands that money back as credit.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from django.db.models import (
    Case,
    DateField,
    DecimalField,
    Expression,
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
    Organization,
    Payment,
    PaymentAllocation,
    Refund,
)
from billing.money import ZERO
from billing.periods import local_date

MONEY = DecimalField(max_digits=14, decimal_places=2)
CENT = Decimal("0.01")
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


class _AppliedToInvoice(Expression):
    """What was applied to the invoice of each row — ``SUM(allocation.amount)`` over the
    allocations of counting money (a correlated subquery, 0 without rows) — written as SQL.

    The same subquery built from querysets costs ~1.5 ms to compile on every list, page and
    payment; this compiles in microseconds. It correlates on the id column of the query's base
    table (which must be the invoices'), under whatever alias that table has, so it stays
    right when the queryset becomes a subquery of another.
    """

    output_field = MONEY

    def __init__(self, allocation, money, status_column: str, statuses: Sequence[str]):
        super().__init__(output_field=MONEY)
        self.allocation, self.money = allocation, money
        self.status_column, self.statuses = status_column, tuple(statuses)

    def __eq__(self, other):
        return isinstance(other, _AppliedToInvoice) and self.identity == other.identity

    def __hash__(self):
        return hash(self.identity)

    @property
    def identity(self):
        return (self.allocation, self.money, self.status_column, self.statuses)

    def get_group_by_cols(self):
        return []

    def as_sql(self, compiler, connection):
        query = compiler.query
        if query.model is not Invoice:
            raise TypeError("invoice amounts annotate invoice querysets only")
        name = connection.ops.quote_name
        alias = query.get_initial_alias()
        money_key = self.allocation._meta.get_field(
            "payment" if self.money is Payment else "credit_note"
        ).column
        placeholders = ", ".join(["%s"] * len(self.statuses))
        sql = (
            f"COALESCE((SELECT SUM(a.{name('amount')}) "  # noqa: S608 (names, not values)
            f"FROM {name(self.allocation._meta.db_table)} a "
            f"INNER JOIN {name(self.money._meta.db_table)} m ON m.{name('id')} = a.{name(money_key)} "
            f"WHERE a.{name('invoice_id')} = {compiler.quote_name_unless_alias(alias)}.{name('id')} "
            f"AND m.{name(self.status_column)} IN ({placeholders})), 0)"
        )
        return sql, [str(status) for status in self.statuses]


def invoice_paid_expression():
    return _AppliedToInvoice(PaymentAllocation, Payment, "status", COUNTING_PAYMENT_STATUSES)


def invoice_credited_expression():
    return _AppliedToInvoice(CreditAllocation, CreditNote, "status", (CreditNoteStatus.ISSUED,))


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


@dataclass(frozen=True)
class MoneyFigures:
    """What a customer owes and holds, as its portal dashboard shows it."""

    outstanding: Decimal  # open and uncollectible invoices' balances, branches included
    overdue: Decimal  # the part of it past its due date
    credit: Decimal  # the customer's own unused credit: notes' remaining, unapplied payments


def _tables() -> dict[str, str]:
    from django.db import connection

    models = {
        "invoice": Invoice,
        "payment": Payment,
        "allocation": PaymentAllocation,
        "note": CreditNote,
        "credit_allocation": CreditAllocation,
        "refund": Refund,
    }
    return {name: connection.ops.quote_name(m._meta.db_table) for name, m in models.items()}


def _placeholders(values) -> str:
    return ", ".join(["%s"] * len(values))


def money_figures(customer_ids: Sequence[int], *, customer_id: int, today: date) -> MoneyFigures:
    """``outstanding``, ``overdue`` and ``credit`` in one query of sums (the same sums as
    ``invoices_with_amounts`` and ``customer_credit_balance``).

    Written in SQL because it runs on every dashboard view: built with the ORM, its nine
    subqueries cost more to compile than to run. Money applied to a void invoice is free again;
    the void ones are told apart through their own small index, not by reading the invoice
    behind each allocation.
    """
    from django.db import connection

    t = _tables()
    counting = list(COUNTING_PAYMENT_STATUSES)
    live = list(LIVE_REFUND_STATUSES)
    owed = [InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE]
    issued, void = CreditNoteStatus.ISSUED, InvoiceStatus.VOID
    void_invoice = f"SELECT 1 FROM {t['invoice']} v WHERE v.id = a.invoice_id"  # noqa: S608
    not_void = f"NOT EXISTS ({void_invoice} AND v.status = %s)"
    sql = f"""
        SELECT
            COALESCE(SUM(owed.balance), 0),
            COALESCE(SUM(CASE WHEN owed.due_date < %s THEN owed.balance ELSE 0 END), 0),
            (SELECT COALESCE(SUM(p.amount), 0) FROM {t["payment"]} p
              WHERE p.customer_id = %s AND p.status IN ({_placeholders(counting)})),
            (SELECT COALESCE(SUM(a.amount), 0) FROM {t["payment"]} p
              JOIN {t["allocation"]} a ON a.payment_id = p.id
              WHERE p.customer_id = %s AND p.status IN ({_placeholders(counting)}) AND {not_void}),
            (SELECT COALESCE(SUM(r.amount), 0) FROM {t["payment"]} p
              JOIN {t["refund"]} r ON r.payment_id = p.id
              WHERE p.customer_id = %s AND p.status IN ({_placeholders(counting)})
                AND r.credit_note_id IS NULL AND r.status IN ({_placeholders(live)})),
            (SELECT COALESCE(SUM(n.amount), 0) FROM {t["note"]} n
              WHERE n.customer_id = %s AND n.status = %s),
            (SELECT COALESCE(SUM(a.amount), 0) FROM {t["note"]} n
              JOIN {t["credit_allocation"]} a ON a.credit_note_id = n.id
              WHERE n.customer_id = %s AND n.status = %s AND {not_void}),
            (SELECT COALESCE(SUM(r.amount), 0) FROM {t["note"]} n
              JOIN {t["refund"]} r ON r.credit_note_id = n.id
              WHERE n.customer_id = %s AND n.status = %s AND r.status IN ({_placeholders(live)}))
        FROM (
            SELECT i.due_date, i.total
                - COALESCE((SELECT SUM(a.amount) FROM {t["allocation"]} a
                    JOIN {t["payment"]} p ON p.id = a.payment_id
                    WHERE a.invoice_id = i.id AND p.status IN ({_placeholders(counting)})), 0)
                - COALESCE((SELECT SUM(a.amount) FROM {t["credit_allocation"]} a
                    JOIN {t["note"]} n ON n.id = a.credit_note_id
                    WHERE a.invoice_id = i.id AND n.status = %s), 0) AS balance
            FROM {t["invoice"]} i
            WHERE i.customer_id IN ({_placeholders(customer_ids)})
              AND i.status IN ({_placeholders(owed)})
        ) owed
    """  # noqa: S608 (table names and placeholders only)
    params = [
        today,
        customer_id, *counting,
        customer_id, *counting, void,
        customer_id, *counting, *live,
        customer_id, issued,
        customer_id, issued, void,
        customer_id, issued, *live,
        *counting, issued, *customer_ids, *owed,
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        outstanding, overdue, paid, applied, refunded, noted, credited, returned = (
            _cents(value) for value in cursor.fetchone()
        )
    return MoneyFigures(
        outstanding=outstanding,
        overdue=overdue,
        credit=(paid - applied - refunded) + (noted - credited - returned),
    )


def _cents(value) -> Decimal:
    """A sum read by raw SQL: PostgreSQL gives decimals, SQLite floats or integers."""
    if value is None:
        return ZERO
    return (value if isinstance(value, Decimal) else Decimal(str(value))).quantize(CENT)


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


# ----------------------------------------------------------------------------- portal invoices
# Status filters offered by the portal's invoice list. "Open" means still owed (as the dashboard
# counts it: open or uncollectible), so overdue and partially paid invoices are open too.
INVOICE_STATUS_FILTERS = ("open", "overdue", "partially_paid", "paid", "void")
OWED_INVOICE_STATUSES = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)


def invoices_of(
    customer_ids,
    *,
    today,
    status: str = "",
    issued_from=None,
    issued_to=None,
    subscription_id: int | None = None,
    customer_id: int | None = None,
) -> QuerySet[Invoice]:
    """Finalized invoices of ``customer_ids`` with their amounts, narrowed by the list filters.

    ``customer_id`` and ``subscription_id`` must already be known to lie inside the caller's
    scope; ``customer_ids`` keeps the result inside it either way.
    """
    queryset = invoices_with_amounts(
        Invoice.objects.filter(customer__in=customer_ids).exclude(status=InvoiceStatus.DRAFT)
    )
    if customer_id is not None:
        queryset = queryset.filter(customer_id=customer_id)
    if subscription_id is not None:
        queryset = queryset.filter(subscription_id=subscription_id)
    if issued_from is not None:
        queryset = queryset.filter(issue_date__gte=issued_from)
    if issued_to is not None:
        queryset = queryset.filter(issue_date__lte=issued_to)
    if status == "open":
        queryset = queryset.filter(status__in=OWED_INVOICE_STATUSES)
    elif status == "overdue":
        queryset = queryset.filter(status__in=OWED_INVOICE_STATUSES, due_date__lt=today)
    elif status == "partially_paid":
        queryset = queryset.filter(
            Q(amount_paid__gt=0) | Q(credits_applied__gt=0), status__in=OWED_INVOICE_STATUSES
        )
    elif status == "paid":
        queryset = queryset.filter(status=InvoiceStatus.PAID)
    elif status == "void":
        queryset = queryset.filter(status=InvoiceStatus.VOID)
    return queryset


def invoice_keyset_page(
    queryset: QuerySet[Invoice],
    *,
    size: int,
    older_than: tuple | None = None,
    newer_than: tuple | None = None,
) -> tuple[list[Invoice], bool, bool]:
    """One page of invoices, newest first: (rows, has_newer, has_older), in one query.

    Keyset, not OFFSET: the page after (issue_date, id) starts where the index says, so the
    last page costs what the first does. ``issue_date <= d`` (or ``>=``) next to the OR lets
    PostgreSQL use the (customer, -issue_date, -id) index as a range.
    """
    if newer_than is not None:
        day, pk = newer_than
        rows = list(
            queryset.filter(issue_date__gte=day)
            .filter(Q(issue_date__gt=day) | Q(id__gt=pk))
            .order_by("issue_date", "id")[: size + 1]
        )
        has_newer = len(rows) > size
        return list(reversed(rows[:size])), has_newer, True
    if older_than is not None:
        day, pk = older_than
        queryset = queryset.filter(issue_date__lte=day).filter(Q(issue_date__lt=day) | Q(id__lt=pk))
    rows = list(queryset.order_by("-issue_date", "-id")[: size + 1])
    return rows[:size], older_than is not None, len(rows) > size


def invoice_settlements(invoice: Invoice) -> dict:
    """An invoice's lines and the credit notes and payments that count towards it (3 queries).

    The invoice gets ``period_last_day`` (periods are stored end-exclusive, people read them
    inclusive; line descriptions already name their period); each line gets
    ``unit_price_shown``: cents, or all four places when a metered unit price needs them.
    """
    import datetime

    invoice.period_last_day = (
        invoice.period_end - datetime.timedelta(days=1) if invoice.period_end else None
    )
    lines = list(invoice.lines.all())
    for line in lines:
        places = 2 if line.unit_price == line.unit_price.quantize(Decimal("0.01")) else 4
        line.unit_price_shown = f"{line.unit_price:,.{places}f}"
    credits = list(
        CreditAllocation.objects.filter(
            invoice=invoice, credit_note__status=CreditNoteStatus.ISSUED
        )
        .select_related("credit_note")
        .order_by("created_at", "id")
    )
    payments = list(
        PaymentAllocation.objects.filter(
            invoice=invoice, payment__status__in=COUNTING_PAYMENT_STATUSES
        )
        .select_related("payment")
        .order_by("payment__received_on", "created_at", "id")
    )
    return {"lines": lines, "credits": credits, "payments": payments}


def invoice_document(invoice: Invoice, *, organization) -> dict:
    """What an invoice document prints (detail page, print view, PDF, forwarded PDF).

    ``invoice`` comes from ``invoices_with_amounts``. The snapshots taken at finalization are
    printed; the live customer and organization only fill in what a snapshot lacks.
    """
    return {
        "invoice": invoice,
        "merchant": invoice.merchant_details,
        "bill_to": invoice.billing_details,
        "organization": organization,
        **invoice_settlements(invoice),
    }


def credit_application_preview(
    *, payer_id: int, invoices: Sequence[tuple[Invoice, Decimal]]
) -> dict[int, list[tuple[int, Decimal]]]:
    """What unused credit would pay of each invoice before a card is charged, in order.

    ``invoices`` are (invoice, balance due) pairs in the order they are paid (a PaymentQuote's).
    Each invoice takes its own customer's credit first and then, for a branch's invoice, the
    payer's: ``{invoice pk: [(credit owner pk, amount), ...]}``. It mirrors
    ``credits_apply_to_invoice`` (oldest credit first; a payment never pays the same invoice
    twice), so the confirmation page shows what confirming applies. One query, two when some
    of the credit is an unapplied payment.
    """
    owners = {payer_id} | {invoice.customer_id for invoice, _balance in invoices}
    notes = (
        credit_notes_with_remaining(
            CreditNote.objects.filter(customer_id__in=owners, status=CreditNoteStatus.ISSUED)
        )
        .filter(remaining__gt=0)
        .annotate(kind=Value("note"), left=F("remaining"), day=F("issue_date"))
        .order_by()  # no ORDER BY inside a UNION (SQLite refuses it); sorted below
        .values_list("kind", "pk", "customer_id", "left", "day", "created_at")
    )
    payments = (
        payments_with_unapplied(
            Payment.objects.filter(customer_id__in=owners, status__in=COUNTING_PAYMENT_STATUSES)
        )
        .filter(unapplied__gt=0)
        .annotate(
            kind=Value("payment"),
            left=F("unapplied"),
            day=Value(None, output_field=DateField()),
        )
        .order_by()
        .values_list("kind", "pk", "customer_id", "left", "day", "created_at")
    )
    rows = list(notes.union(payments, all=True))
    if not rows:
        return {invoice.pk: [] for invoice, _balance in invoices}
    zone = Organization.load().zone
    # The order credits_apply_to_invoice spends credit in: notes (by issue date, id) then
    # payments (by creation), stably sorted by (calendar day, creation time).
    notes_first = sorted(rows, key=lambda r: (r[0] != "note", r[4] or r[5].date(), r[5], r[1]))
    sources: dict[int, list[list]] = {}
    for kind, pk, customer_id, left, day, created_at in notes_first:
        when = day if kind == "note" else local_date(created_at, zone)
        sources.setdefault(customer_id, []).append([(when, created_at), kind, pk, left])
    for owned in sources.values():
        owned.sort(key=lambda source: source[0])
    payment_ids = [r[1] for r in rows if r[0] == "payment"]
    already_paid = (
        set(
            PaymentAllocation.objects.filter(
                payment_id__in=payment_ids, invoice_id__in=[i.pk for i, _b in invoices]
            ).values_list("payment_id", "invoice_id")
        )
        if payment_ids
        else set()
    )
    preview: dict[int, list[tuple[int, Decimal]]] = {}
    for invoice, balance in invoices:
        applied_here: list[tuple[int, Decimal]] = []
        left_to_pay = balance
        owners_in_order = [invoice.customer_id]
        if invoice.customer_id != payer_id:
            owners_in_order.append(payer_id)
        for owner in owners_in_order:
            applied = ZERO
            for source in sources.get(owner, []):
                if applied >= left_to_pay:
                    break
                _when, kind, pk, remaining = source
                if remaining <= 0 or (kind == "payment" and (pk, invoice.pk) in already_paid):
                    continue
                amount = min(remaining, left_to_pay - applied)
                source[3] = remaining - amount
                applied += amount
            if applied:
                applied_here.append((owner, applied))
                left_to_pay -= applied
        preview[invoice.pk] = applied_here
    return preview


def payments_of(
    customer_ids,
    *,
    status: str = "",
    created_from=None,
    created_before=None,
    customer_id: int | None = None,
) -> QuerySet[Payment]:
    """Payments of these customers, filtered (the portal's payments list); unordered."""
    payments = Payment.objects.filter(customer__in=customer_ids)
    if status:
        payments = payments.filter(status=status)
    if created_from is not None:
        payments = payments.filter(created_at__gte=created_from)
    if created_before is not None:
        payments = payments.filter(created_at__lt=created_before)
    if customer_id is not None:
        payments = payments.filter(customer_id=customer_id)
    return payments


def payment_keyset_page(
    queryset: QuerySet[Payment],
    *,
    size: int,
    older_than: tuple | None = None,
    newer_than: tuple | None = None,
) -> tuple[list[Payment], bool, bool]:
    """One page of payments, newest first: (rows, has_newer, has_older), in one query.

    Keyset on (created_at, id), the (customer, -created_at, -id) index: no OFFSET, so the
    last page costs what the first does.
    """
    if newer_than is not None:
        moment, pk = newer_than
        rows = list(
            queryset.filter(created_at__gte=moment)
            .filter(Q(created_at__gt=moment) | Q(id__gt=pk))
            .order_by("created_at", "id")[: size + 1]
        )
        return list(reversed(rows[:size])), len(rows) > size, True
    if older_than is not None:
        moment, pk = older_than
        queryset = queryset.filter(created_at__lte=moment).filter(
            Q(created_at__lt=moment) | Q(id__lt=pk)
        )
    rows = list(queryset.order_by("-created_at", "-id")[: size + 1])
    return rows[:size], older_than is not None, len(rows) > size


# ----------------------------------------------------------------------------- portal subscriptions
# Statuses of a subscription that has not ended (the portal list's "current" filter).
CURRENT_SUBSCRIPTION_STATUSES = (
    "future",
    "in_trial",
    "live",
    "non_renewing",
    "paused",
    "past_due",
    "unpaid",
)


def subscriptions_of(
    customer_ids,
    *,
    statuses: Sequence[str] | None = None,
    current_only: bool = False,
    plan_code: str | None = None,
    customer_id: int | None = None,
) -> QuerySet:
    """Subscriptions of ``customer_ids`` (with plan and customer), narrowed by the list filters.

    ``customer_id`` must already be known to lie inside the caller's scope; ``customer_ids``
    keeps the result inside it either way. Unordered: the keyset page orders it.
    """
    from billing.models import Subscription

    queryset = Subscription.objects.filter(customer__in=customer_ids).select_related(
        "plan", "customer"
    )
    if statuses:
        queryset = queryset.filter(status__in=statuses)
    if current_only:
        queryset = queryset.filter(status__in=CURRENT_SUBSCRIPTION_STATUSES)
    if plan_code:
        queryset = queryset.filter(plan__code=plan_code)
    if customer_id is not None:
        queryset = queryset.filter(customer_id=customer_id)
    return queryset


def subscription_keyset_page(
    queryset: QuerySet,
    *,
    size: int,
    older_than: tuple | None = None,
    newer_than: tuple | None = None,
) -> tuple[list, bool, bool]:
    """One page of subscriptions, newest start first: (rows, has_newer, has_older), one query.

    Keyset on (start_date, id), like invoice_keyset_page: the last page costs what the first does.
    """
    if newer_than is not None:
        day, pk = newer_than
        rows = list(
            queryset.filter(start_date__gte=day)
            .filter(Q(start_date__gt=day) | Q(id__gt=pk))
            .order_by("start_date", "id")[: size + 1]
        )
        return list(reversed(rows[:size])), len(rows) > size, True
    if older_than is not None:
        day, pk = older_than
        queryset = queryset.filter(start_date__lte=day).filter(Q(start_date__lt=day) | Q(id__lt=pk))
    rows = list(queryset.order_by("-start_date", "-id")[: size + 1])
    return rows[:size], older_than is not None, len(rows) > size


@dataclass(frozen=True)
class ResumeOutlook:
    """What resuming on a date does to billing (DESIGN rule 9)."""

    resume_on: date
    new_term: bool  # resumed on or after the billing date: a new term and invoice that day
    billing_date: date  # the next invoice after resuming
    invoice_total: Decimal | None = None  # the invoice issued on resuming (new term only)
    next_billing_date: date | None = None  # the billing date after that invoice (new term only)


def resume_outlook(subscription, configuration, book, resume_on: date) -> ResumeOutlook:
    """Before the billing date nothing moves; on or after it a new term starts that day.

    ``configuration`` and ``book`` are billing.pricing's (the caller has them already).
    """
    from billing.periods import Period, boundary
    from billing.pricing import period_charges

    term_end = subscription.current_term_end
    if term_end is not None and resume_on < term_end:
        return ResumeOutlook(resume_on=resume_on, new_term=False, billing_date=term_end)
    plan = configuration.plan
    period = Period(resume_on, boundary(resume_on, plan.interval, plan.interval_count, 1))
    return ResumeOutlook(
        resume_on=resume_on,
        new_term=True,
        billing_date=resume_on,
        invoice_total=period_charges(configuration, book, period).total,
        next_billing_date=period.end,
    )


@dataclass
class SubscriptionOverview:
    """Everything the portal's subscription page shows about money and dates."""

    addons: list  # [(Addon, quantity)], every kind (metered ones are billed in arrears)
    coupons: list  # [SubscriptionCoupon with .coupon], still discounting or not
    configuration: object  # billing.pricing.Configuration (recurring addons, live coupons)
    book: object  # billing.pricing.PriceBook
    recurring_amount: Decimal  # one full period, after discounts, before tax
    next_billing_date: date | None = None
    next_amount: Decimal | None = None  # tax included
    ends_on: date | None = None  # the last day of service is the day before
    outlook: ResumeOutlook | None = None  # paused, or a pause scheduled within the term
    scheduled_addons: list = field(default_factory=list)  # [(Addon, quantity)] of the change
    has_metered: bool = False


def subscription_overview(subscription, *, organization, today: date) -> SubscriptionOverview:
    """The subscription's configuration, price and next invoice: two queries (three with a
    per-item price list). ``subscription`` comes with plan, customer (group, price list) and
    scheduled change (plan, coupon) selected.

    The next invoice is what the renewal (or the trial's end, or resuming) will bill: the
    scheduled change's configuration if there is one, coupons that still have cycles left.
    """
    from billing.enums import AddonKind
    from billing.enums import SubscriptionStatus as S
    from billing.models import Addon, SubscriptionAddon, SubscriptionCoupon
    from billing.periods import Period, boundary
    from billing.pricing import (
        Configuration,
        PriceBook,
        coupon_initial_cycles,
        period_charges,
        recurring_amount,
        setup_fee_line,
    )

    change = getattr(subscription, "scheduled_change", None)
    change_codes = list((change.addons or {}).keys()) if change is not None else []
    held = SubscriptionAddon.objects.filter(subscription=subscription, addon=OuterRef("pk"))
    # One query for the addons held now and those the scheduled change names.
    addon_rows = list(
        Addon.objects.filter(
            Q(code__in=change_codes)
            | Q(
                pk__in=SubscriptionAddon.objects.filter(subscription=subscription).values(
                    "addon_id"
                )
            )
        )
        .annotate(held_quantity=Subquery(held.values("quantity")[:1]))
        .order_by("name", "id")
    )
    coupons = list(
        SubscriptionCoupon.objects.filter(subscription=subscription)
        .select_related("coupon")
        .order_by("applied_at", "id")
    )
    addons = [(addon, addon.held_quantity) for addon in addon_rows if addon.held_quantity]
    live_coupons = tuple(
        (row.coupon, row.remaining_cycles)
        for row in coupons
        if row.remaining_cycles is None or row.remaining_cycles > 0
    )
    configuration = Configuration(
        subscription.plan,
        subscription.quantity,
        tuple((a, q) for a, q in addons if a.kind == AddonKind.RECURRING),
        live_coupons,
    )
    book = PriceBook(subscription.customer, organization)
    overview = SubscriptionOverview(
        addons=addons,
        coupons=coupons,
        configuration=configuration,
        book=book,
        recurring_amount=recurring_amount(configuration, book),
        has_metered=any(a.kind == AddonKind.METERED for a, _q in addons),
    )
    plan = subscription.plan
    term_end = subscription.current_term_end
    status = subscription.status

    if change is not None:
        by_code = {addon.code: addon for addon in addon_rows}
        overview.scheduled_addons = [
            (by_code[code], quantity)
            for code, quantity in sorted(change.addons.items())
            if quantity and code in by_code
        ]

    if status in (S.IN_TRIAL, S.FUTURE):
        if subscription.cancel_at is not None:
            overview.ends_on = subscription.cancel_at
            return overview
        first = subscription.trial_end or subscription.start_date
        period = Period(first, boundary(first, plan.interval, plan.interval_count, 1))
        setup = setup_fee_line(plan, book)
        overview.next_billing_date = first
        overview.next_amount = period_charges(
            configuration, book, period, extra_lines=[setup] if setup else []
        ).total
        return overview
    paused = status == S.PAUSED or (
        status == S.LIVE
        and subscription.pause_at is not None
        and (term_end is None or subscription.pause_at <= term_end)
    )
    if paused:
        if subscription.resume_at is not None:
            overview.outlook = resume_outlook(
                subscription, configuration, book, subscription.resume_at
            )
            overview.next_billing_date = overview.outlook.billing_date
            overview.next_amount = overview.outlook.invoice_total
            if not overview.outlook.new_term and term_end is not None:
                overview.next_amount = period_charges(
                    configuration, book, _period_after(subscription, plan, term_end)
                ).total
        return overview
    if status == S.NON_RENEWING or (
        status in (S.LIVE, S.PAST_DUE) and subscription.remaining_billing_cycles == 0
    ):
        overview.ends_on = subscription.cancel_at or term_end
        return overview
    if status not in (S.LIVE, S.PAST_DUE) or term_end is None:
        return overview
    term = Period(subscription.current_term_start or term_end, term_end)
    next_configuration, following = configuration, None
    if change is not None:
        coupons_after = live_coupons
        if change.coupon is not None and all(c.pk != change.coupon.pk for c, _ in live_coupons):
            coupons_after = (*live_coupons, (change.coupon, coupon_initial_cycles(change.coupon)))
        next_configuration = Configuration(
            change.plan,
            change.quantity,
            tuple((a, q) for a, q in overview.scheduled_addons if a.kind == AddonKind.RECURRING),
            coupons_after,
        )
        if (change.plan.interval, change.plan.interval_count) != (
            plan.interval,
            plan.interval_count,
        ):
            new_plan = change.plan
            following = Period(
                term_end, boundary(term_end, new_plan.interval, new_plan.interval_count, 1)
            )
    if following is None:
        following = _period_after(subscription, plan, term.end)
    overview.next_billing_date = term_end
    overview.next_amount = period_charges(next_configuration, book, following).total
    return overview


def _period_after(subscription, plan, term_end: date):
    """The billing period that starts when the current term ends, counted from the anchor
    (DESIGN rule 3); from the term end itself if a hand-edited row left it off the schedule."""
    from billing.periods import Period, boundary, next_period

    term = Period(subscription.current_term_start or term_end, term_end)
    try:
        return next_period(subscription.anchor_date, plan.interval, plan.interval_count, term)
    except ValueError:
        return Period(term_end, boundary(term_end, plan.interval, plan.interval_count, 1))
