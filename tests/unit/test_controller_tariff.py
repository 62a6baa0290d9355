"""Sessions priced on the charger: charging periods, parking fees, tariff updates over MQTT,
signed records, revenue stats and the off-peak-only preference (in-process, both interpreters)."""
import json

from firmware.billing.signing import GENESIS, record_hash, signature
from firmware.billing.tariff import Tariff
from simharness import KEY, Harness, entry

CARDS = {"alice": "04A1B2C3D4E5F6"}
DEVICE_KEY = "ab" * 32

# 0.25/kWh all day, 0.50/kWh 17:00-20:00 local, parking 2.00/hour, 19 % VAT
PEAK = {"id": "peak", "currency": "EUR", "elements": [
    {"price_components": [{"type": "ENERGY", "price": "0.50", "vat": "19", "step_size": 1}],
     "restrictions": {"start_time": "17:00", "end_time": "20:00"}},
    {"price_components": [{"type": "ENERGY", "price": "0.25", "vat": "19", "step_size": 1}]},
    {"price_components": [{"type": "PARKING_TIME", "price": "2.00", "vat": "19", "step_size": 60}]}]}


def _harness(events, end_ms, tariff=PEAK, start_utc=1772470800, **device):   # 2026-03-02 17:00 UTC
    dev = {"tariff": tariff, "site": {"utc_offset_min": 60, "dst": "EU"}}
    dev.update(device)
    h = Harness(CARDS, ["alice"], events, end_ms, device=dev, start_utc=start_utc,
                secrets={"device_key": DEVICE_KEY})
    return h


def test_periods_cut_at_the_local_time_boundary_and_parking_is_billed():
    # local 18:00 start: 2 h of charging at 16 A crosses 20:00 local, then 1 h parked
    h = _harness([{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16},
                  {"t": 7203000, "ev_current_a": 0}, {"t": 10803000, "tap": "alice"}], 10900000)
    h.run()
    ended = h.sessions()[-1]
    periods = ended["charging_periods"]
    starts = [p["start_date_time"] for p in periods]
    assert "2026-03-02T19:00:00Z" in starts            # 20:00 local: the peak element ends
    kinds = [[d["type"] for d in p["dimensions"]] for p in periods]
    assert any("PARKING_TIME" in k for k in kinds)
    cost = ended["cost"]
    # 1 h parked (plus the second before the EV drew power), step 60 s: 61 min at 2.00/h = 2.03
    assert 3600 <= ended["parking_s"] <= 3605 and cost["parking"]["excl_vat_minor"] == 203
    assert cost["energy"]["excl_vat_minor"] > 0
    # the same periods priced again by the engine (what tools/price.py does) give the same bill
    again = Tariff(PEAK).price_cdr(periods, 1772470802, 1772481603, h.settings.tz)
    assert again["total_incl_vat_minor"] == cost["total_incl_vat_minor"]
    assert cost["total_excl_vat_minor"] == sum(cost[k]["excl_vat_minor"] for k in ("energy", "time", "parking", "fixed"))


def test_ended_records_are_signed_and_chained():
    h = _harness([{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 10},
                  {"t": 60000, "tap": "alice"}, {"t": 70000, "plug": False}, {"t": 80000, "plug": True},
                  {"t": 90000, "tap": "alice"}, {"t": 150000, "tap": "alice"}], 160000)
    h.run()
    ended = [r for r in h.sessions() if r["event"] == "ended"]
    key = bytes.fromhex(DEVICE_KEY)
    assert [r["chain_n"] for r in ended] == [0, 1]
    assert ended[0]["chain_prev"] == GENESIS and ended[1]["chain_prev"] == record_hash(ended[0])
    for r in ended:
        body = dict(r)
        body.pop("sig")
        assert r["sig"] == signature(key, body)


def test_tariff_update_applies_to_new_sessions_and_bad_updates_change_nothing():
    h = _harness([{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 10},
                  {"t": 400000, "tap": "alice"}], 500000, tariff={"id": "flat", "currency": "EUR", "elements": [
                      {"price_components": [{"type": "ENERGY", "price": "0.30", "vat": "0", "step_size": 1}]}]})
    h.run(until_ms=100000)
    new = {"id": "cheap", "currency": "EUR", "elements": [
        {"price_components": [{"type": "ENERGY", "price": "0.10", "vat": "0", "step_size": 1}]}]}
    h.inject("cmd/tariff", {"id": "c1", "version": 2, "tariff": new})
    h.inject("cmd/tariff", {"id": "c2", "version": 3, "tariff": {"id": "x", "currency": "EUR", "elements": [
        {"price_components": [{"type": "ENERGIE", "price": "0.1"}]}]}})
    h.inject("cmd/tariff", {"id": "c3", "version": 1, "tariff": new})
    h.run()
    acks = {a["id"]: a for a in h.acks()}
    assert acks["c1"]["status"] == "accepted" and acks["c1"]["tariff_id"] == "cheap"
    assert acks["c2"]["status"] == "rejected" and "type" in acks["c2"]["reason"]
    assert acks["c3"]["status"] == "rejected" and "version" in acks["c3"]["reason"]
    ended = h.sessions()[-1]
    assert ended["tariff_id"] == "flat"                     # the running session kept its tariff
    assert ended["cost"]["total_excl_vat_minor"] == (ended["energy_wh"] * 30 + 500) // 1000
    assert h.ctl.tariffs.current.id == "cheap" and h.ctl.tariffs.version == 2


def test_revenue_stats_are_published_retained_after_each_session():
    h = _harness([{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16},
                  {"t": 1803000, "tap": "alice"}], 1900000)
    h.run()
    stats = [json.loads(p) for t, p, retain, _ in h.link.published if t.endswith("/stats") and retain]
    last = stats[-1]
    ended = h.sessions()[-1]
    assert last["day"]["sessions"] == 1 and last["day"]["energy_wh"] == ended["energy_wh"]
    assert last["day"]["incl_vat_minor"] == ended["cost"]["total_incl_vat_minor"]
    assert last["month"]["month"] == "2026-03" and last["currency"] == "EUR"
    assert last["contactor_cycles"] >= 1


def test_offpeak_only_drivers_wait_for_the_offpeak_hours():
    # local 21:30 start, off-peak from 22:00: SuspendedEVSE for 30 min, then charging
    h = Harness(CARDS, [], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16},
                            {"t": 3600000, "tap": "alice"}], 3700000, start_utc=1772483400,
                entries=[entry(__import__("firmware.auth.pseudonym", None, None, ["pseudonym"]).pseudonym(
                    KEY, bytes.fromhex(CARDS["alice"])), offpeak_only=True)],
                device={"site": {"utc_offset_min": 60, "dst": "EU", "offpeak": [["22:00", "06:00"]]}})
    h.run(until_ms=1000000)
    assert h.ctl.connector == "SuspendedEVSE" and h.ctl.ev.offered_a == 0
    h.run()
    ended = h.sessions()[-1]
    # 30 min of the hour were off-peak: about half an hour of charging at 16 A
    assert abs(ended["energy_wh"] - 230 * 16 // 2) <= 60
