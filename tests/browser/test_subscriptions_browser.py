"""Managing subscriptions in a real browser, on the demo data (billing.demo.demo_seed).

Each flow signs in with a password and a TOTP code, reads the charges summary the page shows
before anything happens (DESIGN rule 5), confirms, and checks what the customer then sees:
converting a trial (Initech), upgrading now with a prorated invoice, scheduling a downgrade and
cancelling it, pausing and resuming, cancelling at the end of the term and undoing it (Acme
Corp, as Ada), and reactivating a subscription cancelled by dunning within its term after
replacing the card that kept failing (Umbrella). No sleeps: Playwright waits for each outcome.
"""

import re
from decimal import Decimal

import pytest
from allauth.account.models import EmailAddress
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from accounts.models import User
from billing.demo import DEMO_PASSWORD, demo_seed, totp_key_hex
from billing.enums import (
    CancelReason,
    InvoiceLineKind,
    InvoiceStatus,
    PortalRole,
    SubscriptionStatus,
)
from billing.models import ContactPerson, Invoice, PaymentMethod, Subscription
from tests.browser.test_portal_browser import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
MONEY = re.compile(r"-?[\d,]+\.\d{2}")


def money(text: str) -> Decimal:
    return Decimal(MONEY.search(text)[0].replace(",", ""))


@pytest.fixture
def demo(live_server):
    demo_seed()


def portal_login_for(customer_name: str) -> str:
    """Give the demo customer's primary contact a portal login (admin, TOTP with the demo
    secret), as an invitation would have; returns the email to sign in with."""
    contact = ContactPerson.objects.get(customer__display_name=customer_name, is_primary=True)
    user = User.objects.create_user(contact.email, DEMO_PASSWORD, full_name=contact.full_name)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    TOTPDevice.objects.create(user=user, name="Phone", confirmed=True, key=totp_key_hex())
    contact.user, contact.portal_role = user, PortalRole.ADMIN
    contact.save(update_fields=["user", "portal_role"])
    return contact.email


def subscription_of(customer_name: str) -> Subscription:
    return Subscription.objects.get(customer__display_name=customer_name)


def open_subscription(page, subscription: Subscription) -> None:
    page.goto(f"/portal/subscriptions/{subscription.public_id}/")
    expect(page.locator("h1")).to_contain_text(subscription.plan.name)


def status_badge(page):
    return page.locator("h1 .badge")


def test_converts_a_trial_now(page, demo):
    sign_in(page, portal_login_for("Initech"), "Initech")
    trial = subscription_of("Initech")
    open_subscription(page, trial)
    expect(status_badge(page)).to_have_text("In trial")

    page.click("[data-testid=actions] >> text=Start now")
    page.wait_for_url(f"**/subscriptions/{trial.public_id}/convert/")
    due = money(page.inner_text("[data-testid=due-now]"))
    assert due > 0
    page.click("button:has-text('Start my subscription now')")

    page.wait_for_url(f"**/subscriptions/{trial.public_id}/")
    expect(status_badge(page)).to_have_text("Live")
    expect(page.locator(".alert-success").first).to_be_visible()
    first = page.locator("[data-testid=invoices] tbody tr").first
    expect(first.locator(".badge")).to_have_text("Paid")  # charged to the saved card
    invoice = Invoice.objects.get(subscription=trial)
    assert invoice.total == due and invoice.status == InvoiceStatus.PAID
    expect(first).to_contain_text(invoice.number)


def test_upgrades_now_and_sees_the_prorated_invoice(page, demo):
    sign_in(page)
    acme = subscription_of("Acme Corp")
    open_subscription(page, acme)
    expect(page.locator("[data-testid=quantity]")).to_have_text(str(acme.quantity))

    page.click("[data-testid=actions] >> text=Change plan or quantity")
    page.wait_for_url(f"**/subscriptions/{acme.public_id}/change/")
    page.fill("input[name=quantity]", str(acme.quantity + 2))
    page.click("button[name=action][value=preview]")
    expect(page.locator("[data-testid=timing]")).to_contain_text("now, prorated")
    summary = page.locator("#change-summary .charges-table")
    expect(summary).to_be_visible()
    due = money(page.inner_text("#change-summary [data-testid=due-now]"))
    assert due > 0
    page.click("[data-testid=confirm]")

    page.wait_for_url(re.compile(rf".*/subscriptions/{acme.public_id}/(\?.*)?$"))
    expect(page.locator("[data-testid=quantity]")).to_have_text(str(acme.quantity + 2))
    invoice = Invoice.objects.filter(subscription=acme).order_by("-created_at", "-id").first()
    kinds = set(invoice.lines.values_list("kind", flat=True))
    assert {InvoiceLineKind.PRORATION_CHARGE, InvoiceLineKind.PRORATION_CREDIT} <= kinds
    assert invoice.total - invoice_credit_applied(invoice) == due

    page.click(f"[data-testid=invoices] a:has-text('{invoice.number}')")
    expect(page.locator("h1")).to_contain_text(f"Invoice {invoice.number}")
    expect(page.locator("h1 .badge")).to_have_text("Paid")  # charged to Acme's card
    lines = page.locator("section:has(h2:text-is('Lines')) table").first.locator("tbody tr")
    expect(lines).to_have_count(invoice.lines.count())
    for line in invoice.lines.all():
        expect(lines.filter(has_text=line.description[:40]).first).to_be_visible()


def invoice_credit_applied(invoice: Invoice) -> Decimal:
    return sum((a.amount for a in invoice.credit_allocations.all()), Decimal("0"))


def test_schedules_a_downgrade_then_cancels_it(page, demo):
    sign_in(page)
    acme = subscription_of("Acme Corp")
    page.goto(f"/portal/subscriptions/{acme.public_id}/change/")
    page.fill("input[name=quantity]", str(acme.quantity - 2))
    page.click("button[name=action][value=preview]")
    expect(page.locator("[data-testid=timing]")).to_contain_text("at the end of the term")
    assert money(page.inner_text("#change-summary [data-testid=due-now]")) == 0
    page.click("[data-testid=confirm]")

    page.wait_for_url(re.compile(rf".*/subscriptions/{acme.public_id}/(\?.*)?$"))
    scheduled = page.locator("[data-testid=scheduled-change]")
    expect(scheduled).to_contain_text(f"× {acme.quantity - 2}")
    expect(page.locator("[data-testid=quantity]")).to_have_text(str(acme.quantity))
    scheduled.locator("button:has-text('Cancel this change')").click()
    expect(page.locator(".alert-success")).to_contain_text("scheduled change was cancelled")
    expect(page.locator("[data-testid=scheduled-change]")).to_have_count(0)
    acme.refresh_from_db()
    assert not hasattr(acme, "scheduled_change") or acme.scheduled_change is None


def test_pauses_and_resumes(page, demo):
    sign_in(page)
    acme = subscription_of("Acme Corp")
    open_subscription(page, acme)
    page.click("[data-testid=actions] >> text=Pause")
    page.wait_for_url(f"**/subscriptions/{acme.public_id}/pause/")
    page.click("button[name=review]")  # defaults: pause today, resume when I resume it
    expect(page.locator("[data-testid=pause-preview]")).to_be_visible()
    expect(page.locator("[data-testid=resume-on]")).to_have_text("When you resume it")
    page.click("[data-testid=confirm-form] button[name=confirm]")

    page.wait_for_url(f"**/subscriptions/{acme.public_id}/")
    expect(status_badge(page)).to_have_text("Paused")
    expect(page.locator("[data-testid=paused]")).to_contain_text("until you resume it")

    page.click("[data-testid=actions] >> text=Resume now")
    page.wait_for_url(f"**/subscriptions/{acme.public_id}/resume/")
    expect(page.locator("[data-testid=due-now]")).to_contain_text("0.00")  # before the date
    page.click("[data-testid=confirm-form] button[name=confirm]")
    page.wait_for_url(f"**/subscriptions/{acme.public_id}/")
    expect(status_badge(page)).to_have_text("Live")
    acme_after = Subscription.objects.get(pk=acme.pk)
    assert acme_after.status == SubscriptionStatus.LIVE
    assert acme_after.current_term_end == acme.current_term_end  # billing date unchanged


def test_cancels_at_term_end_and_undoes_it(page, demo):
    sign_in(page)
    acme = subscription_of("Acme Corp")
    open_subscription(page, acme)
    page.click("[data-testid=actions] >> text=Cancel subscription")
    page.wait_for_url(f"**/subscriptions/{acme.public_id}/cancel/")
    page.check("input[name=timing][value=term_end]")
    page.click("button[name=review]")
    expect(page.locator("[data-testid=cancel-preview]")).to_be_visible()
    page.click("[data-testid=cancel-preview] button[name=confirm]")

    page.wait_for_url(f"**/subscriptions/{acme.public_id}/")
    expect(status_badge(page)).to_have_text("Ending")
    last_day = acme.current_term_end
    expect(page.locator("[data-testid=scheduled-cancellation]")).to_contain_text(
        f"Ends on {last_day:%b} {last_day.day}, {last_day.year}"
    )
    page.click("[data-testid=scheduled-cancellation] button:has-text('Keep my subscription')")
    expect(status_badge(page)).to_have_text("Live")
    expect(page.locator("[data-testid=scheduled-cancellation]")).to_have_count(0)
    acme.refresh_from_db()
    assert acme.status == SubscriptionStatus.LIVE and acme.cancel_at is None


def test_reactivates_a_dunning_cancellation_in_term_after_replacing_the_card(page, demo):
    umbrella = subscription_of("Umbrella")
    assert umbrella.status == SubscriptionStatus.CANCELLED
    assert umbrella.cancel_reason == CancelReason.DUNNING
    unpaid = Invoice.objects.get(subscription=umbrella, status=InvoiceStatus.OPEN)
    invoices_before = Invoice.objects.filter(subscription=umbrella).count()
    sign_in(page, portal_login_for("Umbrella"), "Umbrella")

    # First the card that kept failing (…9995) is replaced by a working one.
    page.goto("/portal/payment-methods/")
    page.click("a:has-text('Replace')")
    page.check("input[name=replacement][value=new]")
    page.fill("input[name=number]", "4242 4242 4242 4242")
    page.fill("input[name=exp]", "12/30")
    page.fill("input[name=cvc]", "123")
    page.fill("input[name=name]", "Albert Wesker")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/portal/payment-methods/")
    expect(page.locator(".alert-success")).to_contain_text("is replaced by")

    # Then the subscription: pay its open invoice and reactivate it, keeping the billing date.
    open_subscription(page, umbrella)
    expect(page.locator("[data-testid=dunning-cancelled]")).to_be_visible()
    page.click("[data-testid=dunning-cancelled] a.btn")
    page.wait_for_url(f"**/subscriptions/{umbrella.public_id}/recover/")
    total = money(page.inner_text("[data-testid=total-due-now]"))
    assert total == unpaid.total
    (card,) = PaymentMethod.objects.filter(customer=umbrella.customer)  # …9995 is gone
    assert card.last4 == "4242" and card.is_default
    page.check(f"input[name=method][value='{card.public_id}']")  # the page offers a new card
    page.click("[data-testid=confirm]")

    page.wait_for_url(re.compile(rf".*/subscriptions/{umbrella.public_id}/(\?.*)?$"))
    expect(status_badge(page)).to_have_text("Live")
    expect(page.locator("[data-testid=dunning-cancelled]")).to_have_count(0)
    after = Subscription.objects.get(pk=umbrella.pk)
    assert after.status == SubscriptionStatus.LIVE
    assert after.current_term_end == umbrella.current_term_end  # same billing date
    assert Invoice.objects.get(pk=unpaid.pk).status == InvoiceStatus.PAID
    # An in-term reactivation bills nothing new: only the old invoice was paid.
    assert Invoice.objects.filter(subscription=umbrella).count() == invoices_before
