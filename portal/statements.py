"""Statements of account: what a customer owed on a day, what moved since, what it owes now.

The balance follows ``billing.selectors.customer_balance``: positive means the customer owes,
negative means it is in credit. A movement raises it (an invoice issued, a refund paid out) or
lowers it (a payment received, a credit note, an invoice voided — on the day it was voided,
so a voided invoice nets to zero from then on, as the balance ignores void invoices).

One departure, for hierarchies: money one customer applies to another's invoice (a parent
paying a branch) moves from the payer's ledger to the owner's, so each customer's closing
balance is its open invoices less its unused credit. ``customer_balance`` counts a payment
wholly against the payer; a consolidated statement of the whole family agrees with the sum of
``customer_balance`` over it, as does any customer with no money crossing to another.

Three reads, whatever the history's length: the opening balance (one row of sums), the
movements in the range (one UNION of every kind) and the open invoices at the end date.
``statement_build`` does the rest in Python, from rows, so tests can check it directly.
"""

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from django.db.models import (
    CharField,
    DateField,
    DecimalField,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    UUIDField,
    Value,
)
from django.db.models.functions import Cast, Coalesce, Concat, Greatest, Least, TruncDate

from billing.enums import (
    CreditNoteReason,
    CreditNoteStatus,
    InvoiceKind,
    InvoiceStatus,
    PaymentMode,
    RefundStatus,
)
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
from billing.selectors import COUNTING_PAYMENT_STATUSES

MONEY = DecimalField(max_digits=14, decimal_places=2)
TEXT = CharField()


class MovementKind(StrEnum):
    INVOICE = "invoice"
    PAYMENT = "payment"
    CREDIT_NOTE = "credit_note"
    VOID = "void"
    REFUND = "refund"
    # Money applied across customers (a parent paying a branch's invoice), and its return when
    # that invoice is voided. Seen from the payer (out) or from the invoice's owner (in).
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    RETURN_OUT = "return_out"
    RETURN_IN = "return_in"


# +1: the customer owes more; -1: less. Same signs as customer_balance.
SIGN = {
    MovementKind.INVOICE: 1,
    MovementKind.REFUND: 1,
    MovementKind.PAYMENT: -1,
    MovementKind.CREDIT_NOTE: -1,
    MovementKind.VOID: -1,
    MovementKind.TRANSFER_OUT: 1,
    MovementKind.TRANSFER_IN: -1,
    MovementKind.RETURN_OUT: -1,
    MovementKind.RETURN_IN: 1,
}
# Within one day: what was billed first, then what settled it.
DAY_ORDER = {
    MovementKind.INVOICE: 0,
    MovementKind.CREDIT_NOTE: 1,
    MovementKind.PAYMENT: 2,
    MovementKind.TRANSFER_IN: 3,
    MovementKind.TRANSFER_OUT: 4,
    MovementKind.VOID: 5,
    MovementKind.RETURN_IN: 6,
    MovementKind.RETURN_OUT: 7,
    MovementKind.REFUND: 8,
}
AGEING_BUCKETS = (
    ("current", "Current"),
    ("days_1_30", "1–30 days"),
    ("days_31_60", "31–60 days"),
    ("days_61_90", "61–90 days"),
    ("over_90", "Over 90 days"),
)


@dataclass(frozen=True)
class Movement:
    """One row of a statement, amount unsigned as stored; ``signed`` applies the direction."""

    day: datetime.date
    kind: MovementKind
    reference: str
    label: str
    amount: Decimal
    customer_id: int
    row_id: int
    public_id: object = None

    @property
    def signed(self) -> Decimal:
        return self.amount * SIGN[self.kind]

    @property
    def description(self) -> str:
        return describe(self.kind, self.label)

    @property
    def sort_key(self) -> tuple:
        return (self.day, DAY_ORDER[self.kind], self.row_id)


@dataclass(frozen=True)
class OpenItem:
    """An invoice's balance still due at the statement's end date."""

    due_date: datetime.date
    balance: Decimal


@dataclass(frozen=True)
class StatementLine:
    movement: Movement
    amount: Decimal  # signed
    balance: Decimal  # running, after this line
    customer_name: str = ""


@dataclass(frozen=True)
class Ageing:
    current: Decimal = ZERO
    days_1_30: Decimal = ZERO
    days_31_60: Decimal = ZERO
    days_61_90: Decimal = ZERO
    over_90: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.current + self.days_1_30 + self.days_31_60 + self.days_61_90 + self.over_90

    @property
    def buckets(self) -> list[tuple[str, Decimal]]:
        return [(label, getattr(self, name)) for name, label in AGEING_BUCKETS]


@dataclass(frozen=True)
class Statement:
    start: datetime.date
    end: datetime.date
    currency: str
    opening: Decimal
    lines: list[StatementLine]
    closing: Decimal
    ageing: Ageing
    customers: tuple[tuple[int, str], ...] = ()
    consolidated: bool = False
    charges: Decimal = ZERO
    credits: Decimal = ZERO
    names: dict = field(default_factory=dict)

    @property
    def opening_day(self) -> datetime.date:
        """The opening balance is the balance at the end of this day."""
        return self.start - datetime.timedelta(days=1)

    @property
    def closing_in_credit(self) -> bool:
        return self.closing < 0

    @property
    def closing_magnitude(self) -> Decimal:
        return abs(self.closing)


PERIOD_CHOICES = [
    ("this_month", "This month"),
    ("last_quarter", "Last quarter"),
    ("this_year", "This year"),
    ("custom", "Custom dates"),
]


def period_range(period: str, today: datetime.date) -> tuple[datetime.date, datetime.date]:
    """The dates a preset stands for; a range never runs past today (nothing is dated later,
    and ageing as of a future day would call invoices overdue before they are)."""
    if period == "last_quarter":
        this_quarter = datetime.date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        end = this_quarter - datetime.timedelta(days=1)
        return datetime.date(end.year, end.month - 2, 1), end
    if period == "this_year":
        return datetime.date(today.year, 1, 1), today
    if period == "this_month":
        return today.replace(day=1), today
    raise ValueError(f"unknown period {period!r}")


def describe(kind: MovementKind, label: str) -> str:
    if kind == MovementKind.INVOICE:
        return f"Invoice · {_choice_label(InvoiceKind, label)}" if label else "Invoice"
    if kind == MovementKind.VOID:
        return "Invoice voided"
    if kind == MovementKind.PAYMENT:
        return f"Payment received · {_choice_label(PaymentMode, label)}" if label else "Payment"
    if kind == MovementKind.CREDIT_NOTE:
        return f"Credit note · {_choice_label(CreditNoteReason, label)}" if label else "Credit note"
    if kind == MovementKind.REFUND:
        return f"Refund · {label}" if label else "Refund"
    source, _sep, other = label.partition(":")
    money = "Payment" if source == "payment" else "Credit"
    return {
        MovementKind.TRANSFER_OUT: f"{money} applied to {other}'s invoice",
        MovementKind.TRANSFER_IN: f"{'Paid' if source == 'payment' else 'Credited'} by {other}",
        MovementKind.RETURN_OUT: f"{money} returned: {other}'s invoice voided",
        MovementKind.RETURN_IN: f"{money} returned to {other}: invoice voided",
    }[kind]


def _choice_label(choices, value: str) -> str:
    try:
        return choices(value).label
    except ValueError:
        return value


def ageing_bucket(days_past_due: int) -> str:
    """Not yet due (or due today) is current; then 1–30, 31–60, 61–90 and over 90 days late."""
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "days_1_30"
    if days_past_due <= 60:
        return "days_31_60"
    if days_past_due <= 90:
        return "days_61_90"
    return "over_90"


def ageing_of(items: Iterable[OpenItem], end: datetime.date) -> Ageing:
    sums = dict.fromkeys((name for name, _label in AGEING_BUCKETS), ZERO)
    for item in items:
        if item.balance > 0:
            sums[ageing_bucket((end - item.due_date).days)] += item.balance
    return Ageing(**sums)


def statement_build(
    *,
    start: datetime.date,
    end: datetime.date,
    currency: str,
    opening: Decimal,
    movements: Iterable[Movement],
    open_items: Iterable[OpenItem],
    names: dict[int, str] | None = None,
    consolidated: bool = False,
) -> Statement:
    """Order the movements, run the balance from ``opening`` and age what is still open."""
    names = names or {}
    balance = opening
    lines = []
    charges = credits = ZERO
    for movement in sorted(movements, key=lambda m: m.sort_key):
        signed = movement.signed
        balance += signed
        if signed >= 0:
            charges += signed
        else:
            credits -= signed
        lines.append(
            StatementLine(
                movement=movement,
                amount=signed,
                balance=balance,
                customer_name=names.get(movement.customer_id, ""),
            )
        )
    return Statement(
        start=start,
        end=end,
        currency=currency,
        opening=opening,
        lines=lines,
        closing=balance,
        ageing=ageing_of(open_items, end),
        customers=tuple(names.items()),
        consolidated=consolidated,
        charges=charges,
        credits=credits,
        names=names,
    )


# --------------------------------------------------------------------------- reads


def _day_of(column: str, zone: datetime.tzinfo):
    """The organization's calendar date of a timestamp column."""
    return TruncDate(column, tzinfo=zone)


def _annotated(queryset: QuerySet, *, day, amount, owner, reference, label, link) -> QuerySet:
    """One part of the ledger with the columns every part shares, in the same order (the
    UNION matches columns by position)."""
    return queryset.order_by().annotate(
        day=Cast(day, DateField()),
        amount_=Cast(amount, MONEY),
        owner=Cast(owner, IntegerField()),
        ref=Cast(reference, TEXT),
        lbl=Cast(label, TEXT),
        link=Cast(link, UUIDField()),
        row=Cast(F("pk"), IntegerField()),
    )


def applied_day(model, zone: datetime.tzinfo):
    """The day money applied to an invoice counts for it: as soon as both existed (the later
    of the money's date and the invoice's issue date), or the day the row was written if that
    is earlier. Rows written after the fact (an offline payment recorded late, imported
    history) so count from the day the money came in, not the day someone typed them."""
    if model is PaymentAllocation:
        money_day = Coalesce(
            F("payment__received_on"),
            _day_of("payment__created_at", zone),
            output_field=DateField(),
        )
    else:
        money_day = F("credit_note__issue_date")
    return Least(
        _day_of("created_at", zone),
        Greatest(money_day, F("invoice__issue_date"), output_field=DateField()),
        output_field=DateField(),
    )


def _allocation_parts(model, payer: str, status: dict, ids, zone) -> list[tuple[str, QuerySet]]:
    """Money of one customer applied to another's invoice (a parent paying a branch): it leaves
    the payer's ledger and settles the owner's, and comes back on the day that invoice is voided
    (voiding returns it as credit to the payer). Between two customers of the same statement
    these cancel out and are left out."""
    source = "payment" if model is PaymentAllocation else "credit"
    rows = model.objects.filter(**status)
    void_day = Coalesce(
        _day_of("invoice__voided_at", zone), F("invoice__issue_date"), output_field=DateField()
    )
    out = rows.filter(**{f"{payer}__in": ids}).exclude(invoice__customer__in=ids)
    into = rows.filter(invoice__customer__in=ids).exclude(**{f"{payer}__in": ids})
    common = {
        "amount": F("amount"),
        "reference": F("invoice__number"),
        "link": F("invoice__public_id"),
    }
    out_columns = {
        **common,
        "owner": F(f"{payer}_id"),
        "label": Concat(Value(f"{source}:"), F("invoice__customer__display_name")),
    }
    in_columns = {
        **common,
        "owner": F("invoice__customer_id"),
        "label": Concat(Value(f"{source}:"), F(f"{payer}__display_name")),
    }
    voided = {"invoice__status": InvoiceStatus.VOID}
    return [
        (
            MovementKind.TRANSFER_OUT,
            _annotated(out, day=applied_day(model, zone), **out_columns),
        ),
        (MovementKind.TRANSFER_IN, _annotated(into, day=applied_day(model, zone), **in_columns)),
        (MovementKind.RETURN_OUT, _annotated(out.filter(**voided), day=void_day, **out_columns)),
        (MovementKind.RETURN_IN, _annotated(into.filter(**voided), day=void_day, **in_columns)),
    ]


def _sources(ids: Sequence[int], zone: datetime.tzinfo) -> list[tuple[str, QuerySet]]:
    """Every kind of movement as (kind, queryset annotated with the shared columns)."""
    invoices = Invoice.objects.filter(customer__in=ids)
    payments = Payment.objects.filter(customer__in=ids, status__in=COUNTING_PAYMENT_STATUSES)
    invoice_columns = {
        "amount": F("total"),
        "owner": F("customer_id"),
        "reference": F("number"),
        "link": F("public_id"),
    }
    return [
        (
            MovementKind.INVOICE,
            _annotated(
                invoices.exclude(status=InvoiceStatus.DRAFT),
                day=F("issue_date"),
                label=F("kind"),
                **invoice_columns,
            ),
        ),
        (
            MovementKind.VOID,
            _annotated(
                invoices.filter(status=InvoiceStatus.VOID),
                # Void before voided_at was kept: treat it as void from the start.
                day=Coalesce(_day_of("voided_at", zone), F("issue_date"), output_field=DateField()),
                label=Value(""),
                **invoice_columns,
            ),
        ),
        (
            MovementKind.PAYMENT,
            _annotated(
                payments,
                day=Coalesce(
                    F("received_on"), _day_of("created_at", zone), output_field=DateField()
                ),
                amount=F("amount"),
                owner=F("customer_id"),
                reference=Coalesce(F("receipt_number"), Value(""), output_field=TEXT),
                label=F("mode"),
                link=F("public_id"),
            ),
        ),
        (
            MovementKind.CREDIT_NOTE,
            _annotated(
                CreditNote.objects.filter(customer__in=ids, status=CreditNoteStatus.ISSUED),
                day=F("issue_date"),
                amount=F("amount"),
                owner=F("customer_id"),
                reference=F("number"),
                label=F("reason"),
                link=F("public_id"),
            ),
        ),
        (
            MovementKind.REFUND,
            _annotated(
                Refund.objects.filter(payment__customer__in=ids, status=RefundStatus.SUCCEEDED),
                day=_day_of("created_at", zone),
                amount=F("amount"),
                owner=F("payment__customer_id"),
                reference=Coalesce(F("payment__receipt_number"), Value(""), output_field=TEXT),
                label=F("reason"),
                link=F("payment__public_id"),
            ),
        ),
        *_allocation_parts(
            PaymentAllocation,
            "payment__customer",
            {"payment__status__in": COUNTING_PAYMENT_STATUSES},
            ids,
            zone,
        ),
        *_allocation_parts(
            CreditAllocation,
            "credit_note__customer",
            {"credit_note__status": CreditNoteStatus.ISSUED},
            ids,
            zone,
        ),
    ]


def _sum_subquery(queryset: QuerySet) -> Coalesce:
    total = (
        queryset.annotate(_group=Value(1))
        .values("_group")
        .annotate(total=Sum("amount_"))
        .values("total")
    )
    return Coalesce(Subquery(total, output_field=MONEY), Value(ZERO), output_field=MONEY)


def opening_balance(
    customer_ids: Sequence[int], start: datetime.date, zone: datetime.tzinfo
) -> Decimal:
    """The balance at the end of the day before ``start``: one query of sums, one per part."""
    parts = _sources(customer_ids, zone)
    sums = {
        f"sum_{index}": _sum_subquery(queryset.filter(day__lt=start))
        for index, (_kind, queryset) in enumerate(parts)
    }
    row = Customer.objects.filter(pk=customer_ids[0]).order_by().values(**sums).first()
    if row is None:
        return ZERO
    return sum((row[f"sum_{index}"] * SIGN[kind] for index, (kind, _qs) in enumerate(parts)), ZERO)


_COLUMNS = ("day", "amount_", "owner", "ref", "lbl", "link", "row")


def movements_between(
    customer_ids: Sequence[int],
    start: datetime.date,
    end: datetime.date,
    zone: datetime.tzinfo,
) -> list[Movement]:
    """Every movement dated ``start``..``end`` (inclusive), in one UNION ALL query."""
    parts = [
        queryset.filter(day__gte=start, day__lte=end)
        .annotate(m_kind=Value(str(kind), output_field=TEXT))
        .values_list(*_COLUMNS, "m_kind")
        for kind, queryset in _sources(customer_ids, zone)
    ]
    union = parts[0].union(*parts[1:], all=True)
    return [
        Movement(
            day=day,
            kind=MovementKind(kind),
            reference=reference or "",
            label=label or "",
            amount=amount,
            customer_id=customer_id,
            row_id=row_id,
            public_id=public_id,
        )
        for day, amount, customer_id, reference, label, public_id, row_id, kind in union
    ]


def open_items_at(
    customer_ids: Sequence[int], end: datetime.date, zone: datetime.tzinfo
) -> list[OpenItem]:
    """Invoices issued by ``end``, not voided by then, with what was still due at that day's end.

    Money counts against an invoice from ``applied_day``, so a statement for a past month
    shows the invoices as they stood then.
    """

    def applied(model, status_filter: dict) -> Coalesce:
        total = (
            model.objects.filter(invoice=OuterRef("pk"), **status_filter)
            .annotate(day=applied_day(model, zone))
            .filter(day__lte=end)
            .order_by()
            .annotate(_group=Value(1))
            .values("_group")
            .annotate(total=Sum("amount"))
            .values("total")
        )
        return Coalesce(Subquery(total, output_field=MONEY), Value(ZERO), output_field=MONEY)

    rows = (
        Invoice.objects.filter(customer__in=customer_ids, issue_date__lte=end)
        .exclude(status=InvoiceStatus.DRAFT)
        .annotate(
            void_day=Coalesce(_day_of("voided_at", zone), F("issue_date"), output_field=DateField())
        )
        .exclude(status=InvoiceStatus.VOID, void_day__lte=end)
        .annotate(
            paid=applied(PaymentAllocation, {"payment__status__in": COUNTING_PAYMENT_STATUSES}),
            credited=applied(CreditAllocation, {"credit_note__status": CreditNoteStatus.ISSUED}),
        )
        .annotate(open_balance=F("total") - F("paid") - F("credited"))
        .filter(open_balance__gt=0)
        .order_by()
        .values_list("due_date", "issue_date", "open_balance")
    )
    return [OpenItem(due_date=due or issued, balance=balance) for due, issued, balance in rows]


def statement_for(
    *,
    customers: Sequence[tuple[int, str]],
    start: datetime.date,
    end: datetime.date,
    currency: str,
    zone: datetime.tzinfo,
) -> Statement:
    """The statement of one customer, or of several consolidated (a parent and its branches)."""
    ids = [pk for pk, _name in customers]
    return statement_build(
        start=start,
        end=end,
        currency=currency,
        opening=opening_balance(ids, start, zone),
        movements=movements_between(ids, start, end, zone),
        open_items=open_items_at(ids, end, zone),
        names=dict(customers),
        consolidated=len(ids) > 1,
    )
