"""Template helpers for the portal's invoice tables, in Python because they run once a row."""

import datetime

from django import template
from django.utils.html import format_html

from billing.enums import InvoiceStatus

register = template.Library()

# Status → (badge class, label). Overdue and partially paid are derived, never stored.
FIXED_BADGES = {
    InvoiceStatus.PAID: ("text-bg-success", "Paid"),
    InvoiceStatus.VOID: ("text-bg-secondary", "Void"),
    InvoiceStatus.UNCOLLECTIBLE: ("text-bg-dark", "Uncollectible"),
}


def invoice_badge_parts(invoice, today: datetime.date | None) -> tuple[str, str]:
    """(badge class, label) of an invoice as the customer reads it on ``today``."""
    fixed = FIXED_BADGES.get(invoice.status)
    if fixed is not None:
        return fixed
    if invoice.due_date and today and invoice.due_date < today:
        return "text-bg-danger", "Overdue"
    if getattr(invoice, "amount_paid", None) or getattr(invoice, "credits_applied", None):
        return "text-bg-warning", "Partially paid"
    return "text-bg-primary", "Open"


@register.filter
def invoice_badge(invoice, today):
    """``{{ invoice|invoice_badge:today }}``: the status badge (paid, void, overdue, ...)."""
    css, label = invoice_badge_parts(invoice, today if isinstance(today, datetime.date) else None)
    return format_html('<span class="badge {}">{}</span>', css, label)
