"""Run all due billing work inline, as of now or of another moment (backfills, demo, tests)."""

import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from tqdm import tqdm

from billing import jobs

# How the summary names each runner's outcome.
SUMMARY_GROUPS = {
    "renewed": ("renewed", "renewed_charged", "renewed_charge_failed", "renewed_charge_unknown"),
    "charged": ("renewed_charged", "started_charged", "resumed_charged", "dunning_succeeded"),
    "failed charges": (
        "renewed_charge_failed",
        "started_charge_failed",
        "resumed_charge_failed",
        "dunning_failed",
    ),
    "dunning actions": ("dunning_succeeded", "dunning_failed", "dunning_skipped"),
    "emails": ("email_sent", "reminder_queued"),
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
        for label, keys in SUMMARY_GROUPS.items():
            self.stdout.write(f"  {label:<18} {sum(results[k] for k in keys):>8}")
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
