"""Whether the wall clock is known, and the seconds since boot that stand in for it until it is.

An ESP32 boots at its epoch (2000-01-01) and knows the date only once NTP set it. Until then a
record carries `"ts": null`, the boot count and `uptime_s`; the controller re-stamps it at sync.

    ts = TimeSync(clock); rec["uptime_s"] = ts.uptime_s()
    if ts.check(): shift = ts.shift()   # just synced: UTC = uptime_s + shift
"""
from firmware.core.clock import VALID_AFTER


def synced(utc):
    """The one rule: a wall clock before VALID_AFTER (2026-01-01) was never set."""
    return utc >= VALID_AFTER


class TimeSync:
    def __init__(self, clock):
        self.clock = clock
        self._last = clock.ticks_ms()   # ticks count from 0 at boot, on a board and in the simulator
        self._s = self._last // 1000    # seconds and ms apart: no big int after 12 days
        self._ms = self._last % 1000
        self.synced = synced(clock.time())

    def uptime_s(self):
        """Whole seconds since boot; call at least every few days (ticks wrap)."""
        now = self.clock.ticks_ms()
        ms = self._ms + self.clock.ticks_diff(now, self._last)
        self._last = now
        self._s += ms // 1000
        self._ms = ms % 1000
        return self._s

    def check(self):
        """True once, when the wall clock became known; cheap enough for every second."""
        self.uptime_s()
        if self.synced:
            return False
        self.synced = synced(self.clock.time())
        return self.synced

    def shift(self):
        """UTC minus uptime, in seconds: an uptime_s of this boot plus it is that instant's UTC."""
        return self.clock.time() - self.uptime_s()
