"""Fault reactions: the safe state in the same iteration, the stop reason, the record, the latch."""
import binascii
import json
import os

from fakes import ListLog
from firmware.safety.faults import Faults
from firmware.safety.reactions import Reactions
from firmware.storage.state import State
from hal.sim.clock import VirtualClock


class Session:
    tx_id = 9


class Charger:
    """The controller's side: records what it was asked to do, in order."""

    def __init__(self, session=True):
        self.session = Session() if session else None
        self.iteration = 17
        self.calls = []

    def open(self):
        self.calls.append("open")

    def stop(self, reason, emergency=False):
        self.calls.append(("stop", reason, emergency))
        if emergency:
            self.session = None   # an emergency ends the session at once

    def abandon(self, reason):
        self.calls.append(("abandon", reason))
        self.session = None


class Metering:
    def forensics(self, n):
        return [[-100, 23000, 41000, 9430], [0, 23000, 41200, 9476]][-n:]


class Outbox:
    def __init__(self):
        self.records = []

    def put(self, topic, payload, msg_id, kind):
        self.records.append(json.loads(payload))


class Stamp:
    def ts(self):
        return "2026-03-02T08:00:00Z"

    def record(self, rec):
        return rec


class Contactor:
    cycles = 12


def _setup(session=True):
    clock = VirtualClock()
    path = "/tmp/cp-reactions-%s.json" % binascii.hexlify(os.urandom(4)).decode()
    faults = Faults(clock)
    ch = Charger(session)
    out = Outbox()
    log = ListLog()
    r = Reactions(ch, faults, Metering(), State(path), out, Stamp(), log, Contactor(), 2)
    return r, ch, faults, out, log, path, clock


def test_an_emergency_opens_first_then_stops_with_its_reason_and_queues_the_fault():
    r, ch, faults, out, log, path, _ = _setup()
    r.react([faults.trip("overcurrent", "41.2 A > 35.2 A")])
    assert ch.calls == ["open", ("stop", "OvercurrentFault", True)]
    rec = out.records[0]
    assert rec["event"] == "raised" and rec["code"] == "OverCurrentFailure" and rec["tx_id"] == 9
    assert rec["stop_reason"] == "OvercurrentFault" and rec["samples"][-1] == [0, 23000, 41200, 9476]
    assert rec["msg_id"] == "f-1" and rec["ts"] == "2026-03-02T08:00:00Z"
    assert log.events[0]["ev"] == "fault" and log.events[0]["it"] == 17 and log.events[0]["emergency"]
    saved = State(path)
    assert saved.faults()["trips"] == {"overcurrent": 1} and saved.cycles() == 12
    os.remove(path)


def test_a_non_emergency_asks_for_a_soft_stop_and_leaves_the_contactor_to_it():
    r, ch, faults, out, _, path, _ = _setup()
    r.react([faults.trip("overvoltage", "265 V"), None])
    assert ch.calls == [("stop", "PowerQuality", False)]
    assert out.records[0]["tx_id"] == 9 and out.records[0]["code"] == "OverVoltage"
    os.remove(path)


def test_without_a_session_nothing_is_stopped_and_a_reader_fault_never_stops():
    r, ch, faults, out, _, path, _ = _setup(session=False)
    r.trip("welded", "16 A flowing")
    assert ch.calls == ["open"] and out.records[0]["tx_id"] is None
    r2, ch2, _, out2, _, path2, _ = _setup()
    r2.trip("reader", "no answer")
    assert ch2.calls == [] and out2.records[0]["code"] == "ReaderFailure"
    os.remove(path)
    os.remove(path2)


def test_a_latched_fault_is_saved_and_survives_a_reboot_until_cleared():
    r, ch, faults, out, _, path, clock = _setup(session=False)
    for _ in range(4):   # overcurrent latches past 3 retries
        r.trip("overcurrent", "x")
        faults.gone("overcurrent")
        clock.sleep_ms(20 * 60 * 1000)
        r.retry(lambda: True)
    assert faults.latched == ["overcurrent"] and "overcurrent" in faults.active
    again = Faults(clock, State(path).faults())
    assert again.latched == ["overcurrent"] and again.trips["overcurrent"] == 4
    assert r.clear_fault() == ["overcurrent"]
    assert out.records[-1]["event"] == "cleared" and out.records[-1]["kind"] == "overcurrent"
    assert State(path).faults()["latched"] == []
    os.remove(path)


def test_a_failed_meter_clears_only_when_it_restarts():
    r, _, faults, out, _, path, clock = _setup(session=False)
    r.trip("meter", "silent")
    clock.sleep_ms(31000)
    r.retry(lambda: False)
    assert "meter" in faults.active and [x["event"] for x in out.records] == ["raised"]
    r.retry(lambda: True)
    assert "meter" not in faults.active and [x["event"] for x in out.records] == ["raised", "cleared"]
    os.remove(path)


def test_an_internal_error_opens_closes_the_session_and_reports_it():
    r, ch, faults, out, _, path, _ = _setup()
    r.internal_error(ValueError("bad"))
    assert ch.calls == ["open", ("abandon", "Other"), "open"]
    assert out.records[0]["code"] == "InternalError" and out.records[0]["detail"] == "ValueError: bad"
    assert out.records[0]["tx_id"] is None   # the session was closed before the fault was raised
    os.remove(path)


def test_an_internal_fault_clears_after_its_backoff_and_latches_only_if_it_keeps_coming_back():
    r, ch, faults, out, _, path, clock = _setup(session=False)
    r.internal_error(RuntimeError("maximum recursion depth exceeded"))
    assert faults.blocking().kind == "internal"
    clock.sleep_ms(10000)                       # retry_s: the step that raised is over
    r.retry(lambda: True)
    assert faults.blocking() is None and [x["event"] for x in out.records] == ["raised", "cleared"]   # main: never
    for n in range(3):                          # it keeps coming back: past 3 retries a person must clear it
        r.internal_error(RuntimeError("again"))
        clock.sleep_ms(10000 << min(n + 1, 4))
        r.retry(lambda: True)
    assert faults.latched == ["internal"] and out.records[-1]["latched"] and "internal" in faults.active
    assert r.clear_fault() == ["internal"] and faults.blocking() is None
    os.remove(path)


def test_a_remote_clear_clears_only_the_kinds_it_names():
    r, _, faults, out, log, path, _ = _setup(session=False)
    r.trip("welded", "16 A flowing")
    r.trip("rcd_selftest", "no trip")
    faults.gone("welded")
    faults.gone("rcd_selftest")
    assert r.clear_fault(("rcd_selftest",)) == ["rcd_selftest"]
    assert faults.latched == ["welded"] and "welded" in faults.active and "rcd_selftest" not in faults.active
    assert log.events[-1]["ev"] == "fault_reset" and log.events[-1]["remote"]
    assert r.clear_fault() == ["welded"] and faults.latched == [] and faults.active == {}
    os.remove(path)


def test_a_notice_names_the_running_session():
    r, _, _, out, log, path, _ = _setup()
    r.event(None, "notice", info="ev_not_charging")
    assert out.records[0]["tx_id"] == 9 and out.records[0]["info"] == "ev_not_charging"
    assert log.events[-1]["ev"] == "fault_notice"
    os.remove(path)
