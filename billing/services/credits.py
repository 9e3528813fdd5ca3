"""Credit notes and applying credit to invoices. A remaining balance is always a sum of rows.

Credit comes from two places: issued credit notes (proration, cancellation, goodwill…) and the
unapplied part of succeeded payments (an overpayment, or money on an invoice later voided). Both
are applied oldest first by allocation rows. A parent's credit can pay a visible child's invoice.
"""

from decimal import Decimal

from django.db import transaction
from django.db.models import Sum

from billing.clock import billing_today
from billing.enums import CreditNoteReason, CreditNoteStatus, DocumentKind, InvoiceStatus
from billing.errors import InvalidTransition, NotAllowed, PaymentInProgress, ValidationFailed
from billing.models import (
    CreditAllocation,
    CreditNote,
    Customer,
    Invoice,
    InvoicePaymentLock,
    Organization,
    PaymentAllocation,
    Subscription,
)
from billing.money import ZERO, round_money
from billing.periods import local_date
from billing.selectors import available_credits, credit_notes_with_remaining, invoice_balance
from billing.services.events import event_record
from billing.services.numbering import document_number_allocate


def credit_note_issue(
    *,
    customer: Customer,
    amount: Decimal,
    reason: str,
    invoice: Invoice | None = None,
    subscription: Subscription | None = None,
    memo: str = "",
    actor=None,
) -> CreditNote:
    """Issue a numbered credit note; it is customer credit until applied or refunded."""
    organization = Organization.load()
    amount = round_money(amount, organization.base_currency)
    if amount <= 0:
        raise ValidationFailed("A credit note must be for more than zero.", field="amount")
    if reason not in CreditNoteReason.values:
        raise ValidationFailed("Choose a reason.", field="reason")
    if invoice is not None and invoice.customer_id != customer.pk:
        raise ValidationFailed("That invoice belongs to another customer.", field="invoice")
    with transaction.atomic():
        if invoice is not None:
            # Locked so two credit notes for the same invoice cannot both fit its total.
            invoice = Invoice.objects.select_for_update(no_key=True).get(pk=invoice.pk)
            _check_creditable(invoice, amount)
        note = CreditNote.objects.create(
            number=document_number_allocate(kind=DocumentKind.CREDIT_NOTE),
            customer=customer,
            invoice=invoice,
            subscription=subscription,
            reason=reason,
            currency=organization.base_currency,
            amount=amount,
            issue_date=billing_today(organization),
            memo=memo,
        )
        event_record(
            kind="credit_note.issued",
            description=f"Credit note {note.number} for {note.currency} {note.amount} "
            f"({note.get_reason_display().lower()})",
            actor=actor,
            customer=customer,
            credit_note=note,
            subscription=subscription,
            invoice=invoice,
            after={"amount": str(amount), "reason": reason},
        )
    return note


def _check_creditable(invoice: Invoice, amount: Decimal) -> None:
    """A credit note corrects a finalized, not voided invoice, and all of its notes together
    never credit more than the invoice's total."""
    if invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
        raise ValidationFailed(
            "Only a finalized invoice that is not void can be credited.", field="invoice"
        )
    credited = (
        CreditNote.objects.filter(invoice=invoice, status=CreditNoteStatus.ISSUED).aggregate(
            total=Sum("amount")
        )["total"]
        or ZERO
    )
    creditable = invoice.total - credited
    if amount > creditable:
        raise ValidationFailed(
            f"A credit note cannot exceed what is left to credit on invoice {invoice.number} "
            f"({invoice.currency} {creditable}).",
            field="amount",
        )


def credit_note_void(*, credit_note: CreditNote, actor=None) -> CreditNote:
    """Void an unused credit note (one already applied or refunded must stay)."""
    with transaction.atomic():
        note = credit_notes_with_remaining(
            CreditNote.objects.select_for_update(no_key=True).filter(pk=credit_note.pk)
        ).get()
        if note.status != CreditNoteStatus.ISSUED:
            raise InvalidTransition("This credit note is already void.")
        if note.remaining != note.amount:
            raise InvalidTransition("This credit note has been used and cannot be voided.")
        note.status = CreditNoteStatus.VOID
        note.save(update_fields=["status", "updated_at"])
        event_record(
            kind="credit_note.voided",
            description=f"Credit note {note.number} voided",
            actor=actor,
            customer=note.customer,
            credit_note=note,
            before={"status": CreditNoteStatus.ISSUED},
            after={"status": CreditNoteStatus.VOID},
        )
    return note


def _credit_owner_allowed(invoice: Invoice, owner: Customer) -> bool:
    if owner.pk == invoice.customer_id:
        return True
    child = invoice.customer
    return child.parent_id == owner.pk and child.visible_to_parent


def credits_apply_to_invoice(
    *, invoice: Invoice, actor=None, owner: Customer | None = None, limit: Decimal | None = None
) -> Decimal:
    """Apply the owner's credit (default: the invoice's customer) oldest first; return the amount.

    The owner's customer row is locked first, so two applications of the same credit serialise.
    """
    owner = owner or invoice.customer
    if not _credit_owner_allowed(invoice, owner):
        raise NotAllowed("That customer's credit cannot pay this invoice.")
    with transaction.atomic():
        Customer.objects.select_for_update(no_key=True).get(pk=owner.pk)
        invoice = Invoice.objects.select_for_update(no_key=True).get(pk=invoice.pk)
        if invoice.status not in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
            raise InvalidTransition("Credit can only be applied to an unpaid invoice.")
        if InvoicePaymentLock.objects.filter(invoice=invoice).exists():
            # A card payment for this balance is in flight: credit now could pay it twice.
            raise PaymentInProgress()
        _paid, _credited, balance = invoice_balance(invoice)
        wanted = balance if limit is None else min(balance, limit)
        applied = ZERO
        notes, payments = available_credits([owner])
        # Oldest first by the organization's calendar date (a credit note's issue date is one),
        # then by the moment it was created.
        zone = Organization.load().zone
        sources = sorted(
            [(n.issue_date, n.created_at, "note", n) for n in notes]
            + [(local_date(p.created_at, zone), p.created_at, "payment", p) for p in payments],
            key=lambda source: (source[0], source[1]),
        )
        already_paid_by = set(
            PaymentAllocation.objects.filter(invoice=invoice).values_list("payment_id", flat=True)
        )
        for _day, _at, kind, source in sources:
            if applied >= wanted:
                break
            if kind == "note":
                amount = min(source.remaining, wanted - applied)
                CreditAllocation.objects.create(credit_note=source, invoice=invoice, amount=amount)
                label = f"credit note {source.number}"
            else:
                if source.pk in already_paid_by:
                    continue  # one allocation row per (payment, invoice)
                amount = min(source.unapplied, wanted - applied)
                PaymentAllocation.objects.create(payment=source, invoice=invoice, amount=amount)
                label = f"unapplied payment {source}"
            applied += amount
            event_record(
                kind="credit.applied",
                description=f"{invoice.currency} {amount} of {label} applied to invoice {invoice.number}",
                actor=actor,
                customer=invoice.customer,
                invoice=invoice,
                credit_note=source if kind == "note" else None,
                payment=source if kind == "payment" else None,
                after={"amount": str(amount)},
            )
        if applied:
            from billing.services.invoices import invoice_settle

            invoice_settle(invoice=invoice, actor=actor)
    return applied


def credits_apply_to_open_invoices(*, customer: Customer, actor=None) -> Decimal:
    """Apply a customer's credit to its open invoices, oldest due first."""
    from billing.selectors import open_invoices

    applied = ZERO
    for invoice in open_invoices([customer]).filter(payment_lock__isnull=True):
        try:
            applied += credits_apply_to_invoice(invoice=invoice, actor=actor)
        except PaymentInProgress:
            continue  # a card payment started meanwhile; its outcome settles the invoice
    return applied
