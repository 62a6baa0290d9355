"""The flat tariff prices in exact integers and refuses what it cannot price."""
from check import raises
from firmware.tariff import Tariff, flat


def test_flat_energy_price_with_vat():
    t = Tariff(flat("0.30", "EUR", "20"))
    cost = t.price(12345)
    # 12.345 kWh * 0.30 = 3.7035 -> 3.70 ; incl 20 % = 4.4442 -> 4.44
    assert cost == {"currency": "EUR", "total_excl_vat_minor": 370, "total_incl_vat_minor": 444}


def test_rounding_half_away_from_zero_once_at_the_end():
    t = Tariff(flat("0.25", "EUR", "0"))
    assert t.price(10)["total_excl_vat_minor"] == 0      # 0.0025
    assert t.price(20)["total_excl_vat_minor"] == 1      # 0.005 -> 0.01
    assert t.price(0)["total_incl_vat_minor"] == 0


def test_step_size_rounds_energy_up():
    obj = flat("1", "EUR")
    obj["elements"][0]["price_components"][0]["step_size"] = 1000
    assert Tariff(obj).price(1)["total_excl_vat_minor"] == 100
    assert Tariff(obj).price(1001)["total_excl_vat_minor"] == 200


def test_zero_decimal_currency():
    assert Tariff(flat("40", "JPY")).price(10000)["total_excl_vat_minor"] == 400


def test_refuses_what_it_cannot_price():
    raises(ValueError, Tariff, flat(0.3))
    bad = flat("0.30")
    bad["elements"][0]["price_components"][0]["type"] = "TIME"
    assert "ENERGY" in str(raises(ValueError, Tariff, bad))
    bad = flat("0.30")
    bad["elements"][0]["restrictions"] = {"start_time": "08:00"}
    assert "restrictions" in str(raises(ValueError, Tariff, bad))
    assert "currency" in str(raises(ValueError, Tariff, flat("0.30", "EURO")))
