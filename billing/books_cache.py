"""Portal pages computed from a customer's books, cached until those books change.

A customer's dashboard, invoice list and statement read thousands of rows, yet between two
changes to its books every view of them is the same. Each customer has a *version token* in
the shared cache; anything a page shows is cached under a key made of the tokens of every
customer it covers, one global token (settings and catalog), the business day, and what the
page varies on. A write replaces the tokens of the customers it touched as it writes and again
once its transaction commits, so the next view misses and recomputes; nothing is ever deleted
or recomputed eagerly.

Who replaces tokens:

- every Event (rule 1: each service writes one, batch jobs included) for its customer and the
  customers of the invoice, payment, subscription or credit note it is about;
- a saved or deleted customer-owned row (invoice, payment, credit note, subscription, ...), the
  safety net for anything saved outside a service (Django admin); a saved customer also for
  its branches, its parent (former and new) and whoever's money crossed with it;
- a voided invoice, for whoever paid or credited it (a parent, or a former one);
- a saved or deleted setting or catalog row, for the global token.

Each change also replaces the parent's token. Only canonical views are cached (the dashboard,
the unfiltered invoice list's pages, a preset statement's first pages), so the entries per
customer are bounded whatever query strings a visitor sends.

Tokens are random, never counters: a token the cache evicted is replaced by a new one, so an
entry computed under the old token can never be served again. Entries also expire after
``BOOKS_CACHE_SECONDS``, which bounds what a lost replacement (Redis unreachable at that very
moment) could show. Unreachable cache: pages are computed as if nothing were cached.

``BOOKS_CACHE_VERIFY`` (the test suite) recomputes every hit and fails loudly when the cached
value differs, so each test that looks at a page after a change checks the invalidation too.
"""

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.db import connection, transaction

from billing import settings_cache
from billing.models import Customer

logger = logging.getLogger(__name__)

GLOBAL_KEY = settings_cache.read_together("books:all")
# Tokens never expire (a few dozen bytes per customer whose books ever changed): replacing one
# is then a single MSET for any number of customers, with no EXPIRE per key.
TOKEN_SECONDS = None
PARENTS_SQL = "SELECT parent_id FROM billing_customer WHERE parent_id IS NOT NULL AND id = ANY(%s)"


class StaleBooksCache(AssertionError):
    """A cached page part differs from a fresh computation (raised only when verifying)."""


def _key(customer_id: int) -> str:
    return f"books:{customer_id}"


def _new_token() -> str:
    return secrets.token_hex(6)


def _replace(keys) -> None:
    try:
        _write_tokens(keys, _new_token())
    except Exception:  # the cache is down: entries expire on their own (BOOKS_CACHE_SECONDS)
        logger.exception("could not replace books cache tokens %s", list(keys)[:10])
    settings_cache.drop_local(keys)


def _write_tokens(keys, token: str) -> None:
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        backend.set_many(dict.fromkeys(keys, token), TOKEN_SECONDS)
        return
    # One MSET of one serialized value: set_many validates each key and pickles each value
    # again, ~20 ms for the 500 customers of a renewal batch (a fifth of the batch's time).
    client = backend._cache.get_client(write=True)
    value = backend._cache._serializer.dumps(token)
    client.mset({backend.make_key(key): value for key in keys})


def books_changed(customer_ids: Iterable[int | None]) -> None:
    """The books of these customers change in the current transaction (now, outside one).

    Their parents' too: a parent's statement and credit carry money that crossed to or from
    its branches, even a branch it no longer sees."""
    ids = {pk for pk in customer_ids if pk is not None}
    if not ids:
        return
    ids.update(_parents_of(ids))
    _replace_twice([_key(pk) for pk in ids])


def _parents_of(ids: set[int]) -> list[int]:
    if connection.vendor != "postgresql":  # the demo's SQLite has no arrays
        parents = Customer.objects.filter(pk__in=ids, parent__isnull=False)
        return list(parents.values_list("parent_id", flat=True))
    # One array parameter: the ORM's IN (…) would bind each of a batch's 500 ids.
    with connection.cursor() as cursor:
        cursor.execute(PARENTS_SQL, [list(ids)])
        return [parent for (parent,) in cursor.fetchall()]


# Keys replaced in this thread's open transaction, replaced again once it commits: one MSET
# at commit for everything a batch changed, however many events it recorded.
_pending = threading.local()


def _replace_twice(keys: list[str]) -> None:
    # Now, so this transaction's own later reads (and a test's, which never commits) miss; and
    # again after commit, since a concurrent request may have cached the books as they were
    # before the commit under the first replacement.
    _replace(keys)
    if not transaction.get_connection().in_atomic_block:
        return
    pending = getattr(_pending, "keys", None)
    if pending is None:
        pending = _pending.keys = set()
    pending.update(keys)
    # Registered each time (a rolled-back savepoint drops its own callbacks); the first to
    # run takes every pending key, the others find nothing left.
    transaction.on_commit(_replace_pending)


def _replace_pending() -> None:
    keys = getattr(_pending, "keys", None)
    if keys:
        _pending.keys = None
        _replace(keys)


def settings_changed() -> None:
    """A setting or catalog row every customer's pages may show changes."""
    _replace_twice([GLOBAL_KEY])


def _tokens(customer_ids: Sequence[int]) -> str | None:
    """The tokens of these customers and the global one, creating missing ones; None when
    the cache cannot be reached."""
    keys = [GLOBAL_KEY, *(_key(pk) for pk in customer_ids)]
    try:
        memory_global = settings_cache.get_or_load(GLOBAL_KEY, _new_token, TOKEN_SECONDS)
        found = cache.get_many(keys[1:])
        found[GLOBAL_KEY] = memory_global
        for key in keys:
            if found.get(key) is None:
                # add, not set: of two requests racing here, both end up with the winner's.
                cache.add(key, _new_token(), TOKEN_SECONDS)
                found[key] = cache.get(key)
    except Exception:
        logger.exception("books cache unreachable")
        return None
    if any(found.get(key) is None for key in keys):
        return None
    return ":".join(found[key] for key in keys)


def books_cached(
    customer_ids: Sequence[int],
    name: str,
    vary: Any,
    compute: Callable[[], Any],
    *,
    today: date,
) -> Any:
    """``compute()``'s value for these customers' books as they are now, cached."""
    seconds = settings.BOOKS_CACHE_SECONDS
    tokens = _tokens(customer_ids) if seconds > 0 else None
    if tokens is None:
        return compute()
    parts = [name, tokens, today.isoformat(), repr(vary), repr(tuple(customer_ids))]
    key = (
        "books:"
        + name
        + ":"
        + hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()
    )
    try:
        value = cache.get(key)
    except Exception:
        logger.exception("books cache unreachable")
        return compute()
    if value is not None:
        if settings.BOOKS_CACHE_VERIFY and compute() != value:
            raise StaleBooksCache(f"{name} for customers {list(customer_ids)} is stale")
        return value
    value = compute()
    try:
        cache.set(key, value, seconds)
    except Exception:
        logger.exception("books cache unreachable")
    return value


# ----------------------------------------------------------------------------- who changed
# Subjects an event or a row may carry, whose customers' books it changes too (a parent's
# payment settling a branch's invoice).
_SUBJECTS = ("invoice", "payment", "subscription", "credit_note")


def customers_of_events(events: Iterable) -> set[int]:
    """The customers whose books a batch of events changes: each event's own customer and
    those of the rows it is about (as loaded: no query)."""
    ids = set()
    for event in events:
        ids.add(event.customer_id)
        related = event._state.fields_cache
        for name in _SUBJECTS:
            subject = related.get(name)
            if subject is not None:
                ids.add(subject.customer_id)
    return ids


def money_partners(customer_ids: Iterable[int], *, invoice_id: int | None = None) -> set[int]:
    """Customers whose money crossed into or out of these customers' books (a parent paying
    a branch, or a former parent), or only of one invoice: their statements and credit show it."""
    from billing.models import CreditAllocation, PaymentAllocation

    if invoice_id is not None:
        payers = PaymentAllocation.objects.filter(invoice_id=invoice_id)
        creditors = CreditAllocation.objects.filter(invoice_id=invoice_id)
        return set(payers.values_list("payment__customer_id", flat=True)) | set(
            creditors.values_list("credit_note__customer_id", flat=True)
        )
    ids = list(customer_ids)
    found = set()
    for model, owner in (
        (PaymentAllocation, "payment__customer_id"),
        (CreditAllocation, "credit_note__customer_id"),
    ):
        rows = model.objects.exclude(**{f"{owner}__in": ids}).filter(invoice__customer_id__in=ids)
        found.update(rows.values_list(owner, flat=True).distinct())
        rows = model.objects.exclude(invoice__customer_id__in=ids).filter(**{f"{owner}__in": ids})
        found.update(rows.values_list("invoice__customer_id", flat=True).distinct())
    return found


def _customer_saving(sender, instance, **kwargs) -> None:
    # The parent it had: that parent's statement names it, and held money it moved.
    if instance.pk is not None and not kwargs.get("raw"):
        row = Customer.objects.filter(pk=instance.pk).values_list("parent_id", flat=True)
        instance._books_former_parent = row.first()


def _row_changed(sender, instance, **kwargs) -> None:
    if kwargs.get("raw"):  # loaddata
        return
    if isinstance(instance, Customer):
        # Its name and family show on its branches', parents' and money partners' pages.
        ids = {instance.pk, instance.parent_id, getattr(instance, "_books_former_parent", None)}
        ids.update(Customer.objects.filter(parent_id=instance.pk).values_list("pk", flat=True))
        ids.update(money_partners([instance.pk]))
    elif hasattr(instance, "customer_id"):
        ids = {instance.customer_id}
    else:  # a line or an allocation: the customers of the rows it belongs to, as loaded
        related = instance._state.fields_cache
        ids = {getattr(related.get(name), "customer_id", None) for name in _SUBJECTS}
    books_changed(ids)


def _setting_changed(sender, instance, **kwargs) -> None:
    if not kwargs.get("raw"):
        settings_changed()


def connect_signals() -> None:
    """Saved or deleted rows replace tokens too (AppConfig.ready): the safety net for writes
    that bypass a service, such as a staff edit in Django admin."""
    from django.apps import apps
    from django.db.models.signals import post_delete, post_save, pre_save

    pre_save.connect(_customer_saving, sender=Customer, dispatch_uid="books-pre:customer")

    for label in CUSTOMER_ROWS:
        model = apps.get_model(label)
        post_save.connect(_row_changed, sender=model, dispatch_uid=f"books:{label}")
        post_delete.connect(_row_changed, sender=model, dispatch_uid=f"books-del:{label}")
    for label in SETTING_ROWS:
        model = apps.get_model(label)
        post_save.connect(_setting_changed, sender=model, dispatch_uid=f"books:{label}")
        post_delete.connect(_setting_changed, sender=model, dispatch_uid=f"books-del:{label}")


CUSTOMER_ROWS = (
    "billing.Customer",
    "billing.ContactPerson",
    "billing.Invoice",
    "billing.InvoiceLine",
    "billing.CreditNote",
    "billing.CreditAllocation",
    "billing.Payment",
    "billing.PaymentAllocation",
    "billing.PaymentMethod",
    "billing.Refund",
    "billing.Subscription",
    "billing.SubscriptionAddon",
    "billing.SubscriptionCoupon",
    "billing.ScheduledChange",
)
SETTING_ROWS = (
    "billing.Organization",
    "billing.Product",
    "billing.Plan",
    "billing.Addon",
    "billing.Coupon",
    "billing.PriceList",
    "billing.PriceListItem",
    "billing.CustomerGroup",
    "billing.DunningPolicy",
    "portal.PortalPreferences",
    "portal.WebTab",
)
