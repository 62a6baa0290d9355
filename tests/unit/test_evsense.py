"""EV sensing: pilot, plug contact or current; one interface (plugged, requesting, offer, status, fault)."""
from firmware.charging.evsense import PilotSense
from firmware.charging.nopilot import CurrentSense, PinSense
from firmware.charging.pilot import OFF, duty_for_current
import sys

from hal.sim.clock import VirtualClock

_LEVELS = {"A": 12000, "B": 9000, "C": 6000, "D": 3000, "E": 0, "F": -12000}


class Pilot:
    """A CP line at a given state: the levels read() gives, the duty offer() set."""

    def __init__(self):
        self.high_mv = 12000
        self.low_mv = -12000
        self.oscillating = False
        self.duty = None

    def set(self, state, diode=True):
        self.high_mv = _LEVELS[state]
        self.low_mv = -12000 if diode or state in ("A", "F") else 0

    def read(self):
        pass

    def off(self):
        self.duty = OFF
        self.oscillating = False

    def offer(self, duty):
        self.duty = duty
        self.oscillating = True


class Metering:
    i_max_ma = 0


def _held(ev, clock, pilot, state, diode=True):
    """Set the line and poll past the debounce; True if the state change was reported."""
    pilot.set(state, diode)
    changed = False
    for _ in range(4):
        changed = ev.poll() or changed
        clock.sleep_ms(10)
    return changed


def test_pilot_follows_the_cp_state_after_the_debounce():
    clock, pilot = VirtualClock(), Pilot()
    ev = PilotSense(pilot, clock, 20)
    assert pilot.duty == OFF and ev.state is None and not ev.plugged and ev.has_pilot and ev.knows_plug
    assert _held(ev, clock, pilot, "A") and ev.state == "A" and not ev.plugged
    pilot.set("B")
    assert not ev.poll()   # one read is a glitch until it held
    clock.sleep_ms(30)
    assert ev.poll() and ev.plugged and not ev.requesting and ev.fault is None
    assert _held(ev, clock, pilot, "C") and ev.requesting and ev.monitor.previous == "B"
    assert not _held(ev, clock, pilot, "C")   # no change, nothing reported


def test_pilot_offer_sets_the_duty_and_below_six_amps_is_no_offer():
    clock, pilot = VirtualClock(), Pilot()
    ev = PilotSense(pilot, clock, 20)
    ev.offer(16)
    assert ev.offered_a == 16 and pilot.duty == duty_for_current(160) and pilot.oscillating
    ev.offer(5)
    assert ev.offered_a == 0 and pilot.duty == OFF


def test_pilot_errors_are_faults_and_statuses_follow_the_state():
    clock, pilot = VirtualClock(), Pilot()
    ev = PilotSense(pilot, clock, 20)
    _held(ev, clock, pilot, "C")
    ev.offer(16)
    assert ev.status(True, True, False) == "Charging" and ev.status(False, False, False) == "Preparing"
    assert _held(ev, clock, pilot, "C", diode=False) and ev.fault == "diode" and ev.state == "E"
    assert _held(ev, clock, pilot, "F") and ev.fault == "F" and not ev.plugged
    assert ev.status(False, False, False) == "Faulted"
    assert _held(ev, clock, pilot, "A") and ev.fault is None and ev.status(False, False, True) == "Available"


def test_pin_sense_plug_from_the_contact_demand_from_the_current():
    level = [0]
    m = Metering()
    ev = PinSense(lambda: level[0], 1, m)
    assert not ev.has_pilot and ev.knows_plug and ev.fault is None and not ev.poll()
    assert not ev.plugged and ev.status(False, False, False) == "Available"
    level[0] = 1
    assert ev.plugged and not ev.requesting and ev.status(False, False, False) == "Preparing"
    ev.offer(16)
    assert ev.status(True, True, False) == "SuspendedEV"
    m.i_max_ma = 8000
    assert ev.requesting and ev.status(True, True, False) == "Charging"
    assert ev.status(True, False, False) == "SuspendedEV"   # asking, contactor not closed
    ev.offer(4)
    assert ev.offered_a == 0 and ev.status(True, True, False) == "SuspendedEVSE"
    assert ev.status(False, False, True) == "Finishing"
    level[0] = 0
    m.i_max_ma = 8000
    assert not ev.requesting   # current without a plug is not an EV asking


def test_current_sense_assumes_the_cable_and_infers_demand():
    m = Metering()
    ev = CurrentSense(m)
    assert ev.plugged and not ev.knows_plug and not ev.has_pilot and not ev.requesting
    assert ev.status(False, False, False) == "Available"   # no plug knowledge: never Preparing
    ev.offer(10)
    assert ev.status(True, True, False) == "SuspendedEV"
    m.i_max_ma = 501
    assert ev.requesting and ev.status(True, True, False) == "Charging"
    assert ev.status(False, False, True) == "Finishing"


class _Board:
    def __init__(self, sense):
        self.ev_sense = sense
        self.pilot = Pilot()
        self.plug = lambda: 0
        self.plug_active = 1


class _Settings:
    pilot_debounce_ms = 20


def test_a_pilot_board_loads_no_other_kind_of_sensing():
    """Only the board's own kind of EV sensing takes heap (issue #16: module objects are RAM)."""
    from firmware.controller import _ev_sense

    saved = sys.modules.pop("firmware.charging.nopilot")
    try:
        ev = _ev_sense(_Board("pilot"), VirtualClock(), _Settings(), Metering())
        assert isinstance(ev, PilotSense) and "firmware.charging.nopilot" not in sys.modules
    finally:
        sys.modules["firmware.charging.nopilot"] = saved
    assert isinstance(_ev_sense(_Board("pin"), VirtualClock(), _Settings(), Metering()), PinSense)
    assert isinstance(_ev_sense(_Board("current"), VirtualClock(), _Settings(), Metering()), CurrentSense)
