"""Local civil time from UTC for a fixed offset plus an optional DST rule (MicroPython has no zones).

Tariff restrictions (start_time, day_of_week, start_date …) are in the charger's local time.
Rules: "EU" (last Sunday of March 01:00 UTC → last Sunday of October 01:00 UTC, +60 min),
"US" (second Sunday of March 02:00 local standard time → first Sunday of November 02:00
local daylight time, +60 min) or None. Southern-hemisphere rules are not covered.

    tz = LocalTime(60, "EU")                          # Central European Time
    tz.local(1774746000) == (2026, 3, 29, 3, 0, 0, 6)  # 01:00 UTC: clocks jump to 03:00 CEST
"""
from micropython import const

from firmware.core.timefmt import civil, days_from_civil

_DAY = const(86400)
_HOUR = const(3600)
RULES = (None, "EU", "US")


def weekday(days):
    """Days since 1970-01-01 → 0 = Monday … 6 = Sunday (1970-01-01 was a Thursday)."""
    return (days + 3) % 7


class LocalTime:
    def __init__(self, offset_min=0, dst=None):
        if isinstance(offset_min, bool) or not isinstance(offset_min, int) or not -720 <= offset_min <= 840:
            raise ValueError("tz offset must be whole minutes within -720..840 (got %r)" % (offset_min,))
        if dst == "none":
            dst = None
        if dst not in RULES:
            raise ValueError("dst must be \"EU\", \"US\" or none (got %r)" % (dst,))
        self.offset_s = offset_min * 60
        self.dst = dst
        self._year = None   # cache: the year whose transitions are in _trans
        self._trans = None

    def transitions(self, year):
        """(start, end) of summer time in `year` as UTC instants, or None without a DST rule."""
        if self.dst is None:
            return None
        if year != self._year:
            if self.dst == "EU":
                mar = days_from_civil(year, 3, 31)
                mar -= (weekday(mar) + 1) % 7          # back to the last Sunday
                octo = days_from_civil(year, 10, 31)
                octo -= (weekday(octo) + 1) % 7
                self._trans = (mar * _DAY + _HOUR, octo * _DAY + _HOUR)
            else:
                mar = days_from_civil(year, 3, 1)
                mar += (6 - weekday(mar)) % 7 + 7      # second Sunday
                nov = days_from_civil(year, 11, 1)
                nov += (6 - weekday(nov)) % 7          # first Sunday
                self._trans = (mar * _DAY + 2 * _HOUR - self.offset_s,
                               nov * _DAY + 2 * _HOUR - self.offset_s - _HOUR)
            self._year = year
        return self._trans

    def offset(self, utc):
        """Seconds to add to UTC for local time at `utc` (DST included)."""
        if self.dst is None:
            return self.offset_s
        tr = self.transitions(civil((utc + self.offset_s) // _DAY)[0])
        return self.offset_s + (_HOUR if tr[0] <= utc < tr[1] else 0)

    def day_second(self, utc):
        """(local days since 1970-01-01, local second of the day): what restrictions compare."""
        return divmod(utc + self.offset(utc), _DAY)

    def local(self, utc):
        """UTC seconds → (year, month, day, hour, minute, second, weekday 0=Monday)."""
        days, s = self.day_second(utc)
        y, m, d = civil(days)
        return y, m, d, s // _HOUR, s // 60 % 60, s % 60, weekday(days)

    def next_change(self, utc):
        """The first DST transition strictly after `utc` (UTC), or None."""
        if self.dst is None:
            return None
        year = civil((utc + self.offset_s) // _DAY)[0]
        for y in (year, year + 1):
            for t in self.transitions(y):
                if t > utc:
                    return t
        return None

    def next_clock(self, utc, minutes):
        """First instant after `utc` when the local clock reaches one of `minutes` (minute of day,
        sorted) or jumps (DST): where a time-of-day or calendar restriction can change."""
        off = self.offset(utc)
        days, sod = divmod(utc + off, _DAY)
        nxt = None
        for m in minutes:
            if m * 60 > sod:
                nxt = days * _DAY + m * 60
                break
        if nxt is None:
            nxt = (days + 1) * _DAY + minutes[0] * 60
        nxt -= off
        change = self.next_change(utc)
        if change is not None and change <= nxt:
            return change
        return nxt

    def next_midnight(self, utc):
        """First local midnight (or DST jump) after `utc`, as UTC seconds."""
        return self.next_clock(utc, (0,))
