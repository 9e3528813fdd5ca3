"""Saved cards: list, add, make default, remove, replace.

Every page that changes a card asks for a recent re-authentication first (password or code),
so a borrowed or stolen session cannot swap the card that pays the subscriptions. The pages
behind a change are GET confirmation pages too, so after re-authenticating the customer lands
on the same step and confirms it again (a POST that arrives too late is never carried out).
Only the signed-in customer's own cards are managed here, never a branch's.
"""

from django.contrib import messages
from django.db.models import Q
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods

from accounts.decorators import recent_login_required
from billing.enums import PortalRole
from billing.errors import BillingError
from billing.models import PaymentMethod, Subscription
from billing.services.payment_methods import (
    CHARGEABLE_STATUSES,
    payment_method_add,
    payment_method_remove,
    payment_method_replace,
    payment_method_set_default,
)
from portal.access import portal_view
from portal.payment_forms import AddCardForm, ReplaceCardForm

MANAGE = {"role": PortalRole.PAYER, "preference": "allow_payment_method_changes"}
# How many subscriptions a card lists by name before "and N more".
SHOWN_SUBSCRIPTIONS = 5


def _own_cards(portal):
    return PaymentMethod.objects.filter(customer=portal.customer)


def _card(request, public_id) -> PaymentMethod:
    return request.portal.get(_own_cards(request.portal), public_id)


@portal_view(**MANAGE)
@require_GET
def payment_methods(request):
    cards = list(_own_cards(request.portal))
    default = next((card for card in cards if card.is_default), None)
    # Auto-charged subscriptions without a card of their own are charged to the default card.
    users = (
        Subscription.objects.filter(
            customer=request.portal.customer, status__in=CHARGEABLE_STATUSES
        )
        .filter(Q(payment_method__in=cards) | Q(payment_method__isnull=True, auto_charge=True))
        .select_related("plan")
        .order_by("pk")
    )
    used_by: dict[int, list] = {card.pk: [] for card in cards}
    for subscription in users:
        card_id = subscription.payment_method_id or (default.pk if default else None)
        if card_id in used_by:
            used_by[card_id].append(subscription)
    for card in cards:
        card.subscriptions_shown = used_by[card.pk][:SHOWN_SUBSCRIPTIONS]
        card.subscriptions_more = max(len(used_by[card.pk]) - SHOWN_SUBSCRIPTIONS, 0)
    return render(request, "portal/payment_methods/list.html", {"cards": cards})


@sensitive_post_parameters("number", "cvc")
@portal_view(**MANAGE)
@recent_login_required
@require_http_methods(["GET", "POST"])
def payment_method_new(request):
    form = AddCardForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            card = payment_method_add(
                customer=request.portal.customer,
                **form.card_details(),
                make_default=form.cleaned_data["make_default"],
                use_for_subscriptions=form.cleaned_data["use_for_subscriptions"],
                actor=request.user,
            )
        except BillingError as refused:
            form.add_gateway_error(refused)
        else:
            messages.success(request, f"{card} is saved.")
            return redirect("portal:payment_methods")
    return render(request, "portal/payment_methods/add.html", {"form": form})


@portal_view(**MANAGE)
@recent_login_required
@require_http_methods(["GET", "POST"])
def payment_method_default(request, public_id):
    card = _card(request, public_id)
    if request.method == "POST":
        return _done(
            request,
            lambda: payment_method_set_default(method=card, actor=request.user),
            f"{card} is now your default card.",
        )
    return _confirm_page(request, card, "default")


@portal_view(**MANAGE)
@recent_login_required
@require_http_methods(["GET", "POST"])
def payment_method_delete(request, public_id):
    card = _card(request, public_id)
    if request.method == "POST":
        try:
            payment_method_remove(method=card, actor=request.user)
        except BillingError as refused:
            return _confirm_page(request, card, "remove", error=refused.message)
        messages.success(request, f"{card} is removed.")
        return redirect("portal:payment_methods")
    return _confirm_page(request, card, "remove")


@sensitive_post_parameters("number", "cvc")
@portal_view(**MANAGE)
@recent_login_required
@require_http_methods(["GET", "POST"])
def payment_method_swap(request, public_id):
    card = _card(request, public_id)
    others = list(_own_cards(request.portal).exclude(pk=card.pk))
    form = ReplaceCardForm(request.POST or None, cards=others)
    error = ""
    if request.method == "POST" and form.is_valid():
        replacement = form.saved_card
        try:
            if replacement is None:
                replacement = payment_method_add(
                    customer=request.portal.customer, **form.card_details(), actor=request.user
                )
            moved = payment_method_replace(old=card, new=replacement, actor=request.user)
        except BillingError as refused:
            if refused.field in form.fields:
                form.add_gateway_error(refused)
            else:
                error = refused.message
            if form.saved_card is None and replacement is not None:
                error += f" {replacement} is saved, so you can choose it next time."
        else:
            messages.success(
                request,
                f"{card} is replaced by {replacement}"
                + (f" on {moved} subscription{'s' if moved != 1 else ''}." if moved else "."),
            )
            return redirect("portal:payment_methods")
    context = {"card": card, "form": form, "error": error}
    return render(request, "portal/payment_methods/replace.html", context)


def _done(request, action, success: str):
    try:
        action()
    except BillingError as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, success)
    return redirect("portal:payment_methods")


def _confirm_page(request, card, action: str, *, error: str = ""):
    context = {"card": card, "action": action, "error": error}
    return render(request, "portal/payment_methods/confirm.html", context, status=200)
