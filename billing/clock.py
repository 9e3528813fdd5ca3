"""Today's billing date: the calendar date in the organization's time zone."""

import datetime

from django.utils import timezone

from billing.models import Organization
from billing.periods import local_date


def billing_today(organization: Organization | None = None) -> datetime.date:
    organization = organization or Organization.load()
    return local_date(timezone.now(), organization.zone)
