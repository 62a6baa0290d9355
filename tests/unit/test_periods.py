"""Charging periods cut from metering: boundaries in local time, exact energy, bounded flapping."""
import gc

from check import heap_lock, heap_unlock, raises
from firmware.billing.localtime import LocalTime
from firmware.billing.periods import PeriodBuilder
from firmware.billing.tariff import Tariff, periods_from_cdr
from firmware.core.timefmt import iso, parse_iso

CET = LocalTime(60, "EU")


def _tariff(*elements, **top):
    obj = {"id": "p", "currency": "EUR", "elements": list(elements)}
    obj.update(top)
    return Tariff(obj)


def _el(kind, price, step=1, **restrictions):
    el = {"price_components": [{"type": kind, "price": price, "vat": "20", "step_size": step}]}
    if restrictions:
        el["restrictions"] = restrictions
    return el


def _run(tariff, tz, start, seconds, watts, every=1, charging=None, current=None, dwell_s=60, max_periods=48):
    """Constant-power session sampled every `every` s; watts/charging/current may be functions of s."""
    pb = PeriodBuilder(tariff, tz, start, dwell_s=dwell_s, max_periods=max_periods)
    mwh = 0
    last = 0
    for s in range(every, seconds + 1, every):
        w = watts(s) if callable(watts) else watts
        on = charging(s) if charging else w > 100
        mwh += w * (s - last) * 1000 // 3600
        last = s
        ma = current(s) if current else w * 1000 // 230
        pb.update(s, mwh // 1000, ma, w, on)
    return pb, pb.finish(start + seconds, mwh // 1000), mwh // 1000


def _dims(period):
    out = {}
    for d in period["dimensions"]:
        out[d["type"]] = d["volume"]
    return out


def _starts(periods):
    return [p["start_date_time"] for p in periods]


def test_one_period_without_restrictions_with_exact_volumes():
    t = _tariff(_el("ENERGY", "0.30"))
    start = parse_iso("2026-03-02T07:55:00Z")
    pb, periods, wh = _run(t, None, start, 1800, lambda s: 3680 if s < 1000 else 7360)
    assert _starts(periods) == ["2026-03-02T07:55:00Z"] and periods[0]["tariff_id"] == "p"
    d = _dims(periods[0])
    assert d["ENERGY"] == "%d.%03d" % divmod(wh, 1000) and d["TIME"] == "0.500000"
    assert d["MAX_POWER"] == "7.360" and d["MAX_CURRENT"] == "32.000"
    assert "PARKING_TIME" not in d
    cost = t.price_cdr(periods, start, start + 1800)
    assert cost["total_excl_vat_minor"] == (wh * 30 + 500) // 1000


def test_charging_then_parking_after_the_dwell_time():
    t = _tariff(_el("ENERGY", "0.25"), _el("PARKING_TIME", "6.00", 300))
    start = parse_iso("2026-03-02T09:00:00Z")
    pb, periods, wh = _run(t, None, start, 3600, lambda s: 7200 if s <= 2400 else 0, dwell_s=60)
    # the update at 2401 s is the first not charging (a reading describes the time until the next);
    # the new period starts once parking held 60 s, at 2461 s
    assert _starts(periods) == [iso(start), iso(start + 2461)]
    first, second = _dims(periods[0]), _dims(periods[1])
    assert first["TIME"] == "0.666944" and first["PARKING_TIME"] == "0.016667"   # 2401 s + 60 s
    assert second["PARKING_TIME"] == "0.316389" and "TIME" not in second          # 1139 s
    assert (pb.charging_s, pb.parking_s, pb.count) == (2401, 1199, 2)
    # 4.8 kWh * 0.25 = 1.20 ; parking 60 + 1139 s -> 1200 s (4 steps of 300) * 6.00/h = 2.00 ; = 3.20
    cost = t.price_cdr(periods, start, start + 3600)
    assert wh == 4800 and cost["total_excl_vat_minor"] == 320


def test_a_window_wrapping_midnight_cuts_at_its_ends_only():
    t = _tariff(_el("ENERGY", "0.10", start_time="22:00", end_time="06:00"), _el("ENERGY", "0.30"))
    assert t.clock_minutes == (6 * 60, 22 * 60)
    start = parse_iso("2026-06-10T21:00:00Z")
    pb, periods, wh = _run(t, None, start, 10 * 3600, 3600, every=5)
    assert _starts(periods) == ["2026-06-10T21:00:00Z", "2026-06-10T22:00:00Z", "2026-06-11T06:00:00Z"]
    assert [_dims(p)["ENERGY"] for p in periods] == ["3.600", "28.800", "3.600"]
    # 7.2 kWh * 0.30 + 28.8 kWh * 0.10 = 2.16 + 2.88 = 5.04
    assert t.price_cdr(periods, start, start + 36000)["total_excl_vat_minor"] == 504


def test_spring_forward_is_priced_in_local_time():
    t = _tariff(_el("ENERGY", "0.20", start_time="22:00", end_time="06:00"), _el("ENERGY", "0.40"))
    start = parse_iso("2026-03-28T19:00:00Z")          # 20:00 CET; clocks jump at 01:00Z
    pb, periods, wh = _run(t, CET, start, 11 * 3600, 5520, every=3)
    assert _starts(periods) == ["2026-03-28T19:00:00Z", "2026-03-28T21:00:00Z",    # 22:00 CET
                                "2026-03-29T01:00:00Z",                            # 03:00 CEST (jump)
                                "2026-03-29T04:00:00Z"]                            # 06:00 CEST
    # 2 h day + 7 h night (the local night is an hour short) + 2 h day at 5.52 kW:
    # 22.08 kWh * 0.40 + 38.64 kWh * 0.20 = 8.832 + 7.728 = 16.56 ; +20 % = 19.872 -> 19.87
    cost = t.price_cdr(periods, start, start + 11 * 3600, CET)
    assert (cost["total_excl_vat_minor"], cost["total_incl_vat_minor"]) == (1656, 1987)
    # the same session in a zone without DST keeps the 05:00 CET hour in the night
    assert t.price_cdr(periods, start, start + 11 * 3600, LocalTime(60))["total_excl_vat_minor"] == 1435


def test_fall_back_repeats_a_local_window():
    # 02:30-03:30 local: 02:30 CEST (00:30Z) .. the jump back at 01:00Z (03:00 CEST -> 02:00 CET),
    # then again 02:30 CET (01:30Z) .. 03:30 CET (02:30Z)
    t = _tariff(_el("ENERGY", "1.00", start_time="02:30", end_time="03:30"), _el("ENERGY", "0.10"))
    start = parse_iso("2026-10-25T00:00:00Z")
    pb, periods, wh = _run(t, CET, start, 3 * 3600, 3600)          # 1 Wh per second
    assert _starts(periods) == ["2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z",
                                "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"]
    # 1.8 kWh at 1.00 (CEST pass) + 3.6 kWh at 1.00 (CET pass) + 5.4 kWh at 0.10 = 5.40 + 0.54 = 5.94
    assert t.price_cdr(periods, start, start + 3 * 3600, CET)["total_excl_vat_minor"] == 594


def test_energy_thresholds_are_cut_at_the_exact_wh():
    t = _tariff(_el("ENERGY", "0", max_kwh="1"), _el("ENERGY", "0.20"))
    start = parse_iso("2026-03-02T10:00:00Z")
    pb = PeriodBuilder(t, None, start)
    pb.update(10, 995, 16000, 3680, True)
    pb.update(20, 1007, 16000, 3680, True)     # the threshold lies inside this step
    periods = pb.finish(start + 30, 1020)
    assert [_dims(p)["ENERGY"] for p in periods] == ["1.000", "0.020"]
    # the crossing time is interpolated: 10 s + 10 s * 5 / 12 = 14 s
    assert _starts(periods)[1] == iso(start + 14)
    assert t.price_cdr(periods, start, start + 30)["energy"]["excl_vat_minor"] == 0   # 0.004 -> 0.00


def test_duration_thresholds_are_cut_at_the_exact_second_with_sparse_updates():
    t = _tariff(_el("ENERGY", "0", max_duration=1800), _el("ENERGY", "0.25", max_duration=3600),
                _el("ENERGY", "0.40"))
    start = parse_iso("2026-03-02T10:00:00Z")
    pb, periods, wh = _run(t, None, start, 4000, 7200, every=7)
    assert _starts(periods) == [iso(start), iso(start + 1800), iso(start + 3600)]
    # 2 Wh/s: the energy at the cuts is interpolated between the 7-s updates (1799 s: 3598 Wh,
    # 1806 s: 3612 Wh -> 3600 Wh at 1800 s); the last update is at 3997 s: 7994 Wh
    assert [_dims(p)["ENERGY"] for p in periods] == ["3.600", "3.600", "0.794"]
    assert _dims(periods[1])["TIME"] == "0.500000"
    # 3.6 * 0.25 + 0.794 * 0.40 = 0.90 + 0.3176 = 1.2176 -> 1.22
    assert t.price_cdr(periods, start, start + 4000)["total_excl_vat_minor"] == 122


def test_a_power_threshold_cuts_after_the_dwell_and_clamps_readings_to_the_band():
    t = _tariff(_el("ENERGY", "0.20", max_power="16"), _el("ENERGY", "0.50"))
    start = parse_iso("2026-03-02T10:00:00Z")
    pb, periods, wh = _run(t, None, start, 3600, lambda s: 11000 if s < 1800 else 22000, dwell_s=30)
    assert _starts(periods) == [iso(start), iso(start + 1830)]
    # in the first period the 22 kW readings of the dwell are held inside its band (< 16 kW)
    assert _dims(periods[0])["MAX_POWER"] == "15.999" and _dims(periods[1])["MAX_POWER"] == "22.000"
    e1 = int(_dims(periods[0])["ENERGY"].replace(".", ""))
    e2 = int(_dims(periods[1])["ENERGY"].replace(".", ""))
    assert e1 + e2 == wh
    # re-pricing the CDR gives exactly the bands the charger used
    expected = (e1 * 20 + e2 * 50 + 500) // 1000
    assert t.price_cdr(periods, start, start + 3600)["total_excl_vat_minor"] == expected


def test_flapping_power_cannot_flood_the_session_with_periods():
    t = _tariff(_el("ENERGY", "0.20", max_power="16"), _el("ENERGY", "0.50"))
    start = parse_iso("2026-03-02T10:00:00Z")
    # every second across the threshold: never holds 60 s, so one period
    pb, periods, wh = _run(t, None, start, 36000, lambda s: 15900 if s % 2 else 16100, every=1)
    assert len(periods) == 1 and _dims(periods[0])["MAX_POWER"] == "15.999"
    # every 90 s across the threshold for 10 h (400 changes): capped at max_periods // 2 measured cuts
    pb, periods, wh = _run(t, None, start, 36000, lambda s: 15900 if s // 90 % 2 else 16100,
                           every=1, max_periods=20)
    assert len(periods) == 11 and pb.measured_splits == 10
    for p in periods:   # every period reports a reading inside one band
        assert _dims(p)["MAX_POWER"] in ("15.999", "16.100"), _dims(p)
    cost = t.price_cdr(periods, start, start + 36000)
    assert 0 < cost["total_excl_vat_minor"] <= (wh * 50 + 500) // 1000


def test_the_session_cap_also_bounds_clock_boundaries():
    t = _tariff(_el("PARKING_TIME", "1.00", start_time="12:00", end_time="13:00"), _el("PARKING_TIME", "0.50"))
    start = parse_iso("2026-03-02T10:00:00Z")
    pb, periods, wh = _run(t, None, start, 40 * 86400, 0, every=600, max_periods=12)
    assert len(periods) == 12
    total = 0
    for p in periods:
        total += periods_from_cdr([p], parse_iso(p["start_date_time"]))[0][3]
    assert total == 40 * 86400          # no second lost even when the cuts stop


def test_splitting_periods_inside_them_does_not_change_the_price():
    t = _tariff({"price_components": [{"type": "FLAT", "price": "0.99", "vat": "19", "step_size": 1}]},
                _el("ENERGY", "0.19", 100, start_time="22:00", end_time="07:00"),
                _el("ENERGY", "0.29", 500, max_kwh="12.5"), _el("ENERGY", "0.39", 250),
                _el("TIME", "1.10", 600, min_current="16"),
                _el("PARKING_TIME", "3.00", 900, start_time="07:00", end_time="21:00"))
    start = parse_iso("2026-03-28T18:07:13Z")

    def watts(s):
        return (0, 3000, 7400, 11000)[s // 4000 % 4]

    pb, periods, wh = _run(t, CET, start, 15 * 3600, watts, every=5)
    end = start + 15 * 3600
    rows = periods_from_cdr(periods, start, end)
    assert len(rows) > 6
    halves = []
    for r in rows:
        a = [r[0], r[1] // 3, r[2] // 2, r[3] // 3, r[4], r[5], r[6], r[7]]
        b = [r[0] + a[2] + a[3], r[1] - a[1], r[2] - a[2], r[3] - a[3], r[4], r[5], r[6], r[7]]
        halves += [a, b]
    assert t.cost(halves, start, CET) == t.cost(rows, start, CET) == t.price_cdr(periods, start, end, CET)


def test_volumes_add_up_and_odd_inputs_are_absorbed():
    t = _tariff(_el("TIME", "2.00"))
    start = parse_iso("2026-03-02T10:00:00Z")
    pb = PeriodBuilder(t, None, start)
    pb.update(10, 5, 8000, 1840, True)
    pb.update(5, 3, 8000, -50, True)        # clock and counter step back: ignored
    pb.update(20, 9, -1, 1840, False)
    periods = pb.finish(start + 15, 8)               # an end before the last update: clamped
    # 0..20 s charging (the last reading says parking from 20 s on, but the session ended there)
    assert len(periods) == 1 and _dims(periods[0]) == {"ENERGY": "0.009", "TIME": "0.005556",
                                                       "MAX_CURRENT": "8.000", "MAX_POWER": "1.840"}


def test_finish_without_updates_and_bad_settings():
    t = _tariff(_el("ENERGY", "0.30"))
    start = parse_iso("2026-03-02T10:00:00Z")
    periods = PeriodBuilder(t, None, start).finish(start, 0)
    assert len(periods) == 1 and _dims(periods[0])["ENERGY"] == "0.000"
    raises(ValueError, PeriodBuilder, t, None, start, 60, 1)


def test_update_allocates_nothing_once_running():
    if not hasattr(gc, "mem_alloc"):
        return                              # MicroPython only: CPython has no heap counter
    t = _tariff(_el("ENERGY", "0.20", start_time="22:00", end_time="06:00", max_power="11"),
                _el("ENERGY", "0.30"))
    start = parse_iso("2026-03-02T10:00:00Z")
    pb = PeriodBuilder(t, CET, start)
    for s in range(1, 50):
        pb.update(s, s, 16000, 3680, True)
    gc.collect()
    gc.disable()                            # no collection may hide an allocation
    try:
        before = gc.mem_alloc()
        for s in range(50, 1050):
            pb.update(s, s, 16000 + s % 7, 3680 + s % 5, True)
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert used < 256, used     # ~0 bytes per call


def test_update_makes_no_big_int_in_a_2026_session():
    # Unix seconds in 2026 are above 2^30: on a 32-bit port (the ESP32) each is a heap object, and any
    # arithmetic on one allocates; update() runs every second of every session, on seconds since the start
    t = _tariff(_el("ENERGY", "0.20", start_time="22:00", end_time="06:00", max_power="11"),
                _el("ENERGY", "0.30"))
    start = parse_iso("2026-12-06T08:00:00Z")
    assert start > (1 << 30)
    pb = PeriodBuilder(t, CET, start)
    pb.update(1, 1, 16000, 3680, True)
    gc.collect()
    heap_lock()                                  # MicroPython: any allocation raises MemoryError
    try:
        for s in range(2, 3602):
            pb.update(s, s, 16000 + s % 7, 3680 + s % 5, True)
    finally:
        heap_unlock()
    assert (pb.charging_s, pb.parking_s, pb.count) == (3601, 0, 1)
    periods = pb.finish(start + 3601, 3601)
    assert _starts(periods) == [iso(start)] and _dims(periods[0])["TIME"] == "1.000278"
    assert pb.start == start                     # the public start is still Unix time
