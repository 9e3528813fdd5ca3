import functools

from django.urls import get_script_prefix, reverse
from django.utils.functional import SimpleLazyObject

from portal.models import WebTab

NAV_PAGES = (
    "dashboard",
    "subscriptions",
    "invoices",
    "payments",
    "credits",
    "statement",
    "payment_methods",
    "company",
    "contact",
    "review",
)


@functools.cache
def _nav_urls(script_prefix: str) -> dict[str, str]:
    """The sidebar's URLs, reversed once per process (and deployment prefix), not per page."""
    return {name: reverse(f"portal:{name}") for name in NAV_PAGES}


def portal(request) -> dict:
    return {
        "web_tabs": SimpleLazyObject(WebTab.active_tabs),
        "nav_urls": SimpleLazyObject(lambda: _nav_urls(get_script_prefix())),
    }
