"""Records made before the wall clock was known carry boot + uptime_s and get real times at sync."""
import json

from firmware.core.clock import VALID_AFTER
from firmware.core.timefmt import iso, parse_iso
from firmware.core.timesync import TimeSync, synced
from hal.sim.clock import VirtualClock
from simharness import Harness

START = 1772438100   # the real UTC the scenario starts at (2026-03-02T07:55:00Z)
CARDS = {"alice": "04A1B2C3"}


def _unset(events, end_ms, device=None):
    """A charger whose wall clock starts at 2000-01-01 (a power-on ESP32) until an ntp event."""
    h = Harness(CARDS, ["alice"], events, end_ms, start_utc=START, device=device,
                secrets={"device_key": None})   # unsigned records (signed ones: the last test)
    h.clock.unset = True
    h.ctl.stamp.time = TimeSync(h.clock)
    h.acking = False   # the backend is slow: every record is still waiting when the time comes
    return h


def _waiting(h):
    return dict((mid, json.loads(h.outbox.payload(mid))) for mid in h.outbox.pending())


def _log_ms(h, kind):
    return [e for e in h.log.events if e["ev"] == kind]


def test_the_rule_and_the_uptime():
    assert not synced(946684800 + 3600) and synced(VALID_AFTER) and not synced(VALID_AFTER - 1)
    clock = VirtualClock(start_utc=START, ticks0=0x3FFFFC18, unset=True)   # ticks wrap after 1 s
    ts = TimeSync(clock)
    assert ts.uptime_s() == 1073740 and not ts.synced
    clock.advance(2500)
    assert ts.uptime_s() == 1073743          # 1073740.824 s + 2.5 s, across the wrap
    assert not ts.check()
    clock.sync()
    assert ts.check() and ts.synced and not ts.check()   # True once
    assert ts.shift() == clock.time() - ts.uptime_s()
    assert clock.time() == START + 2


def test_a_session_started_before_sync_is_restamped_when_ntp_answers():
    events = [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16},
              {"t": 61500, "ntp": True}, {"t": 125000, "tap": "alice"}]
    h = _unset(events, 130000)
    h.run(until_ms=60000)
    before = _waiting(h)
    started = [r for r in before.values() if r.get("event") == "started"][0]
    assert started["ts"] is None and started["boot"] == h.journal.boot == 1
    up = started["uptime_s"]
    assert 2 <= up <= 4 and isinstance(up, int)                  # the tap, in seconds since boot
    assert started["start_utc"] == up                             # pricing starts from the uptime, not 2000
    assert h.clock.time() < VALID_AFTER
    h.run()
    synced_ev = _log_ms(h, "time_synced")
    assert len(synced_ev) == 1 and synced_ev[0]["restamped"] >= 1
    shift = synced_ev[0]["shift_s"]
    assert shift == START                                         # uptime counts from the world's 0 here
    after = _waiting(h)
    rec = after[started["msg_id"]]
    assert rec["ts"] == iso(START + up) and rec["boot"] == 1 and rec["uptime_s"] == up
    assert rec["start_utc"] == START + up
    ended = [r for r in after.values() if r.get("event") == "ended"][0]
    assert ended["started_at"] == rec["ts"] and "boot" not in ended and "started_uptime_s" not in ended
    end_t = parse_iso(ended["ended_at"])
    assert ended["ts"] == ended["ended_at"] and START + 125 <= end_t <= START + 130
    assert ended["charging_periods"][0]["start_date_time"] == rec["ts"]
    # the resent message carries the new stamp: the backend sees real times
    sent = [json.loads(p) for t, p, _, _ in h.link.published if t.endswith("/session")]
    assert [r["ts"] for r in sent if r["msg_id"] == started["msg_id"]][-1] == rec["ts"]


def test_a_session_ended_before_sync_gets_all_its_times():
    events = [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16},
              {"t": 40000, "tap": "alice"}, {"t": 45000, "button": "report_problem"}, {"t": 90000, "ntp": True}]
    h = _unset(events, 100000)
    h.run(until_ms=80000)
    ended = [r for r in _waiting(h).values() if r.get("event") == "ended"][0]
    assert ended["ts"] is None and ended["started_at"] is None and ended["ended_at"] is None
    assert ended["uptime_s"] - ended["started_uptime_s"] >= 37
    h.run()
    after = _waiting(h)
    rec = after[ended["msg_id"]]
    assert rec["ts"] == rec["ended_at"] == iso(START + ended["uptime_s"])
    assert rec["started_at"] == iso(START + ended["started_uptime_s"])
    assert rec["charging_periods"][0]["start_date_time"] == rec["started_at"]
    assert rec["energy_wh"] == ended["energy_wh"] and rec["cost"] == ended["cost"]
    fb = [r for r in after.values() if r["msg_id"].startswith("fb-")][0]
    assert 45 <= fb["uptime_s"] <= 47 and fb["ts"] == iso(START + fb["uptime_s"])
    assert _log_ms(h, "time_synced")[0]["restamped"] == len([r for r in after.values() if "uptime_s" in r])


def test_records_of_an_earlier_boot_are_left_alone():
    events = [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16},
              {"t": 30000, "tap": "alice"}, {"t": 50000, "button": "report_problem"}, {"t": 60000, "ntp": True}]
    h = _unset(events, 70000)
    h.run(until_ms=40000)
    old = _waiting(h)
    assert old and all(r["ts"] is None and r["boot"] == 1 for r in old.values())
    h.journal.recover()   # a reboot: the outbox comes back from flash, the boot count goes up
    assert h.journal.boot == 2
    h.run()
    after = _waiting(h)
    for mid, r in old.items():
        assert after[mid] == r                                # ts null, boot 1, uptime_s kept
    new = [r for mid, r in after.items() if mid not in old]
    assert len(new) == 1 and new[0]["boot"] == 2 and new[0]["ts"] == iso(START + new[0]["uptime_s"])
    assert _log_ms(h, "time_synced")[0]["restamped"] == 1


def test_signed_records_keep_what_was_signed():
    events = [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 30000, "tap": "alice"},
              {"t": 60000, "ntp": True}]
    h = Harness(CARDS, ["alice"], events, 70000, start_utc=START, secrets={"device_key": "ab" * 32})
    h.clock.unset = True
    h.ctl.stamp.time = TimeSync(h.clock)
    h.acking = False
    h.run()
    recs = _waiting(h)
    ended = [r for r in recs.values() if r.get("event") == "ended"][0]
    started = [r for r in recs.values() if r.get("event") == "started"][0]
    assert "sig" in ended and ended["ts"] is None and ended["boot"] == 1
    assert started["ts"] == iso(START + started["uptime_s"])   # unsigned: re-stamped


def test_a_synced_clock_changes_nothing():
    events = [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 30000, "tap": "alice"}]
    h = Harness(CARDS, ["alice"], events, 40000, start_utc=START)
    h.acking = False
    h.run()
    recs = list(_waiting(h).values())
    assert recs and all(isinstance(r["ts"], str) and "boot" not in r and "uptime_s" not in r for r in recs)
    assert not _log_ms(h, "time_synced")
