"""Decimal parsing and rounding stay exact in integers."""
from check import raises
from firmware.billing.fixed import parse, round_div, text


def test_parse_strings_and_ints():
    assert parse("0.30", 6) == 300000
    assert parse("0.2575", 4) == 2575
    assert parse("12", 2) == 1200
    assert parse(".5", 1) == 5
    assert parse("-1.25", 2) == -125
    assert parse(3, 3) == 3000


def test_parse_rejects_floats_garbage_and_excess_decimals():
    assert "price" in str(raises(ValueError, parse, 0.3, 6, "price"))
    raises(ValueError, parse, "1.2.3", 2)
    raises(ValueError, parse, "abc", 2)
    raises(ValueError, parse, "", 2)
    raises(ValueError, parse, "0.123", 2)
    raises(ValueError, parse, True, 2)


def test_round_half_away_from_zero():
    assert round_div(5, 10) == 1
    assert round_div(4, 10) == 0
    assert round_div(-5, 10) == -1
    assert round_div(15, 10) == 2
    assert round_div(25, 10) == 3


def test_text():
    assert text(300000, 6, 2) == "0.30"
    assert text(5, 2) == "0.05"
    assert text(-125, 2) == "-1.25"
    assert text(12345, 4, 2) == "1.23"
    assert text(12350, 4, 2) == "1.24"
    assert text(7, 0) == "7"
