"""Settings rows are read from the cache once per request, and a write is seen at once."""

import pytest
from django.core.cache import cache
from django.http import HttpResponse

from billing import settings_cache
from billing.models import Organization
from portal.models import PortalPreferences, WebTab

pytestmark = pytest.mark.django_db


class CountingCache:
    """The real cache, with each read counted."""

    def __init__(self):
        self.reads: list[tuple[str, tuple]] = []

    def get(self, key, *args, **kwargs):
        self.reads.append(("get", (key,)))
        return cache.get(key, *args, **kwargs)

    def get_many(self, keys, *args, **kwargs):
        self.reads.append(("get_many", tuple(keys)))
        return cache.get_many(keys, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(cache, name)


@pytest.fixture
def counting(monkeypatch):
    counting = CountingCache()
    monkeypatch.setattr(settings_cache, "cache", counting)
    return counting


def in_request(view):
    """Run ``view`` the way a request does, inside the middleware."""
    seen = {}

    def get_response(request):
        seen["value"] = view()
        return HttpResponse()

    settings_cache.SettingsCacheMiddleware(get_response)(object())
    return seen["value"]


def test_a_request_asks_the_cache_once_for_every_setting_it_reads(counting):
    WebTab.objects.create(title="Status", url="https://status.example.com")
    # Warm the cache, as earlier requests would have (and register the keys).
    Organization.load(), PortalPreferences.load(), WebTab.active_tabs()
    counting.reads.clear()

    names = in_request(
        lambda: (
            Organization.load().name,
            PortalPreferences.load().show_invoices,
            Organization.load().name,
            [tab.title for tab in WebTab.active_tabs()],
            Organization.load().name,
        )
    )

    assert names[3] == ["Status"]
    assert [kind for kind, _keys in counting.reads] == ["get_many"]
    keys = counting.reads[0][1]
    assert {Organization.cache_key(), PortalPreferences.cache_key(), "portal:web-tabs"} <= set(keys)


def test_outside_a_request_every_read_asks_the_cache(counting):
    Organization.load()
    Organization.load()
    assert [kind for kind, _keys in counting.reads] == ["get", "get"]


def test_a_write_inside_the_request_is_seen_by_the_rest_of_it():
    organization = Organization.load()

    def rename_then_read():
        before = Organization.load().name
        organization.name = "Renamed Ltd"
        organization.save()
        return before, Organization.load().name

    before, after = in_request(rename_then_read)
    assert before != "Renamed Ltd"
    assert after == "Renamed Ltd"


def test_the_next_request_sees_a_change_made_elsewhere():
    in_request(Organization.load)  # cached
    Organization.objects.filter(pk=1).update(name="Changed In Admin")
    organization = Organization.objects.get(pk=1)
    organization.save()  # what admin's save does: drops the cached row

    assert in_request(lambda: Organization.load().name) == "Changed In Admin"


def test_a_request_that_finds_nothing_cached_loads_each_row_once(
    counting, django_assert_num_queries
):
    cache.delete(Organization.cache_key())
    Organization.objects.get_or_create(pk=1)
    with django_assert_num_queries(1):
        names = in_request(lambda: (Organization.load().name, Organization.load().name))
    assert names[0] == names[1]
