"""The one clock the firmware reads: ticks for intervals, UTC seconds for records.

On a board it wraps `time`; the simulator passes a virtual clock with the same methods, so
hours of charging run in seconds. Unix seconds are above 2^30, a heap object on a 32-bit port:
what runs every step or second reads `seconds()` (since BASE, 2026-01-01: a small int until 2060)
and only a record or a rare decision takes `time()` (BASE + seconds()).

    clock = Clock()
    t0 = clock.ticks_ms(); ...; elapsed = clock.ticks_diff(clock.ticks_ms(), t0)
"""
import time

# Seconds between 1970-01-01 and the port's epoch (2000-01-01 on bare-metal ports).
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
# Before this the wall clock is unset (an ESP32 boots at its epoch, not at the real date).
VALID_AFTER = 1767225600  # 2026-01-01T00:00:00Z
BASE = VALID_AFTER        # seconds() counts from here: +-2^30 s (34 years) stay small ints
# BASE on the port's epoch: below 2^30 on a 2000-epoch port (an ESP32), so seconds() makes no big int
_BASE_PORT = BASE - _EPOCH_OFFSET


class Clock:
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_add(self, t, delta):
        return time.ticks_add(t, delta)

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def outside(self, ms):
        """An answer from outside is expected within ms; real time needs no help (see VirtualClock)."""

    def time(self):
        """Unix seconds (UTC); compare with VALID_AFTER to know whether it was ever set."""
        return time.time() + _EPOCH_OFFSET

    def seconds(self):
        """UTC seconds since BASE: the wall clock for periodic work (negative while it is unset)."""
        return time.time() - _BASE_PORT
