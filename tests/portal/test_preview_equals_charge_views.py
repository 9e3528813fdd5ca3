"""DESIGN rule 5 through the portal pages: the amounts a page shows before the customer
confirms are, to the cent, the amounts on the invoice, payment or credit note that confirming
creates — for every money-moving portal action, over plans, month-end dates (anchors on the
29th–31st, a leap day), quantities, coupons and tax.

The change page, reactivation (with and without another plan) are this area's pages;
converting a trial, resuming and cancelling with a credit are the subscription pages'
(tested here when their URLs exist).
"""

import datetime
import re
from dataclasses import dataclass
from decimal import Decimal
from html import unescape

import pytest
import time_machine
from django.urls import NoReverseMatch, reverse

from billing.enums import ChangeTiming, InvoiceKind
from billing.models import CreditNote, Invoice, Payment, Subscription
from billing.selectors import invoice_balance
from billing.services.payment_methods import payment_method_add
from billing.services.subscriptions import (
    subscription_cancel,
    subscription_create,
    subscription_pause,
    subscription_renew,
)
from tests.factories import CouponFactory, PlanFactory, ProductFactory
from tests.portal.payments_support import hidden_value, reauthenticate, set_preference, sign_in

pytestmark = pytest.mark.django_db

D = datetime.date
GOOD = "4242424242424242"


# ----------------------------------------------------------------------------- setup
@pytest.fixture
def travel():
    travellers = []

    def to(day: datetime.date) -> None:
        if travellers:
            travellers.pop().stop()
        traveller = time_machine.travel(
            datetime.datetime(day.year, day.month, day.day, 12, tzinfo=datetime.UTC), tick=False
        )
        traveller.start()
        travellers.append(traveller)

    yield to
    for traveller in travellers:
        traveller.stop()


@pytest.fixture
def catalog(organization):
    product = ProductFactory(name="Cloud")
    CouponFactory(code="PCT15", percent_off=Decimal("15"))  # forever
    CouponFactory(code="FLAT5", flat=True, once=True)  # 5.00 off once
    CouponFactory(code="PCT33X2", percent_off=Decimal("33.3"), repeating=True)
    return {
        "basic": PlanFactory(product=product, code="basic", name="Basic", price=Decimal("10.00")),
        "odd": PlanFactory(product=product, code="odd", name="Odd", price=Decimal("19.99")),
        "pro": PlanFactory(product=product, code="pro", name="Pro", price=Decimal("30.00")),
        "pro-yearly": PlanFactory(
            product=product,
            code="pro-yearly",
            name="Pro yearly",
            price=Decimal("299.99"),
            yearly=True,
        ),
        "trial": PlanFactory(
            product=product, code="trial", name="Trial", price=Decimal("24.99"), trial_days=14
        ),
    }


def taxed(organization, rate: str) -> None:
    organization.tax_rate = Decimal(rate)
    organization.save()


@pytest.fixture
def admin(client, organization):
    contact = sign_in(client, role="admin")
    payment_method_add(
        customer=contact.customer, number=GOOD, exp_month=12, exp_year=2030, cvc="123"
    )
    return contact


def subscribe(travel, admin, plan, *, start, quantity=1, coupon="", renew_on=()):
    travel(start)
    sub = subscription_create(
        customer=admin.customer, plan=plan, quantity=quantity, coupon_code=coupon
    ).subscription
    for day in renew_on:
        travel(day)
        assert subscription_renew(subscription=sub) is not None
    return Subscription.objects.get(pk=sub.pk)


# ----------------------------------------------------------------------------- reading pages
@dataclass
class Shown:
    """The figures one charges summary of a page shows (None: not shown)."""

    lines: list[Decimal]
    subtotal: Decimal | None
    discount: Decimal | None
    tax: Decimal | None
    invoice_total: Decimal | None
    credit_applied: Decimal | None
    due_now: Decimal | None
    credit: Decimal | None
    next_amount: Decimal | None


def _amounts(html: str, testid: str) -> list[Decimal]:
    found = re.findall(rf'data-testid="{testid}"[^>]*>([^<]*)<', html)
    return [
        Decimal(unescape(text).replace("USD", "").replace("−", "").replace(",", "").strip())
        for text in found
    ]


def _one(html: str, testid: str) -> Decimal | None:
    found = _amounts(html, testid)
    assert len(found) <= 1, f"{testid} shown {len(found)} times"
    return found[0] if found else None


def shown(response, prefix: str = "") -> Shown:
    html = response.content.decode()
    return Shown(
        lines=_amounts(html, f"{prefix}line-amount"),
        subtotal=_one(html, f"{prefix}subtotal"),
        discount=_one(html, f"{prefix}discount"),
        tax=_one(html, f"{prefix}tax"),
        invoice_total=_one(html, f"{prefix}invoice-total"),
        credit_applied=_one(html, f"{prefix}credit-applied"),
        due_now=_one(html, f"{prefix}due-now"),
        credit=_one(html, f"{prefix}credit"),
        next_amount=_one(html, f"{prefix}next-amount"),
    )


def assert_invoice_is_what_was_shown(figures: Shown, invoice: Invoice) -> None:
    invoice = Invoice.objects.get(pk=invoice.pk)
    assert [line.amount for line in invoice.lines.order_by("position", "id")] == figures.lines
    assert invoice.subtotal == figures.subtotal
    assert invoice.discount_total == (figures.discount or 0)
    assert invoice.tax_total == figures.tax
    assert invoice.total == figures.invoice_total
    _paid, credited, balance = invoice_balance(invoice)
    assert credited == (figures.credit_applied or 0)
    payments = Payment.objects.filter(allocations__invoice=invoice, status="succeeded")
    assert sum(p.amount for p in payments) == figures.due_now
    assert balance == 0


def assert_no_money_moved(figures: Shown, subscription, invoices_before: int) -> None:
    assert figures.due_now == 0 and figures.credit is None
    assert Invoice.objects.filter(subscription=subscription).count() == invoices_before


# ----------------------------------------------------------------------------- change now
DATES = [
    # (anchor, change day, renewals before the change)
    pytest.param(D(2026, 1, 31), D(2026, 2, 27), (), id="anchor-jan31-change-feb27"),
    pytest.param(D(2026, 1, 31), D(2026, 3, 30), (D(2026, 2, 28),), id="anchor-jan31-renewed"),
    pytest.param(D(2026, 1, 29), D(2026, 2, 1), (), id="anchor-jan29-feb-term"),
    pytest.param(D(2026, 3, 30), D(2026, 4, 29), (), id="anchor-mar30-change-apr29"),
    pytest.param(D(2026, 5, 15), D(2026, 5, 31), (), id="mid-anchor-change-may31"),
    pytest.param(D(2026, 6, 10), D(2026, 6, 10), (), id="change-on-the-first-day"),
    pytest.param(D(2028, 2, 29), D(2028, 3, 28), (), id="leap-day-anchor"),
]
CONFIGS = [
    # (plan, quantity, to plan, to quantity, coupon applied with the change, tax rate)
    pytest.param("basic", 1, "pro", 1, "", "0", id="basic-to-pro"),
    pytest.param("basic", 3, "pro", 3, "PCT15", "8.25", id="x3-coupon15-tax"),
    pytest.param("odd", 2, "pro", 5, "FLAT5", "8.25", id="odd-x2-to-pro-x5-flat"),
    pytest.param("basic", 1, "odd", 7, "PCT33X2", "8.875", id="basic-to-odd-x7-repeating"),
]


def change_url(sub) -> str:
    return reverse("portal:subscription_change", args=[sub.public_id])


def preview_and_confirm(client, sub, **fields):
    page = client.post(change_url(sub), {"action": "preview", **fields})
    assert page.status_code == 200
    assert 'data-testid="confirm"' in page.content.decode(), "no confirmable preview"
    html = page.content.decode()
    response = client.post(
        change_url(sub),
        {
            "action": "confirm",
            "figures": hidden_value(html, "figures"),
            "token": hidden_value(html, "token"),
            **fields,
        },
    )
    assert response.status_code == 302, "the confirmation was refused"
    return page


@pytest.mark.parametrize(("anchor", "day", "renewals"), DATES)
@pytest.mark.parametrize(("plan", "quantity", "to_plan", "to_quantity", "coupon", "tax"), CONFIGS)
def test_change_now_upgrade_preview_equals_invoice(
    client, admin, catalog, travel, organization, anchor, day, renewals, plan, quantity, to_plan, to_quantity, coupon, tax
):  # fmt: skip
    taxed(organization, tax)
    sub = subscribe(
        travel, admin, catalog[plan], start=anchor, quantity=quantity, renew_on=renewals
    )
    travel(day)

    page = preview_and_confirm(client, sub, plan=to_plan, quantity=to_quantity, coupon=coupon)

    invoice = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
    assert_invoice_is_what_was_shown(shown(page), invoice)
    assert not CreditNote.objects.filter(subscription=sub).exists()


DOWN_CONFIGS = [
    pytest.param("pro", 1, "basic", 1, "", "0", id="pro-to-basic"),
    pytest.param("pro", 4, "odd", 3, "PCT15", "8.25", id="pro-x4-to-odd-x3-coupon-tax"),
    pytest.param("odd", 3, "odd", 1, "", "8.875", id="quantity-down"),
]


@pytest.mark.parametrize(("anchor", "day", "renewals"), DATES)
@pytest.mark.parametrize(
    ("plan", "quantity", "to_plan", "to_quantity", "coupon", "tax"), DOWN_CONFIGS
)
def test_change_now_downgrade_preview_equals_credit_note(
    client, admin, catalog, travel, organization, anchor, day, renewals, plan, quantity, to_plan, to_quantity, coupon, tax
):  # fmt: skip
    taxed(organization, tax)
    set_preference(downgrade_timing=ChangeTiming.NOW)
    sub = subscribe(
        travel, admin, catalog[plan], start=anchor, quantity=quantity, renew_on=renewals
    )
    travel(day)

    page = preview_and_confirm(client, sub, plan=to_plan, quantity=to_quantity, coupon=coupon)

    figures = shown(page)
    assert figures.due_now == 0 and figures.invoice_total is None
    note = CreditNote.objects.get(subscription=sub)
    assert note.amount == figures.credit
    assert not Invoice.objects.filter(subscription=sub, kind=InvoiceKind.PRORATION).exists()


@pytest.mark.parametrize(("anchor", "day", "renewals"), DATES)
@pytest.mark.parametrize("coupon", ["", "PCT15"])
def test_change_billing_frequency_monthly_to_yearly_preview_equals_invoice(
    client, admin, catalog, travel, organization, anchor, day, renewals, coupon
):
    taxed(organization, "8.25")
    sub = subscribe(travel, admin, catalog["pro"], start=anchor, quantity=2, renew_on=renewals)
    travel(day)

    page = preview_and_confirm(client, sub, plan="pro-yearly", quantity=2, coupon=coupon)

    invoice = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
    assert_invoice_is_what_was_shown(shown(page), invoice)
    sub.refresh_from_db()
    assert sub.current_term_start == day


@pytest.mark.parametrize(
    ("start", "day"),
    [
        pytest.param(D(2026, 1, 31), D(2026, 3, 31), id="jan31-to-mar31"),
        pytest.param(D(2028, 2, 29), D(2028, 12, 31), id="leap-day-to-dec31"),
    ],
)
def test_change_billing_frequency_yearly_to_monthly_preview_equals_credit_note(
    client, admin, catalog, travel, organization, start, day
):
    taxed(organization, "8.25")
    set_preference(downgrade_timing=ChangeTiming.NOW)
    sub = subscribe(travel, admin, catalog["pro-yearly"], start=start)
    travel(day)

    page = preview_and_confirm(client, sub, plan="pro", quantity=1)

    figures = shown(page)
    note = CreditNote.objects.get(subscription=sub)
    assert note.amount == figures.credit
    # The new monthly term is netted against the unused yearly time: nothing is invoiced.
    assert figures.due_now == 0


# ----------------------------------------------------------------------------- reactivation
REACTIVATIONS = [
    # (start, cancelled on, reactivated on)
    pytest.param(D(2026, 1, 31), D(2026, 2, 10), D(2026, 3, 31), id="jan31-back-on-mar31"),
    pytest.param(D(2026, 1, 29), D(2026, 1, 30), D(2026, 2, 28), id="back-on-feb28"),
    pytest.param(D(2026, 5, 15), D(2026, 5, 20), D(2026, 5, 30), id="within-old-term"),
    pytest.param(D(2027, 12, 31), D(2028, 1, 5), D(2028, 2, 29), id="back-on-leap-day"),
]


def reactivate_url(sub) -> str:
    return reverse("portal:subscription_reactivate", args=[sub.public_id])


def reactivate(client, sub, query):
    page = client.get(reactivate_url(sub), query)
    assert page.status_code == 200
    html = page.content.decode()
    data = {name: hidden_value(html, name) for name in ("figures", "idempotency_key", "token")}
    data["plan"] = hidden_value(html, "plan")
    response = client.post(reactivate_url(sub), data)
    assert response.status_code == 302, "the confirmation was refused"
    return page


@pytest.mark.parametrize(("start", "cancelled", "back"), REACTIVATIONS)
@pytest.mark.parametrize(
    ("plan", "quantity", "coupon", "tax"),
    [
        pytest.param("pro", 1, "", "0", id="pro"),
        pytest.param("odd", 3, "PCT15", "8.25", id="odd-x3-coupon-tax"),
        pytest.param("basic", 2, "FLAT5", "8.875", id="basic-x2-flat-once"),
    ],
)
def test_reactivate_out_of_term_preview_equals_invoice(
    client, admin, catalog, travel, organization, start, cancelled, back, plan, quantity, coupon, tax
):  # fmt: skip
    taxed(organization, tax)
    sub = subscribe(travel, admin, catalog[plan], start=start, quantity=quantity, coupon=coupon)
    travel(cancelled)
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    travel(back)

    page = reactivate(client, sub, {"preview": "1"})

    invoice = Invoice.objects.get(subscription=sub, period_start=back, kind=InvoiceKind.RECURRING)
    assert_invoice_is_what_was_shown(shown(page, "reactivation-"), invoice)
    total = _one(page.content.decode(), "total-due-now")
    assert total == shown(page, "reactivation-").due_now


@pytest.mark.parametrize(("start", "cancelled", "back"), REACTIVATIONS)
@pytest.mark.parametrize(
    ("plan", "to_plan", "tax"),
    [
        pytest.param("basic", "pro", "8.25", id="up"),
        pytest.param("pro", "odd", "8.875", id="down-credit-note"),
        pytest.param("odd", "pro-yearly", "0", id="to-yearly"),
    ],
)
def test_reactivate_on_another_plan_preview_equals_both_documents(
    client, admin, catalog, travel, organization, start, cancelled, back, plan, to_plan, tax
):
    taxed(organization, tax)
    sub = subscribe(travel, admin, catalog[plan], start=start, quantity=2)
    travel(cancelled)
    subscription_cancel(subscription=sub, timing=ChangeTiming.NOW)
    travel(back)

    page = reactivate(client, sub, {"plan": to_plan})

    first = Invoice.objects.get(subscription=sub, period_start=back, kind=InvoiceKind.RECURRING)
    assert_invoice_is_what_was_shown(shown(page, "reactivation-"), first)
    change = shown(page, "change-")
    if change.invoice_total is not None:
        second = Invoice.objects.get(subscription=sub, kind=InvoiceKind.PRORATION)
        assert_invoice_is_what_was_shown(change, second)
    else:
        assert CreditNote.objects.get(subscription=sub).amount == change.credit
    total = _one(page.content.decode(), "total-due-now")
    assert total == shown(page, "reactivation-").due_now + change.due_now
    assert Subscription.objects.get(pk=sub.pk).plan.code == to_plan


# ----------------------------------------------------------------------------- other pages
def url_or_skip(name: str, sub) -> str:
    try:
        return reverse(name, args=[sub.public_id])
    except NoReverseMatch:
        pytest.skip(f"{name} does not exist (another area's page)")


def summary_page(client, url: str):
    """The page with its charges shown (a page may load them on demand, ``?preview=1``)."""
    page = client.get(url)
    if 'data-testid="confirm-form"' not in page.content.decode():
        page = client.get(url, {"preview": "1"})
    assert page.status_code == 200
    return page


def confirm_form_fields(html: str) -> dict:
    """The hidden fields of the page's confirm form (data-testid="confirm-form")."""
    start = html.index('data-testid="confirm-form"')
    form = html[start : html.index("</form>", start)]
    fields = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form))
    fields["confirm"] = "1"
    return fields


@pytest.mark.parametrize(
    ("start", "day"),
    [
        pytest.param(D(2026, 1, 20), D(2026, 1, 31), id="convert-on-jan31"),
        pytest.param(D(2028, 2, 20), D(2028, 2, 29), id="convert-on-leap-day"),
        pytest.param(D(2026, 4, 30), D(2026, 4, 30), id="convert-on-day-one"),
    ],
)
def test_convert_trial_preview_equals_invoice(
    client, admin, catalog, travel, organization, start, day
):
    taxed(organization, "8.25")
    sub = subscribe(travel, admin, catalog["trial"], start=start, quantity=3, coupon="PCT15")
    url = url_or_skip("portal:subscription_convert", sub)
    travel(day)

    page = summary_page(client, url)
    response = client.post(url, confirm_form_fields(page.content.decode()))

    assert response.status_code == 302
    invoice = Invoice.objects.get(subscription=sub, period_start=day)
    due_now = _one(page.content.decode(), "due-now")
    assert invoice.total == due_now
    assert sum(p.amount for p in Payment.objects.filter(allocations__invoice=invoice)) == due_now


@pytest.mark.parametrize(
    ("start", "paused", "resumed"),
    [
        pytest.param(D(2026, 1, 31), D(2026, 2, 10), D(2026, 3, 31), id="resume-on-mar31"),
        pytest.param(D(2027, 12, 29), D(2028, 1, 2), D(2028, 2, 29), id="resume-on-leap-day"),
    ],
)
def test_resume_after_the_billing_date_preview_equals_invoice(
    client, admin, catalog, travel, organization, start, paused, resumed
):
    taxed(organization, "8.875")
    sub = subscribe(travel, admin, catalog["odd"], start=start, quantity=2)
    url = url_or_skip("portal:subscription_resume", sub)
    travel(paused)
    subscription_pause(subscription=sub)
    travel(resumed)

    page = summary_page(client, url)
    response = client.post(url, confirm_form_fields(page.content.decode()))

    assert response.status_code == 302
    invoice = Invoice.objects.get(subscription=sub, period_start=resumed)
    due_now = _one(page.content.decode(), "due-now")
    assert invoice.total == due_now
    assert sum(p.amount for p in Payment.objects.filter(allocations__invoice=invoice)) == due_now


@pytest.mark.parametrize(
    ("start", "day"),
    [
        pytest.param(D(2026, 1, 31), D(2026, 2, 27), id="cancel-feb27"),
        pytest.param(D(2026, 3, 31), D(2026, 4, 29), id="cancel-apr29-last-day"),
        pytest.param(D(2028, 1, 29), D(2028, 2, 28), id="cancel-before-leap-day"),
    ],
)
def test_cancel_now_with_credit_preview_equals_credit_note(
    client, admin, catalog, travel, organization, start, day
):
    taxed(organization, "8.25")
    set_preference(allow_cancel_now=True, credit_on_cancel_now=True)
    sub = subscribe(travel, admin, catalog["odd"], start=start, quantity=3, coupon="PCT15")
    url = url_or_skip("portal:subscription_cancel", sub)
    travel(day)
    reauthenticate(client)

    page = client.post(url, {"timing": ChangeTiming.NOW, "review": "1"})
    response = client.post(url, confirm_form_fields(page.content.decode()))

    assert response.status_code == 302
    credit = _one(page.content.decode(), "credit")
    assert CreditNote.objects.get(subscription=sub).amount == credit
