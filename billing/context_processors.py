"""Template context every page needs: the merchant's name, logo and contact details."""

from django.utils.functional import SimpleLazyObject

from billing.models import Organization


def merchant(request) -> dict:
    # Lazy: pages that never print the merchant's details pay no query for them.
    return {"organization": SimpleLazyObject(Organization.load)}
