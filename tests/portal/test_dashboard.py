"""The portal dashboard: what the customer owes and holds, its chart and its recent rows.

The money figures are read by one SQL query of sums (billing.selectors.money_figures); these
tests hold them to the ORM selectors the rest of the system uses.
"""

import datetime
import re
from decimal import Decimal

import pytest
from django.db.models import Q, Sum
from django.urls import reverse

from billing.clock import billing_today
from billing.enums import InvoiceStatus, RefundStatus
from billing.models import Invoice
from billing.selectors import customer_credit_balance, invoices_with_amounts, money_figures
from portal.charts import billed_and_paid_chart, last_months
from tests.factories import (
    ContactPersonFactory,
    CreditAllocationFactory,
    CreditNoteFactory,
    CustomerFactory,
    InvoiceFactory,
    PaymentAllocationFactory,
    PaymentFactory,
    RefundFactory,
    SubscriptionFactory,
)
from tests.helpers import login_verified
from tests.portal.payments_support import set_preference

URL = reverse("portal:dashboard")
D = Decimal


def owed_by_orm(customer_ids, today) -> tuple[Decimal, Decimal]:
    sums = invoices_with_amounts(
        Invoice.objects.filter(
            customer__in=customer_ids,
            status__in=(InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE),
        )
    ).aggregate(
        outstanding=Sum("balance_due"), overdue=Sum("balance_due", filter=Q(due_date__lt=today))
    )
    return sums["outstanding"] or D(0), sums["overdue"] or D(0)


@pytest.fixture
def family(organization):
    """A parent with a branch, each with open, overdue, partly paid and settled invoices; money
    applied to a void invoice; a refund from an overpayment and one from a credit note."""
    today = billing_today()
    parent = CustomerFactory(display_name="Acme Group")
    branch = CustomerFactory(display_name="Acme Berlin", parent=parent)
    old = today - datetime.timedelta(days=60)
    for customer in (parent, branch):
        InvoiceFactory(customer=customer, subtotal=D("80.00"))
        overdue = InvoiceFactory(customer=customer, issue_date=old, subtotal=D("50.00"))
        partly = InvoiceFactory(customer=customer, subtotal=D("40.00"), uncollectible=True)
        PaymentAllocationFactory(
            payment__customer=customer, payment__amount=D("15.00"), invoice=partly, amount=D("15")
        )
        CreditAllocationFactory(credit_note__customer=customer, invoice=overdue, amount=D("5.00"))
    overpaid = PaymentFactory(customer=parent, amount=D("300.00"))
    settled = InvoiceFactory(customer=parent, subtotal=D("100.00"), paid=True)
    PaymentAllocationFactory(payment=overpaid, invoice=settled, amount=D("100.00"))
    voided = InvoiceFactory(customer=parent, subtotal=D("30.00"), void=True)
    PaymentAllocationFactory(payment=overpaid, invoice=voided, amount=D("30.00"))
    # The parent pays its branch's invoice: the parent's credit, not the branch's.
    branch_invoice = InvoiceFactory(customer=branch, subtotal=D("25.00"))
    PaymentAllocationFactory(payment=overpaid, invoice=branch_invoice, amount=D("25.00"))
    RefundFactory(payment=overpaid, amount=D("12.00"), status=RefundStatus.SUCCEEDED)
    RefundFactory(payment=overpaid, amount=D("99.00"), status=RefundStatus.FAILED)
    note = CreditNoteFactory(customer=parent, amount=D("60.00"))
    CreditAllocationFactory(credit_note=note, invoice=voided, amount=D("20.00"))
    RefundFactory(payment=overpaid, credit_note=note, amount=D("7.00"), status="pending")
    CreditNoteFactory(customer=parent, amount=D("500.00"), void=True)
    PaymentFactory(customer=parent, amount=D("900.00"), failed=True)
    InvoiceFactory(customer=parent, draft=True, subtotal=D("700.00"))
    return parent, branch


@pytest.mark.django_db
def test_money_figures_match_the_orm_selectors(family):
    parent, branch = family
    today = billing_today()

    for customer_ids, customer in (([parent.pk, branch.pk], parent), ([branch.pk], branch)):
        figures = money_figures(customer_ids, customer_id=customer.pk, today=today)

        assert (figures.outstanding, figures.overdue) == owed_by_orm(customer_ids, today)
        assert figures.credit == customer_credit_balance(customer)
    # The overpayment: 300 − 100 − 25 (the void invoice's 30 is free again) − 12 refunded; the
    # note: 60 − 7 refunded (its 20 on the void invoice is free again); the fixture's note of
    # 20 with 5 applied; the payment of 15 wholly applied.
    assert money_figures([parent.pk], customer_id=parent.pk, today=today).credit == (
        D("163.00") + D("53.00") + D("15.00")
    )


@pytest.mark.django_db
def test_money_figures_customer_without_history_is_all_zero(organization):
    customer = CustomerFactory()

    figures = money_figures([customer.pk], customer_id=customer.pk, today=billing_today())

    assert (figures.outstanding, figures.overdue, figures.credit) == (D(0), D(0), D(0))


@pytest.mark.django_db
def test_dashboard_shows_the_figures_to_the_cent(client, family):
    parent, branch = family
    today = billing_today()
    outstanding, overdue = owed_by_orm([parent.pk, branch.pk], today)
    contact = ContactPersonFactory(customer=parent, with_login=True)
    login_verified(client, contact.user)

    response = client.get(URL)

    assert response.status_code == 200
    text = response.text
    assert re.search(rf'data-testid="outstanding">USD {outstanding:,.2f}<', text)
    assert re.search(rf'data-testid="overdue">USD {overdue:,.2f}<', text)
    assert re.search(rf'data-testid="credit">USD {customer_credit_balance(parent):,.2f}<', text)


@pytest.mark.parametrize(
    ("preference", "heading", "row"),
    [
        ("show_invoices", "Recent invoices", "INV-DASH-1"),
        ("show_payments", "Recent payments", "RCT-DASH-1"),
        ("show_subscriptions", "Next renewals", "Dashboard Pro"),
    ],
)
def test_dashboard_leaves_out_the_modules_switched_off(
    client, organization, preference, heading, row
):
    customer = CustomerFactory()
    InvoiceFactory(customer=customer, number="INV-DASH-1")
    PaymentFactory(customer=customer, receipt_number="RCT-DASH-1")
    SubscriptionFactory(customer=customer, plan__name="Dashboard Pro")
    login_verified(client, ContactPersonFactory(customer=customer, with_login=True).user)
    shown = client.get(URL).text
    assert heading in shown and row in shown

    set_preference(**{preference: False})
    hidden = client.get(URL).text

    assert heading not in hidden and row not in hidden
    assert 'data-testid="outstanding"' in hidden


def test_chart_months_bars_and_description_are_formatted_once():
    months = last_months(datetime.date(2026, 3, 20))
    rows = [
        {"month": datetime.date(2026, 3, 1), "billed": D("1234.5"), "paid": D("617.25")},
        {"month": datetime.date(2025, 4, 1), "billed": D("10"), "paid": D("0")},
    ]

    chart = billed_and_paid_chart(rows, months)

    assert [m.label for m in chart["months"]][:2] == ["Apr", "May"]
    march = chart["months"][-1]
    billed, paid = march.bars
    assert (billed.height, paid.height) == ("170.0", "85.0")
    assert (billed.y, paid.y) == ("0.0", "85.0")
    assert billed.label == "Mar 2026 billed 1,234.50"
    assert chart["description"].startswith("Apr 2025: billed 10.00, paid 0.00. May 2025: ")
    assert chart["description"].endswith("Mar 2026: billed 1234.50, paid 617.25. ")
    assert chart["label_y"] == 192
