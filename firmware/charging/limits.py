"""The current the charger offers: the lowest of the board, cable, card, thermal and schedule limits.

Whole amperes per phase, integers throughout (the pilot table in firmware/charging/pilot.py takes tenths:
`duty_for_current(amps * 10)`). An offer below 6 A cannot be signalled, so it becomes 0 (do
not offer); `reason` names the limit that bound ("board", "cable", "card", "thermal",
"schedule"; on a tie the earlier one in that order).

    limits = Limits(32, cable_max_a=20, thermal=(60, 80, 10, 5))
    limits.load("data/profiles.json")    # profiles survive reboots: each change is saved there
    limits.set_profile("station_max", {"stack_level": 0, "periods": [[0, 16], [3600, 10]],
                                       "start_schedule": 1772438400})
    amps = limits.offer_a(now, session_start, card_max_a=16, temp_c=45)

Times are UTC seconds counted from `base` (0: Unix seconds). The firmware's Limits count from the
clock's BASE (from_settings) and are asked with `clock.seconds()`: every control step asks, and
near 2026 those are small ints on 32-bit ports where Unix seconds would be heap objects. Profiles
keep Unix seconds in what they save and report; each is converted once, when installed.

Thermal ladder (t1, t2, reduced_a, hyst), degrees C: full current below t1, reduced_a from
t1, 0 at or above t2. Going back is stateful: from 0 to reduced_a once the temperature is
below t2 - hyst, from reduced_a to full once it is below t1 - hyst. No reading (None)
keeps the present step.

Smart-charging profiles (a minimal subset of OCPP's), one dict per stack level and kind:
    kind "station_max": limits the whole station; period offsets count from
        `start_schedule` (UTC seconds; absent = 0, so offsets are absolute UTC seconds),
        optionally repeating with "recurrency": "Daily" or "Weekly".
    kind "tx_default": limits each transaction; offsets count from the session start, and
        it does not apply outside a session.
    fields: "periods" [[start_offset_s, limit_a], ...] (1..24, the first at 0, strictly
    increasing; station_max limits at least 6 A: below the minimum offer nobody could charge, so
    it is refused), "stack_level" (0..99, default 0), "valid_from"/"valid_to" (UTC seconds,
    optional), "duration" (seconds, optional: the schedule ends then). Within a kind the
    highest stack level whose profile is valid and running at that moment wins; the
    effective limit is the minimum over the kinds.
"""
import json

from micropython import const

from firmware.core.clock import BASE
from firmware.storage.state import write_atomic


KINDS = ("station_max", "tx_default")
MIN_OFFER_A = const(6)
_MAX_PROFILES = const(4)     # stack levels kept per kind
_MAX_PERIODS = const(24)
_RECURRENCY = {"Daily": 86400, "Weekly": 604800}
_SMALL = const(0x3FFFFFFF)   # the largest small int on a 32-bit port
_FIELDS = ("periods", "stack_level", "valid_from", "valid_to", "duration", "start_schedule",
           "recurrency")


def _int(prof, name, lo, hi, where, default=None):
    v = prof.get(name, default)
    if v is default:
        return v
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError("%s: %s must be an integer %d..%d (got %r)" % (where, name, lo, hi, v))
    return v


class _Profile:
    """One validated charging profile: when it runs and the limit of each period."""

    def __init__(self, kind, prof, base):
        where = kind + " profile"
        if not isinstance(prof, dict):
            raise ValueError("%s must be an object" % where)
        for k in prof:
            if k not in _FIELDS:
                raise ValueError("%s: unknown field %r" % (where, k))
        self.stack_level = _int(prof, "stack_level", 0, 99, where, 0)
        self.valid_from = _int(prof, "valid_from", 0, 0xFFFFFFFF, where)
        self.valid_to = _int(prof, "valid_to", 0, 0xFFFFFFFF, where)
        if self.valid_from is not None and self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("%s: valid_to must be after valid_from" % where)
        self.duration = _int(prof, "duration", 1, 0xFFFFFFFF, where)
        self.start = _int(prof, "start_schedule", 0, 0xFFFFFFFF, where)
        self.cycle = None
        rec = prof.get("recurrency")
        if kind == "tx_default":
            for k in ("start_schedule", "recurrency"):
                if k in prof:
                    raise ValueError("%s: %s is only for station_max (tx_default counts from the session start)"
                                     % (where, k))
        elif rec is not None:
            if rec not in _RECURRENCY:
                raise ValueError("%s: recurrency must be Daily or Weekly (got %r)" % (where, rec))
            if self.start is None:
                raise ValueError("%s: recurrency needs start_schedule" % where)
            self.cycle = _RECURRENCY[rec]
        if self.start is None:
            self.start = 0
        self.low = MIN_OFFER_A if kind == "station_max" else 0   # a station-wide 0 A is refused
        self.offsets, self.limits = self._periods(prof.get("periods"), where)
        if base:
            self._count_from(base, kind == "station_max")
        self.raw = prof             # as received: what is saved, so a reboot installs the same

    def _periods(self, periods, where):
        if not isinstance(periods, list) or not 1 <= len(periods) <= _MAX_PERIODS:
            raise ValueError("%s: periods must be a list of 1..%d [start_offset_s, limit_a] pairs"
                             % (where, _MAX_PERIODS))
        offsets, limits = [], []
        top = self.cycle or 0xFFFFFFFF
        for i, p in enumerate(periods):
            at = "%s: periods[%d]" % (where, i)
            if not isinstance(p, list) or len(p) != 2:
                raise ValueError("%s must be a [start_offset_s, limit_a] pair" % at)
            off, lim = p
            if not isinstance(off, int) or isinstance(off, bool) or not 0 <= off < top:
                raise ValueError("%s: start_offset_s must be an integer 0..%d (got %r)" % (at, top - 1, off))
            if i == 0 and off != 0:
                raise ValueError("%s: start_offset_s of the first period must be 0" % at)
            if i and off <= offsets[-1]:
                raise ValueError("%s: start_offset_s must be greater than the previous period's" % at)
            if not isinstance(lim, int) or isinstance(lim, bool) or not self.low <= lim <= 999:
                raise ValueError("%s: limit_a must be an integer %d..999 (got %r)%s" % (
                    at, self.low, lim, "; below 6 A nobody could charge" if self.low else ""))
            offsets.append(off)
            limits.append(lim)
        return offsets, limits

    def _count_from(self, base, own_start):
        """Times from base on, as they are asked about: near it, small ints on a 32-bit port. A
        schedule of its own start (station_max) that started before base is taken up at base where
        it stands then (nothing charges before 2026), so no offset is a big int either; validity far
        off is clamped (same answers)."""
        for name in ("valid_from", "valid_to"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, max(-_SMALL, min(_SMALL, v - base)))
        start = self.start - base if own_start else 0   # tx_default: from the session's start
        if start < 0:
            c = self.cycle
            shift = -start if c is None else -start // c * c   # whole cycles (the same days): from <= base
            if self.duration is not None:
                self.duration -= shift   # <= 0: over before base, never runs
            if c is None:
                i = len(self.offsets) - 1
                while self.offsets[i] > shift:
                    i -= 1
                self.offsets = [0] + [o - shift for o in self.offsets[i + 1:]]
                self.limits = self.limits[i:]
            start += shift
        self.start = start

    def limit_at(self, now, base):
        """The limit at second `now` for a schedule starting at `base`, or None (not running)."""
        if self.valid_from is not None and now < self.valid_from:
            return None
        if self.valid_to is not None and now >= self.valid_to:
            return None
        off = now - base
        if off < 0:
            return None
        if self.duration is not None and off >= self.duration:
            return None
        if self.cycle is not None:
            off %= self.cycle
        offsets = self.offsets
        i = len(offsets) - 1
        while offsets[i] > off:
            i -= 1
        return self.limits[i]


class Limits:
    def __init__(self, board_max_a, cable_max_a=None, thermal=None, base=0):
        if not isinstance(board_max_a, int) or not MIN_OFFER_A <= board_max_a <= 80:
            raise ValueError("limits.max_current_a must be an integer 6..80")
        if cable_max_a is not None and (not isinstance(cable_max_a, int) or not MIN_OFFER_A <= cable_max_a <= 80):
            raise ValueError("limits.cable_max_a must be an integer 6..80 or null (unknown)")
        if thermal is not None:
            if (not isinstance(thermal, (list, tuple)) or len(thermal) != 4
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in thermal)):
                raise ValueError("limits.thermal must be (t1_c, t2_c, reduced_a, hyst_c) integers")
            t1, t2, reduced, hyst = thermal
            if not t1 < t2 or reduced < 0 or hyst < 1:
                raise ValueError("limits.thermal needs t1_c < t2_c, reduced_a >= 0 and hyst_c >= 1")
        self.board_max_a = board_max_a
        self.base = base            # the UTC second the times asked about count from
        self.cable_max_a = cable_max_a
        self._thermal = thermal
        self.thermal_step = 0       # 0 full, 1 reduced, 2 stopped
        self._profiles = {k: [] for k in KINDS}
        self.reason = "board"
        self.path = None            # where profiles persist (load()); None: RAM only
        self.load_error = None      # why saved profiles were unusable (they were then dropped)

    def load(self, path):
        """Install the profiles saved at path (a reboot keeps what the backend set); from now on
        every change is saved there first. An unreadable file drops them and says why in load_error."""
        self.path = path
        try:
            with open(path) as f:
                saved = json.load(f)
        except OSError:
            return   # none saved yet
        except ValueError as e:
            self.load_error = "%s: %s" % (path, e)
            return
        try:
            got = {k: [_Profile(k, prof, self.base) for prof in saved.get(k, ())][:_MAX_PROFILES] for k in KINDS}
        except (ValueError, AttributeError, TypeError) as e:
            self.load_error = "%s: %s" % (path, e)
            return
        self._profiles = got

    def _commit(self, kind, profiles):
        """Save first (an OSError leaves the old profiles in force), then use."""
        if self.path is not None:
            doc = {k: [q.raw for q in (profiles if k == kind else self._profiles[k])] for k in KINDS}
            write_atomic(self.path, json.dumps(doc))
        self._profiles[kind] = profiles

    def set_profile(self, kind, profile):
        """Install a profile, replacing the one at the same stack level; ValueError keeps the old ones."""
        if kind not in self._profiles:
            raise ValueError("profile kind must be station_max or tx_default (got %r)" % (kind,))
        p = _Profile(kind, profile, self.base)
        kept = [q for q in self._profiles[kind] if q.stack_level != p.stack_level]
        if len(kept) >= _MAX_PROFILES:
            raise ValueError("%s: at most %d stack levels; clear one first" % (kind, _MAX_PROFILES))
        kept.append(p)
        self._commit(kind, kept)

    def clear_profile(self, kind, stack_level=None):
        """Remove a kind's profile at stack_level, or all of the kind's profiles."""
        if kind not in self._profiles:
            raise ValueError("profile kind must be station_max or tx_default (got %r)" % (kind,))
        self._commit(kind, [q for q in self._profiles[kind]
                            if stack_level is not None and q.stack_level != stack_level])

    def schedule_a(self, now, session_start=None):
        """The schedule's limit now (minimum over kinds), or None when no profile applies."""
        limit = None
        for kind in KINDS:
            base = session_start if kind == "tx_default" else None
            if kind == "tx_default" and base is None:
                continue
            level = -1
            got = None
            for p in self._profiles[kind]:
                if p.stack_level > level:
                    lim = p.limit_at(now, p.start if base is None else base)
                    if lim is not None:
                        level, got = p.stack_level, lim
            if got is not None and (limit is None or got < limit):
                limit = got
        return limit

    def thermal_a(self, temp_c):
        """The thermal ladder's limit after this reading, or None at full current."""
        if self._thermal is None:
            return None
        t1, t2, reduced, hyst = self._thermal
        step = self.thermal_step
        if temp_c is not None:
            if step == 2 and temp_c < t2 - hyst:
                step = 1
            if step == 1 and temp_c < t1 - hyst:
                step = 0
            if temp_c >= t2:
                step = 2
            elif temp_c >= t1 and step == 0:
                step = 1
            self.thermal_step = step
        return None if step == 0 else reduced if step == 1 else 0

    def offer_a(self, now, session_start=None, card_max_a=None, temp_c=None):
        """Amps to offer now (0 = do not offer); sets `reason` to the binding limit."""
        amps, reason = self.board_max_a, "board"
        if self.cable_max_a is not None and self.cable_max_a < amps:
            amps, reason = self.cable_max_a, "cable"
        if card_max_a is not None and card_max_a < amps:
            amps, reason = card_max_a, "card"
        lim = self.thermal_a(temp_c)
        if lim is not None and lim < amps:
            amps, reason = lim, "thermal"
        lim = self.schedule_a(now, session_start)
        if lim is not None and lim < amps:
            amps, reason = lim, "schedule"
        self.reason = reason
        return amps if amps >= MIN_OFFER_A else 0


def from_settings(limits):
    """Limits from the board's limits record (firmware/core/settings.py): board, cable, thermal."""
    t = limits.thermal
    return Limits(limits.max_current_a, limits.cable_max_a, (t.t1_c, t.t2_c, t.reduced_a, t.hyst_c), BASE)
