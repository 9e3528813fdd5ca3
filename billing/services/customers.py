"""Writes to customers: group membership and payment terms, one audited event per customer."""

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from billing.errors import ValidationFailed
from billing.models import Customer, CustomerGroup
from billing.services.events import event_record

# The organization's own default is capped at a year; a customer's terms cannot be longer.
PAYMENT_TERMS_MAX_DAYS = 365


def _customers_lock(customers: Iterable[Customer]) -> list[Customer]:
    """Re-read the customers FOR UPDATE, in pk order so concurrent bulk edits cannot deadlock."""
    if isinstance(customers, QuerySet):
        pks = set(customers.order_by().values_list("pk", flat=True))
    else:
        pks = {customer.pk for customer in customers}
    return list(Customer.objects.select_for_update(no_key=True).filter(pk__in=pks).order_by("pk"))


def _group_state(*, group_id: int | None, group_name: str | None, days: int | None) -> dict:
    return {"group_id": group_id, "group": group_name, "payment_terms_days": days}


def customers_move_to_group(
    *, customers: Iterable[Customer], group: CustomerGroup | None, actor
) -> int:
    """Put customers in ``group`` (None: no group); they take the group's payment terms at once.

    A customer joining a group gets its terms immediately (DESIGN §3); the group's price list
    and discount are read through ``customer.group`` and need no copy. Leaving a group keeps
    the customer's terms as they are. Returns how many customers changed.
    """
    with transaction.atomic():
        # Lock the group first, then customers in pk order: one global order, no deadlocks,
        # and the terms copied are the ones committed now, not what a stale form showed.
        if group is not None:
            group = CustomerGroup.objects.select_for_update().get(pk=group.pk)
        group_terms = group.payment_terms_days if group is not None else None
        locked = _customers_lock(customers)
        old_names = dict(
            CustomerGroup.objects.filter(
                pk__in={c.group_id for c in locked if c.group_id is not None}
            ).values_list("pk", "name")
        )
        changed = 0
        for customer in locked:
            new_terms = group_terms if group_terms is not None else customer.payment_terms_days
            new_group_id = group.pk if group is not None else None
            if customer.group_id == new_group_id and customer.payment_terms_days == new_terms:
                continue
            before = _group_state(
                group_id=customer.group_id,
                group_name=old_names.get(customer.group_id),
                days=customer.payment_terms_days,
            )
            customer.group = group
            customer.payment_terms_days = new_terms
            customer.save(update_fields=["group", "payment_terms_days", "updated_at"])
            after = _group_state(
                group_id=new_group_id,
                group_name=group.name if group is not None else None,
                days=new_terms,
            )
            event_record(
                kind="customer.group_changed",
                description=(
                    f"Moved to group {group.name}" if group is not None else "Removed from group"
                ),
                actor=actor,
                customer=customer,
                before=before,
                after=after,
            )
            changed += 1
        return changed


def customers_set_payment_terms(*, customers: Iterable[Customer], days: int | None, actor) -> int:
    """Set the customers' payment terms (None: the group's, else the organization's default).

    Only invoices finalized afterwards use the new terms; issued due dates never move.
    Returns how many customers changed.
    """
    if days is not None and not 0 <= days <= PAYMENT_TERMS_MAX_DAYS:
        raise ValidationFailed(
            f"Payment terms must be between 0 and {PAYMENT_TERMS_MAX_DAYS} days.", field="days"
        )
    with transaction.atomic():
        changed = 0
        for customer in _customers_lock(customers):
            if customer.payment_terms_days == days:
                continue
            before: dict[str, Any] = {"payment_terms_days": customer.payment_terms_days}
            customer.payment_terms_days = days
            customer.save(update_fields=["payment_terms_days", "updated_at"])
            event_record(
                kind="customer.payment_terms_changed",
                description=(
                    f"Payment terms set to {days} days"
                    if days is not None
                    else "Payment terms reset to the default"
                ),
                actor=actor,
                customer=customer,
                before=before,
                after={"payment_terms_days": days},
            )
            changed += 1
        return changed
