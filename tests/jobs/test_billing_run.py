"""``manage.py billing_run``: the tick's due work inline, as of a moment; ``--dry-run`` only
counts; the summary says what happened (renewed, trials, charged, failed, dunning, emails).
"""

import datetime
import io

import pytest
from django.core.management import CommandError, call_command

from billing.models import (
    Event,
    Invoice,
    Notification,
    Payment,
    PaymentAttempt,
    SandboxCharge,
    Subscription,
)
from tests.factories import PlanFactory
from tests.jobs.conftest import (
    FAILING_CARD,
    add_card,
    billing_run,
    new_subscription,
    noon,
    outcomes,
    summary,
)

pytestmark = pytest.mark.django_db

D = datetime.date
DAY = D(2027, 4, 10)


@pytest.fixture
def due_work(organization, travel, run_day):
    """On Apr 10: two renewals (one card fails), a trial end, a dunning retry, emails to sweep."""
    travel(D(2027, 3, 9))
    retrying = new_subscription()
    add_card(retrying.customer, FAILING_CARD, use_for_subscriptions=True)
    travel(D(2027, 3, 10))
    renewing = new_subscription()
    failing = new_subscription()
    add_card(failing.customer, FAILING_CARD, use_for_subscriptions=True)
    travel(D(2027, 3, 27))
    trial = new_subscription(plan=PlanFactory(trial_days=14))
    run_day(D(2027, 4, 9))  # the retrying subscription's renewal is declined: retry 1 on Apr 10
    travel(DAY)
    return {"renewing": renewing, "failing": failing, "trial": trial, "retrying": retrying}


def database_state() -> dict:
    return {
        "invoices": list(Invoice.objects.values_list("pk", "status")),
        "payments": list(Payment.objects.values_list("pk", "status")),
        "attempts": list(PaymentAttempt.objects.values_list("pk", "status")),
        "subscriptions": list(Subscription.objects.values_list("pk", "status", "current_term_end")),
        "events": Event.objects.count(),
        "notifications": list(Notification.objects.values_list("pk", "sent_at")),
        "ledger": SandboxCharge.objects.count(),
    }


def test_billing_run_dry_run_counts_due_work_and_writes_nothing(due_work):
    before = database_state()

    out = billing_run(noon(DAY), "--dry-run")

    assert database_state() == before
    due = {name: int(n) for name, n in (line.split()[:2] for line in out.splitlines()[1:])}
    assert due["renew"] == 2
    assert due["trial_end"] == 1
    assert due["dunning"] == 1
    assert due["start"] == due["pause"] == due["resume"] == due["reconcile"] == 0
    assert due["email"] == Notification.objects.filter(sent_at__isnull=True).count() > 0
    assert "Done." not in out


def test_billing_run_summary_counts_renewed_charged_failed_dunning_and_emails(due_work):
    unsent = Notification.objects.filter(sent_at__isnull=True).count()

    out = billing_run(noon(DAY))

    totals = summary(out)
    assert totals["renewed"] == 2
    assert totals["trials ended"] == 1
    assert totals["charged"] == 2  # the good renewal and the trial
    assert totals["failed charges"] == 2  # the declined renewal and the declined retry
    assert totals["dunning actions"] == 1
    assert totals["emails"] == unsent
    assert totals["errors"] == 0
    assert outcomes(out) == {
        "renewed_charged": 1,
        "renewed_charge_failed": 1,
        "trial_live_charged": 1,
        "dunning_failed": 1,
        "email_sent": unsent,
    }
    assert out.startswith(f"Billing run as of {noon(DAY).isoformat()}")

    # The same moment again: nothing left to do.
    again = summary(billing_run(noon(DAY)))
    assert again["renewed"] == again["charged"] == again["failed charges"] == 0
    assert again["dunning actions"] == again["emails"] == 0


def test_billing_run_job_option_runs_only_that_job(due_work):
    out = billing_run(noon(DAY), "--job", "renew")

    assert outcomes(out) == {"renewed_charged": 1, "renewed_charge_failed": 1}
    assert Subscription.objects.get(pk=due_work["trial"].pk).status == "in_trial"


def test_billing_run_date_only_means_midnight_and_nonsense_is_refused(organization):
    out = io.StringIO()
    call_command("billing_run", "--dry-run", at="2027-04-10", stdout=out)
    assert "as of 2027-04-10T00:00:00" in out.getvalue()

    with pytest.raises(CommandError, match="not an ISO date-time"):
        call_command("billing_run", "--dry-run", at="next tuesday", stdout=io.StringIO())
