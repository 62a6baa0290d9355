"""A board that boots without the date: the session it starts before NTP answers reaches the backend
with real times, re-stamped from boot + uptime_s once the clock is known (docs/journal.md)."""
import json
import os

import pytest

import sim
from backend import Backend
from broker import Broker
from firmware.storage.recordlog import HAS_MSG, RecordLog, read_message
from firmware.core.timefmt import iso, parse_iso
from mqtt_watch import Watch
from scenario import ScenarioError, normalise

KEY = bytes(range(7, 39))
START = 1772434800   # 2026-03-02T07:00:00Z
NTP_S = 100


def _scenario(**extra):
    sc = {"board": "sim", "start": "2026-03-02T07:00:00Z", "cards": {"alice": "04A1B2C3D4E5F6"},
          "allow": ["alice"], "clock_unset": True, "end": 400,
          "events": [{"t": 0, "broker": "down"}, {"t": 10, "plug": True}, {"t": 15, "tap": "alice"},
                     {"t": 20, "ev_current_a": 16}, {"t": NTP_S, "ntp": True}, {"t": 120, "broker": "up"},
                     {"t": 300, "tap": "alice"}, {"t": 320, "plug": False}]}
    sc.update(extra)
    return sc


def _last_payloads(data_dir):
    """msg_id -> the newest payload the journal holds for it (a re-stamp appends a new one)."""
    out = {}
    for rtype, _, body in RecordLog(os.path.join(data_dir, "journal")).scan():
        if rtype & HAS_MSG:
            _, mid, payload, _ = read_message(body)
            out[mid] = json.loads(payload)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restamp")
    path = tmp / "scenario.json"
    path.write_text(json.dumps(_scenario()))
    lines = []
    with Broker() as broker:
        backend = Backend(str(tmp / "backend.sqlite"), **broker.client_args("backend"), auth={},
                          out=lambda line: None).start()
        backend.wait_connected()
        watch = Watch(broker)
        result = sim.simulate(str(path), broker=broker, site_key=KEY,
                              run_dir=str(tmp / "run"), raw=True, out=lines.append)
        backend.wait_idle(0.5, timeout=10)
        backend.stop()
        watch.close()
    assert result.rc == 0, "\n".join(lines[-30:])
    return result, watch


def _events(result, kind):
    return [ev for _, ev in result.events if ev.get("ev") == kind]


def test_the_scenario_option_and_the_ntp_event_are_checked():
    world = normalise(_scenario(), KEY)[0]
    assert world["clock_unset"] is True and {"t": NTP_S * 1000, "ntp": True} in world["events"]
    assert "clock_unset" not in normalise(_scenario(clock_unset=False, events=[]), KEY)[0]
    for sc, words in [(_scenario(clock_unset="yes"), ["clock_unset", "true", "'yes'"]),
                      (_scenario(clock_unset=False), ["events[4].ntp", "clock_unset"]),
                      (_scenario(events=[{"t": 5, "ntp": 1}]), ["events[0]", "ntp", "must be true"]),
                      (_scenario(start="2025-06-01T00:00:00Z"), ["start", "clock_unset", "2026-01-01"])]:
        with pytest.raises(ScenarioError) as e:
            normalise(sc, KEY)
        for w in words:
            assert w in str(e.value), (words, str(e.value))


def test_the_board_boots_in_2000_and_notices_ntp(run):
    result, _ = run
    boot = _events(result, "boot")[0]
    assert boot["ts"].startswith("2000-01-01")
    synced = _events(result, "time_synced")
    assert len(synced) == 1 and synced[0]["restamped"] >= 1
    assert synced[0]["shift_s"] == START      # uptime and the scenario's clock both count from 0


def test_the_session_started_before_ntp_reaches_the_backend_with_real_times(run):
    result, watch = run
    recs = {}
    for r in watch.records("session"):
        recs.setdefault(r["msg_id"], r)       # the first copy the broker saw
    started = [r for r in recs.values() if r["event"] == "started"][0]
    ended = [r for r in recs.values() if r["event"] == "ended"][0]
    up = started["uptime_s"]
    assert started["boot"] == 1 and 15 <= up <= 17              # the tap, in seconds since boot
    assert started["ts"] == iso(START + up) and started["start_utc"] == START + up
    assert ended["started_at"] == started["ts"] and "boot" not in ended
    end_s = parse_iso(ended["ended_at"])
    assert START + 300 <= end_s <= START + 305 and ended["ts"] == ended["ended_at"]
    assert ended["charging_periods"][0]["start_date_time"] == started["ts"]
    start_ev = _events(result, "session_start")[0]
    assert ended["energy_wh"] > 0 and ended["tx_id"] == start_ev["tx_id"]


def test_the_journal_holds_the_restamped_record(run):
    result, _ = run
    msgs = _last_payloads(os.path.join(result.run_dir, "data"))
    started = [r for r in msgs.values() if r.get("event") == "started"][0]
    assert started["ts"] == iso(START + started["uptime_s"])
