"""Running revenue and usage totals per local day and month, kept on flash (bounded).

A session counts on the LOCAL date it ended. Rows hold sessions, energy (Wh) and revenue
excl./incl. VAT in minor units, per currency; the last 31 days and 13 months are kept.
Every add() rewrites the small file atomically (once per session, never per sample).

    rev = Revenue("data/revenue.json")
    rev.add((2026, 3, 2), 3650, 110, 132, "EUR"); stats = rev.snapshot()
"""
import json
import os

from micropython import const

from firmware.storage.state import errno_of, write_atomic

_SESSIONS = const(0)
_WH = const(1)
_EXCL = const(2)
_INCL = const(3)


def _row_out(key, row, label):
    period, _, currency = key.partition("/")
    return {label: period, "currency": currency, "sessions": row[_SESSIONS], "energy_wh": row[_WH],
            "excl_vat_minor": row[_EXCL], "incl_vat_minor": row[_INCL]}


def _valid(rows):
    if not isinstance(rows, dict):
        return False
    for k in rows:
        r = rows[k]
        if not isinstance(k, str) or "/" not in k or not isinstance(r, list) or len(r) != 4:
            return False
        for v in r:
            if isinstance(v, bool) or not isinstance(v, int):
                return False
    return True


class Revenue:
    def __init__(self, path, days=31, months=13):
        self.path = path
        self.keep_days = days
        self.keep_months = months
        self.days = {}     # "YYYY-MM-DD/CUR" -> [sessions, energy_wh, excl_minor, incl_minor]
        self.months = {}   # "YYYY-MM/CUR" -> same
        self.last = None   # (date text, currency) of the latest add
        self.load_error = None
        self.error = 0     # errno of the last refused save (full flash), 0 after a good one; retry() saves
        try:
            with open(path) as f:
                saved = json.load(f)
            if not isinstance(saved, dict) or not _valid(saved.get("days")) \
                    or not _valid(saved.get("months")):
                raise ValueError("unexpected content")
            self.days, self.months = saved["days"], saved["months"]
            last = saved.get("last")
            if isinstance(last, list) and len(last) == 2:
                self.last = (last[0], last[1])
        except OSError:
            pass   # first boot
        except ValueError as e:
            # keep the damaged file for a human; start counting again rather than stop billing
            self.load_error = "revenue file unreadable (%s), kept as %s.bad" % (e, path)
            try:
                os.rename(path, path + ".bad")
            except OSError:
                pass

    def add(self, local_date, energy_wh, excl_minor, incl_minor, currency="EUR"):
        """Count one ended session on its local date (y, m, d) and save."""
        y, m, d = local_date[0], local_date[1], local_date[2]
        day = "%04d-%02d-%02d" % (y, m, d)
        for rows, key, keep in ((self.days, day + "/" + currency, self.keep_days),
                                (self.months, day[:7] + "/" + currency, self.keep_months)):
            row = rows.get(key)
            if row is None:
                row = rows[key] = [0, 0, 0, 0]
            row[_SESSIONS] += 1
            row[_WH] += energy_wh
            row[_EXCL] += excl_minor
            row[_INCL] += incl_minor
            self._prune(rows, keep)
        self.last = (day, currency)
        self.save()

    @staticmethod
    def _prune(rows, keep):
        """Keep the rows of the `keep` most recent periods (all currencies of a period together)."""
        periods = sorted(set(k.partition("/")[0] for k in rows))
        if len(periods) <= keep:
            return
        cut = periods[-keep]
        for k in [k for k in rows if k.partition("/")[0] < cut]:
            del rows[k]

    def save(self):
        """Write the totals; a full flash keeps them in RAM (error set) for retry(): never raises."""
        last = list(self.last) if self.last else None
        try:
            write_atomic(self.path, json.dumps({"v": 1, "last": last, "days": self.days,
                                                "months": self.months}))
        except OSError as e:
            self.error = errno_of(e)
            return False
        self.error = 0
        return True

    def retry(self):
        """Write totals a full flash refused earlier; True when flash holds them."""
        return self.save() if self.error else True

    def snapshot(self, local_date=None, currency=None):
        """The retained `stats` body: the day and month of `local_date` (default: the latest session)."""
        if local_date is not None:
            day = "%04d-%02d-%02d" % (local_date[0], local_date[1], local_date[2])
        elif self.last is not None:
            day = self.last[0]
        else:
            day = None
        if currency is None:
            currency = self.last[1] if self.last is not None else "EUR"
        month = day[:7] if day is not None else None
        return {"currency": currency, "day": self._pick(self.days, day, currency, "date"),
                "month": self._pick(self.months, month, currency, "month")}

    @staticmethod
    def _pick(rows, period, currency, label):
        if period is None:
            return None
        key = period + "/" + currency
        return _row_out(key, rows.get(key, [0, 0, 0, 0]), label)

    def history(self):
        """Every retained row, oldest first: {"days": [...], "months": [...]}."""
        return {"days": [_row_out(k, self.days[k], "date") for k in sorted(self.days)],
                "months": [_row_out(k, self.months[k], "month") for k in sorted(self.months)]}
