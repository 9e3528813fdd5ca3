"""The sandbox gateway's own books: what a real provider would keep on its side.

Kept in our database only so every process (web, workers, tests) sees the same ledger. Nothing
else in the domain reads these tables; code talks to the sandbox through the gateway interface.
"""

from django.db import models

from billing.models.base import money_field


class SandboxCard(models.Model):
    """A tokenized test card: the behaviour its number selected, never the number itself."""

    token = models.CharField(max_length=64, unique=True)
    behaviour = models.CharField(max_length=30)
    brand = models.CharField(max_length=30)
    last4 = models.CharField(max_length=4)
    exp_month = models.PositiveSmallIntegerField()
    exp_year = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.brand} •••• {self.last4} ({self.behaviour})"


class SandboxCharge(models.Model):
    """One row per idempotency key: a second call with the same key replays this result."""

    idempotency_key = models.CharField(max_length=100, unique=True)
    token = models.CharField(max_length=64)
    amount = money_field()
    currency = models.CharField(max_length=3)
    outcome = models.CharField(max_length=30)
    reference = models.CharField(max_length=64, unique=True)
    failure_code = models.CharField(max_length=60, blank=True)
    refunded_amount = money_field()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.reference} {self.amount} {self.currency} {self.outcome}"
