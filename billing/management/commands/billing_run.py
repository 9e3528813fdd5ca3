"""Run all due billing work inline, as of now or of another moment (backfills, demo, tests)."""

import datetime
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from tqdm import tqdm

from billing import jobs

# How the summary groups the runners' outcomes (see the labels in billing.jobs).
SUMMARY_GROUPS: dict[str, Callable[[str], bool]] = {
    "renewed": lambda o: o.startswith("renewed"),
    "trials ended": lambda o: o.startswith("trial_"),
    "charged": lambda o: o.endswith("_charged") or o == "dunning_succeeded",
    "failed charges": lambda o: o.endswith("_charge_failed") or o == "dunning_failed",
    "charges unknown": lambda o: o.endswith(("_charge_unknown", "_charge_pending")),
    "dunning actions": lambda o: o.startswith("dunning_"),
    "reconciled": lambda o: o.startswith("reconciled_"),
    "emails": lambda o: o in ("email_sent", "reminder_queued"),
    "skipped": lambda o: o == "skipped",
    "errors": lambda o: o == "errors",
}


class Command(BaseCommand):
    help = "Run every piece of due billing work (renewals, trials, dunning, reminders…) inline."

    def add_arguments(self, parser):
        parser.add_argument(
            "--at", help="ISO date-time to run as of (default: now), e.g. 2027-01-31T06:00"
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what is due.")
        parser.add_argument(
            "--job", action="append", choices=[j.name for j in jobs.JOBS], help="Only these jobs."
        )

    def handle(self, *args, at=None, dry_run=False, job=None, **options):
        now = self._moment(at)
        due = jobs.count_due(now=now)
        selected = tuple(job) if job else None
        self.stdout.write(f"Billing run as of {now.isoformat()}")
        if dry_run:
            for name, count in due.items():
                if selected is None or name in selected:
                    self.stdout.write(f"  {name:<18} {count:>8} due")
            return
        total = sum(count for name, count in due.items() if selected is None or name in selected)
        with tqdm(total=total, unit="item", disable=total == 0 or not self.stdout.isatty()) as bar:
            results = jobs.run_due(now=now, jobs=selected, on_batch=lambda _name, n: bar.update(n))
        self.stdout.write(self.style.SUCCESS("Done."))
        for label, belongs in SUMMARY_GROUPS.items():
            count = sum(n for outcome, n in results.items() if belongs(outcome))
            self.stdout.write(f"  {label:<18} {count:>8}")
        for outcome, count in sorted(results.items()):
            self.stdout.write(f"    {outcome:<30} {count:>6}")

    def _moment(self, at: str | None) -> datetime.datetime:
        if not at:
            return timezone.now()
        moment = parse_datetime(at) or (parse_datetime(f"{at}T00:00:00") if len(at) == 10 else None)
        if moment is None:
            raise CommandError(f"--at: {at!r} is not an ISO date-time (e.g. 2027-01-31T06:00).")
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        return moment
