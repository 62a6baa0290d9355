"""Virtual time for the simulator: `sleep_ms` moves the world forward instead of waiting.

Ticks wrap like an ESP32's (period 2**30 ms), so wrap handling is exercised in every long run.
With `realtime=True` (benchmarks) virtual time follows the wall clock instead, so real stalls
show up in the firmware's timestamps. With `unset=True` the wall clock runs from 2000-01-01, as
an ESP32's after power-on, until `sync()` (NTP) sets it to start_utc + elapsed time.

    clock = VirtualClock(start_utc=1772437800, on_advance=world.run_until)
    clock.sleep_ms(100)   # the world plays 100 ms of physics and scenario, at once
"""
from micropython import const

_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)
_EPOCH_2000 = const(946684800)   # 2000-01-01T00:00:00Z: where an ESP32's unset RTC starts
_BASE = 1767225600               # firmware/core/clock.py BASE: seconds() counts from it
_UNSET_S = const(-820540800)     # _EPOCH_2000 - _BASE


class VirtualClock:
    def __init__(self, start_utc=0, on_advance=None, ticks0=0, realtime=False, unset=False):
        self.ms = 0  # virtual milliseconds since start
        self.start_utc = start_utc
        self._start_s = start_utc - _BASE   # seconds() from small ints only (32-bit ports)
        self.unset = unset
        self._ticks0 = ticks0
        self.on_advance = on_advance
        self._real0 = None
        self._real_until = None
        import time

        self._time = time
        if realtime:
            self._real0 = time.ticks_ms()

    def _catch_up(self):
        """Realtime mode: bring virtual time up to the wall clock."""
        real = self._time.ticks_diff(self._time.ticks_ms(), self._real0)
        if real > self.ms:
            self.advance(real - self.ms)

    def ticks_ms(self):
        if self._real0 is not None:
            self._catch_up()
        return (self._ticks0 + self.ms) & _MASK

    def ticks_add(self, t, delta):
        return (t + delta) & _MASK

    def ticks_diff(self, a, b):
        return ((a - b + _HALF) & _MASK) - _HALF

    def sleep_ms(self, ms):
        if self._real0 is not None:
            self._time.sleep_ms(ms)
            self._catch_up()
            return
        if self._real_until is not None:
            if self._real_ticks() - self._real_until < 0:
                self._real_sleep(ms)   # an answer from outside is due: do not outrun it
            else:
                self._real_until = None
        if ms > 0:
            self.advance(ms)

    def outside(self, ms):
        """An answer from outside (a backend, the broker) is expected within ms of real time:
        until it comes (outside(0)) or ms pass, virtual time runs at the wall clock's pace, so
        it arrives at the virtual moment it would on a board."""
        self._real_until = self._real_ticks() + ms if ms > 0 else None

    def _real_ticks(self):
        t = self._time
        return t.ticks_ms() if hasattr(t, "ticks_ms") else int(t.monotonic() * 1000)

    def _real_sleep(self, ms):
        t = self._time
        if hasattr(t, "sleep_ms"):
            t.sleep_ms(ms)
        else:
            t.sleep(ms / 1000)

    def advance(self, ms):
        """Move virtual time forward by ms; the world may step `self.ms` through the interval."""
        target = self.ms + ms
        if self.on_advance is not None:
            self.on_advance(target)
        self.ms = target

    def sync(self):
        """NTP answered: from now on the wall clock is the real UTC."""
        self.unset = False

    def time(self):
        return (_EPOCH_2000 if self.unset else self.start_utc) + self.ms // 1000

    def seconds(self):
        """time() - BASE, made without a big int (as on an ESP32)."""
        return (_UNSET_S if self.unset else self._start_s) + self.ms // 1000
