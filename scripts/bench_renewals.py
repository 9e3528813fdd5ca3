"""Renewal benchmark (DESIGN §8): N due subscriptions renewed end to end by real Celery workers.

    .venv/bin/python scripts/bench_renewals.py --subscriptions 10000     # a quick run
    .venv/bin/python scripts/bench_renewals.py                           # 100,000 (the target)

What it does, against the PostgreSQL and Redis the tests use (both must be running):

1. Drops and recreates the database ``bench_billing`` (``--database``) and migrates it with
   ``manage.py migrate`` (``DATABASE_URL`` pointing at it). Redis db 13 (``--redis-db``) is the
   broker and the cache; the script empties that db first.
2. Seeds with COPY (psycopg ``cursor.copy``): N customers with a sandbox card each and a live
   monthly subscription whose term ends today, each with ~10 historical paid invoices (lines,
   card payments, allocations); and D = N/10 (at most 10,000) past-due subscriptions, each with
   an open invoice, its failed first charge and a dunning retry due now (half the cards now pay,
   half keep failing).
3. Profiles one batch of renewals in this process (cProfile + a query counter): where the time
   goes, queries per renewal.
4. Starts ``--workers`` (2) worker processes, ``celery -A config worker --pool solo``, and fans
   the renewals out exactly as the tick does (batches of ids on the queue). Prints renewals/s
   (invoice, lines, charge through the sandbox gateway, payment, next date) and the CPU per
   renewal of the workers and of the rest of the machine (PostgreSQL, Redis, this script).
   Where PostgreSQL loads ``pg_stat_statements`` (``shared_preload_libraries``), it also prints
   PostgreSQL's execution time per renewal by statement. Then how long the emails the renewals
   queued took to go out (``--renewals-only`` stops before that).
5. Fans out the D dunning retries the same way: retries/s.
6. Reruns: a tick-style fan-out (finds nothing due) and a replay of every batch already run
   (as a redelivery would): prints the new invoices and charges, which must be 0.
7. Prints each worker's peak RSS (``VmHWM`` from /proc, children included) and its RSS over time.

It prints figures and asserts nothing about time. Targets (DESIGN §8 / the issue): ≥ 4,000
renewals/s, ≥ 1,000 retries/s, worker RSS ≤ 150 MiB and flat.
"""

import argparse
import cProfile
import datetime
import io
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subscriptions", type=int, default=100_000, help="due renewals (N)")
    parser.add_argument("--history", type=int, default=10, help="past invoices per subscription")
    parser.add_argument("--dunning", type=int, help="past-due invoices (default N/10, ≤ 10,000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--profile-batch", type=int, default=200, help="renewals profiled inline")
    parser.add_argument("--latency-ms", type=int, default=0, help="sandbox gateway latency")
    parser.add_argument(
        "--profile-only", action="store_true", help="stop after profiling the inline batches"
    )
    parser.add_argument(
        "--sql-floor",
        action="store_true",
        help="time PostgreSQL alone writing a renewal's rows in set-based SQL, then stop",
    )
    parser.add_argument(
        "--renewals-only", action="store_true", help="stop after the renewals (no emails, retries)"
    )
    parser.add_argument("--database", default="bench_billing")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=13)
    return parser.parse_args()


ARGS = parse_args()
DATABASE_URL = f"{ARGS.postgres}/{ARGS.database}"
REDIS_URL = f"{ARGS.redis}/{ARGS.redis_db}"
# The environment of this process, of `manage.py migrate` and of the workers: production-like
# settings (local settings with PostgreSQL, Redis, DEBUG off), email rendered but not delivered.
BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.local",
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "CELERY_BROKER_URL": REDIS_URL,
    "DEBUG": "0",
    "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
    "LOG_LEVEL": "WARNING",
    "SANDBOX_GATEWAY_LATENCY_MS": str(ARGS.latency_ms),
    "TIME_ZONE": "UTC",
}
os.environ.update(BENCH_ENV)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------- database
def database_recreate() -> None:
    import psycopg

    with psycopg.connect(f"{ARGS.postgres}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{ARGS.database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{ARGS.database}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=BASE_DIR,
        env={**os.environ, **BENCH_ENV},
        check=True,
    )
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


say(f"Creating and migrating the database {ARGS.database}")
database_recreate()

import django  # noqa: E402

django.setup()

from django.db import DatabaseError, connection, models, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from billing import jobs, tasks  # noqa: E402
from billing.enums import (  # noqa: E402
    DeclineKind,
    DocumentKind,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    PaymentAttemptStatus,
    PaymentMode,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.models import (  # noqa: E402
    Customer,
    DocumentSequence,
    DunningPolicy,
    Event,
    Invoice,
    InvoiceLine,
    InvoicePaymentLock,
    Notification,
    Organization,
    Payment,
    PaymentAllocation,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    Product,
    SandboxCard,
    SandboxCharge,
    Subscription,
)
from billing.periods import boundary  # noqa: E402

PRICE = Decimal("30.00")
MONTH = "month"


# ----------------------------------------------------------------------------- COPY seeding
class Table:
    """COPY rows into a model's table: given columns by attname, every other from its default."""

    def __init__(self, model: type[models.Model]):
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.next_id = 1
        now = timezone.now()
        self.fallbacks = {}
        for field in self.fields:
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                self.fallbacks[field.attname] = lambda now=now: now
            elif field.has_default():
                self.fallbacks[field.attname] = field.get_default
            elif field.null:
                self.fallbacks[field.attname] = lambda: None
            elif isinstance(field, models.CharField | models.TextField) and field.blank:
                self.fallbacks[field.attname] = lambda: ""
        self.json = {f.attname for f in self.fields if isinstance(f, models.JSONField)}

    def ids(self, count: int) -> range:
        first = self.next_id
        self.next_id += count
        return range(first, first + count)

    def copy(self, rows) -> int:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(self.model._meta.db_table),
            sql.SQL(", ").join(sql.Identifier(f.column) for f in self.fields),
        )
        written = 0
        with connection.cursor() as wrapper:
            cursor = wrapper.cursor  # psycopg's own cursor: Django's wrapper has no copy()
            with cursor.copy(statement) as out:
                for row in rows:
                    values = []
                    for field in self.fields:
                        name = field.attname
                        value = row[name] if name in row else self.fallbacks[name]()
                        values.append(Jsonb(value) if name in self.json else value)
                    out.write_row(values)
                    written += 1
            table = self.model._meta.db_table
            cursor.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({}, 'id'), (SELECT MAX(id) FROM {}))"
                ).format(sql.Literal(table), sql.Identifier(table))
            )
        return written


def seed(count: int, dunning: int, history: int) -> dict:
    """Everything the benchmark renews and retries, written with COPY; returns the plan."""
    now = timezone.now()
    today = timezone.localdate()
    organization = Organization.load()
    organization.name = "Bench Cloud"
    organization.save()
    DunningPolicy.load()
    product = Product.objects.create(name="Bench")
    plan = Plan.objects.create(product=product, code="bench", name="Bench", price=PRICE)
    anchor = boundary(today, MONTH, 1, -history)
    if boundary(anchor, MONTH, 1, history) != today:  # month-end days: anchor on today itself
        anchor = today

    tables = {
        m: Table(m)
        for m in (
            Customer,
            SandboxCard,
            PaymentMethod,
            Subscription,
            Invoice,
            InvoiceLine,
            Payment,
            PaymentAllocation,
            PaymentAttempt,
        )
    }
    invoice_numbers = iter(range(1, 10**9))
    receipt_numbers = iter(range(1, 10**9))

    def customers_with_cards(n: int, failing_every: int = 0) -> list[tuple[int, int, str]]:
        """(customer id, payment method id, token) for n new customers."""
        customer_ids = tables[Customer].ids(n)
        method_ids = tables[PaymentMethod].ids(n)
        tokens = [f"tok_sandbox_{uuid.uuid4().hex}" for _ in range(n)]
        tables[Customer].copy(
            {
                "id": cid,
                "display_name": f"Customer {cid}",
                "company_name": f"Customer {cid} Ltd",
                "email": f"billing{cid}@bench.test",
                "billing_line1": f"{cid} Main Street",
                "billing_city": "Springfield",
                "billing_country": "United States",
            }
            for cid in customer_ids
        )
        tables[SandboxCard].copy(
            {
                "id": i + tables[SandboxCard].next_id,
                "token": token,
                "behaviour": "charge_fails" if failing_every and i % failing_every else "succeed",
                "brand": "Visa",
                "last4": "4242",
                "exp_month": 12,
                "exp_year": today.year + 5,
            }
            for i, token in enumerate(tokens)
        )
        tables[SandboxCard].next_id += n
        tables[PaymentMethod].copy(
            {
                "id": mid,
                "customer_id": cid,
                "gateway": "sandbox",
                "token": token,
                "brand": "Visa",
                "last4": "4242",
                "exp_month": 12,
                "exp_year": today.year + 5,
                "is_default": True,
            }
            for cid, mid, token in zip(customer_ids, method_ids, tokens, strict=True)
        )
        return list(zip(customer_ids, method_ids, tokens, strict=True))

    def invoice_row(iid, public_id, cid, sid, start, end, status) -> dict:
        return {
            "id": iid,
            "public_id": public_id,
            "number": f"INV-{next(invoice_numbers):06d}",
            "customer_id": cid,
            "subscription_id": sid,
            "kind": InvoiceKind.RECURRING,
            "status": status,
            "currency": "USD",
            "period_start": start,
            "period_end": end,
            "issue_date": start,
            "due_date": start + datetime.timedelta(days=14),
            "subtotal": PRICE,
            "total": PRICE,
            "billing_details": {"name": f"Customer {cid}", "email": f"billing{cid}@bench.test"},
            "merchant_details": {"name": organization.name},
            "finalized_at": now,
            "paid_at": now if status == InvoiceStatus.PAID else None,
        }

    def line_row(lid, iid, start, end) -> dict:
        return {
            "id": lid,
            "invoice_id": iid,
            "kind": InvoiceLineKind.PLAN,
            "description": f"Bench ({start:%b %-d} – {end:%b %-d, %Y})",
            "period_start": start,
            "period_end": end,
            "quantity": Decimal(1),
            "unit_price": PRICE,
            "amount": PRICE,
            "plan_id": plan.pk,
        }

    def payment_row(pid, cid, mid, public_id, status) -> dict:
        succeeded = status == PaymentStatus.SUCCEEDED
        return {
            "id": pid,
            "customer_id": cid,
            "amount": PRICE,
            "currency": "USD",
            "mode": PaymentMode.CARD,
            "method_id": mid,
            "method_label": "Visa •••• 4242",
            "status": status,
            "gateway": "sandbox",
            "gateway_reference": f"ch_sandbox_{uuid.uuid4().hex[:24]}",
            "idempotency_key": f"inv_{public_id.hex}_0",
            "failure_code": "" if succeeded else "card_declined",
            "decline_kind": "" if succeeded else DeclineKind.SOFT,
            "receipt_number": f"RCPT-{next(receipt_numbers):06d}" if succeeded else None,
            "received_on": today if succeeded else None,
            "processed_at": now,
        }

    # --- the N due subscriptions and their history
    say(f"Seeding {count:,} due subscriptions with {history} past invoices each (COPY)")
    owners = customers_with_cards(count)
    sub_ids = tables[Subscription].ids(count)
    term_start = boundary(anchor, MONTH, 1, history - 1)
    tables[Subscription].copy(
        {
            "id": sid,
            "customer_id": cid,
            "plan_id": plan.pk,
            "status": SubscriptionStatus.LIVE,
            "auto_charge": True,
            "payment_method_id": mid,
            "start_date": anchor,
            "anchor_date": anchor,
            "current_term_start": term_start,
            "current_term_end": today,
        }
        for sid, (cid, mid, _token) in zip(sub_ids, owners, strict=True)
    )
    periods = [
        (boundary(anchor, MONTH, 1, k), boundary(anchor, MONTH, 1, k + 1)) for k in range(history)
    ]
    past = [
        (iid, uuid.uuid4(), sid, cid, mid, start, end)
        for (sid, (cid, mid, _token)), iids in zip(
            zip(sub_ids, owners, strict=True),
            (tables[Invoice].ids(history) for _ in sub_ids),
            strict=True,
        )
        for iid, (start, end) in zip(iids, periods, strict=True)
    ]
    tables[Invoice].copy(
        invoice_row(iid, pub, cid, sid, start, end, InvoiceStatus.PAID)
        for iid, pub, sid, cid, _mid, start, end in past
    )
    line_ids = tables[InvoiceLine].ids(len(past))
    tables[InvoiceLine].copy(
        line_row(lid, iid, start, end)
        for lid, (iid, _pub, _sid, _cid, _mid, start, end) in zip(line_ids, past, strict=True)
    )
    payment_ids = tables[Payment].ids(len(past))
    tables[Payment].copy(
        payment_row(pid, cid, mid, pub, PaymentStatus.SUCCEEDED)
        for pid, (_iid, pub, _sid, cid, mid, _s, _e) in zip(payment_ids, past, strict=True)
    )
    allocation_ids = tables[PaymentAllocation].ids(len(past))
    tables[PaymentAllocation].copy(
        {"id": aid, "payment_id": pid, "invoice_id": row[0], "amount": PRICE}
        for aid, pid, row in zip(allocation_ids, payment_ids, past, strict=True)
    )

    # --- D past-due subscriptions, each with an open invoice and retry 1 due now
    say(f"Seeding {dunning:,} past-due invoices with a retry due now (half the cards now pay)")
    debtors = customers_with_cards(dunning, failing_every=2)
    dunning_subs = tables[Subscription].ids(dunning)
    # The first charge failed two days ago: retry 1 (+1 day) is due, retry 2 (+3 days) is not.
    started = today - datetime.timedelta(days=2)
    tables[Subscription].copy(
        {
            "id": sid,
            "customer_id": cid,
            "plan_id": plan.pk,
            "status": SubscriptionStatus.PAST_DUE,
            "auto_charge": True,
            "payment_method_id": mid,
            "start_date": started,
            "anchor_date": started,
            "current_term_start": started,
            "current_term_end": boundary(started, MONTH, 1, 1),
        }
        for sid, (cid, mid, _token) in zip(dunning_subs, debtors, strict=True)
    )
    open_invoices = [
        (iid, uuid.uuid4(), sid, cid, mid)
        for iid, sid, (cid, mid, _token) in zip(
            tables[Invoice].ids(dunning), dunning_subs, debtors, strict=True
        )
    ]
    end = boundary(started, MONTH, 1, 1)
    tables[Invoice].copy(
        invoice_row(iid, pub, cid, sid, started, end, InvoiceStatus.OPEN)
        for iid, pub, sid, cid, _mid in open_invoices
    )
    tables[InvoiceLine].copy(
        line_row(lid, row[0], started, end)
        for lid, row in zip(tables[InvoiceLine].ids(dunning), open_invoices, strict=True)
    )
    failed_ids = tables[Payment].ids(dunning)
    tables[Payment].copy(
        payment_row(pid, cid, mid, pub, PaymentStatus.FAILED)
        for pid, (_iid, pub, _sid, cid, mid) in zip(failed_ids, open_invoices, strict=True)
    )
    tables[PaymentAllocation].copy(
        {"id": aid, "payment_id": pid, "invoice_id": row[0], "amount": PRICE}
        for aid, pid, row in zip(
            tables[PaymentAllocation].ids(dunning), failed_ids, open_invoices, strict=True
        )
    )
    failed_at = datetime.datetime.combine(started, datetime.time.min, tzinfo=datetime.UTC)

    def attempts():
        ids = iter(tables[PaymentAttempt].ids(dunning * 5))
        for pid, (iid, _pub, sid, _cid, _mid) in zip(failed_ids, open_invoices, strict=True):
            yield {
                "id": next(ids),
                "invoice_id": iid,
                "subscription_id": sid,
                "attempt_number": 0,
                "scheduled_for": failed_at,
                "status": PaymentAttemptStatus.FAILED,
                "payment_id": pid,
                "decline_kind": DeclineKind.SOFT,
                "attempted_at": failed_at,
            }
            for number, days in enumerate((1, 3, 5, 7), start=1):
                yield {
                    "id": next(ids),
                    "invoice_id": iid,
                    "subscription_id": sid,
                    "attempt_number": number,
                    "scheduled_for": failed_at + datetime.timedelta(days=days),
                }

    tables[PaymentAttempt].copy(attempts())

    # Gapless numbering continues after the seeded documents.
    DocumentSequence.objects.update_or_create(
        kind=DocumentKind.INVOICE, defaults={"prefix": "INV-", "next_number": next(invoice_numbers)}
    )
    DocumentSequence.objects.update_or_create(
        kind=DocumentKind.RECEIPT,
        defaults={"prefix": "RCPT-", "next_number": next(receipt_numbers)},
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"renew_ids": list(sub_ids), "today": today}


# ----------------------------------------------------------------------------- measuring
class QueryCounter:
    """Counts and times statements by shape (literals stripped), via connection.execute_wrapper."""

    def __init__(self):
        self.shapes: Counter = Counter()
        self.seconds: Counter = Counter()

    def __call__(self, execute, sql, params, many, context):
        shape = re.sub(r"\s+", " ", sql)
        shape = re.sub(r"SELECT .*? FROM", "SELECT … FROM", shape, count=1)[:110]
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.shapes[shape] += 1
            self.seconds[shape] += time.perf_counter() - started

    @property
    def total(self) -> int:
        return sum(self.shapes.values())


def profile_dunning(count: int) -> None:
    """Run one batch of due retries in this process: time and statements per retry."""
    ids = list(
        PaymentAttempt.objects.filter(
            status=PaymentAttemptStatus.SCHEDULED, scheduled_for__lte=timezone.now()
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:count]
    )
    if not ids:
        return
    counter = QueryCounter()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        results = jobs.run_batch("dunning", ids, now=timezone.now())
    elapsed = time.perf_counter() - started
    n = len(ids)
    print(f"\nOne batch of {n} dunning retries, inline in this process: {dict(results)}")
    print(
        f"  {elapsed / n * 1000:.1f} ms per retry ({n / elapsed:.0f} retries/s in one process), "
        f"{counter.total / n:.1f} SQL statements per retry"
    )
    for shape, seconds in counter.seconds.most_common(8):
        print(f"    {counter.shapes[shape] / n:5.1f} {seconds / n * 1000:6.2f}  {shape}")


def profile_batch(ids: list[int]) -> None:
    """Renew two batches in this process: the first timed (statements by shape), the second
    under cProfile (which slows Python down, so its per-renewal time is not quoted)."""
    half = len(ids) // 2
    timed, profiled = ids[:half], ids[half:]
    counter = QueryCounter()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        results = jobs.run_batch("renew", timed, now=timezone.now())
    elapsed = time.perf_counter() - started
    n = len(timed)
    sql_seconds = sum(counter.seconds.values())
    print(f"\nOne batch of {n} renewals, inline in this process: {dict(results)}")
    print(
        f"  {elapsed / n * 1000:.1f} ms per renewal ({n / elapsed:.0f} renewals/s in one "
        f"process), {counter.total / n:.1f} SQL statements per renewal"
    )
    print(
        f"  time in SQL round trips: {sql_seconds / n * 1000:.1f} ms per renewal "
        f"({sql_seconds / elapsed:.0%}); the rest is Python (ORM, pricing, events, emails)"
    )
    print("  statements by total time (per renewal: count, ms):")
    for shape, seconds in counter.seconds.most_common(15):
        print(f"    {counter.shapes[shape] / n:5.1f} {seconds / n * 1000:6.2f}  {shape}")

    profiler = cProfile.Profile()
    profiler.enable()
    jobs.run_batch("renew", profiled, now=timezone.now())
    profiler.disable()
    ours = r"(jobs|subscriptions|invoices|payments|credits|dunning|selectors|pricing|events|notifications|numbering|sandbox|base)\.py"
    for title, order, restrictions in (
        ("top functions by own time", "tottime", (25,)),
        ("billing code by cumulative time", "cumulative", (ours, 30)),
    ):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order)
        stats.print_stats(*restrictions)
        table = out.getvalue()
        table = table[table.index("ncalls") :] if "ncalls" in table else table
        print(f"  cProfile of the next {len(profiled)} renewals, {title}:")
        print("    " + "\n    ".join(table.rstrip().splitlines()))


def statement_stats_reset() -> bool:
    """Start PostgreSQL's per-statement counters afresh, where the server keeps them
    (``shared_preload_libraries = 'pg_stat_statements'``); False where it does not."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            cursor.execute("SELECT pg_stat_statements_reset()")
    except DatabaseError:
        return False
    return True


def statement_stats_report(renewals: int) -> None:
    """PostgreSQL's own execution time per renewal, by statement (lock waits included)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g') "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = current_database() ORDER BY total_exec_time DESC"
        )
        rows = cursor.fetchall()
    total = sum(row[1] for row in rows)
    print(
        f"  PostgreSQL execution time: {total / renewals:.3f} ms per renewal "
        "(pg_stat_statements; parsing, commits and the network come on top); the largest:"
    )
    print("      calls   rows  ms/renewal  statement")
    for calls, ms, count, query in rows[:15]:
        print(f"    {calls:>7} {count:>6}  {ms / renewals:>10.3f}  {query[:90]}")


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU time (user + system, seconds) of ``pids`` and of the whole machine so far."""
    tick = os.sysconf("SC_CLK_TCK")
    own = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own += int(fields[11]) + int(fields[12])  # utime, stime
    busy = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    # user nice system idle iowait irq softirq steal: everything but idle and iowait.
    machine = sum(int(v) for i, v in enumerate(busy[:8]) if i not in (3, 4))
    return own / tick, machine / tick


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a process and its children."""
    totals = {"VmRSS": 0, "VmHWM": 0}
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(child) for child in task.read_text().split()]
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in totals:
                    totals[key] += int(value.split()[0])
        except FileNotFoundError:
            pass
    return totals


class Workers:
    def __init__(self, count: int, log_dir: Path):
        self.processes = []
        self.samples: dict[int, list[int]] = {}
        for n in range(count):
            log = (log_dir / f"bench-worker-{n}.log").open("w")
            command = [str(BASE_DIR / ".venv/bin/celery"), "-A", "config", "worker"]
            command += ["--pool", "solo", "--hostname", f"bench{n}@%h", "--loglevel", "WARNING"]
            command += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
            process = subprocess.Popen(
                command,
                cwd=BASE_DIR,
                env={**os.environ, **BENCH_ENV},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.processes.append(process)
            self.samples[process.pid] = []
        self.log_dir = log_dir

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        names = {f"bench{n}" for n in range(len(self.processes))}
        while time.monotonic() < deadline:
            replies = tasks.tick.app.control.ping(timeout=1.0) or []
            seen = {name.split("@")[0] for reply in replies for name in reply}
            if names <= seen:
                return
        raise SystemExit("the workers did not start; see bench-worker-*.log")

    def sample(self) -> None:
        for process in self.processes:
            self.samples[process.pid].append(proc_status(process.pid)["VmRSS"])

    def report(self) -> None:
        print("\nWorker memory (solo pool: one process each, no children):")
        for process in self.processes:
            status = proc_status(process.pid)
            rss = self.samples[process.pid]
            print(
                f"  pid {process.pid}: peak RSS (VmHWM) {status['VmHWM'] / 1024:.0f} MiB; "
                f"RSS first/median/last sample {rss[0] / 1024:.0f}/"
                f"{sorted(rss)[len(rss) // 2] / 1024:.0f}/{rss[-1] / 1024:.0f} MiB "
                f"over {len(rss)} samples"
            )

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def queue_drained() -> bool:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    # Large SCAN pages: the database also holds the cache (one books token per customer), and
    # walking it ten keys per round trip made this poll cost the workers' Redis real CPU.
    queues = client.scan_iter("celery*", count=10_000)
    queued = sum(client.llen(k) for k in queues if client.type(k) == b"list")
    return queued == 0 and client.hlen("unacked") == 0


def wait_for(condition, workers: Workers, what: str) -> float:
    """Seconds until ``condition()`` holds, sampling worker memory meanwhile."""
    started = time.perf_counter()
    last_report = started
    while not condition():
        workers.sample()
        # Fine enough for a phase of a second or two (1,000 retries are two batches), coarse
        # enough that the polling queries cost the workers nothing noticeable.
        time.sleep(0.1)
        if time.perf_counter() - last_report > 30:
            say(f"  … still waiting for {what}")
            last_report = time.perf_counter()
    workers.sample()
    return time.perf_counter() - started


def fan_out(job_name: str, *, now: datetime.datetime) -> list[list[int]]:
    """What the tick does for one job: batches of due ids onto the queue."""
    batches = list(jobs.due_ids(jobs.JOBS_BY_NAME[job_name], now=now))
    for ids in batches:
        tasks.run_batch.delay(job_name, ids)
    return batches


def counts() -> dict[str, int]:
    return {
        "invoices": Invoice.objects.count(),
        "payments": Payment.objects.count(),
        "ledger": SandboxCharge.objects.count(),
    }


def sql_floor(count: int) -> None:
    """What PostgreSQL alone spends on the rows of ``count`` renewals: each step is one
    set-based statement over seeded paid renewals (no Python per row, one session, nothing else
    running), all in one transaction that is rolled back. Foreign keys are checked where the
    steps say so rather than at commit; the commit itself (the WAL flush) is not timed. The
    event, email and ledger rows are copies of those the profiled batch wrote."""
    quote = connection.ops.quote_name

    def copy(model, source: str, **overrides: str) -> str:
        """INSERT rows like ``source``'s (a query over the model's table), some columns changed."""
        fields = [f for f in model._meta.concrete_fields if f.attname != "id"]
        columns = ", ".join(quote(f.column) for f in fields)
        values = ", ".join(overrides.get(f.column, f"s.{quote(f.column)}") for f in fields)
        table = quote(model._meta.db_table)
        # Only this script's constant SQL and the models' own names: no outside input.
        return f"INSERT INTO {table} ({columns}) SELECT {values} FROM ({source}) s"  # noqa: S608

    now = {"created_at": "now()", "updated_at": "now()"}
    uses = {"invoice_id": "s.new_invoice", "payment_id": "s.new_payment"}
    steps = [
        (
            "invoice",
            copy(
                Invoice,
                "SELECT i.* FROM billing_invoice i JOIN floor_map m ON m.invoice = i.id",
                **now,
                number="s.number || '-floor'",
                public_id="gen_random_uuid()",
                period_start="s.period_start + 3650",
                status="'open'",
                paid_at="NULL",
            ),
        ),
        (
            "",
            """UPDATE floor_map m SET new_invoice = n.id FROM billing_invoice o, billing_invoice n
            WHERE o.id = m.invoice AND n.number = o.number || '-floor'""",
        ),
        (
            "invoice line",
            copy(
                InvoiceLine,
                """SELECT l.*, m.new_invoice FROM billing_invoiceline l
            JOIN floor_map m ON m.invoice = l.invoice_id""",
                invoice_id="s.new_invoice",
            ),
        ),
        (
            "payment (pending)",
            copy(
                Payment,
                "SELECT p.* FROM billing_payment p JOIN floor_map m ON m.payment = p.id",
                **now,
                public_id="gen_random_uuid()",
                status="'pending'",
                receipt_number="NULL",
                idempotency_key="s.idempotency_key || '-floor'",
            ),
        ),
        (
            "",
            """UPDATE floor_map m SET new_payment = n.id FROM billing_payment o, billing_payment n
            WHERE o.id = m.payment AND n.idempotency_key = o.idempotency_key || '-floor'""",
        ),
        (
            "allocation",
            copy(
                PaymentAllocation,
                """SELECT a.*, m.new_payment, m.new_invoice
            FROM billing_paymentallocation a JOIN floor_map m ON m.payment = a.payment_id""",
                **uses,
                created_at="now()",
            ),
        ),
        (
            "payment lock",
            copy(
                InvoicePaymentLock,
                "SELECT new_invoice, new_payment FROM floor_map",
                **uses,
                created_at="now()",
            ),
        ),
        (
            "subscription's next term",
            """UPDATE billing_subscription t
            SET current_term_start = current_term_end, current_term_end = current_term_end + 30,
                updated_at = now()
            FROM floor_map m WHERE t.id = m.subscription""",
        ),
        (
            "payment succeeded",
            """UPDATE billing_payment t SET status = 'succeeded',
                processed_at = now(), receipt_number = 'R-floor-' || t.id, updated_at = now()
            FROM floor_map m WHERE t.id = m.new_payment""",
        ),
        (
            "payment lock released",
            """DELETE FROM billing_invoicepaymentlock t USING floor_map m
            WHERE t.payment_id = m.new_payment""",
        ),
        (
            "invoice paid",
            """UPDATE billing_invoice t SET status = 'paid', paid_at = now(),
                updated_at = now()
            FROM floor_map m WHERE t.id = m.new_invoice""",
        ),
        ("foreign keys of the rows above", "SET CONSTRAINTS ALL IMMEDIATE"),
        (
            "gateway ledger row",
            copy(
                SandboxCharge,
                """SELECT c.*, gen_random_uuid()::text AS k
            FROM (SELECT * FROM billing_sandboxcharge LIMIT 1) c, floor_map""",
                idempotency_key="s.k",
                reference="s.k",
                created_at="now()",
            ),
        ),
        (
            "5 events, foreign keys checked",
            copy(
                Event,
                """SELECT e.*, m.new_invoice, m.new_payment, m.subscription
            FROM (SELECT * FROM billing_event ORDER BY id DESC LIMIT 1) e, floor_map m,
                 generate_series(1, 5)""",
                **uses,
                subscription_id="s.subscription",
                created_at="now()",
            ),
        ),
        (
            "2 emails, foreign keys checked",
            copy(
                Notification,
                """SELECT n.*, m.new_invoice, m.new_payment, m.subscription, g
            FROM (SELECT * FROM billing_notification ORDER BY id DESC LIMIT 1) n, floor_map m,
                 generate_series(1, 2) g""",
                **uses,
                subscription_id="s.subscription",
                created_at="now()",
                sent_at="NULL",
                key="'floor-' || s.new_invoice || '-' || s.g",
            ),
        ),
    ]
    timed = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """CREATE TEMP TABLE floor_map ON COMMIT DROP AS
            SELECT DISTINCT ON (i.subscription_id) i.id AS invoice,
                   i.subscription_id AS subscription, a.payment_id AS payment,
                   NULL::bigint AS new_invoice, NULL::bigint AS new_payment
            FROM billing_invoice i JOIN billing_paymentallocation a ON a.invoice_id = i.id
            WHERE i.kind = 'recurring' AND i.status = 'paid'
            ORDER BY i.subscription_id, i.id DESC LIMIT %s""",
            [count],
        )
        for label, statement in steps:
            started = time.perf_counter()
            cursor.execute(statement)
            if label:
                timed.append((label, time.perf_counter() - started))
        transaction.set_rollback(True)
    print(
        f"\nPostgreSQL alone writing the rows of {count:,} renewals (set-based SQL, rolled back):"
    )
    for label, seconds in timed:
        print(f"  {label:32} {seconds / count * 1000:6.3f} ms per renewal")
    total = sum(seconds for _, seconds in timed)
    print(f"  {'in all':32} {total / count * 1000:6.3f} ms per renewal")


def main() -> None:
    count = ARGS.subscriptions
    dunning = ARGS.dunning if ARGS.dunning is not None else min(10_000, max(1, count // 10))
    started = time.perf_counter()
    seeded = seed(count, dunning, ARGS.history)
    say(
        f"Seeded in {time.perf_counter() - started:.0f}s: "
        f"{Invoice.objects.count():,} invoices, {Payment.objects.count():,} payments"
    )
    today = seeded["today"]
    renew_due = Subscription.objects.filter(
        status=SubscriptionStatus.LIVE, current_term_end__lte=today
    )

    profiled = seeded["renew_ids"][: ARGS.profile_batch]
    if profiled:
        profile_batch(profiled)
        profile_dunning(ARGS.profile_batch // 2)
    if ARGS.sql_floor:
        if not profiled:
            raise SystemExit("--sql-floor copies the profiled batch's rows: --profile-batch > 0")
        sql_floor(min(10_000, count))
        return
    if ARGS.profile_only:
        return
    connection.close()

    workers = Workers(ARGS.workers, Path(tempfile.gettempdir()))
    try:
        workers.wait_ready()
        say(f"{ARGS.workers} workers ready (logs: {tempfile.gettempdir()}/bench-worker-*.log)")
        before = counts()
        to_renew = renew_due.count()
        say(f"Fanning out {to_renew:,} renewals")
        # The 10,000th new invoice (or the last): ids come from a sequence, so one index probe
        # finds it. Counting the new invoices at every poll cost PostgreSQL ~0.1 ms per renewal.
        tenth_thousand = Invoice.objects.filter(
            pk__gte=Invoice.objects.latest("pk").pk + min(10_000, to_renew)
        )
        pids = [p.pid for p in workers.processes]
        statement_stats = statement_stats_reset()
        cpu_before = cpu_seconds(pids)
        t0 = time.perf_counter()
        renew_batches = fan_out("renew", now=timezone.now())
        fanned = time.perf_counter() - t0
        at_10k: dict[int, int] = {}

        def renewed() -> bool:
            # Peak RSS of each worker once 10,000 renewals are done, to compare with the end.
            if not at_10k and tenth_thousand.exists():
                at_10k.update({p.pid: proc_status(p.pid)["VmHWM"] for p in workers.processes})
            return (
                not renew_due.exists()
                and not Payment.objects.filter(status=PaymentStatus.PENDING).exists()
            )

        renewing = wait_for(renewed, workers, "the renewals")
        renew_seconds = fanned + renewing
        cpu_after = cpu_seconds(pids)
        after = counts()
        renewed_count = after["invoices"] - before["invoices"]
        say(
            f"Renewed {renewed_count:,} in {renew_seconds:.1f} s: "
            f"{renewed_count / renew_seconds:.1f} renewals/s; worker peak RSS at 10k / now: "
            + ", ".join(
                f"{at_10k.get(p.pid, 0) / 1024:.0f} / {proc_status(p.pid)['VmHWM'] / 1024:.0f} MiB"
                for p in workers.processes
            )
        )
        workers_cpu = cpu_after[0] - cpu_before[0]
        rest_cpu = (cpu_after[1] - cpu_before[1]) - workers_cpu
        say(
            f"  CPU per renewal: workers {workers_cpu / renewed_count * 1000:.2f} ms, "
            f"the rest of the machine (PostgreSQL, Redis, this script) "
            f"{rest_cpu / renewed_count * 1000:.2f} ms"
        )
        if statement_stats:
            statement_stats_report(renewed_count)
        if ARGS.renewals_only:
            workers.report()
            return
        emails_before = Notification.objects.filter(sent_at__isnull=False).count()
        emailing = wait_for(queue_drained, workers, "the emails")
        emails = Notification.objects.filter(sent_at__isnull=False).count() - emails_before

        say(f"Fanning out {dunning:,} dunning retries")
        retry_due = PaymentAttempt.objects.filter(
            status=PaymentAttemptStatus.SCHEDULED, scheduled_for__lte=timezone.now()
        )
        t0 = time.perf_counter()
        dunning_batches = fan_out("dunning", now=timezone.now())
        retry_seconds = (time.perf_counter() - t0) + wait_for(
            lambda: not retry_due.exists(), workers, "the retries"
        )
        retry_outcomes = Counter(
            PaymentAttempt.objects.filter(attempt_number=1).values_list("status", flat=True)
        )
        wait_for(queue_drained, workers, "the retries' emails")

        say("Rerunning: a tick-style fan-out, then every batch again (as redeliveries)")
        before_rerun = counts()
        rerun_batches = fan_out("renew", now=timezone.now())
        for ids in renew_batches:
            tasks.run_batch.delay("renew", ids)
        for ids in dunning_batches:
            tasks.run_batch.delay("dunning", ids)
        rerun_seconds = wait_for(queue_drained, workers, "the rerun")
        after_rerun = counts()

        renewed = after["invoices"] - before["invoices"]
        charges = after["ledger"] - before["ledger"]
        print("\nResults")
        print(f"  subscriptions renewed by the workers  {renewed:>10,} (of {to_renew:,} due)")
        print(f"  gateway charges for them              {charges:>10,}")
        print(f"  renewal wall time                     {renew_seconds:>10.1f} s")
        print(
            f"  renewals/s ({ARGS.workers} workers)                {renewed / renew_seconds:>10.1f}"
        )
        print(f"  emails sent after the renewals        {emails:>10,} in {emailing:.1f} s")
        print(f"  dunning retries                       {dunning:>10,} {dict(retry_outcomes)}")
        print(
            f"  retries/s ({ARGS.workers} workers)                 {dunning / retry_seconds:>10.1f}"
        )
        print(f"  rerun batches found due               {len(rerun_batches):>10}")
        print(
            f"  rerun: new invoices / payments / charges   "
            f"{after_rerun['invoices'] - before_rerun['invoices']} / "
            f"{after_rerun['payments'] - before_rerun['payments']} / "
            f"{after_rerun['ledger'] - before_rerun['ledger']} ({rerun_seconds:.1f} s)"
        )
        workers.report()
    finally:
        workers.stop()


if __name__ == "__main__":
    main()
