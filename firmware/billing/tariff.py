"""OCPI 2.2.1 tariffs priced on the charger, in exact integers (docs/tariffs.md has the rules).

A Tariff holds elements of price components (ENERGY per kWh, FLAT per session, TIME per hour
charging, PARKING_TIME per hour not charging) guarded by restrictions. A session is priced
from its charging periods: per period and per dimension the first element whose restrictions
hold is active; step_size rounds the session total of a dimension once, with the last active
component; min_price/max_price bound the totals. Prices and VAT are decimal strings or ints
(a float means precision was already lost: refused). Units inside: mWh, seconds, and money as
exact fractions of the currency; each reported amount is rounded ONCE at the end to the
currency's minor unit, half away from zero.

    t = Tariff(jsonx.loads(text))                     # ValueError names the bad field
    cost = t.price_cdr(periods, start_utc, end_utc, LocalTime(60, "EU"))
    cost["total_incl_vat_minor"], cost["energy"]["excl_vat_minor"]
"""
from micropython import const

from firmware.billing.fixed import round_div
from firmware.billing.localtime import weekday
from firmware.core.timefmt import civil, days_from_civil, parse_iso

PRICE_PLACES = 6   # prices in millionths of the currency unit (per kWh, per hour, per session)
VAT_PLACES = 2     # VAT in hundredths of a percent
_VAT_ONE = const(10000)   # 100 % in VAT units

ENERGY = const(0)
TIME = const(1)
PARKING = const(2)
FLAT = const(3)
DIMENSIONS = ("ENERGY", "TIME", "PARKING_TIME", "FLAT")
_COST_KEYS = ("energy", "time", "parking", "fixed")

# Money is summed in units of 1/_DEN of the currency: the common denominator of
# µunit/kWh × mWh (1e-12), µunit/h × s (1e-6 / 3600) and µunit (1e-6).
_DEN = 3600 * 10 ** 12
_MUL = (3600, 10 ** 6, 10 ** 6, 3600 * 10 ** 6)   # per dimension: price × volume → 1/_DEN units
_FLAT_VOLUME = const(1)

MINOR_DIGITS = {"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
          "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
          "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0}
_DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
_MAX_NUMBER = const(32)   # characters in a decimal: longer is not a price, it is an attack

# Restriction slots (a list per element, None = absent)
_START_T = const(0)   # local second of day
_END_T = const(1)
_START_D = const(2)   # local days since 1970-01-01
_END_D = const(3)
_DOW = const(4)       # bit mask, bit 0 = Monday
_MIN_E = const(5)     # mWh
_MAX_E = const(6)
_MIN_I = const(7)     # mA
_MAX_I = const(8)
_MIN_P = const(9)     # W
_MAX_P = const(10)
_MIN_DUR = const(11)  # s
_MAX_DUR = const(12)
_SLOTS = const(13)
_DECIMAL_RESTRICTIONS = (("min_kwh", _MIN_E, 6), ("max_kwh", _MAX_E, 6),
                         ("min_current", _MIN_I, 3), ("max_current", _MAX_I, 3),
                         ("min_power", _MIN_P, 3), ("max_power", _MAX_P, 3))

# Charging-period rows, the engine's input: [start_utc, energy_mwh, charging_s, parking_s,
# min_current_ma, max_current_ma, min_power_w, max_power_w] (the last four may be None).
_CDR_DIMS = {"ENERGY": (1, 6), "TIME": (2, -1), "PARKING_TIME": (3, -1), "MIN_CURRENT": (4, 3),
             "MAX_CURRENT": (5, 3), "MIN_POWER": (6, 3), "MAX_POWER": (7, 3)}


def decimal(value, where):
    """A decimal string or int → (n, places) with value == n / 10**places, exactly; floats refused."""
    if isinstance(value, bool):
        raise ValueError("%s: %r is not a number" % (where, value))
    if isinstance(value, int):
        return value, 0
    if isinstance(value, float):
        raise ValueError("%s: %r is a float, so its exact value is lost; send it as a decimal "
                         "string or parse the JSON with firmware.core.jsonx" % (where, value))
    if not isinstance(value, str) or len(value) > _MAX_NUMBER:
        raise ValueError("%s: %r is not a decimal number" % (where, value))
    s = value
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    whole, _, frac = s.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or (not frac and s.endswith(".")):
        raise ValueError("%s: %r is not a decimal number" % (where, value))
    n = int(whole + frac)
    return (-n if neg else n), len(frac)


def scaled(value, places, where, exact=True):
    """A decimal → int in units of 10**-places; more decimals are an error, or rounded if not exact."""
    n, p = decimal(value, where)
    if p <= places:
        return n * 10 ** (places - p)
    if exact:
        raise ValueError("%s: %r has more than %d decimals" % (where, value, places))
    return round_div(n, 10 ** (p - places))


def _non_negative(value, places, where):
    n = scaled(value, places, where)
    if n < 0:
        raise ValueError("%s: %r must not be negative" % (where, value))
    return n


def _hhmm(value, where):
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":" \
            or not (value[:2] + value[3:]).isdigit() or int(value[:2]) > 23 or int(value[3:]) > 59:
        raise ValueError("%s: %s is not HH:MM" % (where, _show(value)))
    return int(value[:2]) * 3600 + int(value[3:]) * 60


def _date(value, where):
    days = None
    if isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-" \
            and (value[:4] + value[5:7] + value[8:]).isdigit():
        ymd = (int(value[:4]), int(value[5:7]), int(value[8:]))
        if 1 <= ymd[1] <= 12 and 1 <= ymd[2] <= 31:
            days = days_from_civil(*ymd)
            if civil(days) != ymd:   # 2026-02-30 and friends
                days = None
    if days is None:
        raise ValueError("%s: %s is not a date YYYY-MM-DD" % (where, _show(value)))
    return days


def _show(value):
    return '"%s"' % value if isinstance(value, str) else repr(value)


def _seconds(value, where):
    n = scaled(value, 0, where)
    if n < 0:
        raise ValueError("%s: %r must not be negative" % (where, value))
    return n


def _restrictions(obj, where):
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ValueError("%s must be an object" % where)
    r = [None] * _SLOTS
    for key in obj:
        w = where + "." + key
        v = obj[key]
        if v is None:
            continue
        if key == "start_time":
            r[_START_T] = _hhmm(v, w)
        elif key == "end_time":
            r[_END_T] = _hhmm(v, w)
        elif key == "start_date":
            r[_START_D] = _date(v, w)
        elif key == "end_date":
            r[_END_D] = _date(v, w)
        elif key == "day_of_week":
            if not isinstance(v, list):
                raise ValueError("%s must be a list of days like [\"MONDAY\"]" % w)
            mask = 0
            for i, day in enumerate(v):
                if day not in _DAYS:
                    raise ValueError("%s[%d]: %s is not a day (MONDAY … SUNDAY)" % (w, i, _show(day)))
                mask |= 1 << _DAYS.index(day)
            r[_DOW] = mask if v else None
        elif key == "min_duration":
            r[_MIN_DUR] = _seconds(v, w)
        elif key == "max_duration":
            r[_MAX_DUR] = _seconds(v, w)
        elif key == "reservation":
            raise ValueError("%s: reservation tariffs are not supported by this charger" % w)
        else:
            for name, slot, places in _DECIMAL_RESTRICTIONS:
                if key == name:
                    r[slot] = _non_negative(v, places, w)
                    break
            else:
                raise ValueError("%s: unknown restriction" % w)
    return r if r != [None] * _SLOTS else None


def _component(obj, where):
    if not isinstance(obj, dict):
        raise ValueError("%s must be an object" % where)
    for key in obj:
        if key not in ("type", "price", "vat", "step_size"):
            raise ValueError("%s.%s: unknown field" % (where, key))
    kind = obj.get("type")
    if kind not in DIMENSIONS:
        raise ValueError("%s.type: %s is not ENERGY, FLAT, TIME or PARKING_TIME" % (where, _show(kind)))
    if "price" not in obj:
        raise ValueError("%s.price is missing" % where)
    price = _non_negative(obj["price"], PRICE_PLACES, where + ".price")
    vat = obj.get("vat")
    vat = 0 if vat is None else _non_negative(vat, VAT_PLACES, where + ".vat")
    if vat > _VAT_ONE:
        raise ValueError("%s.vat: %r is above 100 %%" % (where, obj["vat"]))
    step = obj.get("step_size", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError("%s.step_size: %r must be a whole number >= 0" % (where, step))
    return DIMENSIONS.index(kind), (price, vat, step)


def _price_bound(obj, where):
    """An OCPI Price object → [excl, incl or None] in 1/_DEN (incl: 1/(_DEN·_VAT_ONE)) units."""
    if obj is None:
        return None
    if not isinstance(obj, dict) or "excl_vat" not in obj:
        raise ValueError("%s must be a Price object {\"excl_vat\": …, \"incl_vat\": …}" % where)
    unit = _MUL[FLAT]
    excl = _non_negative(obj["excl_vat"], PRICE_PLACES, where + ".excl_vat") * unit
    incl = obj.get("incl_vat")
    if incl is not None:
        incl = _non_negative(incl, PRICE_PLACES, where + ".incl_vat") * unit * _VAT_ONE
    return [excl, incl]


def _display_texts(value, where):
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("%s must be a list of {\"language\", \"text\"}" % where)
    for i, t in enumerate(value):
        if not isinstance(t, dict) or not isinstance(t.get("language"), str) \
                or not isinstance(t.get("text"), str):
            raise ValueError("%s[%d] must be {\"language\": \"en\", \"text\": \"…\"}" % (where, i))
    return value


def flat(price_per_kwh, currency="EUR", vat="0", tariff_id="flat"):
    """The OCPI object of a single flat per-kWh tariff."""
    return {"id": tariff_id, "currency": currency, "elements": [{"price_components": [
        {"type": "ENERGY", "price": price_per_kwh, "vat": vat, "step_size": 1}]}]}


def _sorted_tuple(values):
    out = sorted(set(values))
    return tuple(out)


class Tariff:
    def __init__(self, obj):
        if not isinstance(obj, dict):
            raise ValueError("tariff must be an OCPI Tariff object")
        self.id = obj.get("id")
        self.currency = obj.get("currency")
        if not isinstance(self.id, str) or not self.id or len(self.id) > 36:
            raise ValueError("tariff.id must be a string of 1..36 characters")
        if not isinstance(self.currency, str) or len(self.currency) != 3 or not self.currency.isalpha() \
                or self.currency.upper() != self.currency:
            raise ValueError("tariff.currency must be an ISO 4217 code like \"EUR\" (got %s)"
                             % _show(self.currency))
        self.minor_digits = MINOR_DIGITS.get(self.currency, 2)
        self.alt_text = _display_texts(obj.get("tariff_alt_text"), "tariff.tariff_alt_text")
        self.min_price = _price_bound(obj.get("min_price"), "tariff.min_price")
        self.max_price = _price_bound(obj.get("max_price"), "tariff.max_price")
        if self.min_price and self.max_price and self.min_price[0] > self.max_price[0]:
            raise ValueError("tariff.min_price.excl_vat is above tariff.max_price.excl_vat")
        elements = obj.get("elements")
        if not isinstance(elements, list) or not elements:
            raise ValueError("tariff.elements must be a non-empty list")
        self.elements = []   # [(components by dimension: list of 4, restrictions or None)]
        for i, el in enumerate(elements):
            where = "tariff.elements[%d]" % i
            if not isinstance(el, dict):
                raise ValueError("%s must be an object" % where)
            for key in el:
                if key not in ("price_components", "restrictions"):
                    raise ValueError("%s.%s: unknown field (an element has price_components and "
                                     "restrictions)" % (where, key))
            comps = el.get("price_components")
            if not isinstance(comps, list) or not comps:
                raise ValueError("%s.price_components must be a non-empty list" % where)
            by_dim = [None, None, None, None]
            for j, c in enumerate(comps):
                dim, comp = _component(c, "%s.price_components[%d]" % (where, j))
                if by_dim[dim] is None:   # a second one of the same type can never be active
                    by_dim[dim] = comp
            self.elements.append((by_dim, _restrictions(el.get("restrictions"), where + ".restrictions")))
        self._boundaries()

    def _boundaries(self):
        """Where a restriction can switch: the period builder starts a new period there."""
        clock, dur, energy, current, power = [], [], [], [], []
        for _, r in self.elements:
            if r is None:
                continue
            st, et = r[_START_T], r[_END_T]
            for t in (st, et):
                if t is not None:
                    clock.append(t // 60)
            # a window open at one end, or a calendar restriction, also changes at midnight
            if (st is None) != (et is None) or r[_START_D] is not None or r[_END_D] is not None \
                    or r[_DOW] is not None:
                clock.append(0)
            for slot, out in ((_MIN_DUR, dur), (_MAX_DUR, dur), (_MIN_I, current), (_MAX_I, current),
                              (_MIN_P, power), (_MAX_P, power)):
                if r[slot] is not None:
                    out.append(r[slot])
            for slot in (_MIN_E, _MAX_E):
                if r[slot] is not None:
                    energy.append(-(-r[slot] // 1000))   # mWh → whole Wh, rounded up
        self.clock_minutes = _sorted_tuple(clock)
        self.durations_s = _sorted_tuple(dur)
        self.energy_wh = _sorted_tuple(energy)
        self.current_ma = _sorted_tuple(current)
        self.power_w = _sorted_tuple(power)

    # -- pricing -----------------------------------------------------------------------------
    def price(self, energy_wh, start_utc=0, seconds=0, tz=None):
        """Cost of a session given as ONE charging period (no metering detail): a convenience."""
        return self.cost([[start_utc, energy_wh * 1000, seconds, 0, None, None, None, None]], start_utc, tz)

    def price_cdr(self, charging_periods, start_utc, end_utc=None, tz=None, where="cdr.charging_periods"):
        """Cost of OCPI charging_periods (the firmware's own, or a CDR's): see cost()."""
        return self.cost(periods_from_cdr(charging_periods, start_utc, end_utc, where), start_utc, tz)

    def cost(self, rows, start_utc, tz=None):
        """Price period rows (see _CDR_DIMS) of a session that started at `start_utc`.

        Returns integers in the currency's minor unit: {"currency", "total_excl_vat_minor",
        "total_incl_vat_minor", "energy"|"time"|"parking"|"fixed": {"excl_vat_minor",
        "incl_vat_minor"}, "price_limit": None | "min_price" | "max_price"}.
        """
        excl = [0, 0, 0, 0]
        incl = [0, 0, 0, 0]
        total = [0, 0, 0]       # volume priced per dimension: mWh, s, s
        last = [None, None, None]
        flat_row = rows[0] if rows else [start_utc, 0, 0, 0, None, None, None, None]
        e_before = 0
        for row in rows:
            ctx = self._context(row, start_utc, e_before, tz)
            matched = [None] * len(self.elements)
            for dim in (ENERGY, TIME, PARKING):
                vol = row[dim + 1]
                if vol <= 0:
                    continue
                comp = self._active(dim, ctx, matched)
                if comp is None:
                    continue          # no element prices this dimension now: free
                self._add(excl, incl, dim, comp, vol)
                total[dim] += vol
                last[dim] = comp
            e_before += row[1]
        comp = self._active(FLAT, self._context(flat_row, start_utc, 0, tz), [None] * len(self.elements))
        if comp is not None:
            self._add(excl, incl, FLAT, comp, _FLAT_VOLUME)
        # step_size: once per session on a dimension's total, with its last active component;
        # TIME and PARKING_TIME together are rounded once: on parking when the session had any.
        self._step(excl, incl, ENERGY, last[ENERGY], total[ENERGY], 1000)
        if last[PARKING] is not None:
            self._step(excl, incl, PARKING, last[PARKING], total[PARKING], 1)
        else:
            self._step(excl, incl, TIME, last[TIME], total[TIME], 1)
        return self._result(excl, incl)

    def _context(self, row, start_utc, e_before, tz):
        t = row[0]
        if tz is None:
            days, sod = divmod(t, 86400)
        else:
            days, sod = tz.day_second(t)
        return (sod, days, weekday(days), e_before, t - start_utc, row[4], row[5], row[6], row[7])

    def _active(self, dim, ctx, matched):
        """The component of the first element pricing `dim` whose restrictions hold in ctx."""
        for i, (by_dim, r) in enumerate(self.elements):
            comp = by_dim[dim]
            if comp is None:
                continue
            ok = matched[i]
            if ok is None:
                ok = matched[i] = _holds(r, ctx)
            if ok:
                return comp
        return None

    @staticmethod
    def _add(excl, incl, dim, comp, volume):
        amount = comp[0] * volume * _MUL[dim]
        excl[dim] += amount
        incl[dim] += amount * (_VAT_ONE + comp[1])

    def _step(self, excl, incl, dim, comp, volume, unit):
        if comp is None or comp[2] <= 1 and unit == 1 or comp[2] == 0:
            return
        step = comp[2] * unit
        extra = -(-volume // step) * step - volume
        if extra:
            self._add(excl, incl, dim, comp, extra)

    def _result(self, excl, incl):
        div = _DEN // 10 ** self.minor_digits
        out = {"currency": self.currency}
        limit = None
        tx, ti = sum(excl), sum(incl)
        lo, hi = self.min_price, self.max_price
        if lo is not None:
            if tx < lo[0]:
                tx, limit = lo[0], "min_price"
            if lo[1] is not None and ti < lo[1]:
                ti, limit = lo[1], "min_price"
        if hi is not None:
            if tx > hi[0]:
                tx, limit = hi[0], "max_price"
            if hi[1] is not None and ti > hi[1]:
                ti, limit = hi[1], "max_price"
        out["total_excl_vat_minor"] = round_div(tx, div)
        out["total_incl_vat_minor"] = round_div(ti, div * _VAT_ONE)
        for dim in (ENERGY, TIME, PARKING, FLAT):
            out[_COST_KEYS[dim]] = {"excl_vat_minor": round_div(excl[dim], div),
                                    "incl_vat_minor": round_div(incl[dim], div * _VAT_ONE)}
        out["price_limit"] = limit
        return out


def _holds(r, ctx):
    """Do all restrictions `r` hold at the start of a period described by ctx?"""
    if r is None:
        return True
    sod, days, wd, energy, duration, min_ma, max_ma, min_w, max_w = ctx
    st, et = r[_START_T], r[_END_T]
    if st is not None and et is not None:
        if st < et and not st <= sod < et or st > et and not (sod >= st or sod < et):
            return False
    elif st is not None and sod < st or et is not None and sod >= et:
        return False
    if r[_START_D] is not None and days < r[_START_D] or r[_END_D] is not None and days >= r[_END_D]:
        return False
    if r[_DOW] is not None and not r[_DOW] & (1 << wd):
        return False
    if r[_MIN_E] is not None and energy < r[_MIN_E] or r[_MAX_E] is not None and energy >= r[_MAX_E]:
        return False
    if r[_MIN_DUR] is not None and duration < r[_MIN_DUR] \
            or r[_MAX_DUR] is not None and duration >= r[_MAX_DUR]:
        return False
    return _within(r[_MIN_I], r[_MAX_I], min_ma, max_ma) and _within(r[_MIN_P], r[_MAX_P], min_w, max_w)


def _within(lo, hi, low_reading, high_reading):
    """min_X holds when the period's lowest reading is >= it, max_X when its highest is < it."""
    if lo is not None:
        v = low_reading if low_reading is not None else high_reading
        if v is None or v < lo:
            return False
    if hi is not None:
        v = high_reading if high_reading is not None else low_reading
        if v is None or v >= hi:
            return False
    return True


def periods_from_cdr(periods, start_utc, end_utc=None, where="cdr.charging_periods"):
    """OCPI charging_periods → engine rows; volumes exact (hours rounded to the second)."""
    if not isinstance(periods, list) or not periods:
        raise ValueError("%s must be a non-empty list" % where)
    rows = []
    prev = start_utc
    for i, p in enumerate(periods):
        w = "%s[%d]" % (where, i)
        if not isinstance(p, dict):
            raise ValueError("%s must be an object" % w)
        try:
            t = parse_iso(p.get("start_date_time"))
        except ValueError as e:
            raise ValueError("%s.start_date_time: %s" % (w, e))
        if t < prev or end_utc is not None and t > end_utc:
            raise ValueError("%s.start_date_time: %s is outside the session or before the previous "
                             "period" % (w, p.get("start_date_time")))
        prev = t
        row = [t, 0, 0, 0, None, None, None, None]
        dims = p.get("dimensions")
        if not isinstance(dims, list):
            raise ValueError("%s.dimensions must be a list" % w)
        seen = []
        for j, d in enumerate(dims):
            wd = "%s.dimensions[%d]" % (w, j)
            kind = d.get("type") if isinstance(d, dict) else None
            if kind not in _CDR_DIMS:
                if kind == "RESERVATION_TIME":
                    raise ValueError("%s: reservations are not supported" % wd)
                raise ValueError("%s.type: %s is not a CDR dimension type" % (wd, _show(kind)))
            if kind in seen:
                raise ValueError("%s: a second %s dimension in the same period" % (wd, kind))
            seen.append(kind)
            slot, places = _CDR_DIMS[kind]
            if "volume" not in d:
                raise ValueError("%s.volume is missing" % wd)
            if places < 0:   # hours → whole seconds, half away from zero
                n, p10 = decimal(d["volume"], wd + ".volume")
                v = round_div(n * 3600, 10 ** p10)
            else:
                v = scaled(d["volume"], places, wd + ".volume", exact=False)
            if v < 0:
                raise ValueError("%s.volume: %r must not be negative" % (wd, d["volume"]))
            row[slot] = v
        rows.append(row)
    return rows
