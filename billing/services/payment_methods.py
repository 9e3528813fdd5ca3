"""Saved cards: add (tokenized by the gateway), make default, replace, remove.

The card number and CVC pass through ``payment_method_add`` to the gateway and are dropped:
only the token, brand, last 4 and expiry are stored.
"""

from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from billing.enums import PaymentStatus, SubscriptionStatus
from billing.errors import NotAllowed, PaymentInProgress
from billing.gateways import get_gateway
from billing.models import Customer, Payment, PaymentMethod, Subscription
from billing.services.events import event_record

# Subscriptions that will still be charged: a card they rely on cannot simply disappear.
CHARGEABLE_STATUSES = (
    SubscriptionStatus.FUTURE,
    SubscriptionStatus.IN_TRIAL,
    SubscriptionStatus.LIVE,
    SubscriptionStatus.NON_RENEWING,
    SubscriptionStatus.PAUSED,
    SubscriptionStatus.PAST_DUE,
    SubscriptionStatus.UNPAID,
)


@sensitive_variables("number", "cvc")
def payment_method_add(
    *,
    customer: Customer,
    number: str,
    exp_month: int,
    exp_year: int,
    cvc: str,
    cardholder_name: str = "",
    make_default: bool = False,
    use_for_subscriptions: bool = False,
    actor=None,
) -> PaymentMethod:
    """Tokenize a card and save it; optionally make it the default and the auto-charge card."""
    gateway = get_gateway()
    card = gateway.tokenize_card(
        number=number,
        exp_month=exp_month,
        exp_year=exp_year,
        cvc=cvc,
        cardholder_name=cardholder_name,
    )
    with transaction.atomic():
        Customer.objects.select_for_update(no_key=True).get(pk=customer.pk)
        first = not PaymentMethod.objects.filter(customer=customer).exists()
        if make_default or first:
            PaymentMethod.objects.filter(customer=customer, is_default=True).update(
                is_default=False
            )
        method = PaymentMethod.objects.create(
            customer=customer,
            gateway=gateway.name,
            token=card.token,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            cardholder_name=card.cardholder_name,
            is_default=make_default or first,
        )
        event_record(
            kind="payment_method.added",
            description=f"Card {method} added" + (" as default" if method.is_default else ""),
            actor=actor,
            customer=customer,
            after={"card": str(method)},
        )
        if use_for_subscriptions:
            _move_subscriptions(
                Subscription.objects.filter(customer=customer, status__in=CHARGEABLE_STATUSES),
                method,
                actor,
            )
    return method


def _move_subscriptions(subscriptions, method: PaymentMethod, actor) -> int:
    moved = 0
    for subscription in subscriptions.select_for_update(no_key=True).order_by("pk"):
        before = subscription.payment_method_id
        if before == method.pk:
            continue
        subscription.payment_method = method
        subscription.save(update_fields=["payment_method", "updated_at"])
        event_record(
            kind="subscription.payment_method_changed",
            description=f"Auto-charge card set to {method}",
            actor=actor,
            subscription=subscription,
            before={"payment_method": before},
            after={"payment_method": method.pk},
        )
        moved += 1
    return moved


def _refuse_if_paying(method: PaymentMethod) -> None:
    """A card with a charge in flight (pending, or unknown until reconciled) must stay: the
    reconciliation may need to send that charge again under its key."""
    in_flight = (PaymentStatus.PENDING, PaymentStatus.UNKNOWN)
    if Payment.objects.filter(method_id=method.pk, status__in=in_flight).exists():
        raise PaymentInProgress(
            "A payment with this card is still being processed. Please try again in a few minutes."
        )


def payment_method_set_default(*, method: PaymentMethod, actor=None) -> PaymentMethod:
    with transaction.atomic():
        Customer.objects.select_for_update(no_key=True).get(pk=method.customer_id)
        PaymentMethod.objects.filter(customer_id=method.customer_id, is_default=True).exclude(
            pk=method.pk
        ).update(is_default=False)
        PaymentMethod.objects.filter(pk=method.pk).update(is_default=True)
        method.refresh_from_db()
        event_record(
            kind="payment_method.default",
            description=f"Card {method} made the default",
            actor=actor,
            customer=method.customer,
        )
    return method


def payment_method_replace(*, old: PaymentMethod, new: PaymentMethod, actor=None) -> int:
    """Move every subscription that used ``old`` to ``new``, then remove ``old``."""
    if old.customer_id != new.customer_id or old.pk == new.pk:
        raise NotAllowed("Choose another card of the same account.")
    with transaction.atomic():
        Customer.objects.select_for_update(no_key=True).get(pk=old.customer_id)
        # Re-read under the lock: the caller's copy may predate a change of default card.
        old = PaymentMethod.objects.get(pk=old.pk)
        new = PaymentMethod.objects.get(pk=new.pk)
        _refuse_if_paying(old)
        moved = _move_subscriptions(Subscription.objects.filter(payment_method=old), new, actor)
        if old.is_default:
            PaymentMethod.objects.filter(pk=old.pk).update(is_default=False)
            PaymentMethod.objects.filter(pk=new.pk).update(is_default=True)
        _delete(old, actor)
    return moved


def payment_method_remove(*, method: PaymentMethod, actor=None) -> None:
    """Remove a card. Refused while it is the only card of an auto-charged subscription."""
    with transaction.atomic():
        Customer.objects.select_for_update(no_key=True).get(pk=method.customer_id)
        method = PaymentMethod.objects.get(pk=method.pk)
        _refuse_if_paying(method)
        dependants = Subscription.objects.filter(
            payment_method=method, auto_charge=True, status__in=CHARGEABLE_STATUSES
        )
        others = PaymentMethod.objects.filter(customer_id=method.customer_id).exclude(pk=method.pk)
        replacement = (
            others.filter(is_default=True).first() or others.order_by("-created_at").first()
        )
        if dependants.exists():
            if replacement is None:
                raise NotAllowed(
                    "This card pays a subscription automatically. Add another card first, "
                    "or turn auto-charge off."
                )
            _move_subscriptions(dependants, replacement, actor)
        if method.is_default and replacement is not None:
            PaymentMethod.objects.filter(pk=method.pk).update(is_default=False)
            PaymentMethod.objects.filter(pk=replacement.pk).update(is_default=True)
        _delete(method, actor)


def _delete(method: PaymentMethod, actor) -> None:
    event_record(
        kind="payment_method.removed",
        description=f"Card {method} removed",
        actor=actor,
        customer=method.customer,
        before={"card": str(method)},
    )
    # Payments keep their method_label; their foreign key is cleared by SET_NULL.
    method.delete()
