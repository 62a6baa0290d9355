"""The control-pilot line as the charger's ADC sees it: the EVSE's PWM loaded by the EV.

The EVSE drives +12 V or -12 V through its 1 kOhm source resistor; the EV loads the line
with a diode and a resistor (2.74 kOhm in B, 882 Ohm in C, 246 Ohm in D), which gives the
9/6/3 V high levels, while the diode keeps the low phase at -12 V. Each ADC read lands at a
later point of the PWM period (the phase advances by `step_us` per read, like the back-to-back
reads of a burst), so a burst spanning a period holds both levels. Voltages become ADC codes
through the board config's calibration points, the same ones hal/pilot.py converts back with.

    cp = SimCP(ev, pwm_pin=25, cal=[[4000, -12000], [60000, 12000]])
    machine.adc_source(36, cp.read_u16); cp.offered_a()   # what the EV reads from the duty
"""
from hal.sim import machine
from hal.sim.ev import amps_for_duty

_LOAD_OHM = {"B": 2740, "C": 882, "D": 246}
_SOURCE_OHM = 1000
_SUPPLY_MV = 12000
_DIODE_MV = 700


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


class SimCP:
    def __init__(self, ev, pwm_pin, cal, invert=False, step_us=23, noise_mv=0):
        (self._c0, self._m0), (c1, m1) = cal
        sign = 1 if m1 > self._m0 else -1  # keep the divisor positive: floor rounds the same way
        dc = (c1 - self._c0) * sign
        dm = (m1 - self._m0) * sign
        g = _gcd(dc, dm)
        self._dm = dm // g
        self._q, self._r = divmod(dc // g, dm // g)
        self.ev = ev
        self.pin = pwm_pin
        self._invert = bool(invert)
        self._step_us = step_us
        self._noise = noise_mv
        self._seed = 1
        self._phase = 0
        self._k_state = None  # EV state, diode and PWM frequency the cached codes belong to
        self._k_diode = None
        self._k_freq = None
        self._lo = 0          # ADC code of the line with the EVSE output low
        self._hi = 0          # ... and high
        self._inc = 0         # phase advance per read at the cached frequency

    def _evse_high(self):
        """Whether the EVSE drives +12 V at this read; a pin with no PWM sits low."""
        pwm = machine.pwm_on(self.pin)
        if pwm is None:
            return self._invert
        self._phase = (self._phase + self._step_us * pwm.freq() * 4096 // 62500) & 0xFFFF
        return pwm.high(self._phase) != self._invert

    def line_mv(self, evse_high):
        """The CP voltage for the EVSE output level and the EV's state, in mV."""
        ev = self.ev
        if ev.state == "E":
            return 0
        r = _LOAD_OHM.get(ev.state)
        if r is None:  # no EV: the open line follows the EVSE
            return _SUPPLY_MV if evse_high else -_SUPPLY_MV
        if evse_high:
            if ev.no_diode:
                return _SUPPLY_MV * r // (r + _SOURCE_OHM)
            return _DIODE_MV + (_SUPPLY_MV - _DIODE_MV) * r // (r + _SOURCE_OHM)
        if ev.no_diode:
            return -_SUPPLY_MV * r // (r + _SOURCE_OHM)
        return -_SUPPLY_MV  # the diode blocks: no current in the negative phase

    def _code(self, mv):
        den = self._dm
        x = mv - self._m0
        code = self._c0 + x * self._q + (2 * x * self._r + den) // (2 * den)
        return 0 if code < 0 else 65535 if code > 65535 else code

    def read_u16(self):
        """One ADC read of the CP line through the board's front end (0..65535)."""
        if self._noise:
            mv = self.line_mv(self._evse_high())
            self._seed = (self._seed * 75 + 74) % 65537
            return self._code(mv + self._seed % (2 * self._noise + 1) - self._noise)
        # the hot path of every simulation (allocation-free): line levels cached per EV state
        pwm = machine.pwm_on(self.pin)
        ev = self.ev
        freq = pwm.freq() if pwm is not None else 0
        if ev.state != self._k_state or ev.no_diode != self._k_diode or freq != self._k_freq:
            self._k_state = ev.state
            self._k_diode = ev.no_diode
            self._k_freq = freq
            self._lo = self._code(self.line_mv(False))
            self._hi = self._code(self.line_mv(True))
            self._inc = self._step_us * freq * 4096 // 62500
        if pwm is None:
            return self._hi if self._invert else self._lo
        self._phase = (self._phase + self._inc) & 0xFFFF
        return self._hi if pwm.high(self._phase) != self._invert else self._lo

    def duty_permille(self):
        """The duty the EVSE drives on the CP (permille of +12 V time), as the EV measures it."""
        pwm = machine.pwm_on(self.pin)
        if pwm is None:
            return 1000 if self._invert else 0
        u16 = pwm.duty_u16()
        if self._invert:
            u16 = 65535 - u16
        return (u16 * 1000 + 32767) // 65535

    def offered_a(self):
        """The current the duty offers the EV, in A (0 without a PWM offer): the EV's own table."""
        return amps_for_duty(self.duty_permille())
