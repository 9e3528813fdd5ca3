"""A real Celery worker for the job tests: ``python -m tests.jobs.worker NAME [worker options]``.

It is the production worker (``celery -A config worker``: same app, tasks and settings module)
with three test-only adjustments, all made here so production code carries no test hooks:

* the broker keys live under ``JOBS_TEST_KEY_PREFIX`` (kombu's ``global_keyprefix``), so two
  test sessions sharing one Redis never take each other's messages;
* a message taken by a worker that dies unacknowledged becomes visible again after
  ``JOBS_TEST_VISIBILITY_TIMEOUT`` seconds instead of an hour, so redelivery is observable;
* with ``JOBS_TEST_KILL_AFTER_CHARGE=1`` the process SIGKILLs itself right after the sandbox
  gateway has charged a card (or a batch of cards) and before the caller can record the
  result: the deterministic
  version of "the worker died mid-renewal".

Readiness is announced in Redis (``<prefix>ready:<NAME>`` = pid) once the worker consumes.
"""

import os
import signal
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django

django.setup()

import redis  # noqa: E402
from celery.signals import worker_ready  # noqa: E402

from config.celery import app  # noqa: E402

PREFIX = os.environ["JOBS_TEST_KEY_PREFIX"]


def configure() -> None:
    app.conf.broker_transport_options = {
        "global_keyprefix": PREFIX,
        "visibility_timeout": float(os.environ.get("JOBS_TEST_VISIBILITY_TIMEOUT", "3600")),
        # Look for such messages every second (kombu's default: every 10 s, every 10th sweep).
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
    if os.environ.get("JOBS_TEST_KILL_AFTER_CHARGE") == "1":
        from billing.gateways.sandbox import SandboxGateway

        charge, charge_many = SandboxGateway.charge, SandboxGateway.charge_many

        def charge_then_die(self, **kwargs):
            try:
                charge(self, **kwargs)
            finally:
                # The money moved (or the answer was lost); nobody lives to record it.
                os.kill(os.getpid(), signal.SIGKILL)

        def charge_many_then_die(self, requests, **kwargs):
            try:
                charge_many(self, requests, **kwargs)
            finally:
                os.kill(os.getpid(), signal.SIGKILL)

        SandboxGateway.charge = charge_then_die
        SandboxGateway.charge_many = charge_many_then_die


def announce_ready(name: str) -> None:
    client = redis.Redis.from_url(app.conf.broker_url)

    @worker_ready.connect(weak=False)
    def ready(**_kwargs) -> None:
        client.set(f"{PREFIX}ready:{name}", os.getpid(), ex=600)


def main(argv: list[str]) -> None:
    name, options = argv[0], argv[1:]
    configure()
    announce_ready(name)
    app.worker_main(
        [
            "worker",
            "--hostname",
            f"{name}@%h",
            "--loglevel",
            os.environ.get("JOBS_TEST_LOG_LEVEL", "WARNING"),
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            *options,
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
