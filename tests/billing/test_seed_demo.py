"""``manage.py seed_demo``: idempotent, consistent to the cent, and every state is there."""

import datetime
import io
import itertools
from collections import Counter
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyotp
import pytest
from allauth.account.models import EmailAddress
from django.apps import apps
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from billing.demo import DEMO_PASSWORD, DEMO_TOTP_SECRET, ORGANIZATION_TIME_ZONE
from billing.enums import (
    CancelReason,
    DocumentKind,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    PaymentAttemptStatus,
    PaymentStatus,
    PortalRole,
    SubscriptionStatus,
)
from billing.models import (
    CreditAllocation,
    CreditNote,
    Customer,
    DocumentSequence,
    Invoice,
    Organization,
    Payment,
    PaymentAllocation,
    PaymentAttempt,
    PaymentMethod,
    SandboxCard,
    Subscription,
)
from billing.money import percent_of

pytestmark = pytest.mark.django_db

COUNTED_APPS = ("billing", "portal", "accounts", "account", "otp_totp")


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def row_counts() -> dict[str, int]:
    return {
        model._meta.label: model.objects.count()
        for app_label in COUNTED_APPS
        for model in apps.get_app_config(app_label).get_models()
    }


def demo_today() -> datetime.date:
    return timezone.localdate(timezone=ZoneInfo(ORGANIZATION_TIME_ZONE))


def subscription_of(name: str) -> Subscription:
    return Subscription.objects.get(customer__display_name=name)


@pytest.fixture
def seeded() -> str:
    return seed()


def number_value(number: str, prefix: str) -> int:
    assert number.startswith(prefix)
    return int(number.removeprefix(prefix))


# ----------------------------------------------------------------------------- idempotency
def test_seed_demo_second_run_identical_row_counts_for_every_model(seeded):
    first = row_counts()

    second_output = seed()

    assert row_counts() == first
    assert "Nothing new" in second_output
    assert first["billing.Invoice"] > 100


def test_seed_demo_second_run_sequences_not_advanced(seeded):
    before = dict(DocumentSequence.objects.values_list("kind", "next_number"))

    seed()

    assert dict(DocumentSequence.objects.values_list("kind", "next_number")) == before


def test_seed_demo_first_run_reports_created_counts(seeded):
    assert "billing.Invoice" in seeded
    assert "billing.Customer" in seeded


# ----------------------------------------------------------------------------- merchant
def test_seed_demo_organization_configured_as_northwind(seeded):
    org = Organization.load()

    assert org.name == "Northwind Cloud"
    assert org.email == "billing@northwind.example"
    assert (org.base_currency, org.time_zone) == ("USD", "America/New_York")
    assert (org.tax_rate, org.tax_label, org.payment_terms_days) == (
        Decimal("8.875"),
        "Sales tax",
        14,
    )
    assert org.free_plan_fallback
    assert org.free_plan.code == "free"
    assert org.free_plan.is_free


# ----------------------------------------------------------------------------- invoices
def test_seed_demo_globex_history_at_least_24_recurring_invoices(seeded):
    globex = Invoice.objects.filter(customer__display_name="Globex", kind=InvoiceKind.RECURRING)

    assert globex.count() >= 24
    assert globex.filter(status=InvoiceStatus.PAID).count() >= 22


def test_seed_demo_history_at_least_24_months_for_acme_and_branches(seeded):
    for name in ("Acme Corp", "Acme Berlin", "Acme Paris"):
        assert Invoice.objects.filter(customer__display_name=name).count() >= 24, name


def test_seed_demo_invoice_numbers_gapless_unique_and_chronological(seeded):
    invoices = list(Invoice.objects.order_by("issue_date", "finalized_at", "id"))
    numbers = [number_value(i.number, "INV-") for i in invoices]

    assert sorted(numbers) == list(range(1, len(invoices) + 1))
    # Numbered in date order: a later issue date never has a smaller number.
    assert numbers == sorted(numbers)
    assert DocumentSequence.objects.get(kind=DocumentKind.INVOICE).next_number == len(numbers) + 1


def test_seed_demo_receipt_and_credit_note_numbers_gapless(seeded):
    receipts = Payment.objects.exclude(receipt_number=None).values_list("receipt_number", flat=True)
    notes = CreditNote.objects.values_list("number", flat=True)

    receipt_values = sorted(number_value(n, "RCPT-") for n in receipts)
    note_values = sorted(number_value(n, "CN-") for n in notes)

    assert receipt_values == list(range(1, len(receipt_values) + 1))
    assert note_values == list(range(1, len(note_values) + 1))
    assert not Payment.objects.filter(status=PaymentStatus.SUCCEEDED, receipt_number=None).exists()


def test_seed_demo_every_invoice_total_adds_up_from_lines(seeded):
    for invoice in Invoice.objects.prefetch_related("lines"):
        lines = list(invoice.lines.all())
        charges = sum(
            (line.amount for line in lines if line.kind != InvoiceLineKind.DISCOUNT), Decimal(0)
        )
        discounts = -sum(
            (line.amount for line in lines if line.kind == InvoiceLineKind.DISCOUNT), Decimal(0)
        )
        assert lines, invoice.number
        assert invoice.subtotal == charges, invoice.number
        assert invoice.discount_total == discounts, invoice.number
        assert invoice.tax_total == percent_of(charges - discounts, invoice.tax_rate), (
            invoice.number
        )
        assert invoice.total == charges - discounts + invoice.tax_total, invoice.number
        for line in lines:
            assert line.amount == (line.quantity * line.unit_price).quantize(Decimal("0.01"))


def test_seed_demo_taxed_invoices_use_the_organization_rate(seeded):
    globex = Invoice.objects.filter(customer__display_name="Globex")
    paris = Invoice.objects.filter(customer__display_name="Acme Paris")

    assert set(globex.values_list("tax_rate", flat=True)) == {Decimal("8.875")}
    assert set(paris.values_list("tax_total", flat=True)) == {Decimal("0.00")}


def test_seed_demo_paid_invoices_succeeded_allocations_sum_to_total(seeded):
    paid = Invoice.objects.filter(status=InvoiceStatus.PAID)
    assert paid.exists()
    for invoice in paid:
        allocated = PaymentAllocation.objects.filter(
            invoice=invoice, payment__status=PaymentStatus.SUCCEEDED
        ).aggregate(total=Sum("amount"))["total"]
        assert allocated == invoice.total, invoice.number
        assert invoice.paid_at is not None


def test_seed_demo_open_invoices_not_fully_paid(seeded):
    for invoice in Invoice.objects.filter(status=InvoiceStatus.OPEN):
        paid = (
            PaymentAllocation.objects.filter(
                invoice=invoice, payment__status=PaymentStatus.SUCCEEDED
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        credited = (
            CreditAllocation.objects.filter(invoice=invoice).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        assert paid + credited < invoice.total, invoice.number


def test_seed_demo_card_payments_labelled_and_known_to_the_sandbox(seeded):
    globex_payments = Payment.objects.filter(
        customer__display_name="Globex", status=PaymentStatus.SUCCEEDED
    )

    assert set(globex_payments.values_list("method_label", flat=True)) == {"Visa •••• 4242"}
    assert globex_payments.values("idempotency_key").distinct().count() == globex_payments.count()
    for method in PaymentMethod.objects.all():
        card = SandboxCard.objects.get(token=method.token)
        assert (card.brand, card.last4) == (method.brand, method.last4)
        assert method.is_default
        assert (method.exp_year, method.exp_month) > (demo_today().year, demo_today().month)


def test_seed_demo_invoices_carry_both_parties_details(seeded):
    invoice = Invoice.objects.filter(customer__display_name="Globex").first()

    assert invoice.billing_details["name"] == "Globex"
    assert invoice.billing_details["address_lines"]
    assert invoice.billing_details["tax_id"]
    assert invoice.merchant_details["email"] == "billing@northwind.example"
    assert invoice.merchant_details["address_lines"]


def test_seed_demo_globex_has_open_and_overdue_invoices(seeded):
    today = demo_today()
    open_invoices = Invoice.objects.filter(
        customer__display_name="Globex", status=InvoiceStatus.OPEN
    )

    assert open_invoices.filter(due_date__lt=today).count() == 1
    assert open_invoices.filter(due_date__gte=today).count() == 1


def test_seed_demo_credit_note_partially_applied(seeded):
    note = CreditNote.objects.get(customer__display_name="Globex")
    applied = note.allocations.aggregate(total=Sum("amount"))["total"]

    assert Decimal(0) < applied < note.amount
    assert CreditNote.objects.count() >= 2


# ----------------------------------------------------------------------------- customers
def test_seed_demo_acme_branches_visible_with_open_invoices(seeded):
    acme = Customer.objects.get(display_name="Acme Corp")
    branches = list(acme.children.order_by("display_name"))

    assert [b.display_name for b in branches] == ["Acme Berlin", "Acme Paris"]
    assert all(branch.visible_to_parent for branch in branches)
    assert Invoice.objects.filter(customer__in=branches, status=InvoiceStatus.OPEN).count() >= 2
    subscription = subscription_of("Acme Corp")
    assert (subscription.plan.code, subscription.quantity) == ("enterprise-monthly", 5)
    assert subscription.addons.filter(addon__code="extra-seats").exists()
    assert subscription.auto_charge
    assert subscription.payment_method is not None


def test_seed_demo_acme_day_31_anchor_terms_clamp_to_month_end(seeded):
    subscription = subscription_of("Acme Corp")
    invoices = list(subscription.invoices.order_by("period_start"))

    assert subscription.anchor_date.day == 31
    for earlier, later in itertools.pairwise(invoices):
        assert earlier.period_end == later.period_start
    for invoice in invoices:
        start = invoice.period_start
        next_month = (start.replace(day=1) + datetime.timedelta(days=32)).replace(day=1)
        last_day = (next_month - datetime.timedelta(days=1)).day
        assert start.day == min(31, last_day), start


def test_seed_demo_umbrella_cancelled_by_dunning_still_in_term(seeded):
    subscription = subscription_of("Umbrella")
    today = demo_today()

    assert subscription.status == SubscriptionStatus.CANCELLED
    assert subscription.cancel_reason == CancelReason.DUNNING
    assert subscription.cancelled_at < timezone.now()
    assert subscription.current_term_start <= today < subscription.current_term_end
    unpaid = subscription.invoices.get(status=InvoiceStatus.OPEN)
    assert unpaid.due_date < today
    attempts = PaymentAttempt.objects.filter(invoice=unpaid).order_by("attempt_number")
    assert [a.attempt_number for a in attempts] == [0, 1, 2, 3, 4]
    assert {a.status for a in attempts} == {PaymentAttemptStatus.FAILED}
    assert {a.payment.status for a in attempts} == {PaymentStatus.FAILED}
    assert subscription.events.filter(kind="subscription.cancelled", actor_user=None).exists()


def test_seed_demo_initech_in_trial_without_invoices(seeded):
    subscription = subscription_of("Initech")
    today = demo_today()

    assert subscription.status == SubscriptionStatus.IN_TRIAL
    assert subscription.trial_start == today - datetime.timedelta(days=5)
    assert subscription.trial_end == today + datetime.timedelta(days=9)
    assert not subscription.invoices.exists()


def test_seed_demo_hooli_paused_with_resume_date(seeded):
    subscription = subscription_of("Hooli")
    today = demo_today()

    assert subscription.status == SubscriptionStatus.PAUSED
    assert subscription.paused_at == today - datetime.timedelta(days=10)
    assert subscription.resume_at == today + datetime.timedelta(days=20)


def test_seed_demo_stark_reseller_prices_and_group_terms(seeded):
    stark = Customer.objects.get(display_name="Stark Industries")
    invoice = stark.invoices.order_by("issue_date").first()
    plan_line = invoice.lines.get(kind=InvoiceLineKind.PLAN)

    assert stark.group.name == "Resellers"
    assert stark.group.price_list.percent == Decimal("15")
    assert plan_line.unit_price == Decimal("24.65")
    assert invoice.due_date - invoice.issue_date == datetime.timedelta(days=30)
    assert subscription_of("Stark Industries").status == SubscriptionStatus.LIVE


def test_seed_demo_wayne_non_renewing_cancels_at_term_end(seeded):
    subscription = subscription_of("Wayne Enterprises")

    assert subscription.status == SubscriptionStatus.NON_RENEWING
    assert subscription.cancel_at == subscription.current_term_end
    assert subscription.current_term_end > demo_today()


def test_seed_demo_subscription_states_cover_every_demo_story(seeded):
    statuses = Counter(Subscription.objects.values_list("status", flat=True))

    for status in (
        SubscriptionStatus.LIVE,
        SubscriptionStatus.IN_TRIAL,
        SubscriptionStatus.PAUSED,
        SubscriptionStatus.CANCELLED,
        SubscriptionStatus.NON_RENEWING,
    ):
        assert statuses[status] >= 1, status


# ----------------------------------------------------------------------------- logins
def test_seed_demo_users_log_in_with_demo_password_and_verified_email(seeded):
    for email in ("admin@northwind.example", "ada@acme.example", "bob@globex.example"):
        user = User.objects.get(email=email)
        assert user.check_password(DEMO_PASSWORD), email
        assert EmailAddress.objects.get(user=user, email=email).verified
    admin = User.objects.get(email="admin@northwind.example")
    assert admin.is_staff
    assert admin.is_superuser


def test_seed_demo_portal_contacts_are_primary_admins(seeded):
    for email, customer in (("ada@acme.example", "Acme Corp"), ("bob@globex.example", "Globex")):
        contact = User.objects.get(email=email).contact
        assert contact.customer.display_name == customer
        assert contact.portal_role == PortalRole.ADMIN
        assert contact.is_primary
    for customer in Customer.objects.all():
        assert customer.contacts.filter(is_primary=True).count() == 1, customer


def test_seed_demo_ada_totp_device_verifies_current_code(seeded):
    device = TOTPDevice.objects.get(user__email="ada@acme.example", confirmed=True)

    assert device.verify_token(pyotp.TOTP("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").now())


def test_seed_demo_ada_totp_code_used_twice_refused(seeded):
    device = TOTPDevice.objects.get(user__email="ada@acme.example", confirmed=True)
    code = pyotp.TOTP(DEMO_TOTP_SECRET).now()

    assert device.verify_token(code)
    assert not device.verify_token(code)


def test_seed_demo_staff_totp_device_uses_documented_secret(seeded):
    device = TOTPDevice.objects.get(user__email="admin@northwind.example", confirmed=True)

    assert device.verify_token(pyotp.TOTP(DEMO_TOTP_SECRET).now())


def test_seed_demo_output_mentions_logins_and_totp_secret(seeded):
    for text in (
        "admin@northwind.example",
        "ada@acme.example",
        "bob@globex.example",
        DEMO_PASSWORD,
        DEMO_TOTP_SECRET,
    ):
        assert text in seeded
    assert "bob@globex.example" in seed()
