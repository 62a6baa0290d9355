"""End to end: the firmware on the MicroPython unix port, simulated chips, a real mosquitto."""
import hashlib
import hmac
import json
import os

import pytest

import sim
from broker import Broker
from mqtt_watch import Watch
from scenario import ROOT

KEY = bytes(range(100, 132))
CARDS = {"alice": "04A1B2C3D4E5F6", "bob": "DEADBEEF", "mallory": "0BADCAFE"}


def _token(uid_hex):
    return hmac.new(KEY, bytes.fromhex(uid_hex), hashlib.sha256).hexdigest()[:32]


@pytest.fixture(scope="module")
def demo_run():
    with Broker() as broker:
        watch = Watch(broker.port)
        lines = []
        rc = sim.run(os.path.join(ROOT, "demo", "two_drivers.json"), broker="127.0.0.1:%d" % broker.port,
                     site_key=KEY, out=lines.append)
        watch.close()
        late = Watch(broker.port)   # subscribes after the run: sees only retained messages
        late.close()
        watch.late = late.messages
        yield rc, lines, watch


def test_firmware_exits_0_at_the_scenario_end(demo_run):
    rc, lines, _ = demo_run
    assert rc == 0, "\n".join(lines[-30:])
    assert any("scenario over" in line for line in lines)


def test_two_sessions_with_started_and_ended_events(demo_run):
    _, _, watch = demo_run
    recs = watch.records("session")
    assert [(r["tx_id"], r["seq"], r["event"]) for r in recs] == [(1, 0, "started"), (1, 1, "ended"),
                                                                    (2, 0, "started"), (2, 1, "ended")]
    assert len({r["msg_id"] for r in recs}) == 4


def test_tokens_are_hmac_pseudonyms_never_uids(demo_run):
    _, _, watch = demo_run
    ended = [r for r in watch.records("session") if r["event"] == "ended"]
    assert [r["token"] for r in ended] == [_token(CARDS["alice"]), _token(CARDS["bob"])]
    everything = " ".join(t + " " + p.decode() for t, p, _ in watch.messages).upper()
    for uid in CARDS.values():
        assert uid not in everything


def test_energy_matches_v_times_i_times_t_within_one_percent(demo_run):
    _, _, watch = demo_run
    alice, bob = [r for r in watch.records("session") if r["event"] == "ended"]
    for rec, amps, seconds in ((alice, 16, 1800), (bob, 32, 2400)):
        expected = 230 * amps * seconds / 3600
        assert abs(rec["energy_wh"] - expected) <= 0.01 * expected, (rec["energy_wh"], expected)
        assert rec["energy_wh"] == rec["meter_stop_wh"] - rec["meter_start_wh"]
    assert bob["meter_start_wh"] >= alice["meter_stop_wh"]
    assert (alice["stop_reason"], bob["stop_reason"]) == ("Local", "EVDisconnected")


def test_cost_is_the_flat_tariff_rounded_once(demo_run):
    _, _, watch = demo_run
    for rec in [r for r in watch.records("session") if r["event"] == "ended"]:
        excl_millicents = rec["energy_wh"] * 30  # 0.30 EUR/kWh = 30 cents / 1000 Wh
        assert rec["cost"]["currency"] == "EUR"
        assert rec["cost"]["total_excl_vat_minor"] == (excl_millicents + 500) // 1000
        assert rec["cost"]["total_incl_vat_minor"] == (excl_millicents * 12 + 5000) // 10000


def test_unknown_card_is_refused_and_never_starts_a_session(demo_run):
    _, lines, watch = demo_run
    assert any("mallory refused (Invalid)" in line for line in lines)
    tokens = {r["token"] for r in watch.records("session")}
    assert _token(CARDS["mallory"]) not in tokens


def test_status_follows_the_connector_and_the_last_will_says_offline(demo_run):
    _, _, watch = demo_run
    status = [json.loads(p) for t, p, r in watch.messages if t.endswith("/status")]
    online = [s["connector"] for s in status if s["state"] == "online"]
    assert online[:2] == ["Available", "Preparing"] and online[-1] == "Available"
    assert "Charging" in online and "Finishing" in online
    assert status[-1] == {"state": "offline"}   # the process ended: the broker sent the Will


def test_only_the_status_is_retained_for_late_subscribers(demo_run):
    _, _, watch = demo_run
    assert [(t, json.loads(p), r) for t, p, r in watch.late] == [
        ("cp/v1/cp-demo-0001/status", {"state": "offline"}, True)]


@pytest.fixture(scope="module")
def outage_run():
    with Broker() as broker:
        watch = Watch(broker.port)
        lines = []
        rc = sim.run(os.path.join(ROOT, "tests", "data", "scenarios", "outage.json"),
                     broker="127.0.0.1:%d" % broker.port, site_key=KEY, out=lines.append)
        watch.close()
        yield rc, lines, watch


def test_charging_goes_on_without_a_broker_and_records_arrive_later(outage_run):
    rc, lines, watch = outage_run
    assert rc == 0, "\n".join(lines[-30:])
    recs = watch.records("session")
    assert [(r["tx_id"], r["event"]) for r in recs] == [(1, "started"), (1, "ended")]
    assert abs(recs[1]["energy_wh"] - 230 * 16 * 600 / 3600) <= 0.01 * 230 * 16 * 600 / 3600
    # nothing reached the broker between the outage and the broker's return at t=900 s
    up = [i for i, line in enumerate(lines) if "broker" in line and line.rstrip().endswith(" up")][0]
    connected = [i for i, line in enumerate(lines) if "mqtt" in line and "connected" in line]
    assert any(i > up for i in connected) and sum(1 for i in connected if i < up) == 1


def test_a_silent_broker_costs_a_bounded_timeout_per_attempt(outage_run):
    _, lines, _ = outage_run
    silent = [line for line in lines if "ETIMEDOUT" in line]
    assert silent, "the silent broker should have made connection attempts time out"
    assert any("session_end" in line for line in lines)
