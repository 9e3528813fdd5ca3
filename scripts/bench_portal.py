"""Portal load benchmark (DESIGN §8): the pages of a customer with thousands of invoices, under
concurrent load against gunicorn.

    .venv/bin/python scripts/bench_portal.py                  # seed, serve, measure (~3 min)
    .venv/bin/python scripts/bench_portal.py --reuse          # keep the seeded database
    .venv/bin/python scripts/bench_portal.py --duration 5 --customers 10000   # a quick look

Needs the PostgreSQL and Redis the tests use (127.0.0.1:5432, 127.0.0.1:6379), and ``wrk``
(``apt-get install -y wrk``) — without it a small threaded http.client load generator in this
script drives the load instead (``--driver python``); it costs CPU on the same machine, so
prefer wrk.

What it does:

1. Drops and recreates the database ``bench_portal`` (``--database``) and migrates it with
   ``manage.py migrate``. Settings: ``config.settings.local`` with ``DATABASE_URL`` (PostgreSQL),
   ``REDIS_URL`` (Redis db 12, emptied first: cache and sessions) and ``DEBUG=false`` — the
   production stack without its TLS-only cookies, which a plain-HTTP loopback test cannot use.
2. Seeds with COPY (psycopg ``cursor.copy``): ``--customers`` (100,000) customers, each of the
   others with ``--other-invoices`` (2) invoices, one paid (payment + allocation); and the
   benchmark customer, with ``--invoices`` (5,000) invoices over ``--years`` (2) years across
   as many monthly subscriptions as that takes (~209), one or two lines each, paid by one card
   payment per day allocated over that day's invoices except the newest (still open) and a few
   overdue ones, plus credit notes, some applied. Then ``VACUUM ANALYZE``, as autovacuum would
   have done on a live database. The benchmark customer's portal login (a portal admin contact
   with a password, no MFA device, MFA policy "optional") signs in with a CSRF-protected login
   POST, like a browser.
3. Starts ``gunicorn config.wsgi --workers 4`` (sync workers) on 127.0.0.1, on a free port
   (or ``--port``).
4. For each page — dashboard, invoice list page 1, invoice list last page (found once by
   following the "Older" links), statement of this year (and, for reference, of this month) —
   warms up, then drives ``--connections`` (16) concurrent connections for ``--duration`` (15) s
   from loopback and prints p50/p99 latency and requests/s, then the last-page/page-1 p99 ratio.
   Each figure comes with the machine's load average: gunicorn, PostgreSQL and wrk share the
   machine's CPUs, and anything else running skews the figures.
   The pages come from the books cache (billing.books_cache) after the first request, as for a
   customer looking again at books that did not change; ``--books-cache-seconds 0`` makes every
   request compute its page, as right after each change.
5. Profiles each page once in this process, computed (books cache off): its SQL queries, the
   time in SQL and in total, and the EXPLAIN ANALYZE of its slowest query (every page with ``--explain-all``; otherwise the
   pages that missed a target).
6. Measures each page's CPU per request single-threaded, in this process (Django's test client,
   the same settings), served from the books cache and computed: the Django process's CPU time
   and that of its PostgreSQL backend (read from /proc), over ``--cpu-requests`` requests, the best of three rounds. Unlike latency under
   load, this hardly moves when other work shares the machine, so it is the figure to compare
   between changes; the load figures need about 2 CPUs / 107 req/s ≈ 19 ms of it per request.

It prints figures and asserts nothing about time. Targets (the issue): p99 ≤ 150 ms at 16
connections; the last invoice page's p99 ≤ 1.5 × page 1's. By Little's law, p99 ≤ 150 ms with
16 connections always busy needs more than 16 / 0.15 ≈ 107 requests/s, i.e. at most ~19 ms of
CPU per request on a 2-CPU machine (Django, PostgreSQL and wrk together).

The database is kept for ``--reuse``; ``DROP DATABASE bench_portal`` removes it.
"""

import argparse
import datetime
import http.client
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from html import unescape
from pathlib import Path
from urllib.parse import urlencode

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

P99_TARGET_MS = 150
LAST_PAGE_RATIO_TARGET = 1.5
EMAIL = "bench@bigco.example"
PASSWORD = "bench-portal-password-1"  # noqa: S105 (a throwaway database)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--invoices", type=int, default=5_000, help="of the benchmark customer")
    parser.add_argument("--years", type=int, default=2, help="over which its invoices spread")
    parser.add_argument("--other-invoices", type=int, default=2, help="per other customer")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=15, help="seconds per page")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument(
        "--worker-class", default="sync", help="gunicorn worker class (sync, as the README runs it)"
    )
    parser.add_argument("--threads", type=int, default=1, help="per gunicorn worker (gthread)")
    parser.add_argument("--cpu-requests", type=int, default=20, help="per page and round")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--driver", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--database", default="bench_portal")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--reuse", action="store_true", help="keep an already seeded database")
    parser.add_argument(
        "--books-cache-seconds",
        type=int,
        default=None,
        help="BOOKS_CACHE_SECONDS of the server under load (0: every view computes its page)",
    )
    parser.add_argument("--explain-all", action="store_true", help="EXPLAIN every page")
    return parser.parse_args()


ARGS = parse_args()
ARGS.port = ARGS.port or free_port()
DATABASE_URL = f"{ARGS.postgres}/{ARGS.database}"
REDIS_URL = f"{ARGS.redis}/{ARGS.redis_db}"
VAR_DIR = Path(tempfile.mkdtemp(prefix="bench_portal_"))
(VAR_DIR / "staticfiles").mkdir()  # WhiteNoise warns without it; no static file is requested
BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.local",
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
    "LOG_LEVEL": "WARNING",
    "VAR_DIR": str(VAR_DIR),
    "TIME_ZONE": "UTC",
}
if ARGS.books_cache_seconds is not None:
    BENCH_ENV["BOOKS_CACHE_SECONDS"] = str(ARGS.books_cache_seconds)
os.environ.update(BENCH_ENV)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_average() -> str:
    """The machine's 1-minute load: other processes competing for the CPUs skew every figure."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


# ----------------------------------------------------------------------------- database
def database_seeded() -> bool:
    import psycopg

    try:
        with psycopg.connect(DATABASE_URL) as conn:
            row = conn.execute(
                "SELECT count(*) FROM billing_customer WHERE email = %s", ["bench@bigco.example"]
            ).fetchone()
            return bool(row and row[0])
    except psycopg.Error:
        return False


def database_recreate() -> None:
    import psycopg
    import redis

    with psycopg.connect(f"{ARGS.postgres}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{ARGS.database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{ARGS.database}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=BASE_DIR,
        env={**os.environ, **BENCH_ENV},
        check=True,
    )
    redis.Redis.from_url(REDIS_URL).flushdb()


REUSE = ARGS.reuse and database_seeded()
if REUSE:
    say(f"Reusing the seeded database {ARGS.database}")
else:
    say(f"Creating and migrating the database {ARGS.database}")
    database_recreate()

import django  # noqa: E402

django.setup()

from allauth.account.models import EmailAddress  # noqa: E402
from django.db import connection, models  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from accounts.models import User  # noqa: E402
from billing.clock import billing_today  # noqa: E402
from billing.enums import (  # noqa: E402
    CreditNoteReason,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    MfaPolicy,
    PaymentMode,
    PaymentStatus,
    PortalRole,
    SubscriptionStatus,
)
from billing.models import (  # noqa: E402
    Addon,
    ContactPerson,
    CreditAllocation,
    CreditNote,
    Customer,
    Invoice,
    InvoiceLine,
    Organization,
    Payment,
    PaymentAllocation,
    PaymentMethod,
    Plan,
    Product,
    Subscription,
)
from billing.periods import boundary  # noqa: E402
from portal.models import PortalPreferences  # noqa: E402

PRICE = Decimal("49.00")
ADDON_PRICE = Decimal("12.00")


# ----------------------------------------------------------------------------- COPY seeding
class Table:
    """COPY rows (dicts by attname) into a model's table; columns not given take the field's
    default, NULL or "" — what the ORM would have written. Ids are assigned here."""

    def __init__(self, model: type[models.Model]):
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        now = timezone.now()
        self.fallback = {}
        for field in self.fields:
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                self.fallback[field.attname] = lambda now=now: now
            elif field.has_default():
                self.fallback[field.attname] = field.get_default
            elif field.null:
                self.fallback[field.attname] = lambda: None
            elif isinstance(field, models.CharField | models.TextField) and field.blank:
                self.fallback[field.attname] = lambda: ""
        self.json = {f.attname for f in self.fields if isinstance(f, models.JSONField)}
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT COALESCE(MAX(id), 0) FROM "{model._meta.db_table}"')  # noqa: S608
            self.next_id = cursor.fetchone()[0] + 1

    def ids(self, count: int) -> range:
        first = self.next_id
        self.next_id += count
        return range(first, first + count)

    def copy(self, rows) -> int:
        table = self.model._meta.db_table
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(f.column) for f in self.fields)
        )
        written = 0
        with connection.cursor() as wrapper:
            cursor = wrapper.cursor  # psycopg's own cursor: Django's wrapper has no copy()
            with cursor.copy(statement) as out:
                for row in rows:
                    values = []
                    for field in self.fields:
                        name = field.attname
                        value = row[name] if name in row else self.fallback[name]()
                        values.append(Jsonb(value) if name in self.json else value)
                    out.write_row(values)
                    written += 1
            cursor.execute(
                sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), {})").format(
                    sql.Literal(table), sql.Literal(max(self.next_id - 1, 1))
                )
            )
        return written


def seed() -> None:
    today = billing_today()
    now = timezone.now()
    organization = Organization.load()
    organization.name = "Bench Cloud"
    organization.mfa_policy = MfaPolicy.OPTIONAL
    organization.save()
    PortalPreferences.load()
    product = Product.objects.create(name="Bench")
    plan = Plan.objects.create(product=product, code="bench", name="Bench seat", price=PRICE)
    addon = Addon.objects.create(code="bench-support", name="Support", price=ADDON_PRICE)
    tables = {
        m: Table(m)
        for m in (
            Customer,
            Subscription,
            Invoice,
            InvoiceLine,
            Payment,
            PaymentAllocation,
            CreditNote,
            CreditAllocation,
        )
    }
    numbers = iter(range(1, 10**9))
    receipts = iter(range(1, 10**9))

    def invoice(iid, customer_id, issue, status, *, subscription_id=None, period=None, total=PRICE):
        return {
            "id": iid,
            "number": f"INV-{next(numbers):07d}",
            "customer_id": customer_id,
            "subscription_id": subscription_id,
            "kind": InvoiceKind.RECURRING if subscription_id else InvoiceKind.ONE_TIME,
            "status": status,
            "currency": "USD",
            "period_start": period[0] if period else None,
            "period_end": period[1] if period else None,
            "issue_date": issue,
            "due_date": issue + datetime.timedelta(days=14),
            "subtotal": total,
            "total": total,
            "billing_details": {"name": f"Customer {customer_id}"},
            "merchant_details": {"name": organization.name},
            "finalized_at": now,
            "paid_at": now if status == InvoiceStatus.PAID else None,
        }

    def payment(pid, customer_id, amount, day):
        return {
            "id": pid,
            "customer_id": customer_id,
            "amount": amount,
            "currency": "USD",
            "mode": PaymentMode.CARD,
            "method_label": "Visa •••• 4242",
            "status": PaymentStatus.SUCCEEDED,
            "gateway": "sandbox",
            "gateway_reference": f"ch_bench_{pid}",
            "idempotency_key": f"bench-{pid}",
            "receipt_number": f"RCPT-{next(receipts):07d}",
            "received_on": day,
            "processed_at": now,
        }

    # The other customers, each with a paid invoice of last month and an open one of this month.
    started = time.monotonic()
    others = ARGS.customers - 1
    other_ids = tables[Customer].ids(others)
    tables[Customer].copy(
        {
            "id": cid,
            "display_name": f"Customer {cid:06d}",
            "company_name": f"Customer {cid:06d} Ltd",
            "email": f"billing{cid}@bench.test",
            "billing_line1": f"{cid} Main Street",
            "billing_city": "Springfield",
            "billing_country": "United States",
        }
        for cid in other_ids
    )
    if ARGS.other_invoices:
        per = ARGS.other_invoices
        invoice_ids = tables[Invoice].ids(others * per)
        rows, lines, paid = [], [], []
        for n, cid in enumerate(other_ids):
            for k in range(per):
                iid = invoice_ids[n * per + k]
                issue = today - datetime.timedelta(days=30 * (per - 1 - k) + (cid % 28))
                status = InvoiceStatus.OPEN if k == per - 1 else InvoiceStatus.PAID
                rows.append(invoice(iid, cid, issue, status))
                if status == InvoiceStatus.PAID:
                    paid.append((iid, cid, issue))
        tables[Invoice].copy(rows)
        line_ids = tables[InvoiceLine].ids(len(rows))
        tables[InvoiceLine].copy(
            {
                "id": lid,
                "invoice_id": row["id"],
                "kind": InvoiceLineKind.ONE_TIME,
                "description": "Services",
                "quantity": Decimal(1),
                "unit_price": PRICE,
                "amount": PRICE,
            }
            for lid, row in zip(line_ids, rows, strict=True)
        )
        payment_ids = tables[Payment].ids(len(paid))
        tables[Payment].copy(
            payment(pid, cid, PRICE, issue)
            for pid, (_iid, cid, issue) in zip(payment_ids, paid, strict=True)
        )
        allocation_ids = tables[PaymentAllocation].ids(len(paid))
        tables[PaymentAllocation].copy(
            {"id": aid, "payment_id": pid, "invoice_id": iid, "amount": PRICE}
            for aid, pid, (iid, _cid, _issue) in zip(allocation_ids, payment_ids, paid, strict=True)
        )
    say(
        f"  {others:,} other customers with {others * ARGS.other_invoices:,} invoices "
        f"in {time.monotonic() - started:.1f} s"
    )

    # The benchmark customer: monthly subscriptions, one invoice a month each, newest first.
    started = time.monotonic()
    (big_id,) = tables[Customer].ids(1)
    tables[Customer].copy(
        [
            {
                "id": big_id,
                "display_name": "Big Co",
                "company_name": "Big Company, Inc.",
                "email": "bench@bigco.example",
                "billing_line1": "1 Big Plaza",
                "billing_city": "Metropolis",
                "billing_country": "United States",
            }
        ]
    )
    months = 12 * ARGS.years
    count = math.ceil(ARGS.invoices / months)
    subscription_ids = tables[Subscription].ids(count)
    anchors = {}
    subscriptions = []
    for n, sid in enumerate(subscription_ids):
        # Terms renew on every day of the month; the current one began on ``day``.
        day = today - datetime.timedelta(days=n % 28)
        anchor = boundary(day, "month", 1, -(months - 1))
        anchors[sid] = anchor
        subscriptions.append(
            {
                "id": sid,
                "customer_id": big_id,
                "plan_id": plan.pk,
                "quantity": 1 + n % 5,
                "status": SubscriptionStatus.LIVE,
                "auto_charge": False,
                "start_date": anchor,
                "anchor_date": anchor,
                "current_term_start": boundary(anchor, "month", 1, months - 1),
                "current_term_end": boundary(anchor, "month", 1, months),
            }
        )
    tables[Subscription].copy(subscriptions)
    terms = sorted(
        (
            (boundary(anchors[sid], "month", 1, m), boundary(anchors[sid], "month", 1, m + 1), sid)
            for sid in subscription_ids
            for m in range(months)
        ),
        reverse=True,
    )[: ARGS.invoices]
    terms.reverse()  # oldest first: numbers follow dates
    invoice_ids = tables[Invoice].ids(len(terms))
    rows, lines, by_day = [], [], {}
    overdue_every = max(len(terms) // 5, 1)  # a handful left unpaid, now overdue
    for n, (iid, (start, end, sid)) in enumerate(zip(invoice_ids, terms, strict=True)):
        with_addon = n % 2 == 0
        total = PRICE + (ADDON_PRICE if with_addon else 0)
        recent = start > today - datetime.timedelta(days=10)
        unpaid = recent or (n % overdue_every == 7)
        status = InvoiceStatus.OPEN if unpaid else InvoiceStatus.PAID
        rows.append(
            invoice(
                iid, big_id, start, status, subscription_id=sid, period=(start, end), total=total
            )
        )
        lines.append((iid, start, end, InvoiceLineKind.PLAN, PRICE))
        if with_addon:
            lines.append((iid, start, end, InvoiceLineKind.ADDON, ADDON_PRICE))
        if not unpaid:
            by_day.setdefault(start, []).append((iid, total))
    tables[Invoice].copy(rows)
    line_ids = tables[InvoiceLine].ids(len(lines))
    tables[InvoiceLine].copy(
        {
            "id": lid,
            "invoice_id": iid,
            "position": 0 if kind == InvoiceLineKind.PLAN else 1,
            "kind": kind,
            "description": f"{'Bench seat' if kind == InvoiceLineKind.PLAN else 'Support'} "
            f"({start:%b %-d} – {end:%b %-d, %Y})",
            "period_start": start,
            "period_end": end,
            "quantity": Decimal(1),
            "unit_price": amount,
            "amount": amount,
            "plan_id": plan.pk if kind == InvoiceLineKind.PLAN else None,
            "addon_id": addon.pk if kind == InvoiceLineKind.ADDON else None,
        }
        for lid, (iid, start, end, kind, amount) in zip(line_ids, lines, strict=True)
    )
    days = sorted(by_day)
    payment_ids = tables[Payment].ids(len(days))
    tables[Payment].copy(
        payment(
            pid,
            big_id,
            sum(t for _i, t in by_day[day]),
            min(day + datetime.timedelta(days=3), today),
        )
        for pid, day in zip(payment_ids, days, strict=True)
    )
    allocations = [
        (pid, iid, total)
        for pid, day in zip(payment_ids, days, strict=True)
        for iid, total in by_day[day]
    ]
    allocation_ids = tables[PaymentAllocation].ids(len(allocations))
    tables[PaymentAllocation].copy(
        {"id": aid, "payment_id": pid, "invoice_id": iid, "amount": amount}
        for aid, (pid, iid, amount) in zip(allocation_ids, allocations, strict=True)
    )
    # Credit notes: a goodwill credit every quarter, half of them applied to an open invoice.
    open_ids = [row["id"] for row in rows if row["status"] == InvoiceStatus.OPEN]
    notes = [today - datetime.timedelta(days=91 * q + 5) for q in range(4 * ARGS.years)]
    note_ids = tables[CreditNote].ids(len(notes))
    tables[CreditNote].copy(
        {
            "id": nid,
            "number": f"CN-{nid:07d}",
            "customer_id": big_id,
            "reason": CreditNoteReason.GOODWILL,
            "currency": "USD",
            "amount": Decimal("20.00"),
            "issue_date": day,
        }
        for nid, day in zip(note_ids, notes, strict=True)
    )
    applied = list(zip(note_ids[::2], open_ids, strict=False))
    allocation_ids = tables[CreditAllocation].ids(len(applied))
    tables[CreditAllocation].copy(
        {"id": aid, "credit_note_id": nid, "invoice_id": iid, "amount": Decimal("10.00")}
        for aid, (nid, iid) in zip(allocation_ids, applied, strict=True)
    )
    say(
        f"  Big Co: {len(rows):,} invoices ({len(open_ids)} open), {len(lines):,} lines, "
        f"{count} subscriptions, {len(days):,} payments, {len(allocations):,} allocations, "
        f"{len(notes)} credit notes in {time.monotonic() - started:.1f} s"
    )

    # The portal login: a password, no MFA device (policy optional), a portal admin.
    user = User.objects.create_user(EMAIL, PASSWORD, full_name="Bench User")
    EmailAddress.objects.create(user=user, email=EMAIL, verified=True, primary=True)
    ContactPerson.objects.create(
        customer_id=big_id,
        first_name="Bench",
        last_name="User",
        email=EMAIL,
        is_primary=True,
        portal_role=PortalRole.ADMIN,
        user=user,
    )
    PaymentMethod.objects.create(
        customer_id=big_id,
        gateway="sandbox",
        token=f"tok_bench_{uuid.uuid4().hex}",
        brand="Visa",
        last4="4242",
        exp_month=12,
        exp_year=today.year + 3,
        is_default=True,
    )


# ----------------------------------------------------------------------------- HTTP
class Session:
    """A browser's cookies against the gunicorn under test."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, dict, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Host": f"127.0.0.1:{self.port}"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Referer"] = f"http://127.0.0.1:{self.port}{path}"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
        conn.close()
        return response.status, dict(response.getheaders()), text

    def sign_in(self) -> None:
        status, _headers, page = self.request("GET", "/accounts/login/")
        assert status == 200, f"login page: {status}"
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        form = urlencode({"csrfmiddlewaretoken": token, "login": EMAIL, "password": PASSWORD})
        status, _headers, _page = self.request("POST", "/accounts/login/", form)
        assert status == 302, f"login POST answered {status}"
        status, _headers, page = self.request("GET", "/portal/")
        assert status == 200 and "Big Co" in page, f"portal after sign-in: {status}"

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())


def last_invoice_page(session: Session) -> tuple[str, int]:
    """Follow the "Older" links from page 1 to the last page; (its path, pages walked)."""
    path, pages = "/portal/invoices/", 1
    while True:
        status, _headers, page = session.request("GET", path)
        assert status == 200, f"{path}: {status}"
        older = re.search(r'<a class="page-link" href="([^"]+)"[^>]*>Older', page)
        if older is None:
            return path, pages
        path, pages = unescape(older[1]), pages + 1


def start_gunicorn() -> subprocess.Popen:
    """gunicorn on ARGS.port; returns once it answers /healthz (and is the one answering)."""
    command = [
        str(BASE_DIR / ".venv" / "bin" / "gunicorn"),
        "config.wsgi",
        "--workers",
        str(ARGS.workers),
        "--worker-class",
        ARGS.worker_class,
        "--threads",
        str(ARGS.threads),
        "--bind",
        f"127.0.0.1:{ARGS.port}",
        "--log-level",
        "warning",
        "--timeout",
        "120",
    ]
    server = subprocess.Popen(command, cwd=BASE_DIR, env={**os.environ, **BENCH_ENV})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", ARGS.port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200 and server.poll() is None:
                return server
        except OSError:
            pass
        if server.poll() is not None:
            raise SystemExit("gunicorn exited")
        time.sleep(0.2)
    server.terminate()
    raise SystemExit("gunicorn did not answer /healthz within 30 s")


# ----------------------------------------------------------------------------- load
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(path: str, cookie: str) -> dict:
    threads = min(ARGS.connections, os.cpu_count() or 2)
    result = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{ARGS.connections}",
            f"-d{ARGS.duration}s",
            "--timeout",
            "30s",
            "--latency",
            "-H",
            f"Cookie: {cookie}",
            f"http://127.0.0.1:{ARGS.port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(found[1]) * UNITS[found[2]] if found else math.inf  # nothing completed

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "p50": latency("50"),
        "p99": latency("99"),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "requests": int(re.search(r"(\d+) requests in", out)[1]),
        "errors": int(errors[1]) if errors else 0,
        "note": socket_errors[1] if socket_errors else "",
    }


def run_python(path: str, cookie: str) -> dict:
    """``--connections`` threads, each a keep-alive-less loop of GETs (gunicorn's sync workers
    close every connection anyway)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + ARGS.duration

    def worker():
        mine, failed = [], 0
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", ARGS.port, timeout=30)
                conn.request("GET", path, headers={"Cookie": cookie})
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status != 200:
                    failed += 1
            except OSError:
                failed += 1
            mine.append((time.perf_counter() - began) * 1000)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(ARGS.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rps": len(latencies) / elapsed,
        "requests": len(latencies),
        "errors": errors[0],
        "note": "",
    }


# ----------------------------------------------------------------------------- profiling
def profile(path: str, session: Session) -> dict:
    """One request in this process with the same session: its SQL, timed, and the slowest
    query's EXPLAIN ANALYZE."""
    client = Client(HTTP_HOST="127.0.0.1")
    for name, value in session.cookies.items():
        client.cookies[name] = value
    client.get(path)  # warm
    began = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    total = (time.perf_counter() - began) * 1000
    assert response.status_code == 200, f"{path}: {response.status_code}"
    queries = [(float(q["time"]) * 1000, q["sql"]) for q in captured.captured_queries]
    slowest = max(queries, default=(0.0, ""))
    return {
        "total_ms": total,
        "sql_ms": sum(t for t, _ in queries),
        "queries": len(queries),
        "slowest_ms": slowest[0],
        "slowest_sql": slowest[1],
        "bytes": len(response.content),
    }


def cpu_per_request(path: str, session: Session) -> tuple[float, float]:
    """(Django ms, PostgreSQL ms) of CPU per request of ``path``, single-threaded: the best of
    three rounds of ``--cpu-requests`` requests."""
    client = Client(HTTP_HOST="127.0.0.1")
    for name, value in session.cookies.items():
        client.cookies[name] = value
    for _ in range(3):
        assert client.get(path).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    ticks = os.sysconf("SC_CLK_TCK")

    def backend_cpu() -> float:
        try:
            fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # PostgreSQL on another host (or another user's): Django's part only
            return math.nan
        return (int(fields[11]) + int(fields[12])) / ticks

    best = (math.inf, math.inf)
    for _ in range(3):
        django_began, backend_began = time.process_time(), backend_cpu()
        for _ in range(ARGS.cpu_requests):
            client.get(path)
        django_ms = (time.process_time() - django_began) * 1000 / ARGS.cpu_requests
        backend_ms = (backend_cpu() - backend_began) * 1000 / ARGS.cpu_requests
        if math.isnan(backend_ms) or django_ms + backend_ms < sum(best):
            best = (django_ms, backend_ms)
    return best


def explain(statement: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}")
        return "\n".join(row[0] for row in cursor.fetchall())


# ----------------------------------------------------------------------------- main
def main() -> None:
    driver = ARGS.driver
    if driver == "auto":
        driver = "wrk" if shutil.which("wrk") else "python"
    if not REUSE:
        say(f"Seeding {ARGS.customers:,} customers with COPY")
        started = time.monotonic()
        seed()
        say(f"Seeded in {time.monotonic() - started:.1f} s; VACUUM ANALYZE")
        connection.close()
        import psycopg

        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    counts = {
        "customers": Customer.objects.count(),
        "invoices": Invoice.objects.count(),
        "Big Co invoices": Invoice.objects.filter(customer__email="bench@bigco.example").count(),
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT version(), current_setting('jit')")
        version, jit = cursor.fetchone()
    say("Database: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    say(f"{version.split(' on ')[0]}, jit={jit}")

    say(
        f"Starting gunicorn ({ARGS.workers} {ARGS.worker_class} workers"
        f"{f' × {ARGS.threads} threads' if ARGS.threads > 1 else ''}) on 127.0.0.1:{ARGS.port}"
    )
    server = start_gunicorn()
    try:
        session = Session(ARGS.port)
        session.sign_in()
        last_page, walked = last_invoice_page(session)
        say(f"Signed in as {EMAIL}; the invoice list has {walked} pages")
        pages = [
            ("dashboard", "/portal/"),
            ("invoice list, page 1", "/portal/invoices/"),
            (f"invoice list, last page ({walked})", last_page),
            ("statement, this year", "/portal/statement/?period=this_year"),
            ("statement, this month (ref.)", "/portal/statement/?period=this_month"),
        ]
        cookie = session.cookie_header()
        results = {}
        cpus = os.cpu_count()
        say(
            f"Load: {driver}, {ARGS.connections} connections, {ARGS.duration} s per page, "
            f"{cpus} CPUs shared by gunicorn, PostgreSQL and the load generator"
        )
        for label, path in pages:
            for _ in range(2 * ARGS.workers):  # every worker has served it once
                session.request("GET", path)
            runner = run_wrk if driver == "wrk" else run_python
            results[label] = runner(path, cookie)
            status, _h, _p = session.request("GET", path)
            assert status == 200, f"{path} after the run: {status} (session lost?)"
            r = results[label]
            r["load"] = load_average()
            say(
                f"  {label}: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, {r['rps']:.1f} req/s"
                f" ({r['requests']:,} requests, {r['errors']} errors"
                f"{', ' + r['note'] if r['note'] else ''}; load average {r['load']})"
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    print()
    print(
        f"{'page':<34} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}  {'load':>5}  "
        f"target p99 ≤ {P99_TARGET_MS} ms"
    )
    for label, r in results.items():
        verdict = "ok" if r["p99"] <= P99_TARGET_MS else "MISSED"
        print(
            f"{label:<34} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['rps']:>8.1f}  {r['load']:>5}  "
            f"{verdict}"
        )
    first, last = results[pages[1][0]], results[pages[2][0]]
    ratio = last["p99"] / first["p99"]
    print(
        f"last page / page 1 p99: {ratio:.2f} "
        f"({'ok' if ratio <= LAST_PAGE_RATIO_TARGET else 'MISSED'}; target ≤ {LAST_PAGE_RATIO_TARGET})"
    )

    print(
        "\nOne request per page in this process (no concurrency), computed (books cache off):"
        " where the time goes"
    )
    session = Session(ARGS.port)
    session.cookies = dict(c.split("=", 1) for c in cookie.split("; "))
    for label, path in pages:
        with override_settings(BOOKS_CACHE_SECONDS=0):
            p = profile(path, session)
        print(
            f"  {label}: {p['total_ms']:.1f} ms total, {p['queries']} queries taking "
            f"{p['sql_ms']:.1f} ms (slowest {p['slowest_ms']:.1f} ms), {p['bytes'] / 1024:.0f} KiB"
        )
        missed = results[label]["p99"] > P99_TARGET_MS
        if (missed or ARGS.explain_all) and p["slowest_sql"]:
            print(f"    slowest query:\n      {p['slowest_sql'][:2000]}")
            print(
                "    EXPLAIN ANALYZE:\n      " + explain(p["slowest_sql"]).replace("\n", "\n      ")
            )

    print("\nCPU per request, single-threaded (best of 3 rounds; PostgreSQL only if on this host)")
    print("  cached: the books did not change since the last view; computed: they just did")
    for label, path in pages:
        for mode, seconds in (("cached", 300), ("computed", 0)):
            with override_settings(BOOKS_CACHE_SECONDS=seconds):
                django_ms, backend_ms = cpu_per_request(path, session)
            print(
                f"  {label:<34} {mode:<8} Django {django_ms:6.1f} ms + PostgreSQL"
                f" {backend_ms:5.1f} ms = {django_ms + backend_ms:6.1f} ms"
            )
    shutil.rmtree(VAR_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
