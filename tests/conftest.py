"""Fixtures shared by the whole suite. Tests run against real PostgreSQL and Redis."""

import pytest

from tests.factories import OrganizationFactory


@pytest.fixture
def organization(db):
    return OrganizationFactory()


@pytest.fixture
def staff_user(db):
    from tests.factories import UserFactory

    return UserFactory(staff=True, email="staff@northwind.example")
