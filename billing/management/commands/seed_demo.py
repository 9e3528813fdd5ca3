"""``manage.py seed_demo``: load the Northwind Cloud demo data (idempotent; see billing.demo)."""

from django.core.management.base import BaseCommand

from billing.demo import DEMO_LOGINS, DEMO_PASSWORD, DEMO_TOTP_SECRET, demo_seed


class Command(BaseCommand):
    help = (
        "Create the Northwind Cloud demo: merchant settings, catalog, customers in every state "
        "with two years of invoices. Safe to run again: it only creates what is missing."
    )

    def handle(self, *args, **options) -> None:
        result = demo_seed()
        if result.created_anything:
            self.stdout.write(f"Demo data created (as of {result.today:%Y-%m-%d}):")
            for label, count in sorted(result.created.items()):
                self.stdout.write(f"  {label:<32} {count:>5}")
            self.stdout.write(self.style.SUCCESS(f"Done in {result.seconds:.1f} s."))
        else:
            self.stdout.write("Nothing new: the demo data is already in place. Created 0 rows.")
        self.stdout.write("")
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        for login in DEMO_LOGINS:
            totp = "  [TOTP]" if login.totp else ""
            self.stdout.write(f"  {login.email:<26} {login.role}{totp}")
        self.stdout.write(
            f"TOTP secret for the logins marked [TOTP]: {DEMO_TOTP_SECRET} "
            "(add it to any authenticator app)."
        )
