"""Writes to logins: inviting a customer's contact persons to the portal.

Sign-up is by merchant invitation only (DESIGN §6): staff invite a contact, which creates a login
without a usable password and emails a single-use link to set one. The link is allauth's own
password-reset-from-key URL, so the token checks, expiry and the set-password page are allauth's.
"""

import functools
import logging
from collections.abc import Iterable

from allauth.account.forms import default_token_generator
from allauth.account.models import EmailAddress
from allauth.account.utils import user_pk_to_url_str
from django.conf import settings
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from billing.errors import BillingError, InvalidTransition, NotAllowed, ValidationFailed
from billing.models import ContactPerson, Customer, Organization
from billing.services.events import event_record

logger = logging.getLogger(__name__)

# Contacts an invitation is for: no login yet, or one whose password was never set.
INVITABLE = Q(user__isnull=True) | Q(
    user__is_active=True, user__password__startswith=UNUSABLE_PASSWORD_PREFIX
)


def contact_invite(*, contact: ContactPerson, actor, request: HttpRequest | None = None) -> User:
    """Give a contact a portal login (new or reused, never a staff one) and email a set-password link.

    Re-inviting reuses the login. While the invitation is pending its unusable password is
    regenerated, which makes every earlier link stop working: only the newest email counts.
    A contact whose login already has a password is refused: there is nothing to invite to.
    ``request`` is accepted for callers that have one; links are always built from
    ``settings.SITE_URL`` so that an invitation sent from a worker or a shell reads the same.
    """
    with transaction.atomic():
        contact = (
            ContactPerson.objects.select_for_update(of=("self",))
            .select_related("customer", "user")
            .get(pk=contact.pk)
        )
        email = contact.email.strip().lower()
        if not email:
            raise ValidationFailed(f"{contact.full_name} has no email address to invite.")

        if contact.user is not None and contact.user.has_usable_password():
            raise InvalidTransition(
                f"{email} has already set a password and signs in with it; "
                "a forgotten password is reset from the sign-in page."
            )
        user = contact.user or User.objects.filter(email__iexact=email).first()
        if user is not None:
            _invitee_check(contact=contact, user=user, email=email)

        before = {
            "user_id": contact.user_id,
            "invited_at": contact.invited_at.isoformat() if contact.invited_at else None,
        }
        if user is None:
            user = _user_create(email=email, full_name=contact.full_name)
        elif not user.has_usable_password():
            # A pending invitation: a new unusable password voids the links sent before.
            user.set_unusable_password()
            user.save(update_fields=["password"])
        _email_address_verify(user)

        contact.user = user
        contact.invited_at = timezone.now()
        contact.save(update_fields=["user", "invited_at", "updated_at"])
        event_record(
            kind="contact.invited",
            description=f"{contact.full_name} <{user.email}> invited to the portal",
            actor=actor,
            customer=contact.customer,
            before=before,
            after={"user_id": user.pk, "invited_at": contact.invited_at.isoformat()},
        )
        # robust: a mail server hiccup must not turn the committed invitation into an error
        # page; it is logged, and sending the invitation again is always possible.
        transaction.on_commit(
            functools.partial(_invitation_email_send, contact_id=contact.pk), robust=True
        )
    return user


def contacts_invite(*, customers: Iterable[Customer], actor) -> int:
    """Invite every contact of these customers who has no login yet; all of them or none.

    "No login yet" means no user, or an invitation still pending (the password was never set):
    those get a fresh link. Contacts without an email are skipped. If any contact is refused
    (e.g. its email belongs to a staff account) nothing is written and nothing is sent; the
    error names every refused contact. Returns how many contacts were invited.
    """
    if isinstance(customers, QuerySet):
        customer_pks = set(customers.order_by().values_list("pk", flat=True))
    else:
        customer_pks = {customer.pk for customer in customers}
    with transaction.atomic():
        contacts = list(
            ContactPerson.objects.select_for_update(of=("self",))
            .filter(customer__in=customer_pks)
            .exclude(email="")
            .filter(INVITABLE)
            .order_by("pk")
        )
        refusals: list[str] = []
        invited = 0
        for contact in contacts:
            try:
                contact_invite(contact=contact, actor=actor)
            except BillingError as error:
                refusals.append(error.message)
            else:
                invited += 1
        if refusals:
            # Raising rolls back every invitation above, and their emails with them.
            raise NotAllowed("No invitations were sent. Refused: " + "; ".join(refusals))
        return invited


def _invitee_check(*, contact: ContactPerson, user: User, email: str) -> None:
    """Refuse logins that must not become (or stay) this contact's portal login."""
    if user.is_staff or user.is_superuser:
        raise NotAllowed(
            f"{email} belongs to a staff account; staff accounts cannot be portal logins."
        )
    if not user.is_active:
        raise NotAllowed(f"The portal login {user.email} is deactivated; reactivate it first.")
    if user.email.lower() != email:
        raise ValidationFailed(
            f"The contact's email ({email}) differs from its portal login ({user.email})."
        )
    other = ContactPerson.objects.filter(user=user).exclude(pk=contact.pk).first()
    if other is not None:
        # One login is one contact (ContactPerson.user is one-to-one).
        raise NotAllowed(f"{email} is already the portal login of a contact of {other.customer}.")


def _user_create(*, email: str, full_name: str) -> User:
    try:
        with transaction.atomic():
            # No password: the invitee chooses one through the emailed link.
            return User.objects.create_user(email=email, password=None, full_name=full_name)
    except IntegrityError as error:
        raise BillingError(f"A login for {email} was created at the same moment; retry.") from error


def _email_address_verify(user: User) -> None:
    """The invitation link reaches only the owner of the address, so it counts as verified."""
    if (
        EmailAddress.objects.filter(email__iexact=user.email, verified=True)
        .exclude(user=user)
        .exists()
    ):
        raise NotAllowed(f"{user.email} is already a verified address of another login.")
    address = EmailAddress.objects.filter(user=user, email__iexact=user.email).first()
    other_primaries = EmailAddress.objects.filter(user=user, primary=True)
    if address is not None:
        other_primaries = other_primaries.exclude(pk=address.pk)
    other_primaries.update(primary=False)
    if address is None:
        EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    elif not (address.verified and address.primary):
        address.verified = True
        address.primary = True
        address.save(update_fields=["verified", "primary"])


def invitation_url(user: User) -> str:
    """The absolute, single-use set-password link: void once a password is set or it expires."""
    path = reverse(
        "account_reset_password_from_key",
        kwargs={
            "uidb36": user_pk_to_url_str(user),
            "key": default_token_generator.make_token(user),
        },
    )
    return f"{settings.SITE_URL.rstrip('/')}{path}"


def _invitation_email_send(*, contact_id: int) -> None:
    """Send the invitation (after commit). Takes an id so a Celery task can run it as is."""
    contact = (
        ContactPerson.objects.select_related("customer", "user")
        .filter(pk=contact_id, user__isnull=False)
        .first()
    )
    if contact is None:
        logger.info("Invitation for contact %s not sent: no login any more.", contact_id)
        return
    organization = Organization.load()
    context = {
        "contact": contact,
        "customer": contact.customer,
        "organization": organization,
        "merchant_name": organization.name,
        "invitation_url": invitation_url(contact.user),
        "expiry_days": max(1, settings.PASSWORD_RESET_TIMEOUT // 86400),
        "login_email": contact.user.email,
    }
    message = EmailMultiAlternatives(
        subject=f"{organization.name}: your invitation to the billing portal",
        body=render_to_string("emails/portal_invitation.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[contact.user.email],
        reply_to=[organization.email] if organization.email else None,
    )
    message.attach_alternative(
        render_to_string("emails/portal_invitation.html", context), "text/html"
    )
    message.send()


def user_mfa_reset(*, user: User, actor) -> int:
    """Staff: remove a user's MFA devices (after verifying who asked), so they enrol again.

    Also lifts the lock a run of wrong codes put on the account.
    """
    from accounts.otp import devices_reset

    with transaction.atomic():
        User.objects.select_for_update().get(pk=user.pk)
        removed = devices_reset(user)
        contact = ContactPerson.objects.filter(user=user).select_related("customer").first()
        event_record(
            kind="user.mfa_reset",
            description=f"Two-factor authentication of {user.email} reset by staff",
            actor=actor,
            customer=contact.customer if contact else None,
            before={"devices": removed},
            after={"devices": 0},
        )
    return removed
