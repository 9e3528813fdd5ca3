"""Accessibility: axe-core finds nothing serious or critical on any portal page.

In Chromium, on the demo data: the sign-in page and the two-factor step are checked on the way
in (also showing their errors); then Ada (Acme Corp, a parent with branches, a portal admin)
opens every billing, company and account page, forms showing their errors, and every
subscription page with a subscription in the state it is about (a trial, a paused one, one
cancelled by dunning, ...), and the change, cancel and pause pages with their previews shown.
A violation of impact "serious" or "critical" fails the test, which lists each page's rule ids,
the elements involved and axe's reason (e.g. the contrast ratio it measured).
"""

import datetime

import pyotp
import pytest
from axe_playwright_python.sync_playwright import Axe
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing.clock import billing_today
from billing.demo import ADA_EMAIL, DEMO_PASSWORD, DEMO_TOTP_SECRET, demo_seed
from billing.enums import (
    CancelReason,
    Interval,
    InvoiceStatus,
    PaymentStatus,
    SubscriptionStatus,
)
from billing.models import (
    ContactPerson,
    Coupon,
    Customer,
    Invoice,
    Payment,
    PaymentMethod,
    Plan,
    Subscription,
)
from billing.periods import boundary
from portal.models import PortalPreferences, RetentionOffer
from tests.factories import InvoiceFactory, SubscriptionFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
BLOCKING = {"serious", "critical"}


class Audit:
    """Runs axe on the page as it stands and keeps what blocks, per page."""

    def __init__(self, page):
        self.page = page
        self.axe = Axe()
        self.failures: dict[str, list[str]] = {}
        self.audited: list[str] = []

    def __call__(self, label: str) -> None:
        results = self.axe.run(self.page)
        self.audited.append(label)
        found = [
            f"{v['id']} ({v['impact']}): " + "; ".join(_node(node) for node in v["nodes"][:3])
            for v in results.response["violations"]
            if v["impact"] in BLOCKING
        ]
        if found:
            self.failures[f"{label} {self.page.url}"] = found

    def visit(self, label: str, path: str, status: int = 200) -> None:
        response = self.page.goto(path)
        assert response.status == status, f"{label}: {path} answered {response.status}"
        self(label)

    def report(self) -> str:
        return "\n".join(
            f"{page}:\n    " + "\n    ".join(rules) for page, rules in self.failures.items()
        )


def _node(node: dict) -> str:
    """Where, and axe's own words on why (e.g. the contrast ratio found)."""
    why = next((check["message"] for check in node.get("any", []) if check.get("message")), "")
    return f"{', '.join(node['target'])} [{node.get('html', '')[:120]}] {why}".strip()


def _url(name: str, *args) -> str | None:
    """The page's path, or None while that page does not exist yet."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _subscriptions_in_every_state(acme: Customer) -> dict[str, Subscription]:
    """Acme Corp's own subscription is live; the pages about other states need one each: a
    trial, a paused one, one cancelled by dunning within its term (with its unpaid invoice),
    and one cancelled long ago. And a retention coupon, for the "stay" page."""
    today = billing_today()
    plan = Plan.objects.get(code="pro-monthly")
    card = PaymentMethod.objects.get(customer=acme, is_default=True)
    start = today - datetime.timedelta(days=10)
    term = {
        "customer": acme,
        "plan": plan,
        "payment_method": card,
        "start_date": start,
        "current_term_end": boundary(start, Interval.MONTH, 1, 1),
    }
    dunning = SubscriptionFactory(
        status=SubscriptionStatus.CANCELLED,
        cancel_reason=CancelReason.DUNNING,
        cancelled_at=timezone.now(),
        **term,
    )
    InvoiceFactory(customer=acme, subscription=dunning, issue_date=start)
    long_ago = today - datetime.timedelta(days=120)
    preferences = PortalPreferences.load()
    preferences.retention_offer = RetentionOffer.COUPON
    preferences.retention_coupon = Coupon.objects.get(code="LOYALTY50")
    preferences.save()
    return {
        "live": Subscription.objects.get(customer=acme, status=SubscriptionStatus.LIVE),
        "trial": SubscriptionFactory(
            customer=acme,
            plan=plan,
            in_trial=True,
            start_date=today - datetime.timedelta(days=2),
            trial_start=today - datetime.timedelta(days=2),
            trial_end=today + datetime.timedelta(days=12),
        ),
        "paused": SubscriptionFactory(paused=True, paused_at=today, pause_at=today, **term),
        "dunning": dunning,
        "cancelled": SubscriptionFactory(
            customer=acme,
            plan=plan,
            cancelled=True,
            start_date=long_ago,
            current_term_end=boundary(long_ago, Interval.MONTH, 1, 1),
        ),
    }


def _pages(acme: Customer) -> list[tuple[str, str | None]]:
    """The portal's billing and account pages, for Ada (a parent: her branches' too)."""
    family = [acme, *acme.children.all()]
    invoice = Invoice.objects.filter(customer__in=family, status=InvoiceStatus.OPEN).first()
    paid = Invoice.objects.filter(customer=acme, status=InvoiceStatus.PAID).first()
    payment = Payment.objects.filter(customer=acme, status=PaymentStatus.SUCCEEDED).first()
    card = PaymentMethod.objects.filter(customer=acme).first()
    contact = ContactPerson.objects.filter(customer=acme).first()
    return [
        ("dashboard", _url("portal:dashboard")),
        ("invoice list", _url("portal:invoices")),
        ("invoice list, overdue", f"{_url('portal:invoices')}?status=overdue"),
        (
            "invoice list, invalid filter",
            f"{_url('portal:invoices')}?issued_from=2026-02-01&issued_to=2026-01-01",
        ),
        ("invoice detail (open)", _url("portal:invoice_detail", invoice.public_id)),
        ("invoice detail (paid)", _url("portal:invoice_detail", paid.public_id)),
        ("invoice print view", _url("portal:invoice_print", paid.public_id)),
        ("invoice forward", _url("portal:invoice_forward", invoice.public_id)),
        ("pay invoice", _url("portal:invoice_pay", invoice.public_id)),
        ("pay all outstanding", _url("portal:pay_all")),
        ("payment list", _url("portal:payments")),
        ("payment receipt", _url("portal:payment_detail", payment.public_id)),
        ("payment methods", _url("portal:payment_methods")),
        ("add a card", _url("portal:payment_method_add")),
        ("make a card default", _url("portal:payment_method_default", card.public_id)),
        ("remove a card", _url("portal:payment_method_remove", card.public_id)),
        ("replace a card", _url("portal:payment_method_replace", card.public_id)),
        ("credits", _url("portal:credits")),
        ("statement", _url("portal:statement")),
        (
            "statement, this year",
            f"{_url('portal:statement')}?period=this_year&include_branches=on",
        ),
        ("statement print view", f"{_url('portal:statement_print')}?period=this_year"),
        ("company profile", _url("portal:company")),
        ("company edit", _url("portal:company_edit")),
        ("contact add", _url("portal:company_contact_add")),
        ("contact edit", _url("portal:company_contact_edit", contact.public_id)),
        ("contact remove", _url("portal:company_contact_remove", contact.public_id)),
        ("contact us", _url("portal:contact")),
        ("review", _url("portal:review")),
        ("account profile", _url("accounts_profile")),
        ("account security", _url("accounts_security")),
        ("account sessions", _url("usersessions_list")),
        ("account email", _url("account_email")),
        ("change password", _url("account_change_password")),
    ]


def _subscription_pages(subs: dict) -> list[tuple[str, str | None]]:
    """Every subscription page, each with a subscription in the state it is about."""
    sub = subs["live"]
    return [
        ("subscription list", _url("portal:subscriptions")),
        ("subscription detail", _url("portal:subscription_detail", sub)),
        ("subscription change", _url("portal:subscription_change", sub)),
        ("subscription cancel", _url("portal:subscription_cancel", sub)),
        ("subscription pause", _url("portal:subscription_pause", sub)),
        ("subscription auto-charge", _url("portal:subscription_auto_charge", sub)),
        ("subscription stay (retention coupon)", _url("portal:subscription_keep", sub)),
        ("trial detail", _url("portal:subscription_detail", subs["trial"])),
        ("trial convert", _url("portal:subscription_convert", subs["trial"])),
        ("trial cancel", _url("portal:subscription_cancel", subs["trial"])),
        ("paused detail", _url("portal:subscription_detail", subs["paused"])),
        ("paused resume", _url("portal:subscription_resume", subs["paused"])),
        ("paused change resume date", _url("portal:subscription_pause", subs["paused"])),
        ("dunning-cancelled detail", _url("portal:subscription_detail", subs["dunning"])),
        ("dunning-cancelled recover", _url("portal:subscription_recover", subs["dunning"])),
        ("cancelled detail", _url("portal:subscription_detail", subs["cancelled"])),
        ("cancelled reactivate", _url("portal:subscription_reactivate", subs["cancelled"])),
    ]


def _visit_all(audit: Audit, pages) -> list[str]:
    """Audit every page that exists; the labels of those that do not (yet)."""
    missing = []
    for label, path in pages:
        if path is None:
            missing.append(label)
        else:
            audit.visit(label, path)
    return missing


def _sign_in(page) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=login]", ADA_EMAIL)
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.click("form[action='/accounts/login/'] button[type=submit]")
    page.wait_for_url("**/accounts/2fa/")
    page.fill("input[name=code]", pyotp.TOTP(DEMO_TOTP_SECRET).now())
    page.click("button[type=submit]")
    page.wait_for_url("**/portal/")


def test_sign_in_billing_and_account_pages_have_no_serious_axe_violations(
    page, live_server, settings
):
    # A wrong code is audited too; without the one-second throttle after it, the right code
    # that follows is accepted at once (no sleeping in tests).
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    demo_seed()
    acme = Customer.objects.get(display_name="Acme Corp")
    audit = Audit(page)

    # On the way in: the sign-in page (also with an error) and the two-factor step.
    audit.visit("sign in", "/accounts/login/")
    page.fill("input[name=login]", ADA_EMAIL)
    page.fill("input[name=password]", "not the password")
    page.click("form[action='/accounts/login/'] button[type=submit]")
    page.wait_for_selector(".alert-danger, .invalid-feedback")
    audit("sign in, wrong password")
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.click("form[action='/accounts/login/'] button[type=submit]")
    page.wait_for_url("**/accounts/2fa/")
    audit("two-factor step")
    page.fill("input[name=code]", "000000")
    page.click("button[type=submit]")
    page.wait_for_selector(".invalid-feedback, .alert-danger")
    audit("two-factor step, wrong code")
    page.fill("input[name=code]", pyotp.TOTP(DEMO_TOTP_SECRET).now())
    page.click("button[type=submit]")
    page.wait_for_url("**/portal/")

    missing = _visit_all(audit, _pages(acme))

    # Forms showing their errors.
    audit.visit("contact us, empty", reverse("portal:contact"))
    page.click("main form button[type=submit]")
    page.wait_for_selector(".invalid-feedback, .alert-danger")
    audit("contact us, errors")
    audit.visit("pay all", reverse("portal:pay_all"))
    page.check("input[name=method][value=new]")
    page.fill("input[name=number]", "1234")
    page.click("main form button[type=submit]")
    page.wait_for_selector(".invalid-feedback")
    audit("pay all, card errors")

    assert not audit.failures, "serious or critical axe violations:\n" + audit.report()
    assert not missing, f"pages not there yet: {missing}"
    assert len(audit.audited) >= 40


def test_subscription_pages_in_every_state_have_no_serious_axe_violations(page, live_server):
    demo_seed()
    acme = Customer.objects.get(display_name="Acme Corp")
    subscriptions = _subscriptions_in_every_state(acme)
    live = subscriptions["live"]
    audit = Audit(page)
    _sign_in(page)

    missing = _visit_all(
        audit, _subscription_pages({state: s.public_id for state, s in subscriptions.items()})
    )

    # The pages in their second state: a previewed change, cancellation and pause.
    audit.visit("subscription change", reverse("portal:subscription_change", args=[live.public_id]))
    page.fill("input[name=quantity]", str(live.quantity + 1))
    page.click("button[name=action][value=preview]")
    page.wait_for_selector("[data-testid=confirm]")
    audit("subscription change, previewed")
    audit.visit("subscription cancel", reverse("portal:subscription_cancel", args=[live.public_id]))
    page.check("input[name=timing][value=term_end]")
    page.click("button[name=review]")
    page.wait_for_selector("[data-testid=cancel-preview]")
    audit("subscription cancel, previewed")
    audit.visit("subscription pause", reverse("portal:subscription_pause", args=[live.public_id]))
    page.click("button[name=review]")
    page.wait_for_selector("[data-testid=pause-preview]")
    audit("subscription pause, previewed")

    assert not audit.failures, "serious or critical axe violations:\n" + audit.report()
    assert not missing, f"pages not there yet: {missing}"
    assert len(audit.audited) >= 20
