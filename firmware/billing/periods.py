"""Cutting a session into OCPI 2.2.1 charging periods from the charger's own metering.

A new period starts wherever the tariff's active element could change: a local clock or
calendar boundary (DST jumps included), a min/max_duration or min/max_kwh threshold (cut at
the exact Wh), a min/max current or power threshold crossed, and charging <-> parking.
Time boundaries are cut at the exact second, the energy there interpolated between updates.
TIME and PARKING_TIME seconds are counted from every update, so they are exact even inside
a period. Bounds: a measured change (band or charging state) must hold `dwell_s` before it
starts a period, such periods are capped at max_periods // 2 (then the band is frozen) and
the session at max_periods. MAX_CURRENT/MAX_POWER are the period's highest readings held
inside the period's tariff band, so pricing the CDR gives exactly what the charger billed.

    pb = PeriodBuilder(tariff, LocalTime(60, "EU"), start_utc)
    pb.update(t, energy_wh, current_ma, power_w, charging)   # every second or so; t: seconds since start
    periods = pb.finish(end_utc, energy_wh); cost = tariff.price_cdr(periods, start_utc, end_utc, tz)
"""
from micropython import const

from firmware.billing.fixed import round_div, text
from firmware.billing.localtime import LocalTime
from firmware.core.timefmt import iso

_START = const(0)     # seconds since the session start
_WH = const(1)        # session energy at the period start
_CHARGING = const(2)  # seconds charging in the period
_PARKING = const(3)   # seconds plugged in, not charging
_REP_MA = const(4)    # highest current reading held inside the period's band (its floor at first)
_REP_W = const(5)


def _band(value, thresholds):
    """How many thresholds are <= value: min_X holds at >=, max_X at <."""
    n = 0
    for t in thresholds:
        if value < t:
            break
        n += 1
    return n


def _clamp(value, band, thresholds):
    if band and value < thresholds[band - 1]:
        return thresholds[band - 1]
    if band < len(thresholds) and value >= thresholds[band]:
        return thresholds[band] - 1
    return value


def _hours(seconds):
    """Seconds → hours with 6 decimals (3.6 ms): rounding it to the second gives them back."""
    return text(round_div(seconds * 1000000, 3600), 6)


class PeriodBuilder:
    def __init__(self, tariff, tz, start_utc, dwell_s=60, max_periods=48):
        if max_periods < 2 or dwell_s < 0:
            raise ValueError("periods: max_periods must be >= 2 and dwell_s >= 0")
        self.tariff = tariff
        self.tz = tz if tz is not None else LocalTime(0)
        self.start = start_utc
        self.dwell_s = dwell_s
        self.max_periods = max_periods
        self.periods = [[0, 0, 0, 0, 0, 0]]
        self.measured_splits = 0
        self._t = 0            # last update, seconds since start
        self._e = 0            # session energy at the last update
        self._charging = None  # charging flag of the last update
        self._key = -1         # committed (band_current, band_power, charging) as one int
        self._band_i = 0
        self._band_p = 0
        self._since = -1       # since when the measured key differs from the committed one
        energy = tariff.energy_wh
        self._ei = 0
        while self._ei < len(energy) and energy[self._ei] <= 0:
            self._ei += 1
        self._next = self._next_boundary(0)

    @property
    def count(self):
        """Periods so far (bounded by max_periods)."""
        return len(self.periods)

    @property
    def charging_s(self):
        """Seconds charging so far (up to the last update)."""
        return sum(p[_CHARGING] for p in self.periods)

    @property
    def parking_s(self):
        """Seconds plugged in and not charging so far: the `parking_s` of the ended record."""
        return sum(p[_PARKING] for p in self.periods)

    def rebase(self, shift):
        """The wall clock became known: the start moves by shift seconds (periods are relative to it),
        and the next tariff clock boundary is found again in real time."""
        self.start += shift
        self._next = self._next_boundary(self._t)

    def update(self, t, energy_wh, current_ma, power_w, charging):
        """Account the time since the last update and cut periods where the tariff may switch. t:
        seconds since the start, from a clock that makes no big int (Unix seconds are >= 2^30, a
        heap object on 32-bit ports, and this runs every second of every session)."""
        if t < self._t:
            t = self._t                 # the clock stepped back: no negative time
        if energy_wh < self._e:
            energy_wh = self._e         # the session counter never goes down
        current_ma = current_ma if current_ma > 0 else 0
        power_w = power_w if power_w > 0 else 0
        bi = _band(current_ma, self.tariff.current_ma)
        bp = _band(power_w, self.tariff.power_w)
        key = (bi * (len(self.tariff.power_w) + 1) + bp) * 2 + (1 if charging else 0)
        if self._key < 0:               # first reading: its state holds from the start
            self._commit(key, bi, bp, charging)
            self._floor(self.periods[0])
        self._walk(t, energy_wh, True)
        self._charging = charging
        if key == self._key:
            self._since = -1
        elif self._since < 0:
            self._since = t
        elif t - self._since >= self.dwell_s and self.measured_splits < self.max_periods // 2:
            if self._split(t, energy_wh):
                self.measured_splits += 1
                self._commit(key, bi, bp, charging)
                self._floor(self.periods[-1])
            self._since = -1
        p = self.periods[-1]
        v = _clamp(current_ma, self._band_i, self.tariff.current_ma)
        if v > p[_REP_MA]:
            p[_REP_MA] = v
        v = _clamp(power_w, self._band_p, self.tariff.power_w)
        if v > p[_REP_W]:
            p[_REP_W] = v

    def finish(self, utc, energy_wh):
        """The session's OCPI charging_periods, volumes as exact decimal strings."""
        t = utc - self.start
        if t < self._t:
            t = self._t
        if energy_wh < self._e:
            energy_wh = self._e
        self._walk(t, energy_wh, False)
        out = []
        ps = self.periods
        for i, p in enumerate(ps):
            end_wh = ps[i + 1][_WH] if i + 1 < len(ps) else energy_wh
            dims = [{"type": "ENERGY", "volume": text(end_wh - p[_WH], 3)}]
            if p[_CHARGING]:
                dims.append({"type": "TIME", "volume": _hours(p[_CHARGING])})
            if p[_PARKING]:
                dims.append({"type": "PARKING_TIME", "volume": _hours(p[_PARKING])})
            dims.append({"type": "MAX_CURRENT", "volume": text(p[_REP_MA], 3)})
            dims.append({"type": "MAX_POWER", "volume": text(p[_REP_W], 3)})
            out.append({"start_date_time": iso(self.start + p[_START]), "dimensions": dims,
                        "tariff_id": self.tariff.id})
        return out

    # -- internals ---------------------------------------------------------------------------
    def _floor(self, p):
        """Reported readings start at the band's lowest value: a period without readings has one."""
        th = self.tariff.current_ma
        p[_REP_MA] = th[self._band_i - 1] if self._band_i else 0
        th = self.tariff.power_w
        p[_REP_W] = th[self._band_p - 1] if self._band_p else 0

    def _commit(self, key, bi, bp, charging):
        self._key = key
        self._band_i = bi
        self._band_p = bp
        if self._charging is None:
            self._charging = charging

    def _walk(self, t, e, inclusive):
        """Move to (t, e), cutting at every clock boundary and energy threshold on the way, in order."""
        energy = self.tariff.energy_wh
        while True:
            tb = self._next
            if tb is not None and (tb > t or tb == t and not inclusive):
                tb = None
            eb = energy[self._ei] if self._ei < len(energy) and energy[self._ei] <= e else None
            if tb is None and eb is None:
                break
            te = None
            if eb is not None:
                te = self._t if e == self._e else self._t + (t - self._t) * (eb - self._e) // (e - self._e)
                if te == t and not inclusive:
                    te = eb = None
            if tb is not None and (te is None or tb <= te):
                eat = self._e if t == self._t else self._e + (e - self._e) * (tb - self._t) // (t - self._t)
                self._advance(tb, eat)
                self._split(tb, eat)
                self._next = self._next_boundary(tb)
            elif te is not None:
                self._advance(te, eb)
                if eb > self.periods[-1][_WH]:
                    self._split(te, eb)
                self._ei += 1
            else:
                break
        self._advance(t, e)

    def _advance(self, t, e):
        dt = t - self._t
        if dt > 0:
            self.periods[-1][_CHARGING if self._charging else _PARKING] += dt
        self._t = t
        self._e = e

    def _split(self, t, e):
        """Start a new period at t with session energy e; False when the session is at its cap."""
        if len(self.periods) >= self.max_periods:
            return False
        last = self.periods[-1]
        if last[_START] == t and last[_WH] == e and not last[_CHARGING] and not last[_PARKING]:
            return True                 # an empty period: just let it start here
        p = [t, e, 0, 0, 0, 0]
        self._floor(p)
        self.periods.append(p)
        return True

    def _next_boundary(self, after):
        """Next instant (s since start) after `after` where a clock or duration restriction may switch."""
        best = None
        if self.tariff.clock_minutes:
            best = self.tz.next_clock(self.start + after, self.tariff.clock_minutes) - self.start
        for d in self.tariff.durations_s:
            if d > after:
                if best is None or d < best:
                    best = d
                break
        return best
