"""Portal writes about the customer itself: its details, its contact persons, messages and
reviews it sends the merchant.

Same rules as billing/services: keyword-only and typed, one transaction each, the customer row
locked first (so two admins editing contacts at once take turns), an Event per change, and the
email to the merchant sent only after the transaction commits.
"""

import logging
import time
from dataclasses import asdict, dataclass, fields

from django.conf import settings
from django.core.cache import cache
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string

from billing.enums import PortalRole
from billing.errors import BillingError, ValidationFailed
from billing.models import ContactPerson, Customer, Organization
from billing.services.events import event_record
from portal.models import ContactMessage, Review

logger = logging.getLogger(__name__)

CONTACT_MESSAGE_LIMIT = 5
CONTACT_MESSAGE_WINDOW_SECONDS = 3600


class TooManyMessages(BillingError):
    default_message = "You have sent several messages in a short time. Please try again later."


@dataclass(frozen=True)
class CustomerDetails:
    """What a customer's portal admin may change about the customer (nothing about billing)."""

    company_name: str
    email: str
    phone: str
    tax_id: str
    billing_line1: str
    billing_line2: str
    billing_city: str
    billing_state: str
    billing_postal_code: str
    billing_country: str
    shipping_line1: str
    shipping_line2: str
    shipping_city: str
    shipping_state: str
    shipping_postal_code: str
    shipping_country: str


CUSTOMER_DETAIL_FIELDS = tuple(f.name for f in fields(CustomerDetails))


@dataclass(frozen=True)
class ContactDetails:
    first_name: str
    last_name: str
    email: str
    phone: str
    receives_documents: bool
    portal_role: str


CONTACT_FIELDS = tuple(f.name for f in fields(ContactDetails))


def _lock_customer(customer: Customer) -> Customer:
    return Customer.objects.select_for_update(no_key=True).get(pk=customer.pk)


def customer_update_details(*, customer: Customer, details: CustomerDetails, actor) -> Customer:
    """Change the customer's contact details and addresses. Finalized invoices keep the
    snapshot taken when they were issued; only later invoices print the new details."""
    if not details.email.strip():
        raise ValidationFailed("Enter the email address invoices go to.", field="email")
    with transaction.atomic():
        locked = _lock_customer(customer)
        wanted = asdict(details)
        changed = [name for name in CUSTOMER_DETAIL_FIELDS if getattr(locked, name) != wanted[name]]
        if not changed:
            return locked
        before = {name: getattr(locked, name) for name in changed}
        for name in changed:
            setattr(locked, name, wanted[name])
        locked.save(update_fields=[*changed, "updated_at"])
        labels = ", ".join(str(Customer._meta.get_field(name).verbose_name) for name in changed[:6])
        event_record(
            kind="customer.details_updated",
            description=f"Company details updated: {labels}",
            actor=actor,
            customer=locked,
            before=before,
            after={name: wanted[name] for name in changed},
        )
    return locked


def _contact_state(contact: ContactPerson) -> dict:
    return {name: getattr(contact, name) for name in CONTACT_FIELDS}


def _refuse_duplicate_email(customer: Customer, email: str, exclude_pk: int | None) -> None:
    others = ContactPerson.objects.filter(customer=customer, email__iexact=email)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    if others.exists():
        raise ValidationFailed("Another contact already uses this email address.", field="email")


def _refuse_losing_last_admin(contact: ContactPerson, *, removing: bool, new_role: str) -> None:
    """A customer keeps at least one admin who can sign in: without one, nobody in the
    company could manage contacts or subscriptions in the portal any more."""
    if contact.portal_role != PortalRole.ADMIN or contact.user_id is None:
        return
    if not removing and new_role == PortalRole.ADMIN:
        return
    other_admins = ContactPerson.objects.filter(
        customer_id=contact.customer_id, portal_role=PortalRole.ADMIN, user__isnull=False
    ).exclude(pk=contact.pk)
    if not other_admins.exists():
        action = "removed" if removing else "given another role"
        raise ValidationFailed(
            f"{contact.full_name} is the only admin with portal access and cannot be {action}. "
            "Make another contact with a portal login an admin first.",
            field="portal_role",
        )


def _validate_contact(details: ContactDetails) -> None:
    if not details.first_name.strip():
        raise ValidationFailed("Enter a first name.", field="first_name")
    if not details.email.strip():
        raise ValidationFailed("Enter an email address.", field="email")
    if details.portal_role not in PortalRole.values:
        raise ValidationFailed("Choose a portal role.", field="portal_role")


def contact_create(*, customer: Customer, details: ContactDetails, actor) -> ContactPerson:
    """Add a contact person. It gets no portal login here: the merchant invites people."""
    _validate_contact(details)
    with transaction.atomic():
        locked = _lock_customer(customer)
        _refuse_duplicate_email(locked, details.email, None)
        try:
            with transaction.atomic():
                contact = ContactPerson.objects.create(customer=locked, **asdict(details))
        except IntegrityError:
            raise ValidationFailed(
                "Another contact already uses this email address.", field="email"
            ) from None
        event_record(
            kind="contact.added",
            description=f"Contact {contact.full_name} <{contact.email}> added",
            actor=actor,
            customer=locked,
            after={"public_id": str(contact.public_id), **_contact_state(contact)},
        )
    return contact


def contact_update(*, contact: ContactPerson, details: ContactDetails, actor) -> ContactPerson:
    """Change a contact person; the customer never loses its last admin with a login."""
    _validate_contact(details)
    with transaction.atomic():
        locked_customer = _lock_customer(contact.customer)
        locked = ContactPerson.objects.select_for_update().get(pk=contact.pk)
        _refuse_duplicate_email(locked_customer, details.email, locked.pk)
        _refuse_losing_last_admin(locked, removing=False, new_role=details.portal_role)
        before = _contact_state(locked)
        after = asdict(details)
        changed = [name for name in CONTACT_FIELDS if before[name] != after[name]]
        if not changed:
            return locked
        for name in changed:
            setattr(locked, name, after[name])
        locked.save(update_fields=[*changed, "updated_at"])
        event_record(
            kind="contact.updated",
            description=f"Contact {locked.full_name} updated: {', '.join(changed)}",
            actor=actor,
            customer=locked_customer,
            before={"public_id": str(locked.public_id)} | {n: before[n] for n in changed},
            after={"public_id": str(locked.public_id)} | {n: after[n] for n in changed},
        )
    return locked


def contact_delete(*, contact: ContactPerson, actor) -> None:
    """Remove a contact person (its login, if any, then reaches no customer's portal)."""
    with transaction.atomic():
        locked_customer = _lock_customer(contact.customer)
        locked = ContactPerson.objects.select_for_update().get(pk=contact.pk)
        _refuse_losing_last_admin(locked, removing=True, new_role="")
        before = {"public_id": str(locked.public_id), **_contact_state(locked)}
        name, email = locked.full_name, locked.email
        locked.delete()
        event_record(
            kind="contact.removed",
            description=f"Contact {name} <{email}> removed",
            actor=actor,
            customer=locked_customer,
            before=before,
        )


def _contact_rate_limit(author) -> None:
    """At most CONTACT_MESSAGE_LIMIT messages per portal user per hour, counted in the shared
    cache (Redis in production) so every web process sees the same count."""
    count_key = f"portal:contact-message:user:{author.pk}"
    start_key = f"{count_key}:start"
    now = time.time()
    cache.add(start_key, now, CONTACT_MESSAGE_WINDOW_SECONDS)
    cache.add(count_key, 0, CONTACT_MESSAGE_WINDOW_SECONDS)
    try:
        count = cache.incr(count_key)
    except ValueError:  # the window ended between add and incr: a new one starts
        cache.set(start_key, now, CONTACT_MESSAGE_WINDOW_SECONDS)
        cache.set(count_key, 1, CONTACT_MESSAGE_WINDOW_SECONDS)
        count = 1
    if count > CONTACT_MESSAGE_LIMIT:
        started = cache.get(start_key) or now
        minutes = max(1, round((started + CONTACT_MESSAGE_WINDOW_SECONDS - now) / 60))
        raise TooManyMessages(
            f"You have sent {CONTACT_MESSAGE_LIMIT} messages in the last hour. "
            f"Please try again in about {minutes} minute{'s' if minutes != 1 else ''}."
        )


def _contact_message_email(message_id: int) -> None:
    message = ContactMessage.objects.select_related("customer", "author").get(pk=message_id)
    organization = Organization.load()
    if not organization.email:
        logger.warning("contact message %s not emailed: the organization has no email", message_id)
        return
    context = {"message": message, "organization": organization, "site_url": settings.SITE_URL}
    reply_to = [message.author.email] if message.author and message.author.email else None
    EmailMessage(
        subject=f"[Portal] {message.customer.display_name}: {message.subject}"[:200],
        body=render_to_string("portal/contact/email.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[organization.email],
        reply_to=reply_to,
    ).send()


def contact_message_send(*, customer: Customer, author, subject: str, body: str) -> ContactMessage:
    """Store the customer's message for staff and email it to the merchant after commit."""
    subject, body = subject.strip(), body.strip()
    if not subject:
        raise ValidationFailed("Enter a subject.", field="subject")
    if not body:
        raise ValidationFailed("Enter your message.", field="body")
    _contact_rate_limit(author)
    with transaction.atomic():
        message = ContactMessage.objects.create(
            customer=customer, author=author, subject=subject, body=body
        )
        event_record(
            kind="contact_message.sent",
            description=f"Message to the merchant: {subject}",
            actor=author,
            customer=customer,
            after={"message_id": message.pk},
        )
        # robust: a mail server that is down must not turn a stored message into an error page.
        transaction.on_commit(lambda: _contact_message_email(message.pk), robust=True)
    return message


def review_create(*, customer: Customer, author, rating: int, text: str = "") -> Review:
    """Record the customer's rating of the merchant (1–5); only staff ever read reviews."""
    if rating not in range(1, 6):
        raise ValidationFailed("Choose a rating from 1 to 5 stars.", field="rating")
    with transaction.atomic():
        review = Review.objects.create(
            customer=customer, author=author, rating=rating, text=text.strip()
        )
        event_record(
            kind="review.created",
            description=f"Review left: {rating}/5",
            actor=author,
            customer=customer,
            after={"review_id": review.pk, "rating": rating},
        )
    return review
