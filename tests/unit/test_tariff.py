"""The Tariff object: exact parsing, errors that name the field, the flat-rate convenience."""
from check import raises
from firmware.billing.tariff import Tariff, decimal, flat, scaled


def _tariff(*elements, **top):
    obj = {"id": "t1", "currency": "EUR", "elements": list(elements)}
    obj.update(top)
    return obj


def _el(kind, price, vat="0", step=1, **restrictions):
    el = {"price_components": [{"type": kind, "price": price, "vat": vat, "step_size": step}]}
    if restrictions:
        el["restrictions"] = restrictions
    return el


def _error(obj):
    return str(raises(ValueError, Tariff, obj))


def test_flat_energy_price_with_vat():
    cost = Tariff(flat("0.30", "EUR", "20")).price(12345)
    # 12.345 kWh * 0.30 = 3.7035 -> 3.70 ; incl 20 % = 4.4442 -> 4.44
    assert (cost["currency"], cost["total_excl_vat_minor"], cost["total_incl_vat_minor"]) == ("EUR", 370, 444)
    assert cost["energy"] == {"excl_vat_minor": 370, "incl_vat_minor": 444}
    assert cost["time"] == cost["parking"] == cost["fixed"] == {"excl_vat_minor": 0, "incl_vat_minor": 0}
    assert cost["price_limit"] is None


def test_rounding_half_away_from_zero_once_at_the_end():
    t = Tariff(flat("0.25", "EUR", "0"))
    assert t.price(10)["total_excl_vat_minor"] == 0      # 0.0025
    assert t.price(20)["total_excl_vat_minor"] == 1      # 0.005 -> 0.01
    assert t.price(0)["total_incl_vat_minor"] == 0
    # 3 periods of 0.0040 each: rounding each would give 0.00, the exact sum 0.012 gives 0.01
    rows = [[0, 16000, 0, 0, None, None, None, None], [60, 16000, 0, 0, None, None, None, None],
            [120, 16000, 0, 0, None, None, None, None]]
    assert t.cost(rows, 0)["total_excl_vat_minor"] == 1


def test_step_size_rounds_energy_up():
    obj = flat("1", "EUR")
    obj["elements"][0]["price_components"][0]["step_size"] = 1000
    assert Tariff(obj).price(1)["total_excl_vat_minor"] == 100
    assert Tariff(obj).price(1001)["total_excl_vat_minor"] == 200
    assert Tariff(obj).price(2000)["total_excl_vat_minor"] == 200


def test_minor_units_follow_the_currency():
    assert Tariff(flat("40", "JPY")).price(10000)["total_excl_vat_minor"] == 400
    assert Tariff(flat("0.125", "BHD")).price(1000)["total_excl_vat_minor"] == 125   # fils
    assert Tariff(flat("0.30", "EUR")).minor_digits == 2


def test_time_only_convenience_prices_seconds_of_charging():
    t = Tariff(_tariff(_el("TIME", "2.00", "10", 60)))
    # 2:30:01 -> 151 min = 5.03333 -> 5.03 ; incl 10 % = 5.53667 -> 5.54 (not 5.03 * 1.1 = 5.53)
    cost = t.price(0, seconds=2 * 3600 + 30 * 60 + 1)
    assert cost["time"] == {"excl_vat_minor": 503, "incl_vat_minor": 554}


def test_decimal_helpers_are_exact_and_refuse_floats():
    assert decimal("0.2575", "x") == (2575, 4)
    assert decimal(-3, "x") == (-3, 0)
    assert scaled("1.5", 3, "x") == 1500
    assert scaled("0.0005", 3, "x", exact=False) == 1     # half away from zero
    assert "decimals" in str(raises(ValueError, scaled, "0.0005", 3, "x"))
    for bad in (0.3, True, "1e3", ".5", "5.", "1,5", None, "1" * 40):
        raises(ValueError, decimal, bad, "x")


def test_floats_are_refused_with_a_hint():
    msg = _error(flat(0.3))
    assert "tariff.elements[0].price_components[0].price" in msg and "float" in msg and "jsonx" in msg


def test_errors_name_the_offending_field():
    msg = _error(_tariff(_el("ENERGY", "0.2"), _el("ENERGY", "0.3", start_time="25:00")))
    assert msg == 'tariff.elements[1].restrictions.start_time: "25:00" is not HH:MM', msg
    cases = [
        (_tariff(_el("ENERGY", "0.2", end_date="2026-02-30")), "tariff.elements[0].restrictions.end_date"),
        (_tariff(_el("ENERGY", "0.2", day_of_week=["MONDAY", "FUNDAY"])),
         "tariff.elements[0].restrictions.day_of_week[1]"),
        (_tariff(_el("ENERGY", "0.2", min_kwh="-1")), "tariff.elements[0].restrictions.min_kwh"),
        (_tariff(_el("ENERGY", "0.2", max_power="22.0001")), "tariff.elements[0].restrictions.max_power"),
        (_tariff(_el("ENERGY", "0.2", min_duration="1.5")), "tariff.elements[0].restrictions.min_duration"),
        (_tariff(_el("ENERGY", "0.2", color="red")), "tariff.elements[0].restrictions.color"),
        (_tariff(_el("PARKING", "0.2")), "tariff.elements[0].price_components[0].type"),
        (_tariff(_el("ENERGY", "0.2", vat="101")), "tariff.elements[0].price_components[0].vat"),
        (_tariff(_el("ENERGY", "0.2", step=-1)), "tariff.elements[0].price_components[0].step_size"),
        (_tariff(_el("ENERGY", "0.1234567")), "tariff.elements[0].price_components[0].price"),
        (_tariff(), "tariff.elements"),
        (_tariff(_el("ENERGY", "0.2"), min_price={"excl_vat": "abc"}), "tariff.min_price.excl_vat"),
        (_tariff(_el("ENERGY", "0.2"), tariff_alt_text=[{"language": "en"}]), "tariff.tariff_alt_text[0]"),
        (flat("0.30", "EURO"), "tariff.currency"),
        ({"id": "", "currency": "EUR", "elements": []}, "tariff.id"),
    ]
    for obj, field in cases:
        msg = _error(obj)
        assert msg.startswith(field), (field, msg)


def test_old_spelling_of_restrictions_is_refused_not_ignored():
    bad = _tariff({"price_components": [{"type": "ENERGY", "price": "0", "step_size": 1}],
                   "tariff_restrictions": {"max_kwh": "1"}})
    assert _error(bad).startswith("tariff.elements[0].tariff_restrictions: unknown field")


def test_reservation_tariffs_are_refused_as_unsupported():
    msg = _error(_tariff(_el("TIME", "5", reservation="RESERVATION")))
    assert msg.startswith("tariff.elements[0].restrictions.reservation") and "not supported" in msg


def test_min_price_above_max_price_is_refused():
    assert "min_price" in _error(_tariff(_el("ENERGY", "0.2"), min_price={"excl_vat": "5"},
                                         max_price={"excl_vat": "4"}))


def test_alt_text_and_boundaries_are_exposed():
    alt = [{"language": "en", "text": "Cheap at night"}, {"language": "nl", "text": "'s Nachts goedkoop"}]
    t = Tariff(_tariff(_el("ENERGY", "0.2", start_time="22:00", end_time="06:00"),
                       _el("ENERGY", "0.3", min_kwh="20.5", max_power="11"),
                       _el("ENERGY", "0.4", min_current="16", max_duration=3600, day_of_week=["SUNDAY"]),
                       tariff_alt_text=alt))
    assert t.alt_text == alt
    assert t.clock_minutes == (0, 6 * 60, 22 * 60)   # midnight because of day_of_week
    assert t.energy_wh == (20500,) and t.power_w == (11000,) and t.current_ma == (16000,)
    assert t.durations_s == (3600,)


def test_ints_strings_and_unknown_top_level_fields_are_accepted():
    t = Tariff(_tariff(_el("ENERGY", 1, vat=21, step=0), country_code="NL", last_updated="2026-01-01T00:00:00Z",
                       type="REGULAR", tax_included="NO"))
    assert (t.id, t.currency) == ("t1", "EUR")
    assert t.price(1500)["total_incl_vat_minor"] == 182   # 1.5 * 1.21 = 1.815 -> 1.82
