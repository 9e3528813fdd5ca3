"""Portal writes that belong to no billing aggregate: forwarding documents by email.

Same rules as billing/services: keyword-only, atomic, an Event per change, side effects (mail)
after commit.
"""

from django.conf import settings
from django.core import mail
from django.core.cache import cache
from django.db import transaction
from django.template.loader import render_to_string

from billing.enums import InvoiceStatus
from billing.errors import InvalidTransition, NotAllowed, ValidationFailed
from billing.models import ContactPerson, Invoice, Organization
from billing.selectors import invoice_document, invoices_with_amounts
from billing.services.events import event_record

FORWARD_LIMIT = 5
FORWARD_WINDOW_SECONDS = 3600


def forward_recipients_allowed(invoice: Invoice) -> list[int]:
    """Customers whose contacts may receive this invoice: its customer, and the parent company
    when the branch shares its transactions with it."""
    customer = invoice.customer
    allowed = [customer.pk]
    if customer.parent_id is not None and customer.visible_to_parent:
        allowed.append(customer.parent_id)
    return allowed


def _forward_rate_limit(actor) -> None:
    """At most FORWARD_LIMIT forwards per portal user per hour, counted in the shared cache
    (Redis), so every web process sees the same count. A refused attempt counts too."""
    if actor is None:
        return
    key = f"portal:invoice-forward:user:{actor.pk}"
    cache.add(key, 0, FORWARD_WINDOW_SECONDS)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: a new window starts
        cache.set(key, 1, FORWARD_WINDOW_SECONDS)
        count = 1
    if count > FORWARD_LIMIT:
        raise NotAllowed(
            f"You can forward at most {FORWARD_LIMIT} invoices an hour. Please try again later."
        )


def invoice_forward(*, invoice: Invoice, contacts: list[ContactPerson], actor) -> int:
    """Email the invoice PDF to the chosen contacts of its customer (or of the parent company it
    shares with); record an ``invoice.forwarded`` event. Returns the number of recipients."""
    if invoice.status == InvoiceStatus.DRAFT:
        raise InvalidTransition("A draft invoice cannot be forwarded.")
    if not contacts:
        raise ValidationFailed("Choose at least one contact.", field="contacts")
    allowed = forward_recipients_allowed(invoice)
    if any(contact.customer_id not in allowed for contact in contacts):
        raise ValidationFailed("Choose among your company's contacts.", field="contacts")
    addresses = sorted({contact.email for contact in contacts if contact.email})
    if not addresses:
        raise ValidationFailed("The chosen contacts have no email address.", field="contacts")
    _forward_rate_limit(actor)
    with transaction.atomic():
        event_record(
            kind="invoice.forwarded",
            description=f"Invoice {invoice.number} forwarded to {', '.join(addresses)}",
            actor=actor,
            invoice=invoice,
            after={"recipients": addresses},
        )
        sender = actor.get_full_name() if actor is not None else ""
        # robust: the forward is recorded; a mail server failure is logged, not a 500.
        transaction.on_commit(
            lambda: invoice_forward_send(invoice_id=invoice.pk, addresses=addresses, sender=sender),
            robust=True,
        )
    return len(addresses)


def invoice_forward_send(*, invoice_id: int, addresses: list[str], sender: str = "") -> None:
    """Render the PDF once and send one message per recipient (they need not see each other)."""
    from portal.documents import render_pdf

    invoice = invoices_with_amounts(Invoice.objects.select_related("customer")).get(pk=invoice_id)
    organization = Organization.load()
    context = invoice_document(invoice, organization=organization)
    pdf = render_pdf("documents/invoice.html", context)
    subject = f"Invoice {invoice.number} from {organization.name}"
    body = render_to_string("portal/invoices/forward_email.txt", {**context, "sender": sender})
    messages = []
    for address in addresses:
        message = mail.EmailMessage(
            subject=subject,
            body=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[address],
            reply_to=[organization.email] if organization.email else None,
        )
        message.attach(f"invoice-{invoice.number}.pdf", pdf, "application/pdf")
        messages.append(message)
    mail.get_connection().send_messages(messages)
