"""Building blocks shared by the billing models: money fields, public ids, timestamps, singletons."""

import uuid
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models, transaction

from billing import settings_cache


def money_field(**kwargs) -> models.DecimalField:
    """An amount in the currency's major unit, rounded to the cent: DecimalField(14, 2)."""
    kwargs.setdefault("default", Decimal("0.00"))
    return models.DecimalField(max_digits=14, decimal_places=2, **kwargs)


def unit_price_field(**kwargs) -> models.DecimalField:
    """A unit price, kept to four places so per-unit prices of metered usage stay exact."""
    kwargs.setdefault("validators", [MinValueValidator(Decimal("0"))])
    return models.DecimalField(max_digits=19, decimal_places=4, **kwargs)


def percent_field(**kwargs) -> models.DecimalField:
    """A percentage such as 19.00 (not 0.19)."""
    kwargs.setdefault("default", Decimal("0.00"))
    kwargs.setdefault("validators", [MinValueValidator(Decimal("0"))])
    return models.DecimalField(max_digits=6, decimal_places=3, **kwargs)


class PublicIdModel(models.Model):
    """A model whose rows can appear in URLs: they do so by an opaque UUID, never by pk."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    class Meta:
        abstract = True


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


SINGLETON_CACHE_SECONDS = 300


class SingletonModel(models.Model):
    """A settings row that exists once per deployment (pk = 1, enforced by the database)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=models.Q(id=1), name="%(app_label)s_%(class)s_singleton"
            ),
        ]

    def save(self, *args, **kwargs):
        # Registered first, so at commit the cached row is dropped before the pages cached
        # under the settings' version are (billing.books_cache, on post_save): no page can be
        # cached anew from the old row. A transaction that rolls back drops nothing it needs.
        transaction.on_commit(lambda: settings_cache.forget(self.cache_key()))
        super().save(*args, **kwargs)
        settings_cache.forget(self.cache_key())

    @classmethod
    def cache_key(cls) -> str:
        # Read once, read with the others by every later request of this process.
        return settings_cache.read_together(f"singleton:{cls._meta.label_lower}")

    @classmethod
    def load(cls):
        """The settings row, from the cache when possible: every page reads it, few write it."""
        return settings_cache.get_or_load(cls.cache_key(), cls._load, SINGLETON_CACHE_SECONDS)

    @classmethod
    def _load(cls):
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


US_COUNTRY_NAMES = {"us", "usa", "united states", "united states of america"}


def format_address(
    *, line1: str, line2: str, city: str, state: str, postal_code: str, country: str
) -> list[str]:
    """Address lines as a letter prints them: "New York, NY 10118" in the US, "10115 Berlin" elsewhere."""
    if country.strip().lower() in US_COUNTRY_NAMES:
        locality = ", ".join(p for p in (city, " ".join(p for p in (state, postal_code) if p)) if p)
        lines = [line1, line2, locality, country]
    else:
        lines = [line1, line2, " ".join(p for p in (postal_code, city) if p), state, country]
    return [line for line in lines if line]
