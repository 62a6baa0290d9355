"""Status: the connector status and error code, the LED pattern, meter values and a full journal."""
import json

from fakes import ListLog
from firmware.ops.status import Status
from firmware.safety.faults import Faults
from hal.sim.clock import VirtualClock


class Sync:
    def __init__(self):
        self.connector = []
        self.published = []
        self.stats = None
        self.ep = 7   # the data epoch the controller gives the link

    def set_connector(self, status, error=None):
        self.connector.append((status, error))

    def publish_now(self, suffix, payload, qos=0):
        self.published.append((suffix, json.loads(payload)))
        return True

    def set_stats(self, payload):
        self.stats = json.loads(payload)


class Feedback:
    shown = None

    def steady(self, name):
        self.shown = name


class Ev:
    fault = None
    offered_a = 16

    def status(self, session, closed, finishing):
        return "Charging" if session else ("Finishing" if finishing else "Available")


class Contactor:
    commanded = True
    cycles = 7


class Metering:
    p_w = 3680

    def latest(self):
        return [23000, 0, 0], [16000, 0, 0]

    def register_wh(self):
        return 1500


class Revenue:
    def snapshot(self):
        return {"today": {"sessions": 1}}


class Journal:
    full = False
    error = None
    boot = 4


class Settings:
    meter_values_s = 60
    meter_aligned_s = 900


class Session:
    tx_id = 3

    def energy_wh(self, wh):
        return wh - 1000


def _status():
    clock = VirtualClock()
    faults = Faults(clock)
    sync, log, fb, ev, j = Sync(), ListLog(), Feedback(), Ev(), Journal()
    st = Status(Settings(), clock, sync, log, fb, faults, ev, Contactor(), Metering(), Revenue(), j)
    return st, clock, sync, log, fb, faults, ev, j


def test_status_follows_faults_ev_and_session_and_is_published_on_change_only():
    st, _, sync, log, fb, faults, ev, _ = _status()
    st.update(False, False, False)
    st.update(False, False, False)
    assert sync.connector == [("Available", None)] and fb.shown == "ready"
    st.update(False, True, False)
    assert st.connector == "Preparing" and fb.shown == "waiting"   # a driver is authorized
    faults.trip("reader", "no answer")
    st.update(True, False, False)
    assert (st.connector, st.error_code, fb.shown) == ("Charging", "ReaderFailure", "charging")
    ev.fault = "diode"
    st.update(True, False, False)
    assert (st.connector, st.error_code) == ("Faulted", "EVCommunicationError")
    faults.trip("overtemp", "86 °C")
    st.update(True, False, False)
    assert (st.connector, st.error_code, fb.shown) == ("Faulted", "HighTemperature", "fault")
    assert [e["connector"] for e in log.events if e["ev"] == "status"] == [
        "Available", "Preparing", "Charging", "Faulted", "Faulted"]
    st.halted()
    assert (st.connector, st.error_code) == ("Unavailable", None)


def test_meter_values_periodic_and_clock_aligned_only_during_a_session():
    st, clock, sync, _, _, _, _, _ = _status()
    st.report_meter(clock.ticks_ms(), None)
    assert sync.published == []
    st.session_started()
    clock.sleep_ms(60000)
    st.report_meter(clock.ticks_ms(), Session())
    suffix, v = sync.published[-1]
    assert suffix == "meter" and v["tx_id"] == 3 and v["energy_wh"] == 500 and v["register_wh"] == 1500
    assert v["ep"] == 7   # the backend files meter values under the life they belong to
    assert v["v_cv"] == [23000, 0, 0] and v["i_ma"][0] == 16000 and v["offered_a"] == 16 and not v["aligned"]
    n = len(sync.published)
    while len(sync.published) == n or not sync.published[-1][1]["aligned"]:
        clock.sleep_ms(1000)
        st.report_meter(clock.ticks_ms(), Session())
    assert clock.time() % 900 == 0   # an aligned value at the quarter hour


def test_stats_and_a_full_journal_told_once():
    st, _, sync, log, _, _, _, j = _status()
    st.publish_stats()
    assert sync.stats["contactor_cycles"] == 7 and sync.stats["boots"] == 4 and sync.stats["today"]["sessions"] == 1
    j.full, j.error = True, "no space"
    st.storage()
    st.storage()
    j.full = False
    st.storage()
    j.full = True
    st.storage()
    assert [e["error"] for e in log.events if e["ev"] == "storage"] == ["no space", "no space"]
