from django.utils.functional import SimpleLazyObject

from portal.models import WebTab


def portal(request) -> dict:
    return {"web_tabs": SimpleLazyObject(WebTab.active_tabs)}
