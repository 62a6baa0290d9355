"""Control pilot logic (IEC 61851-1 / SAE J1772), hardware-free: duty table, states, status.

The charger tells the EV how much current it may draw by the PWM duty cycle of the control
pilot (CP); the EV answers by loading the line, which moves the CP high level (12/9/6/3 V).
This module turns currents into duty cycles and back, classifies measured CP levels into
states A..F, debounces them and maps them to OCPP connector statuses. Currents are tenths of
an ampere (dA), duty cycles are permille, voltages millivolts: all small integers.

    monitor = PilotMonitor(clock); pilot.offer(duty_for_current(160))  # 16.0 A
    if monitor.update(pilot.high_mv, pilot.low_mv, pilot.oscillating): status = connector_status(...)

Duty table (1 kHz): 8-10 % -> 6 A; 10-85 % -> D x 0.6 A; 85-96 % -> (D - 64) x 2.5 A;
96-97 % -> 80 A (J1772); 5 % asks for digital communication (no PWM current offer); other
duties offer nothing, and 100 % (constant +12 V) is the "no charging" signal `OFF`.

State bands for the high level, in mV (midpoints between the nominal levels):
    A > 10500 .. 13500    B 7500 .. 10500    C 4500 .. 7500    D 1500 .. 4500
    E -1500 .. 1500       F < -10500         anything else (over 13.5 V, or between
    -10.5 V and -1.5 V) fits no state and counts as E.
Diode check: while the PWM runs, an EV in B/C/D must pull the low level to about -12 V
(below -10500 mV). A low level that is clearly below the high level (by more than 3000 mV)
yet above -10500 mV means the EV's diode is missing or shorted: the state is E with
`diode_fault` set. A burst that saw no low phase at all (low within 3000 mV of the high
level) cannot tell, and passes: see docs/pilot.md for why.
"""
from micropython import const

from hal.pilot import OFF  # 100 % duty: constant +12 V, no charging offered (the driver's)

DEBOUNCE_MAX_MS = const(100)   # IEC 61851-1: the contactor opens within 100 ms of a change
MIN_DA = const(60)         # 6 A: the smallest offer the pilot can signal
MAX_DA = const(800)        # 80 A: the largest
_LOW_KNEE = const(850)     # up to 85 %: 0.6 A per percent
_HIGH_END = const(960)     # 85-96 %: (D - 64) x 2.5 A
_J1772_END = const(970)    # 96-97 %: 80 A

_A_MIN = const(10500)
_A_MAX = const(13500)
_B_MIN = const(7500)
_C_MIN = const(4500)
_D_MIN = const(1500)
_E_MIN = const(-1500)
_F_MAX = const(-10500)
_DIODE_LOW_MAX = const(-10500)   # a present diode lets the low level reach -12 V
_LOW_SEEN = const(3000)          # a low phase was seen when low < high - this


def duty_for_current(da):
    """The largest duty (permille) whose current is at most `da` tenths of an A; OFF below 6 A.

    Permille steps are 0.06 A (below 85 %) and 0.25 A (above), so the exact current of the
    duty may sit a little under `da`; current_for_duty rounds it back to the nearest 0.1 A.
    """
    if da < MIN_DA:
        return OFF
    if da >= MAX_DA:
        return _HIGH_END
    p = da * 10 // 6
    if p <= _LOW_KNEE:
        return p
    p = 640 + da * 2 // 5
    # 51..52.7 A cannot be signalled: 85 % is the largest duty that stays below the limit
    return p if p > _LOW_KNEE else _LOW_KNEE


def current_for_duty(permille):
    """What an EV reads from a duty (permille): tenths of an ampere (nearest), 0 for no offer."""
    if permille < 80 or permille > _J1772_END:
        return 0  # includes 5 % (digital communication) and 100 % (OFF)
    if permille < 100:
        return MIN_DA
    if permille <= _LOW_KNEE:
        return (permille * 6 + 5) // 10
    if permille <= _HIGH_END:
        return ((permille - 640) * 25 + 5) // 10
    return MAX_DA


def level_state(high_mv):
    """The state the CP high level alone says (bands in the module docstring)."""
    if high_mv > _A_MAX:
        return "E"
    if high_mv > _A_MIN:
        return "A"
    if high_mv > _B_MIN:
        return "B"
    if high_mv > _C_MIN:
        return "C"
    if high_mv > _D_MIN:
        return "D"
    if high_mv >= _E_MIN:
        return "E"
    if high_mv < _F_MAX:
        return "F"
    return "E"


def diode_missing(state, high_mv, low_mv, pwm):
    """True when the PWM runs, the EV loads the line (B/C/D) and the low phase is not -12 V."""
    return (pwm and (state == "B" or state == "C" or state == "D")
            and high_mv - low_mv > _LOW_SEEN and low_mv > _DIODE_LOW_MAX)


def classify(high_mv, low_mv, pwm=False):
    """State 'A'..'F' from the CP levels; a failed diode check gives 'E'."""
    s = level_state(high_mv)
    return "E" if diode_missing(s, high_mv, low_mv, pwm) else s


class PilotMonitor:
    """Debounced CP state: a new state counts once it held on consecutive reads for debounce_ms.

    One read that differs (a glitch) is ignored. With debounce_ms > 0 a change needs at least
    two reads; read every 10 ms with debounce_ms=20, a change is known 20-30 ms after it
    happened, which leaves time to open the contactor within the 100 ms IEC 61851-1 allows.
    """

    def __init__(self, clock, debounce_ms=20):
        if not isinstance(debounce_ms, int) or not 0 <= debounce_ms <= DEBOUNCE_MAX_MS:
            raise ValueError("pilot.debounce_ms must be an integer 0..%d" % DEBOUNCE_MAX_MS)
        self._clock = clock
        self._debounce = debounce_ms
        self.state = None          # None until the first state held: nothing known yet
        self.diode_fault = False   # the present state is E because the diode check failed
        self.previous = None       # the state before the last change
        self.since = 0             # ticks_ms of the last change
        self._cand = None
        self._cand_diode = False
        self._cand_at = 0
        self._cand_reads = 0

    def update(self, high_mv, low_mv, pwm):
        """Feed one pilot reading; True when the debounced state changed with it."""
        s = level_state(high_mv)
        diode = diode_missing(s, high_mv, low_mv, pwm)
        if diode:
            s = "E"
        now = self._clock.ticks_ms()
        if s != self._cand or diode != self._cand_diode:
            self._cand = s
            self._cand_diode = diode
            self._cand_at = now
            self._cand_reads = 1
        elif self._cand_reads < 2:
            self._cand_reads = 2
        if s == self.state and diode == self.diode_fault:
            return False
        if self._debounce and (self._cand_reads < 2
                               or self._clock.ticks_diff(now, self._cand_at) < self._debounce):
            return False
        self.previous = self.state
        self.state = s
        self.diode_fault = diode
        self.since = now
        return True


def connector_status(state, session_running, offering, contactor_closed, finished):
    """The OCPP connector status for a debounced CP state and the session facts.

    state: PilotMonitor.state (None before the first reading held). session_running: a
    transaction is open. offering: the pilot offers >= 6 A (PWM on). contactor_closed: the
    poles are closed. finished: a session ended and the EV was not unplugged since.
    """
    if state is None:
        return "Unavailable"
    if state == "A":
        return "Available"
    if state == "E" or state == "F":
        return "Faulted"
    if finished and not session_running:
        return "Finishing"
    if not session_running:
        return "Preparing"
    if not offering:   # the EVSE holds back (a schedule, off-peak hours, a stop): not the EV's doing
        return "SuspendedEVSE"
    if state == "B":
        return "SuspendedEV"
    if offering and contactor_closed:
        return "Charging"
    return "SuspendedEVSE"
