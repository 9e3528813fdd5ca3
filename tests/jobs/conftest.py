"""Fixtures for the scheduled-job tests: frozen billing days, cards, and real Celery workers.

Workers are real subprocesses (``tests/jobs/worker.py`` wraps ``celery -A config worker``) on a
real Redis broker (db 14, keys under a per-session prefix) against the test database that
pytest-django created, so they see what a ``transaction=True`` test commits.
"""

import datetime
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import time_machine
from django.core.management import call_command
from django.db import connection

from billing.gateways.sandbox import SandboxGateway
from billing.models import Customer, Invoice, SandboxCharge, Subscription
from billing.services.payment_methods import payment_method_add
from billing.services.subscriptions import invoice_attempt_key, subscription_create
from config.celery import app
from tests.factories import CustomerFactory, PlanFactory

BASE_DIR = Path(__file__).resolve().parents[2]
BROKER_URL = "redis://127.0.0.1:6379/14"
KEY_PREFIX = f"jobs-test-{uuid.uuid4().hex[:12]}:"

GOOD_CARD = "4242424242424242"
SOFT_DECLINE_CARD = "4000000000000002"
LOST_CARD = "4000000000009987"  # hard decline: never retried
FAILING_CARD = "4000000000000341"  # saves fine; every charge is declined (soft)
TIMEOUT_CARD = "4000000000000259"  # charged, but the answer is lost: outcome unknown


# ----------------------------------------------------------------------------- time and money
def noon(day: datetime.date) -> datetime.datetime:
    """Noon UTC of a day: the organization's time zone is UTC in these tests."""
    return datetime.datetime(day.year, day.month, day.day, 12, tzinfo=datetime.UTC)


@pytest.fixture
def travel(time_machine):
    """Freeze the clock at noon of a day."""

    def to(day: datetime.date) -> datetime.datetime:
        moment = noon(day)
        time_machine.move_to(moment, tick=False)
        return moment

    return to


def billing_run(moment: datetime.datetime, *args: str) -> str:
    """``manage.py billing_run --at MOMENT [args]``; returns what it printed. A runner that
    crashed (an unexpected exception, logged and counted as an error) fails the test."""
    out = io.StringIO()
    call_command("billing_run", *args, at=moment.isoformat(), stdout=out)
    printed = out.getvalue()
    if "--dry-run" not in args:
        assert re.search(r"^  errors +0$", printed, re.MULTILINE), printed
    return printed


def outcomes(printed: str) -> Counter:
    """The per-outcome counts billing_run printed (``    renewed_charged      3``)."""
    return Counter(
        {name: int(n) for name, n in re.findall(r"^    (\w+) +(\d+)$", printed, re.MULTILINE)}
    )


def summary(printed: str) -> dict[str, int]:
    """The summary lines billing_run printed (``  failed charges       1``)."""
    return {
        name: int(n) for name, n in re.findall(r"^  (\w[\w ]*?) +(\d+)$", printed, re.MULTILINE)
    }


@pytest.fixture
def run_day(travel):
    """Live one billing day: the clock at noon of ``day`` and ``billing_run --at`` that moment."""

    def run(day: datetime.date, *args: str) -> str:
        return billing_run(travel(day), *args)

    return run


def add_card(customer: Customer, number: str = GOOD_CARD, **kwargs):
    return payment_method_add(
        customer=customer, number=number, exp_month=12, exp_year=2035, cvc="123", **kwargs
    )


def new_subscription(*, card: str | None = GOOD_CARD, price: str = "30.00", plan=None, **kwargs):
    """A customer (with a card unless ``card=None``) subscribed today to a monthly plan."""
    customer = CustomerFactory()
    if card:
        add_card(customer, card)
    plan = plan or PlanFactory(price=Decimal(price))
    return subscription_create(customer=customer, plan=plan, **kwargs).subscription


def subscriptions_due_now(count: int, *, card: str = GOOD_CARD) -> list[Subscription]:
    """Monthly subscriptions created 35 days ago (clock moved back), so their renewal is due now."""
    with time_machine.travel(
        datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=35), tick=False
    ):
        plan = PlanFactory(price=Decimal("30.00"))
        return [new_subscription(card=card, plan=plan) for _ in range(count)]


def reload(instance):
    return type(instance).objects.get(pk=instance.pk)


def ledger_count(idempotency_key: str | None = None) -> int:
    """Charges in the sandbox gateway's books (refunds excluded)."""
    return SandboxGateway().ledger_count(idempotency_key=idempotency_key)


def assert_each_invoice_charged_at_most_once() -> None:
    """Every charge in the ledger is under a distinct invoice key: one charge per attempt."""
    keys = list(SandboxCharge.objects.values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    for invoice in Invoice.objects.filter(subscription__isnull=False):
        assert ledger_count(invoice_attempt_key(invoice)) <= 1


def wait_until(condition: Callable[[], bool], *, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.1)


# ----------------------------------------------------------------------------- Celery
def _reset_producer() -> None:
    """Forget pooled broker connections so the next ``delay`` uses the current app.conf."""
    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


def point_producer_at(url: str, transport_options: dict) -> tuple[str, dict]:
    """Send this process's tasks to another broker; returns the previous (url, options)."""
    previous = app.conf.broker_url, app.conf.broker_transport_options
    app.conf.broker_url = url
    app.conf.broker_transport_options = transport_options
    _reset_producer()
    return previous


@dataclass
class Broker:
    """The test broker: Redis db 14, every key under this session's prefix."""

    url: str
    prefix: str

    @property
    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def queued(self) -> int:
        """Messages waiting in any queue (kombu keeps one list per priority step)."""
        client = self.client
        return sum(
            client.llen(key)
            for key in client.scan_iter(f"{self.prefix}celery*")
            if client.type(key) == b"list"
        )

    def unacked(self) -> int:
        """Messages delivered to a worker and not acknowledged yet (acks_late: not finished)."""
        return self.client.hlen(f"{self.prefix}unacked")

    def wait_drained(self, timeout: float = 40) -> None:
        """Every message taken and acknowledged: twice in a row, a moment apart."""

        def drained() -> bool:
            if self.queued() or self.unacked():
                return False
            time.sleep(0.3)
            return not (self.queued() or self.unacked())

        wait_until(drained, timeout=timeout, what="the broker to drain")

    def cleanup(self) -> None:
        client = self.client
        keys = list(client.scan_iter(f"{self.prefix}*"))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="session")
def broker():
    """This process publishes to the test broker for the whole session (and no longer)."""
    test_broker = Broker(url=BROKER_URL, prefix=KEY_PREFIX)
    previous = point_producer_at(BROKER_URL, {"global_keyprefix": KEY_PREFIX})
    yield test_broker
    point_producer_at(*previous)
    test_broker.cleanup()


@pytest.fixture
def broker_down():
    """The broker is unreachable: a port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    previous = point_producer_at(f"redis://127.0.0.1:{port}/0", {})
    yield
    point_producer_at(*previous)


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_no_errors(self) -> None:
        """No task or runner crashed (jobs.run_batch logs every failure with its traceback)."""
        output = self.output()
        assert "Traceback" not in output and " ERROR " not in output, output

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acknowledgement, no goodbye."""
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


def _database_url() -> str:
    """The test database pytest-django created (only meaningful with transaction=True)."""
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def start_worker(transactional_db, broker, tmp_path):
    """Start real Celery workers (subprocesses); each is stopped when the test ends.

    ``start_worker(pool="prefork", concurrency=2, env={...})`` returns once the worker consumes.
    """
    workers: list[Worker] = []

    def start(
        *, pool: str = "solo", concurrency: int = 1, env: dict | None = None, wait: bool = True
    ) -> Worker:
        name = f"jobs{len(workers)}-{uuid.uuid4().hex[:6]}"
        log = tmp_path / f"{name}.log"
        command = [sys.executable, "-m", "tests.jobs.worker", name, "--pool", pool]
        command += ["--concurrency", str(concurrency)]
        process = subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "config.settings.test",
                "DATABASE_URL": _database_url(),
                "CELERY_BROKER_URL": BROKER_URL,
                "JOBS_TEST_KEY_PREFIX": KEY_PREFIX,
                # A batch whose worker died unacknowledged is delivered again after 3 s.
                "JOBS_TEST_VISIBILITY_TIMEOUT": "3",
                **(env or {}),
            },
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(name=name, process=process, log=log)
        workers.append(worker)
        if wait:
            ready_key = f"{KEY_PREFIX}ready:{name}"

            def ready() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"worker {name} exited:\n{worker.output()}")
                return broker.client.exists(ready_key) == 1

            wait_until(ready, timeout=40, what=f"worker {name} to start")
        return worker

    yield start
    for worker in workers:
        worker.stop()
