"""The one door to customer data: everything a portal view reads goes through here.

A signed-in contact sees its own customer and the branches whose transactions are visible to
it (when its customer is a parent). Anything outside that scope is a 404, exactly like an id
that does not exist, so the portal never confirms that someone else's invoice exists.
"""

import uuid
from dataclasses import dataclass
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Model, Q, QuerySet
from django.http import Http404
from django.shortcuts import render

from billing.books_cache import books_cached
from billing.enums import PortalRole
from billing.models import ContactPerson, Customer
from portal.models import PortalPreferences

ROLE_RANK = {PortalRole.VIEWER: 0, PortalRole.PAYER: 1, PortalRole.ADMIN: 2}


@dataclass(frozen=True)
class Portal:
    """Who is looking, for which customer, allowed to do what."""

    contact: ContactPerson
    customer: Customer
    # (pk, display name) of the customer and of the branches it may see, the customer first.
    visible: tuple[tuple[int, str], ...]
    preferences: PortalPreferences

    @property
    def customer_ids(self) -> tuple[int, ...]:
        return tuple(pk for pk, _name in self.visible)

    @property
    def children(self) -> tuple[tuple[int, str], ...]:
        return self.visible[1:]

    @property
    def is_parent(self) -> bool:
        return len(self.visible) > 1

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[self.contact.portal_role] >= ROLE_RANK[role]

    @property
    def can_pay(self) -> bool:
        return self.has_role(PortalRole.PAYER)

    @property
    def can_manage(self) -> bool:
        return self.has_role(PortalRole.ADMIN)

    def scope(self, queryset: QuerySet, field: str = "customer") -> QuerySet:
        """Restrict any queryset to the visible customers (``field`` leads to a Customer)."""
        return queryset.filter(**{f"{field}__in": self.customer_ids})

    def get(self, queryset: QuerySet, public_id, field: str = "customer") -> Model:
        """One object by its public id inside the scope, or 404 — the same 404 as a missing id."""
        try:
            key = uuid.UUID(str(public_id))
        except ValueError:
            raise Http404 from None
        obj = self.scope(queryset, field).filter(public_id=key).first()
        if obj is None:
            raise Http404
        return obj

    def cached(self, name: str, vary, compute, *, today):
        """``compute()``'s value for the books in scope, cached until they change."""
        return books_cached(self.customer_ids, name, vary, compute, today=today)

    def visible_customer(self, pk_or_public_id) -> Customer:
        """A customer of the scope (for a parent: itself or a visible branch), else 404."""
        return self.get(Customer.objects.all(), pk_or_public_id, field="pk")


def portal_for(request) -> Portal | None:
    """The signed-in user's portal scope (cached on the request), or None for non-contacts."""
    if hasattr(request, "_portal"):
        return request._portal
    portal = None
    contact = (
        ContactPerson.objects.select_related("customer")
        .filter(user=request.user, customer__status="active")
        .first()
        if request.user.is_authenticated
        else None
    )
    if contact is not None:
        customer = contact.customer
        rows = (
            Customer.objects.filter(
                Q(pk=customer.pk)
                | Q(parent_id=customer.pk, visible_to_parent=True, status="active")
            )
            .order_by("display_name")
            .values_list("pk", "display_name")
        )
        visible = tuple(sorted(rows, key=lambda row: row[0] != customer.pk))
        portal = Portal(contact, customer, visible, PortalPreferences.load())
    request._portal = portal
    return portal


def portal_view(*, role: str = PortalRole.VIEWER, preference: str | None = None):
    """Decorate a portal view: sign-in required, a contact of an active customer, the module
    switched on (else 404: hidden and refused) and the contact's role high enough (else 403)."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            portal = portal_for(request)
            if portal is None:
                return render(request, "portal/no_access.html", status=403)
            if preference is not None and not getattr(portal.preferences, preference):
                raise Http404
            if not portal.has_role(role):
                raise PermissionDenied("Your role does not allow this. Ask your account admin.")
            request.portal = portal
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
