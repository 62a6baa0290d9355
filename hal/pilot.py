"""Control pilot driver: the 1 kHz +/-12 V PWM the charger drives and the ADC that watches it.

Hardware: an ESP32 PWM output drives a +/-12 V stage (op-amp or transistor pair) that feeds
the CP pin through the 1 kOhm source resistor; a divider with an offset brings the CP line
(-12..+12 V) into the ADC's range. The board config describes that front end by two
calibration points (ADC code, CP millivolts), integers; `invert` says the stage inverts.

    pilot = Pilot(PWM(Pin(25), freq=1000, duty_u16=65535), ADC(Pin(36), atten=ADC.ATTN_11DB),
                  cal=((4000, -12000), (60000, 12000)))
    pilot.offer(267); pilot.read(); state = classify(pilot.high_mv, pilot.low_mv, pilot.oscillating)

Sampling: `read()` takes a burst of `samples` ADC reads as fast as the port allows. An ESP32
cannot trigger its ADC on the PWM edges from MicroPython, so the burst simply has to span
more than one PWM period (1 ms): then it holds samples of both the high and the low phase.
The high level is the mean of the samples within 600 mV of the highest one, the low level
the mean of those within 600 mV of the lowest one (a plain max/min would carry the ADC
noise of one sample). Limits: a phase shorter than the time between two reads can be
missed (5 % duty = 50 us high; 96 % = 40 us low); a sample taken on an edge can stand
alone as the extreme and is then reported as the level. Callers debounce (firmware/charging/pilot.py).
No allocation: the sample buffer is made once and the results are stored, not returned.
"""
from array import array

from micropython import const

OFF = const(1000)           # 100 % duty in permille: constant +12 V, no charging offered
SAMPLES_MIN = const(8)      # ADC reads per burst: enough to catch both phases of a period
SAMPLES_MAX = const(512)    # ... and a bounded buffer
_BAND_MV = const(600)       # samples this close to the extreme belong to its plateau
_SLOPE_MAX = const(16383)   # fixed-point slope bound: code x slope stays below 2**30


def _cal_point(cal, i):
    p = cal[i] if isinstance(cal, (list, tuple)) and len(cal) == 2 else None
    if (not isinstance(p, (list, tuple)) or len(p) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in p)):
        raise ValueError("pilot.cal must be two [adc_code, cp_mv] integer pairs")
    if not 0 <= p[0] <= 65535 or not -20000 <= p[1] <= 20000:
        raise ValueError("pilot.cal[%d]: adc_code must be 0..65535, cp_mv -20000..20000" % i)
    return p


class Pilot:
    def __init__(self, pwm, adc, cal, invert=False, samples=64):
        (c0, m0), (c1, m1) = _cal_point(cal, 0), _cal_point(cal, 1)
        if c0 == c1 or m0 == m1:
            raise ValueError("pilot.cal: the two points need different codes and voltages")
        if not isinstance(samples, int) or not SAMPLES_MIN <= samples <= SAMPLES_MAX:
            raise ValueError("pilot.samples must be an integer %d..%d" % (SAMPLES_MIN, SAMPLES_MAX))
        shift = 16  # the finest fixed-point slope whose products fit a small int
        while shift and abs((m1 - m0) << shift) // abs(c1 - c0) > _SLOPE_MAX:
            shift -= 1
        self._slope = ((m1 - m0) << shift) // (c1 - c0)
        if self._slope == 0 or abs(self._slope) > _SLOPE_MAX:
            raise ValueError("pilot.cal: the slope is outside 1/65536..16383 mV per code")
        self._shift = shift
        self._c0 = c0
        self._m0 = m0
        self._band = max(1, _BAND_MV * abs(c1 - c0) // abs(m1 - m0))
        self._pwm = pwm
        self._adc = adc
        self._invert = bool(invert)
        self._buf = array("H", bytes(2 * samples))
        self.high_mv = 0
        self.low_mv = 0
        self.duty = OFF            # permille now driven; OFF = constant +12 V, 0 = -12 V
        self.oscillating = False   # the PWM runs (duty strictly between 0 and 100 %)
        self.off()

    def offer(self, permille):
        """Drive the PWM at this duty in permille (1..1000; 1000 is OFF, constant +12 V)."""
        if not isinstance(permille, int) or not 0 < permille <= OFF:
            raise ValueError("pilot duty must be 1..1000 permille (got %r)" % (permille,))
        self._drive(permille)

    def off(self):
        """Constant +12 V: state A/B signalling, no current offered."""
        self._drive(OFF)

    def error(self):
        """Constant -12 V: state F, the charger is not available."""
        self._drive(0)

    def _drive(self, permille):
        u16 = (permille * 65535 + 500) // 1000
        self._pwm.duty_u16(65535 - u16 if self._invert else u16)
        self.duty = permille
        self.oscillating = 0 < permille < OFF

    def read(self):
        """Sample the CP line once (a burst): sets high_mv and low_mv, allocates nothing."""
        buf = self._buf
        adc = self._adc
        n = len(buf)
        top = 0
        bottom = 65535
        for i in range(n):
            v = adc.read_u16()
            buf[i] = v
            if v > top:
                top = v
            if v < bottom:
                bottom = v
        top -= self._band
        bottom += self._band
        s_top = n_top = s_bot = n_bot = 0
        for i in range(n):
            v = buf[i]
            if v >= top:
                s_top += v
                n_top += 1
            if v <= bottom:
                s_bot += v
                n_bot += 1
        a = self._mv(s_top // n_top)
        b = self._mv(s_bot // n_bot)
        if a >= b:
            self.high_mv = a
            self.low_mv = b
        else:  # an inverting front end: the highest code is the lowest voltage
            self.high_mv = b
            self.low_mv = a

    def _mv(self, code):
        return self._m0 + (((code - self._c0) * self._slope) >> self._shift)
