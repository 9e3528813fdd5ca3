"""Fixtures shared by the whole suite. Tests run against real PostgreSQL and Redis."""

import pytest
from django.core.cache import cache

from tests.factories import OrganizationFactory, UserFactory
from tests.helpers import login_verified


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit and throttle counters live in Redis; each test starts from zero."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def organization(db):
    return OrganizationFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(staff=True, email="staff@northwind.example")


@pytest.fixture
def staff_client(client, staff_user, organization):
    """The admin requires staff whose session passed MFA."""
    return login_verified(client, staff_user)
