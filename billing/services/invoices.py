"""Invoices: issue (draft → numbered), void, mark uncollectible, settle when paid, one-time charges.

A finalized invoice never changes its lines or totals; only its payment state moves, through
allocation rows. Corrections are credit notes.
"""

import datetime
from collections.abc import Sequence
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing.books_cache import books_changed, money_partners
from billing.clock import billing_today
from billing.enums import (
    DocumentKind,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    PaymentAttemptStatus,
)
from billing.errors import InvalidTransition, PaymentInProgress, ValidationFailed
from billing.lifecycle import assert_transition
from billing.models import (
    Customer,
    Invoice,
    InvoiceLine,
    InvoicePaymentLock,
    Organization,
    PaymentAttempt,
    Subscription,
)
from billing.money import round_money
from billing.periods import Period
from billing.pricing import LineDraft, PriceBook, Totals, totals
from billing.selectors import invoice_balance, invoices_with_amounts
from billing.services.events import event_build, event_record, events_record_many
from billing.services.numbering import document_number_allocate


def payment_terms_days(customer: Customer, organization: Organization) -> int:
    if customer.payment_terms_days is not None:
        return customer.payment_terms_days
    if customer.group_id and customer.group.payment_terms_days is not None:
        return customer.group.payment_terms_days
    return organization.payment_terms_days


def customer_snapshot(customer: Customer) -> dict:
    return {
        "name": customer.display_name,
        "company": customer.company_name,
        "email": customer.email,
        "address_lines": customer.billing_address_lines,
        "tax_id": customer.tax_id,
    }


def merchant_snapshot(organization: Organization) -> dict:
    return {
        "name": organization.name,
        "legal_name": organization.legal_name,
        "email": organization.email,
        "phone": organization.phone,
        "website": organization.website,
        "address_lines": organization.address_lines,
        "tax_id": organization.tax_id,
        "tax_label": organization.tax_label,
        "footer": organization.invoice_footer,
    }


def invoice_build(
    *,
    customer: Customer,
    charges: Totals,
    kind: str,
    subscription: Subscription | None = None,
    period: Period | None = None,
    memo: str = "",
) -> tuple[Invoice, list[InvoiceLine]]:
    """An unsaved draft and its lines exactly as priced (the lines get the invoice once saved)."""
    invoice = Invoice(
        customer=customer,
        subscription=subscription,
        kind=kind,
        currency=charges.currency,
        period_start=period.start if period else None,
        period_end=period.end if period else None,
        subtotal=charges.subtotal,
        discount_total=charges.discount_total,
        tax_rate=charges.tax_rate,
        tax_total=charges.tax_total,
        total=charges.total,
        memo=memo,
    )
    lines = [
        InvoiceLine(
            position=position,
            kind=line.kind,
            description=line.description[:300],
            period_start=line.period_start,
            period_end=line.period_end,
            quantity=line.quantity,
            unit_price=line.unit_price,
            amount=line.amount,
            plan=line.plan,
            addon=line.addon,
        )
        for position, line in enumerate(charges.lines)
    ]
    return invoice, lines


def invoice_create_draft(
    *,
    customer: Customer,
    charges: Totals,
    kind: str,
    subscription: Subscription | None = None,
    period: Period | None = None,
    memo: str = "",
) -> Invoice:
    """Store a draft with its lines exactly as priced; nothing is numbered yet."""
    invoice, lines = invoice_build(
        customer=customer,
        charges=charges,
        kind=kind,
        subscription=subscription,
        period=period,
        memo=memo,
    )
    invoice.save(force_insert=True)
    for line in lines:
        line.invoice = invoice
    InvoiceLine.objects.bulk_create(lines)
    return invoice


FINALIZED_FIELDS = (
    "number",
    "issue_date",
    "due_date",
    "billing_details",
    "merchant_details",
    "status",
    "finalized_at",
)


def invoice_mark_finalized(
    invoice: Invoice, *, number: str, issue_date: datetime.date, organization: Organization
) -> None:
    """Give a draft its number, dates and both parties' details (``FINALIZED_FIELDS``); the
    customer (and its group) must be loaded."""
    invoice.number = number
    invoice.issue_date = issue_date
    invoice.due_date = issue_date + datetime.timedelta(
        days=payment_terms_days(invoice.customer, organization)
    )
    invoice.billing_details = customer_snapshot(invoice.customer)
    invoice.merchant_details = merchant_snapshot(organization)
    invoice.status = InvoiceStatus.OPEN
    invoice.finalized_at = timezone.now()


def invoice_issued_event(invoice: Invoice, actor=None):
    return event_build(
        kind="invoice.issued",
        description=f"Invoice {invoice.number} issued for {invoice.currency} {invoice.total}",
        actor=actor,
        customer_id=invoice.customer_id,
        invoice=invoice,
        subscription_id=invoice.subscription_id,
        after={"number": invoice.number, "total": str(invoice.total)},
    )


def invoice_finalize(
    *,
    invoice: Invoice,
    actor=None,
    issue_date: datetime.date | None = None,
    apply_credits: bool = True,
) -> Invoice:
    """Number the draft from the gapless sequence, copy both parties' details, set the due date."""
    organization = Organization.load()
    with transaction.atomic():
        Customer.objects.select_for_update(no_key=True).get(pk=invoice.customer_id)
        # of=("self",): PostgreSQL refuses FOR UPDATE on the nullable side of the outer join to
        # the customer's group; the customer row is already locked above.
        invoice = (
            Invoice.objects.select_for_update(of=("self",), no_key=True)
            .select_related("customer__group")
            .get(pk=invoice.pk)
        )
        if invoice.status != InvoiceStatus.DRAFT:
            raise InvalidTransition("This invoice is already finalized.")
        invoice_mark_finalized(
            invoice,
            number=document_number_allocate(kind=DocumentKind.INVOICE),
            issue_date=issue_date or billing_today(organization),
            organization=organization,
        )
        invoice.save(update_fields=[*FINALIZED_FIELDS, "updated_at"])
        events_record_many([invoice_issued_event(invoice, actor)])
        if apply_credits and invoice.total > 0:
            from billing.services.credits import credits_apply_to_invoice

            credits_apply_to_invoice(invoice=invoice, actor=actor)
        invoice_settle(invoice=invoice, actor=actor)
    invoice.refresh_from_db()
    return invoice


def invoice_issue(
    *,
    customer: Customer,
    charges: Totals,
    kind: str,
    subscription: Subscription | None = None,
    period: Period | None = None,
    memo: str = "",
    actor=None,
    issue_date: datetime.date | None = None,
) -> Invoice:
    """Create and finalize in one transaction: the usual way an invoice comes to exist."""
    with transaction.atomic():
        draft = invoice_create_draft(
            customer=customer,
            charges=charges,
            kind=kind,
            subscription=subscription,
            period=period,
            memo=memo,
        )
        return invoice_finalize(invoice=draft, actor=actor, issue_date=issue_date)


SETTLEABLE = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)


def invoice_settle(*, invoice: Invoice, actor=None) -> Invoice:
    """Mark an open invoice paid once its balance is zero; stop its dunning. Caller holds the lock."""
    if invoice.status not in SETTLEABLE:
        return invoice
    _paid, _credited, balance = invoice_balance(invoice)
    if balance > 0:
        return invoice
    assert_transition("invoice", invoice.status, InvoiceStatus.PAID)
    before = invoice.status
    invoice.status = InvoiceStatus.PAID
    invoice.paid_at = timezone.now()
    invoice.save(update_fields=["status", "paid_at", "updated_at"])
    # Paying by any route stops dunning.
    PaymentAttempt.objects.filter(invoice=invoice, status=PaymentAttemptStatus.SCHEDULED).update(
        status=PaymentAttemptStatus.SKIPPED
    )
    events_record_many([_paid_event(invoice, before, actor)])
    if invoice.subscription_id:
        from billing.services.subscriptions import subscription_after_invoice_paid

        subscription_after_invoice_paid(invoice=invoice, actor=actor)
    return invoice


def invoices_settle_many(invoices: Sequence[Invoice], *, actor=None) -> list[Invoice]:
    """``invoice_settle`` for a batch job's invoices (the caller holds their locks): one query
    for the balances, one UPDATE, one INSERT of events. Returns the invoices now paid."""
    payable = {i.pk: i for i in invoices if i.status in SETTLEABLE}
    if not payable:
        return []
    balances = invoices_with_amounts(Invoice.objects.filter(pk__in=payable)).values_list(
        "pk", "balance_due"
    )
    paid = [payable[pk] for pk, balance in balances if balance <= 0]
    if not paid:
        return []
    now = timezone.now()
    befores = {}
    for invoice in paid:
        assert_transition("invoice", invoice.status, InvoiceStatus.PAID)
        befores[invoice.pk] = invoice.status
        invoice.status, invoice.paid_at = InvoiceStatus.PAID, now
    Invoice.objects.filter(pk__in=befores).update(
        status=InvoiceStatus.PAID, paid_at=now, updated_at=now
    )
    PaymentAttempt.objects.filter(
        invoice__in=befores, status=PaymentAttemptStatus.SCHEDULED
    ).update(status=PaymentAttemptStatus.SKIPPED)
    events_record_many([_paid_event(invoice, befores[invoice.pk], actor) for invoice in paid])
    from billing.services.subscriptions import subscriptions_after_invoices_paid

    subscriptions_after_invoices_paid(invoices=paid, actor=actor)
    return paid


def _paid_event(invoice: Invoice, before: str, actor):
    return event_build(
        kind="invoice.paid",
        description=f"Invoice {invoice.number} paid",
        actor=actor,
        customer_id=invoice.customer_id,
        invoice=invoice,
        subscription_id=invoice.subscription_id,
        before={"status": before},
        after={"status": invoice.status},
    )


def _lock_open_invoice(invoice: Invoice) -> Invoice:
    invoice = Invoice.objects.select_for_update(no_key=True).get(pk=invoice.pk)
    if InvoicePaymentLock.objects.filter(invoice=invoice).exists():
        raise PaymentInProgress()
    return invoice


def invoice_void(*, invoice: Invoice, actor=None, reason: str = "") -> Invoice:
    """Void an unpaid invoice; money already applied to it becomes the customer's credit again."""
    with transaction.atomic():
        invoice = _lock_open_invoice(invoice)
        assert_transition(
            "invoice", invoice.status, InvoiceStatus.VOID, "Only an unpaid invoice can be voided."
        )
        before = invoice.status
        invoice.status = InvoiceStatus.VOID
        invoice.voided_at = timezone.now()
        invoice.save(update_fields=["status", "voided_at", "updated_at"])
        PaymentAttempt.objects.filter(
            invoice=invoice, status=PaymentAttemptStatus.SCHEDULED
        ).update(status=PaymentAttemptStatus.SKIPPED)
        # Money applied to it goes back to whoever paid it: perhaps a parent, or a former one.
        books_changed(money_partners((), invoice_id=invoice.pk))
        event_record(
            kind="invoice.voided",
            description=f"Invoice {invoice.number} voided" + (f": {reason}" if reason else ""),
            actor=actor,
            invoice=invoice,
            subscription=invoice.subscription,
            before={"status": before},
            after={"status": invoice.status},
        )
    return invoice


def invoice_mark_uncollectible(*, invoice: Invoice, actor=None) -> Invoice:
    """Write an open invoice off as uncollectible; a later payment still settles it."""
    with transaction.atomic():
        invoice = _lock_open_invoice(invoice)
        assert_transition(
            "invoice",
            invoice.status,
            InvoiceStatus.UNCOLLECTIBLE,
            "Only an open invoice can be marked uncollectible.",
        )
        invoice.status = InvoiceStatus.UNCOLLECTIBLE
        invoice.save(update_fields=["status", "updated_at"])
        PaymentAttempt.objects.filter(
            invoice=invoice, status=PaymentAttemptStatus.SCHEDULED
        ).update(status=PaymentAttemptStatus.SKIPPED)
        event_record(
            kind="invoice.uncollectible",
            description=f"Invoice {invoice.number} marked uncollectible",
            actor=actor,
            invoice=invoice,
            subscription=invoice.subscription,
            before={"status": InvoiceStatus.OPEN},
            after={"status": invoice.status},
        )
    return invoice


def one_time_charges(
    *, customer: Customer, description: str, unit_price: Decimal, quantity: Decimal = Decimal(1)
) -> Totals:
    """The charges summary of a one-time charge (what the confirmation page shows)."""
    if not description.strip():
        raise ValidationFailed("Describe the charge.", field="description")
    if unit_price <= 0:
        raise ValidationFailed("The amount must be more than zero.", field="unit_price")
    if quantity <= 0:
        raise ValidationFailed("The quantity must be more than zero.", field="quantity")
    book = PriceBook(customer, Organization.load())
    amount = round_money(unit_price * quantity, book.currency)
    if amount <= 0:
        # A fraction of a cent rounds to a zero line, which would be "paid" at once for nothing.
        raise ValidationFailed("The amount must be at least one cent.", field="unit_price")
    line = LineDraft(
        kind=InvoiceLineKind.ONE_TIME,
        description=description.strip(),
        quantity=quantity,
        unit_price=unit_price,
        amount=amount,
    )
    return totals([line], book)


def invoice_create_one_time(
    *,
    customer: Customer,
    description: str,
    unit_price: Decimal,
    quantity: Decimal = Decimal(1),
    subscription: Subscription | None = None,
    actor=None,
) -> Invoice:
    """Invoice a one-time charge (from admin) at once; credits apply first."""
    charges = one_time_charges(
        customer=customer, description=description, unit_price=unit_price, quantity=quantity
    )
    return invoice_issue(
        customer=customer,
        charges=charges,
        kind=InvoiceKind.ONE_TIME,
        subscription=subscription,
        actor=actor,
    )
