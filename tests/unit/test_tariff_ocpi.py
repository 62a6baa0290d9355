"""The OCPI 2.2.1 worked examples (mod_tariffs, mod_cdrs), priced by hand in the comments.

Where the spec's prose and its step_size rule (mod_cdrs: "In the cases that TIME and
PARKING_TIME Tariff Elements are both used, step_size is only taken into account for the
total parking duration") disagree, the rule wins and the comment says so.
"""
from check import raises
from firmware.billing.localtime import LocalTime
from firmware.billing.tariff import Tariff, periods_from_cdr
from firmware.core.timefmt import iso, parse_iso

CEST = LocalTime(60, "EU")
MONDAY = parse_iso("2019-06-03T00:00:00Z")      # a Monday; local (CEST) midnight is 2019-06-02T22:00Z


def _c(kind, price, vat=None, step=1):
    c = {"type": kind, "price": price, "step_size": step}
    if vat is not None:
        c["vat"] = vat
    return c


def _el(*components, **restrictions):
    el = {"price_components": list(components)}
    if restrictions:
        el["restrictions"] = restrictions
    return el


def _tariff(*elements, **top):
    obj = {"id": "x", "currency": top.pop("currency", "EUR"), "elements": list(elements)}
    obj.update(top)
    return Tariff(obj)


def _periods(start, *spans):
    """spans: (minutes, {"ENERGY": kWh text, "TIME"/"PARKING_TIME": minutes, "MAX_POWER": kW …})
    → OCPI charging_periods (TIME/PARKING_TIME given in minutes here, written in hours)."""
    out = []
    t = start
    for minutes, dims in spans:
        ds = []
        for k in dims:
            v = dims[k]
            if k in ("TIME", "PARKING_TIME"):
                v = "%d.%06d" % divmod(v * 1000000 // 60, 1000000)   # the engine rounds to the second
            ds.append({"type": k, "volume": v})
        out.append({"start_date_time": iso(t), "dimensions": ds})
        t += minutes * 60
    return out, t


def _price(tariff, start, spans, tz=None):
    periods, end = _periods(start, *spans)
    return tariff.price_cdr(periods, start, end, tz)


def _totals(cost):
    return cost["total_excl_vat_minor"], cost["total_incl_vat_minor"]


ENERGY_025 = _c("ENERGY", "0.25", "10.0")
START_050 = _c("FLAT", "0.50", "20.0")


def test_simple_025_per_kwh():
    # 20 kWh * 0.25 = 5.00 ; +10 % = 5.50
    cost = _price(_tariff(_el(ENERGY_025)), MONDAY, [(120, {"ENERGY": "20"})])
    assert _totals(cost) == (500, 550)


def test_025_per_kwh_plus_start_fee():
    # 0.50 (+20 % = 0.60) + 5.00 (+10 % = 5.50) = 5.50 / 6.10
    cost = _price(_tariff(_el(START_050), _el(ENERGY_025)), MONDAY, [(120, {"ENERGY": "20"})])
    assert _totals(cost) == (550, 610)
    assert cost["fixed"] == {"excl_vat_minor": 50, "incl_vat_minor": 60}


def test_min_price():
    t = _tariff(_el(ENERGY_025), min_price={"excl_vat": "0.50", "incl_vat": "0.55"})
    assert _totals(_price(t, MONDAY, [(60, {"ENERGY": "20"})])) == (500, 550)
    cost = _price(t, MONDAY, [(10, {"ENERGY": "1"})])       # 0.25 / 0.275 -> raised to 0.50 / 0.55
    assert _totals(cost) == (50, 55) and cost["price_limit"] == "min_price"
    assert cost["energy"] == {"excl_vat_minor": 25, "incl_vat_minor": 28}   # the breakdown stays true
    assert _price(t, MONDAY, [(10, {"ENERGY": "2"})])["price_limit"] is None  # exactly 0.50 / 0.55


def test_max_price_with_start_fee():
    t = _tariff(_el(START_050), _el(ENERGY_025), max_price={"excl_vat": "10.00", "incl_vat": "11.00"},
                end_date_time="2019-06-30T23:59:59Z")
    cost = _price(t, MONDAY, [(300, {"ENERGY": "50"})])      # 13.00 / 14.35 -> capped
    assert _totals(cost) == (1000, 1100) and cost["price_limit"] == "max_price"
    # 30 kWh: 0.50 + 7.50 = 8.00 ; 0.60 + 8.25 = 8.85
    assert _totals(_price(t, MONDAY, [(180, {"ENERGY": "30"})])) == (800, 885)


def test_parking_after_charging_with_start_fee():
    # 0.50 + 5.00 + 40 min parking billed per 15 min -> 45 min * 2.00/h = 1.50 ; = 7.00
    # incl: 0.60 + 5.50 + 1.80 = 7.90
    t = _tariff(_el(START_050), _el(ENERGY_025), _el(_c("PARKING_TIME", "2.00", "20.0", 900)))
    cost = _price(t, MONDAY, [(120, {"ENERGY": "20", "TIME": 120}), (40, {"PARKING_TIME": 40})])
    assert _totals(cost) == (700, 790)
    assert cost["parking"] == {"excl_vat_minor": 150, "incl_vat_minor": 180}


def test_2_euro_per_hour_charging_and_free_parking():
    # 2.5 h * 2.00 = 5.00 / 5.50 ; a TIME-only tariff does not bill parking
    t = _tariff(_el(_c("TIME", "2.00", "10.0", 60)))
    assert _totals(_price(t, MONDAY, [(150, {"TIME": 150})])) == (500, 550)
    cost = _price(t, MONDAY, [(150, {"TIME": 150}), (60, {"PARKING_TIME": 60})])
    assert _totals(cost) == (500, 550)


def test_3_euro_per_hour_5_euro_parking():
    # 150 min * 3.00/h = 7.50 (incl 10 % 8.25) ; 42 min parking billed per 5 min = 45 min * 5.00/h
    # = 3.75 (incl 20 % 4.50) ; = 11.25 / 12.75
    t = _tariff(_el(_c("TIME", "3.00", "10.0", 60), _c("PARKING_TIME", "5.00", "20.0", 300)))
    cost = _price(t, MONDAY, [(150, {"ENERGY": "20", "TIME": 150}), (42, {"PARKING_TIME": 42})])
    assert _totals(cost) == (1125, 1275)


def test_ad_hoc_1_9_per_hour_with_5_2_percent_vat():
    # 2.5 h * 1.90 = 4.75 ; * 1.052 = 4.997 -> 5.00
    t = _tariff(_el(_c("TIME", "1.90", "5.2", 300)), tariff_alt_text=[{"language": "en", "text": "1.90/h"}])
    assert _totals(_price(t, MONDAY, [(150, {"TIME": 150})])) == (475, 500)


def test_energy_step_of_100_wh():
    # 20.45 kWh billed as 20.5 kWh * 0.25 = 5.125 -> 5.13 ; * 1.1 = 5.6375 -> 5.64
    # (the spec's prose says 5.50 / 6.05, which does not follow from its own numbers)
    t = _tariff(_el(_c("ENERGY", "0.25", "10.0", 100)))
    assert _totals(_price(t, MONDAY, [(120, {"ENERGY": "20.45"})])) == (513, 564)


def _complex():
    return _tariff(
        _el(_c("FLAT", "2.50", "15.0")),
        _el(_c("TIME", "1.00", "20.0", 900), max_current="32.00"),
        _el(_c("TIME", "2.00", "20.0", 600), min_current="32.00",
            day_of_week=["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]),
        _el(_c("TIME", "1.25", "20.0", 600), min_current="32.00", day_of_week=["SATURDAY", "SUNDAY"]),
        _el(_c("PARKING_TIME", "5.00", "10.0", 300), start_time="09:00", end_time="18:00",
            day_of_week=["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]),
        _el(_c("PARKING_TIME", "6.00", "10.0", 300), start_time="10:00", end_time="17:00",
            day_of_week=["SATURDAY"]))


def test_complex_tariff_monday_morning():
    # Monday 09:30 CEST, 147 min at 16 A (< 32 A: 1.00/h), then 42 min parking (weekday 09-18: 5.00/h).
    # TIME and PARKING_TIME both used: only parking is stepped (45 min); charging is 147 min exactly.
    # 2.50 + 2.45 + 3.75 = 8.70 ; incl 2.875 + 2.94 + 4.125 = 9.94
    # (the spec's prose also steps the charging to 150 min: 8.75 / 10.00)
    start = parse_iso("2019-06-03T07:30:00Z")
    spans = [(147, {"ENERGY": "8.5", "TIME": 147, "MAX_CURRENT": "16"}),
             (42, {"PARKING_TIME": 42, "MAX_CURRENT": "0"})]
    assert _totals(_price(_complex(), start, spans, CEST)) == (870, 994)
    # unplugged right after charging: TIME alone is stepped, 147 -> 150 min: 2.50 + 2.50 = 5.00 ;
    # incl 2.875 + 3.00 = 5.875 -> 5.88
    assert _totals(_price(_complex(), start, spans[:1], CEST)) == (500, 588)


def test_complex_tariff_saturday_afternoon():
    # Saturday 13:30 CEST, 114 min at >= 43 A (weekend: 1.25/h), 71 min parking (Sat 10-17: 6.00/h,
    # stepped to 75 min). 2.50 + 2.375 + 7.50 = 12.375 -> 12.38 ; 2.875 + 2.85 + 8.25 = 13.975 -> 13.98
    start = parse_iso("2019-06-08T11:30:00Z")
    spans = [(114, {"ENERGY": "55", "TIME": 114, "MIN_CURRENT": "43", "MAX_CURRENT": "48"}),
             (71, {"PARKING_TIME": 71, "MAX_CURRENT": "0"})]
    assert _totals(_price(_complex(), start, spans, CEST)) == (1238, 1398)
    # the same session read in UTC starts at 11:30: still Saturday, still inside 10-17 -> same price
    assert _totals(_price(_complex(), start, spans)) == (1238, 1398)
    # on a Sunday no parking element applies: parking is free, so only TIME was used and TIME is
    # stepped (114 -> 120 min): 2.50 + 2.50 = 5.00 ; 2.875 + 3.00 = 5.875 -> 5.88
    sunday = start + 86400
    assert _totals(_price(_complex(), sunday, spans, CEST)) == (500, 588)


def test_max_power_restriction():
    # 1 kWh at 6 kW (0.20) + 40 kWh at 48 kW (0.50, the fallback) + 0.5 kWh at 4 kW (0.20)
    # = 0.20 + 20.00 + 0.10 = 20.30 ; +20 % = 24.36
    t = _tariff(_el(_c("ENERGY", "0.20", "20.0"), max_power="16.00"),
                _el(_c("ENERGY", "0.35", "20.0"), max_power="32.00"),
                _el(_c("ENERGY", "0.50", "20.0")))
    spans = [(10, {"ENERGY": "1", "MAX_POWER": "6"}), (50, {"ENERGY": "40", "MAX_POWER": "48"}),
             (8, {"ENERGY": "0.5", "MAX_POWER": "4"})]
    assert _totals(_price(t, MONDAY, spans)) == (2030, 2436)
    # 20 kWh at 20 kW: the middle element (16 <= 20 < 32): 7.00
    assert _totals(_price(t, MONDAY, [(60, {"ENERGY": "20", "MAX_POWER": "20"})])) == (700, 840)


def test_max_duration_restriction():
    # first 30 min free, 0.25/kWh until 60 min, 0.40 after; 40 min: 5 kWh free + 1.2 kWh * 0.25 = 0.30
    t = _tariff(_el(_c("ENERGY", "0.00", "20.0"), max_duration=1800),
                _el(_c("ENERGY", "0.25", "20.0"), max_duration=3600),
                _el(_c("ENERGY", "0.40", "20.0")))
    assert _totals(_price(t, MONDAY, [(30, {"ENERGY": "5"}), (10, {"ENERGY": "1.2"})])) == (30, 36)
    # 80 min: 5 kWh free, 5.2 kWh at 0.25 = 1.30, then 2 kWh at 0.40 = 0.80 ; = 2.10 / 2.52
    spans = [(30, {"ENERGY": "5"}), (30, {"ENERGY": "5.2"}), (20, {"ENERGY": "2"})]
    assert _totals(_price(t, MONDAY, spans)) == (210, 252)


def test_first_hour_parking_and_first_kwh_free():
    # parking: session minutes 0-60 free, 60-180 2.00/h, 180+ 3.00/h; energy: first kWh free, then 0.20.
    # 20 kWh (charged at once, as in the spec) then 2.75 h parked: 19 * 0.20 = 3.80 ; 1.75 h * 2.00 = 3.50
    # = 7.30 ; no VAT given: incl = excl
    t = _tariff(_el(_c("PARKING_TIME", "0.0", step=60), min_duration=0, max_duration=3600),
                _el(_c("PARKING_TIME", "2.0", step=60), min_duration=3600, max_duration=10800),
                _el(_c("PARKING_TIME", "3.0", step=60), min_duration=10800),
                _el(_c("ENERGY", "0.0"), max_kwh="1.0"),
                _el(_c("ENERGY", "0.2"), min_kwh="1.0"))
    spans = [(0, {"ENERGY": "1"}), (0, {"ENERGY": "19"}), (60, {"PARKING_TIME": 60}),
             (105, {"PARKING_TIME": 105})]
    assert _totals(_price(t, MONDAY, spans)) == (730, 730)
    # staying until 3.5 h: 2 h at 2.00 + 30 min at 3.00 -> 3.80 + 4.00 + 1.50 = 9.30
    spans = spans[:3] + [(120, {"PARKING_TIME": 120}), (30, {"PARKING_TIME": 30})]
    assert _totals(_price(t, MONDAY, spans)) == (930, 930)


def test_cdr_example_time_step_300():
    # 21:39:09 -> 23:37:32 = 1.973 h (7103 s) billed per 5 min -> 2 h * 2.00 = 4.00 ; 4.40
    t = _tariff(_el(_c("TIME", "2.00", "10.0", 300)))
    start, end = parse_iso("2015-06-29T21:39:09Z"), parse_iso("2015-06-29T23:37:32Z")
    periods = [{"start_date_time": "2015-06-29T21:39:09Z", "dimensions": [{"type": "TIME", "volume": "1.973"}],
                "tariff_id": "12"}]
    assert _totals(t.price_cdr(periods, start, end)) == (400, 440)


def test_step_size_uses_the_session_total_and_the_last_component():
    # mod_cdrs: 0.20/kWh before 17:00, 0.27 after, both per 500 Wh; 4.3 + 1.1 = 5.4 -> 5.5 kWh:
    # 4.3 * 0.20 + 1.2 * 0.27 = 0.86 + 0.324 = 1.184 -> 1.18 (NOT 1.5 kWh after 17:00)
    t = _tariff(_el(_c("ENERGY", "0.20", step=500), end_time="17:00"), _el(_c("ENERGY", "0.27", step=500)))
    start = MONDAY + 15 * 3600
    assert _totals(_price(t, start, [(120, {"ENERGY": "4.3"}), (60, {"ENERGY": "1.1"})])) == (118, 118)
    # 5.00/h before 17:00, 7.00/h after, both per 10 min: 6 + 22 = 28 -> 30 min: 6 min at 5 + 24 at 7
    # = 0.50 + 2.80 = 3.30
    t = _tariff(_el(_c("TIME", "5", step=600), end_time="17:00"), _el(_c("TIME", "7", step=600)))
    start = MONDAY + 17 * 3600 - 360
    assert _totals(_price(t, start, [(6, {"TIME": 6}), (22, {"TIME": 22})])) == (330, 330)


def test_time_then_parking_steps_only_the_parking():
    # mod_cdrs: charging 1.00/h, parking 2.00/h, both per 10 min; 21 min charging + 16 min parking:
    # charging 21 min = 0.35, parking 20 min = 0.6667 -> 1.0167 -> 1.02
    t = _tariff(_el(_c("TIME", "1.00", step=600), _c("PARKING_TIME", "2.00", step=600)))
    assert _totals(_price(t, MONDAY, [(21, {"TIME": 21}), (16, {"PARKING_TIME": 16})])) == (102, 102)
    # both per 5 min at 6.00/h: 21 min charging (not 25) = 2.10, 7 -> 10 min parking = 1.00
    t = _tariff(_el(_c("TIME", "6", step=300), _c("PARKING_TIME", "6", step=300)))
    cost = _price(t, MONDAY, [(21, {"TIME": 21}), (7, {"PARKING_TIME": 7})])
    assert (cost["time"]["excl_vat_minor"], cost["parking"]["excl_vat_minor"]) == (210, 100)


def _step_switch():
    return _tariff(
        _el(_c("TIME", "1.20", step=1800), _c("PARKING_TIME", "1.00", step=900),
            start_time="00:00", end_time="17:00"),
        _el(_c("TIME", "2.40", step=900), _c("PARKING_TIME", "1.00", step=900),
            start_time="17:00", end_time="20:00"),
        _el(_c("TIME", "2.40", step=900), start_time="20:00", end_time="23:59"))


def test_step_size_when_switching_tariff_elements():
    # #2: 16:35, 35 min charging: 25 min at 1.20 = 0.50 ; total 35 -> 45 min with the last step (15 min)
    # so 20 min at 2.40 = 0.80 ; = 1.30
    start = MONDAY + 16 * 3600 + 35 * 60
    assert _totals(_price(_step_switch(), start, [(25, {"TIME": 25}), (10, {"TIME": 10})])) == (130, 130)
    # #1: 16:55, 10 min charging then 2 min parking. The step rule rounds only the parking (2 -> 15 min):
    # 5 min at 1.20 + 5 min at 2.40 + 15 min at 1.00 = 0.10 + 0.20 + 0.25 = 0.55
    # (the example's prose rounds the charging to 15 min and leaves parking free: 0.50)
    start = MONDAY + 16 * 3600 + 55 * 60
    spans = [(5, {"TIME": 5}), (5, {"TIME": 5}), (2, {"PARKING_TIME": 2})]
    assert _totals(_price(_step_switch(), start, spans)) == (55, 55)
    # free parking after 20:00: 19:55, 10 min charging, 2 min parking: TIME alone is stepped:
    # 5 min at 2.40 + 10 min at 2.40 = 0.60 (the example's 0.60)
    start = MONDAY + 19 * 3600 + 55 * 60
    spans = [(5, {"TIME": 5}), (5, {"TIME": 5}), (2, {"PARKING_TIME": 2})]
    assert _totals(_price(_step_switch(), start, spans)) == (60, 60)


def test_step_size_precision_of_the_spec_note_in_fils():
    # 115.2 Wh at 0.25/kWh: per 1 Wh -> 116 Wh = 0.029 ; per 25 Wh -> 125 Wh = 0.03125 -> 0.031 ;
    # per 500 Wh -> 0.125 (BHD has 3 decimals, so the mils show)
    for step, fils in ((1, 29), (25, 31), (500, 125)):
        t = _tariff(_el(_c("ENERGY", "0.25", step=step)), currency="BHD")
        assert _price(t, MONDAY, [(5, {"ENERGY": "0.1152"})])["total_excl_vat_minor"] == fils, step


def test_free_of_charge_flat_zero_and_missing_dimensions_are_free():
    t = _tariff(_el(_c("FLAT", "0.00")))
    assert _totals(_price(t, MONDAY, [(60, {"ENERGY": "10", "TIME": 60})])) == (0, 0)
    # only a night element: daytime energy has no element -> free
    t = _tariff(_el(_c("ENERGY", "0.10"), start_time="22:00", end_time="06:00"))
    spans = [(60, {"ENERGY": "7"}), (60, {"ENERGY": "3"})]
    assert _totals(_price(t, MONDAY + 21 * 3600, spans)) == (30, 30)   # 21:00 free, 22:00 3 kWh * 0.10


def test_flat_is_charged_once_per_session_from_its_start():
    t = _tariff(_el(_c("FLAT", "1.00"), start_time="08:00", end_time="20:00"), _el(_c("FLAT", "3.00")))
    spans = [(120, {"ENERGY": "1"}), (120, {"ENERGY": "1"})]
    assert _totals(_price(t, MONDAY + 19 * 3600, spans)) == (100, 100)   # started in the day window
    assert _totals(_price(t, MONDAY + 21 * 3600, spans)) == (300, 300)


def test_first_matching_element_wins_per_dimension():
    t = _tariff(_el(_c("ENERGY", "0.10"), _c("TIME", "1.00"), max_power="11"),
                _el(_c("ENERGY", "0.30")), _el(_c("TIME", "9.00")))
    # at 7 kW both ENERGY and TIME come from the first element; at 22 kW from the fallbacks
    slow = _price(t, MONDAY, [(60, {"ENERGY": "7", "TIME": 60, "MAX_POWER": "7"})])
    fast = _price(t, MONDAY, [(60, {"ENERGY": "22", "TIME": 60, "MAX_POWER": "22"})])
    assert _totals(slow) == (170, 170) and _totals(fast) == (1560, 1560)


def test_cdr_errors_name_the_field():
    t = _tariff(_el(ENERGY_025))
    good = {"start_date_time": iso(MONDAY), "dimensions": [{"type": "ENERGY", "volume": "1"}]}
    cases = [
        ([good, {"start_date_time": iso(MONDAY), "dimensions": [{"type": "ENERGY", "volume": 1.5}]}],
         "cdr.charging_periods[1].dimensions[0].volume"),
        ([{"start_date_time": "yesterday", "dimensions": []}], "cdr.charging_periods[0].start_date_time"),
        ([{"start_date_time": iso(MONDAY), "dimensions": [{"type": "FOO", "volume": "1"}]}],
         "cdr.charging_periods[0].dimensions[0].type"),
        ([{"start_date_time": iso(MONDAY), "dimensions": [{"type": "RESERVATION_TIME", "volume": "1"}]}],
         "cdr.charging_periods[0].dimensions[0]"),
        ([{"start_date_time": iso(MONDAY), "dimensions": [{"type": "TIME", "volume": "-1"}]}],
         "cdr.charging_periods[0].dimensions[0].volume"),
        ([{"start_date_time": iso(MONDAY - 60), "dimensions": []}], "cdr.charging_periods[0].start_date_time"),
        ([], "cdr.charging_periods"),
    ]
    for periods, field in cases:
        msg = str(raises(ValueError, t.price_cdr, periods, MONDAY, MONDAY + 3600))
        assert msg.startswith(field), (field, msg)


def test_cdr_volumes_are_read_exactly():
    rows = periods_from_cdr([{"start_date_time": iso(MONDAY), "dimensions": [
        {"type": "ENERGY", "volume": "12.3456789"}, {"type": "TIME", "volume": "0.000278"},
        {"type": "PARKING_TIME", "volume": 2}, {"type": "MAX_CURRENT", "volume": "31.9995"},
        {"type": "MAX_POWER", "volume": "11.04"}]}], MONDAY)
    # mWh (rounded at the 7th decimal of a kWh), whole seconds, mA, W
    assert rows == [[MONDAY, 12345679, 1, 7200, None, 32000, None, 11040]]


# -- properties ---------------------------------------------------------------------------------
class Lcg:
    """Deterministic integers, identical on both interpreters (no random module needed)."""

    def __init__(self, seed):
        self.x = seed

    def below(self, n):
        self.x = (self.x * 1103515245 + 12345) % 2147483648
        return (self.x >> 8) % n


def _mixed():
    return _tariff(_el(_c("FLAT", "0.35", "19")),
                   _el(_c("ENERGY", "0.18", "19"), start_time="22:00", end_time="06:00"),
                   _el(_c("ENERGY", "0.31", "19"), max_kwh="30"),
                   _el(_c("ENERGY", "0.27", "19")),
                   _el(_c("TIME", "0.60", "19"), min_power="11"),
                   _el(_c("PARKING_TIME", "4.00", "19", 300), start_time="08:00", end_time="20:00"),
                   min_price={"excl_vat": "1.00", "incl_vat": "1.19"},
                   max_price={"excl_vat": "60.00", "incl_vat": "71.40"})


def test_cost_never_decreases_as_a_session_grows():
    t = _mixed()
    rnd = Lcg(7)
    for session in range(6):
        start = MONDAY + rnd.below(7 * 86400)
        rows = [[start, 0, 0, 0, None, None, None, 0]]
        last = (0, 0)
        for _ in range(120):
            r = rows[-1]
            if rnd.below(4) == 0:       # a new period where the previous one ends
                power = rnd.below(22000)
                rows.append([r[0] + r[2] + r[3], 0, 0, 0, None, None, None, power])
                continue
            if rnd.below(3):
                secs = 60 + rnd.below(900)
                r[2] += secs
                r[1] += secs * r[7] // 3600 * 1000   # whole Wh, as mWh
            else:
                r[3] += 60 + rnd.below(1800)
            now = _totals(t.cost(rows, start, CEST))
            assert now[0] >= last[0] and now[1] >= last[1], (session, rows, now, last)
            last = now


def test_the_spec_step_rule_can_lower_a_bill_when_parking_follows():
    # documented consequence of "step_size only on the parking when TIME and PARKING_TIME are both
    # used": 10 min charging stepped to 1 h costs 1.00; one minute of free parking un-steps it
    t = _tariff(_el(_c("TIME", "1.00", step=3600), _c("PARKING_TIME", "0")))
    assert _totals(_price(t, MONDAY, [(10, {"TIME": 10})])) == (100, 100)
    assert _totals(_price(t, MONDAY, [(10, {"TIME": 10}), (1, {"PARKING_TIME": 1})])) == (17, 17)


def test_flat_rate_matches_an_independent_integer_formula():
    rnd = Lcg(11)
    for _ in range(200):
        cents_per_kwh = rnd.below(100000)          # 0.00000 .. 0.99999 per kWh
        vat = rnd.below(2700)                      # 0.00 .. 26.99 %
        wh = rnd.below(200000)
        t = Tariff({"id": "f", "currency": "EUR", "elements": [{"price_components": [
            {"type": "ENERGY", "price": "0.%05d" % cents_per_kwh, "vat": "%d.%02d" % divmod(vat, 100),
             "step_size": 1}]}]})
        # excl in 1e-8 EUR = 1e-5/kWh * Wh / 1000 ; cents: / 1e6, half up (all values >= 0)
        excl = cents_per_kwh * wh
        incl = excl * (10000 + vat)
        got = t.price(wh)
        assert got["total_excl_vat_minor"] == (excl * 2 + 10 ** 6) // (2 * 10 ** 6)
        assert got["total_incl_vat_minor"] == (incl * 2 + 10 ** 10) // (2 * 10 ** 10)
