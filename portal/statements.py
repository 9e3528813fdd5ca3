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

Three reads, whatever the history's length: the opening balance (one row of sums), one page of
the movements in the range (a UNION of every kind, ordered, with the running balance and the
range's totals computed by window functions in the database), and the open invoices at the end
date. A year of a busy customer has thousands of movements: the page shows ``page_size`` of
them, starting from the balance brought forward from the pages before it, so every running
balance is the one the whole statement would show. The print view and the PDF take every page.

Days are the organization's calendar days. Timestamps are compared with the instants those days
begin (half-open ranges), never truncated to dates in the query, so their indexes serve.

``statement_build`` orders and runs a list of movements in Python: the pure form of the same
ledger, which the tests check the database's against.
"""

import datetime
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from django.db import connection
from django.db.models import (
    CharField,
    DateField,
    DecimalField,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
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
    Invoice,
    Payment,
    PaymentAllocation,
    Refund,
)
from billing.money import ZERO
from billing.periods import start_of_day
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
    # Paging: ``lines`` is page ``page`` of ``pages``, out of ``line_count`` lines in the range;
    # ``page_opening`` is the balance brought forward to its first line (the opening balance on
    # the first page), ``page_closing`` the balance after its last (the closing on the last).
    page: int = 1
    pages: int = 1
    line_count: int = 0
    page_opening: Decimal = ZERO
    page_closing: Decimal = ZERO

    @property
    def paged(self) -> bool:
        return self.pages > 1

    @property
    def first_page(self) -> bool:
        return self.page == 1

    @property
    def last_page(self) -> bool:
        return self.page >= self.pages

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
        line_count=len(lines),
        page_opening=opening,
        page_closing=balance,
    )


# --------------------------------------------------------------------------- reads

# Lines of the statement page; the print view and the PDF show every line.
PAGE_SIZE = 50
CENT = Decimal("0.01")


def _day_of(column: str, zone: datetime.tzinfo):
    """The organization's calendar date of a timestamp column (what a movement shows)."""
    return TruncDate(column, tzinfo=zone)


def _money(value) -> Decimal:
    """A sum read by raw SQL: SQLite gives floats and integers, PostgreSQL decimals."""
    if value is None:
        return ZERO
    return (value if isinstance(value, Decimal) else Decimal(str(value))).quantize(CENT)


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


def _money_day(model, zone: datetime.tzinfo):
    """The day the money of an allocation came in: the payment received, the note issued."""
    if model is PaymentAllocation:
        return Coalesce(
            F("payment__received_on"),
            _day_of("payment__created_at", zone),
            output_field=DateField(),
        )
    return F("credit_note__issue_date")


def applied_day(model, zone: datetime.tzinfo):
    """The day money applied to an invoice counts for it: as soon as both existed (the later
    of the money's date and the invoice's issue date), or the day the row was written if that
    is earlier. Rows written after the fact (an offline payment recorded late, imported
    history) so count from the day the money came in, not the day someone typed them."""
    return Least(
        _day_of("created_at", zone),
        Greatest(_money_day(model, zone), F("invoice__issue_date"), output_field=DateField()),
        output_field=DateField(),
    )


def _allocation_parts(model, ids, zone: datetime.tzinfo) -> list[tuple[str, QuerySet]]:
    """Money of one customer applied to another's invoice (a parent paying a branch): it leaves
    the payer's ledger and settles the owner's, and comes back on the day that invoice is voided
    (voiding returns it as credit to the payer). Between two customers of the same statement
    these cancel out and are left out.

    Crossing is told by NOT EXISTS against the customers' own invoices (or money), which the
    database answers with one hash of their ids, instead of reading the invoice (or payment)
    behind every allocation.
    """
    if model is PaymentAllocation:
        source, money, payer = "payment", Payment, "payment__customer"
        rows = model.objects.filter(payment__status__in=COUNTING_PAYMENT_STATUSES)
    else:
        source, money, payer = "credit", CreditNote, "credit_note__customer"
        rows = model.objects.filter(credit_note__status=CreditNoteStatus.ISSUED)
    money_field = payer.removesuffix("__customer")
    own_invoice = Invoice.objects.filter(pk=OuterRef("invoice_id"), customer__in=ids)
    own_money = money.objects.filter(pk=OuterRef(f"{money_field}_id"), customer__in=ids)
    out = rows.filter(**{f"{payer}__in": ids}).exclude(Exists(own_invoice))
    into = rows.filter(invoice__customer__in=ids).exclude(Exists(own_money))
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
    void_day = Coalesce(
        _day_of("invoice__voided_at", zone), F("invoice__issue_date"), output_field=DateField()
    )
    voided = {"invoice__status": InvoiceStatus.VOID}
    day = applied_day(model, zone)
    return [
        (MovementKind.TRANSFER_OUT, _annotated(out, day=day, **out_columns)),
        (MovementKind.TRANSFER_IN, _annotated(into, day=day, **in_columns)),
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
        *_allocation_parts(PaymentAllocation, ids, zone),
        *_allocation_parts(CreditAllocation, ids, zone),
    ]


_COLUMNS = ("day", "amount_", "owner", "ref", "lbl", "link", "row", "m_kind")
_ORDER = "m.day, m.korder, m.row, m.part"


# The ledger's SQL depends only on the number of customers and the time zone: it is built and
# compiled once per process for each (a UNION of thirteen annotated querysets costs more to
# compile than to run), with stand-in ids that each request's ids then replace as parameters.
_LEDGER_SQL: dict[tuple, tuple[str, tuple]] = {}
_STAND_IN = -(2**62)


def _ledger_sql(customer_ids: Sequence[int], zone: datetime.tzinfo) -> tuple[str, list]:
    """The UNION of every kind of movement of ``customer_ids``, as SQL and parameters."""
    key = (connection.vendor, len(customer_ids), str(zone))
    cached = _LEDGER_SQL.get(key)
    if cached is None:
        stand_ins = [_STAND_IN - n for n in range(len(customer_ids))]
        parts = [
            queryset.annotate(
                m_kind=Value(str(kind), output_field=TEXT),
                sign=Value(SIGN[kind], output_field=IntegerField()),
                korder=Value(DAY_ORDER[kind], output_field=IntegerField()),
                part=Value(index, output_field=IntegerField()),
            ).values_list(*_COLUMNS, "sign", "korder", "part")
            for index, (kind, queryset) in enumerate(_sources(stand_ins, zone))
        ]
        union = parts[0].union(*parts[1:], all=True)
        sql, params = union.query.get_compiler(using=union.db).as_sql()
        if str(_STAND_IN)[:10] in sql:  # an id written into the SQL could not be replaced
            raise RuntimeError("the ledger's customer ids must be query parameters")
        cached = _LEDGER_SQL[key] = (sql, tuple(params))
    sql, params = cached
    ids = {_STAND_IN - n: pk for n, pk in enumerate(customer_ids)}
    return sql, [ids.get(value, value) if type(value) is int else value for value in params]


@dataclass(frozen=True)
class LedgerPage:
    """The balance before a range, a page of its movements and the range's totals."""

    opening: Decimal
    movements: list[Movement]
    running: list[Decimal]  # the signed sum of the range's movements up to each one, inclusive
    line_count: int
    charges: Decimal
    credits: Decimal  # a positive amount: what payments, credits and voids took off


def ledger_page(
    customer_ids: Sequence[int],
    start: datetime.date,
    end: datetime.date,
    zone: datetime.tzinfo,
    *,
    offset: int = 0,
    limit: int | None = None,
) -> LedgerPage:
    """The balance at the end of the day before ``start``, and the movements dated
    ``start``..``end`` (inclusive) in statement order, ``limit`` of them from ``offset`` (all of
    them without a limit): one query.

    The ledger is read once, whatever the page: a UNION of every kind of movement, which the
    opening balance sums before ``start``, and window functions order and run from there, so a
    page carries the running total of the lines before it and the range's totals without a row
    of the other pages reaching Python. The money crossing to or from other customers, the
    costly part, is looked for once.
    """
    union_sql, union_params = _ledger_sql(customer_ids, zone)
    columns = ", ".join(f"m.{name}" for name in _COLUMNS)
    page = (
        f"SELECT {columns}, m.korder, m.part, "  # noqa: S608 (no value is interpolated)
        f"SUM(m.amount_ * m.sign) OVER (ORDER BY {_ORDER} ROWS UNBOUNDED PRECEDING) AS running, "
        "COUNT(*) OVER () AS line_count, "
        "SUM(CASE WHEN m.sign > 0 THEN m.amount_ ELSE 0 END) OVER () AS charges, "
        "SUM(CASE WHEN m.sign < 0 THEN m.amount_ ELSE 0 END) OVER () AS credits "
        f"FROM ledger m WHERE m.day >= %s AND m.day <= %s ORDER BY {_ORDER}"
    )
    params = [*union_params, start, start, end]
    if limit is not None:
        page += " LIMIT %s OFFSET %s"
        params += [limit, offset]
    sql = (
        f"WITH ledger AS ({union_sql}) "  # noqa: S608
        "SELECT o.opening, p.* FROM "
        "(SELECT COALESCE(SUM(m.amount_ * m.sign), 0) AS opening FROM ledger m "
        "WHERE m.day < %s) o "
        f"LEFT JOIN ({page}) p ON 1 = 1 "
        "ORDER BY p.day, p.korder, p.row, p.part"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    opening = _money(rows[0][0])
    movements, running = [], []
    for row in rows:
        _opening, day, amount, owner, ref, label, link, row_id, kind, _korder, _part, total = row[
            :12
        ]
        if kind is None:  # the opening balance alone: no movement in the range (or page)
            continue
        movements.append(
            Movement(
                day=day if isinstance(day, datetime.date) else datetime.date.fromisoformat(day),
                kind=MovementKind(kind),
                reference=ref or "",
                label=label or "",
                amount=_money(amount),
                customer_id=owner,
                row_id=row_id,
                public_id=link if link is None or isinstance(link, uuid.UUID) else uuid.UUID(link),
            )
        )
        running.append(_money(total))
    *_, line_count, charges, credits = rows[0]
    return LedgerPage(
        opening=opening,
        movements=movements,
        running=running,
        line_count=line_count or 0,
        charges=_money(charges),
        credits=_money(credits),
    )


def opening_balance(
    customer_ids: Sequence[int], start: datetime.date, zone: datetime.tzinfo
) -> Decimal:
    """The balance at the end of the day before ``start``."""
    return ledger_page(customer_ids, start, start, zone, limit=0).opening


def movements_between(
    customer_ids: Sequence[int],
    start: datetime.date,
    end: datetime.date,
    zone: datetime.tzinfo,
) -> list[Movement]:
    """Every movement dated ``start``..``end`` (inclusive), in statement order."""
    return ledger_page(customer_ids, start, end, zone).movements


def open_items_at(
    customer_ids: Sequence[int], end: datetime.date, zone: datetime.tzinfo
) -> list[OpenItem]:
    """Invoices issued by ``end``, not voided by then, with what was still due at that day's end.

    Money counts against an invoice from ``applied_day``, so a statement for a past month
    shows the invoices as they stood then. Only invoices that can have been owed at the end are
    summed: those owed now, those voided after it, and those paid after it (or at an unknown
    moment). One paid by then was settled by then: invoice_settle marks it paid once its
    allocations are written, and an allocation never counts from after the day it was written.
    Days are compared as half-open ranges of instants in the organization's time zone.
    """
    after_end = start_of_day(end + datetime.timedelta(days=1), zone)

    def applied(model, status_filter: dict) -> Coalesce:
        total = (
            model.objects.filter(invoice=OuterRef("pk"), **status_filter)
            .annotate(
                both_existed=Greatest(
                    _money_day(model, zone), F("invoice__issue_date"), output_field=DateField()
                )
            )
            # applied_day <= end: written by the end of that day, or both existed by then.
            .filter(Q(created_at__lt=after_end) | Q(both_existed__lte=end))
            .order_by()
            .annotate(_group=Value(1))
            .values("_group")
            .annotate(total=Sum("amount"))
            .values("total")
        )
        return Coalesce(Subquery(total, output_field=MONEY), Value(ZERO), output_field=MONEY)

    owed_at_end = (
        Q(status__in=(InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE))
        | Q(status=InvoiceStatus.PAID) & (Q(paid_at__isnull=True) | Q(paid_at__gte=after_end))
        | Q(status=InvoiceStatus.VOID, voided_at__gte=after_end)
    )
    rows = (
        Invoice.objects.filter(owed_at_end, customer__in=customer_ids, issue_date__lte=end)
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
    page: int = 1,
    page_size: int | None = None,
) -> Statement:
    """The statement of one customer, or of several consolidated (a parent and its branches):
    page ``page`` of ``page_size`` lines, or every line without a page size. A page past the
    last shows the last."""
    ids = [pk for pk, _name in customers]
    names = dict(customers)
    page = max(page, 1)
    offset = (page - 1) * page_size if page_size else 0
    ledger = ledger_page(ids, start, end, zone, offset=offset, limit=page_size)
    if page_size and not ledger.movements and page > 1:
        # Past the last page (an old link after the history changed): count, show the last.
        line_count = ledger_page(ids, start, end, zone, limit=1).line_count
        page = max(math.ceil(line_count / page_size), 1)
        offset = (page - 1) * page_size
        ledger = ledger_page(ids, start, end, zone, offset=offset, limit=page_size)
    opening = ledger.opening
    closing = opening + ledger.charges - ledger.credits
    lines = [
        StatementLine(
            movement=movement,
            amount=movement.signed,
            balance=opening + running,
            customer_name=names.get(movement.customer_id, ""),
        )
        for movement, running in zip(ledger.movements, ledger.running, strict=True)
    ]
    return Statement(
        start=start,
        end=end,
        currency=currency,
        opening=opening,
        lines=lines,
        closing=closing,
        ageing=ageing_of(open_items_at(ids, end, zone), end),
        customers=tuple(names.items()),
        consolidated=len(ids) > 1,
        charges=ledger.charges,
        credits=ledger.credits,
        names=names,
        page=page,
        pages=max(math.ceil(ledger.line_count / page_size), 1) if page_size else 1,
        line_count=ledger.line_count,
        page_opening=lines[0].balance - lines[0].amount if lines else opening,
        page_closing=lines[-1].balance if lines else closing,
    )
