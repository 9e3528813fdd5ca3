from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import format_money, percent_of, round_money
from billing.proration import prorate, prorate_change

D = Decimal


def test_published_worked_example_upgrade_300_to_500_on_apr_15():
    # Term Apr 5 – May 5 (30 days); change on Apr 15 leaves 20 days.
    result = prorate_change(
        old_amount=D("300"), new_amount=D("500"), days_left=20, days_in_term=30, currency="USD"
    )
    assert (result.credit, result.charge, result.net) == (D("200.00"), D("333.33"), D("133.33"))


def test_downgrade_nets_negative():
    result = prorate_change(
        old_amount=D("99"), new_amount=D("29"), days_left=10, days_in_term=31, currency="USD"
    )
    assert result.net == D("9.35") - D("31.94")
    assert result.net < 0


def test_round_money_is_half_up_per_currency():
    assert round_money(D("2.675")) == D("2.68")
    assert round_money(D("-2.675")) == D("-2.68")
    assert round_money(D("2.674999")) == D("2.67")
    assert round_money(D("1234.5"), "JPY") == D("1235")
    assert round_money(D("1.2345"), "KWD") == D("1.235")
    assert percent_of(D("99.00"), D("8.875")) == D("8.79")
    assert format_money(D("1234.5"), "USD") == "USD 1,234.50"


def test_round_money_refuses_floats():
    with pytest.raises(TypeError):
        round_money(0.1)


def test_prorate_refuses_days_outside_the_term():
    with pytest.raises(ValueError, match="within the term"):
        prorate(D("10"), days_left=31, days_in_term=30)


amounts = st.decimals(min_value=D("0"), max_value=D("100000"), places=4)


@given(amount=amounts, term=st.integers(1, 366), data=st.data())
def test_prorated_amount_never_exceeds_the_full_amount(amount, term, data):
    days_left = data.draw(st.integers(0, term))
    value = prorate(amount, days_left=days_left, days_in_term=term)
    assert D("0") <= value <= round_money(amount)
    assert value == round_money(value)  # already at cent precision
    if days_left == term:
        assert value == round_money(amount)


@given(old=amounts, new=amounts, term=st.integers(1, 366), data=st.data())
def test_net_is_exactly_charge_minus_credit(old, new, term, data):
    days_left = data.draw(st.integers(0, term))
    result = prorate_change(
        old_amount=old, new_amount=new, days_left=days_left, days_in_term=term, currency="USD"
    )
    assert result.net == result.charge - result.credit
    assert (result.net > 0) == (result.charge > result.credit)
