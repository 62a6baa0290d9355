"""Reports over the backend's store: sessions, revenue, utilization, maintenance, feedback, exports.

Reads the store written by tools/backend.py (SQLite file or PostgreSQL URL, same code) and
writes CSV and text tables, PNG plots, OCPI 2.2.1 CDRs and one self-contained HTML page
(report.html) into DIR. Every time shown is in the site's zone (--tz). Money and energy are
summed as integers (minor units, Wh); only the plots use floats.

    python3 tools/report.py --db out/backend.sqlite --out out/report --from 2026-03-01 --to 2026-03-31
    figures = build_report("out/backend.sqlite", "out/report")   # figures["energy_wh"], ...

A record the report cannot use (unreadable JSON, missing fields) is skipped and listed in the
"Data quality" section and in skipped.txt; the rest of the report still renders.
"""
import argparse
import base64
import collections
import csv
import datetime
import html
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.dirname(os.path.abspath(__file__)), os.path.join(ROOT, "tools", "compat"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from packages import require  # noqa: E402

require("matplotlib")
from firmware.billing.fixed import round_div, text  # noqa: E402
from reportlib import charts, exports  # noqa: E402
from reportlib.labels import load_labels  # noqa: E402
from reportlib.sitetime import local, local_iso, local_text, site_zone, tariff_clock  # noqa: E402
from store import DECIMALS, Store, money  # noqa: E402

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SESSION_COLS = ("device", "ep", "tx_id", "token", "auth", "started_s", "ended_s", "energy_wh", "currency",
                "total_excl_minor", "total_incl_minor", "parking_s", "parking_excl_minor", "parking_incl_minor",
                "offline", "final", "stop_reason", "tariff_id", "meter_start_wh", "meter_stop_wh", "record")
RECORD_KEEP = ("uncertain_wh", "recovered_wh", "profile", "charging_periods")   # kept from an ended record
HTML_ROWS = 400      # rows of one table shown in the page; the CSV files hold all of them
SKIPPED_SHOWN = 200
CURVES = 50          # power-curve plots per report (the latest sessions)
HOUR_BINS = 1        # a report of this many days plots hours
DAY_BINS = 92        # ... up to this many days plots days, longer ones ISO weeks


def kwh(wh):
    """Whole Wh as kWh text with three decimals: kwh(1840) == "1.840"."""
    return text(int(wh), 3)


def per_kwh(total_minor, energy_wh, currency):
    """Average price per kWh as exact decimal text (two digits finer than the minor unit)."""
    if not energy_wh:
        return ""
    d = DECIMALS.get(currency, 2)
    return text(round_div(total_minor * 1000 * 100, energy_wh), d + 2)


def hms(seconds):
    seconds = int(seconds)
    return "%d:%02d" % (seconds // 3600, seconds // 60 % 60)


def short(stamp):
    """A local ISO 8601 time as the page shows it: "2026-03-02 08:55" (the zone is named once)."""
    return stamp[:16].replace("T", " ") if stamp else ""


def _grid():
    return [[0] * 24 for _ in range(7)]


def _record(text_, name, skip):
    """The parsed record, or {} (and a data-quality line) when it is unreadable."""
    if text_ is None:
        return {}
    try:
        rec = json.loads(text_)
    except ValueError:
        skip("%s: record JSON unreadable, used the stored columns" % name)
        return {}
    return rec if isinstance(rec, dict) else {}


class Report:
    """Collects figures from the store, then writes the files."""

    def __init__(self, store, tz, date_from, date_to, driver, contactor_life, progress_every, out, labels=None,
                 keep_periods=False, curves=CURVES):
        self.st = store
        self.tz = tz
        self.zone = site_zone(tz)
        self.date_from = date_from
        self.date_to = date_to
        self.driver = driver.lower() if driver else None
        self.life = contactor_life
        self.progress_every = progress_every
        self.out = out
        self.labels = labels or {}
        self.keep_periods = keep_periods      # charging_periods are kept only to build CDRs
        self.curve_limit = curves             # profiles are kept only for the latest sessions plotted
        self._profiled = collections.deque()
        self.skipped = []
        self.sessions = []
        self.open_sessions = 0

    def local(self, t):
        return local(t, self.zone)

    def stamp(self, ts_s, ts):
        """A stored time in the site's zone (ISO 8601 with offset); the raw text if it had no readable time."""
        return ts if ts_s is None else local_iso(ts_s, self.zone)

    def label(self, token):
        return self.labels.get((token or "").lower())

    def skip(self, what):
        self.skipped.append(what)

    def _in_range(self, t):
        d = self.local(t).date()
        return (self.date_from is None or d >= self.date_from) and (self.date_to is None or d <= self.date_to)

    # --- reading ---------------------------------------------------------------------------

    def read_sessions(self):
        n = 0
        sql = "SELECT %s FROM sessions ORDER BY started_s, device, ep, tx_id" % ", ".join(SESSION_COLS)
        for row in self.st.iterate(sql):
            n += 1
            if self.progress_every and n % self.progress_every == 0:
                self.out("report: %d sessions read" % n)
            s = dict(zip(SESSION_COLS, row))
            name = "session %s tx %s" % (s["device"], s["tx_id"])
            rec = _record(s.pop("record"), name, self.skip)
            s["rec"] = {k: rec[k] for k in RECORD_KEEP if k in rec and (k != "charging_periods" or self.keep_periods)}
            if self.driver and (s["token"] or "").lower() != self.driver:
                continue
            if not s["final"]:
                if s["started_s"] is None or self._in_range(s["started_s"]):
                    self.open_sessions += 1
                continue
            missing = [c for c in ("started_s", "ended_s", "energy_wh", "currency", "total_excl_minor",
                                   "total_incl_minor") if s[c] is None]
            if missing:
                self.skip("%s: skipped, missing %s" % (name, ", ".join(missing)))
                continue
            if s["ended_s"] < s["started_s"] or s["energy_wh"] < 0:
                self.skip("%s: skipped, ends before it starts or has negative energy" % name)
                continue
            if self._in_range(s["started_s"]):
                self.sessions.append(s)
                if "profile" in s["rec"]:
                    self._profiled.append(s)
                    if len(self._profiled) > self.curve_limit:
                        del self._profiled.popleft()["rec"]["profile"]     # bounded memory on a big store
        if self.progress_every and n >= self.progress_every and n % self.progress_every:
            self.out("report: %d sessions read in all" % n)

    def read_faults(self):
        """Fault events and notices (`event` notice: not a station fault, named by `info`)."""
        rows = self.st.query("SELECT device, msg_id, event, code, ts_s, ts, latched, tx_id, detail, record "
                             "FROM faults ORDER BY device, ts_s, msg_id")
        faults = []
        for device, msg_id, event, code, ts_s, ts, latched, tx_id, detail, record in rows:
            name = "fault %s %s" % (device, msg_id)
            rec = _record(record, name, self.skip)
            info = rec.get("info") if isinstance(rec.get("info"), str) else None
            if event == "notice":
                if not info:
                    self.skip("%s: skipped, a notice without info" % name)
                    continue
            elif not code or event not in ("raised", "cleared"):
                self.skip("%s: skipped, no code or event" % name)
                continue
            if ts_s is not None and not self._in_range(ts_s):
                continue
            faults.append({"station": device, "msg_id": msg_id, "event": event, "code": code, "info": info,
                           "ts_s": ts_s, "ts": self.stamp(ts_s, ts), "latched": bool(latched), "tx_id": tx_id,
                           "detail": detail})
        return faults

    def read_contactors(self):
        """Per station: first and latest stats with contactor_cycles (the latest counts)."""
        seen = {}
        unusable = {}
        for device, ts_s, ts, cycles in self.st.iterate(
                "SELECT device, ts_s, ts, contactor_cycles FROM stats ORDER BY device, ts_s"):
            if cycles is None or ts_s is None:
                unusable[device] = unusable.get(device, 0) + 1
                continue
            first, _ = seen.get(device, ((ts_s, cycles), None))
            seen[device] = (first, (ts_s, cycles, ts))
        for device, n in sorted(unusable.items()):
            self.skip("stats %s: %d records without contactor_cycles or time, not used for wear" % (device, n))
        result = {}
        for device, ((t0, c0), (t1, c1, ts)) in sorted(seen.items()):
            c = {"cycles": c1, "rated": self.life, "wear_permille": round_div(c1 * 1000, self.life),
                 "remaining": max(self.life - c1, 0), "stats_ts": self.stamp(t1, ts), "cycles_per_day": None,
                 "days_left": None}
            if t1 - t0 >= 86400 and c1 > c0:
                c["cycles_per_day"] = round_div((c1 - c0) * 86400, t1 - t0)
                c["days_left"] = round_div(c["remaining"] * (t1 - t0), c1 - c0) // 86400
            result[device] = c
        return result

    def read_feedback(self, starts):
        rows = self.st.query("SELECT device, ep, msg_id, ts, ts_s, tx_id, token, source, text, record FROM feedback "
                             "ORDER BY ts_s, device, ep, msg_id")
        items = []
        for device, ep, msg_id, ts, ts_s, tx_id, token, source, txt, record in rows:
            _record(record, "feedback %s %s" % (device, msg_id), self.skip)
            if self.driver and (token or "").lower() != self.driver:
                continue
            if ts_s is not None and not self._in_range(ts_s):
                continue
            items.append({"station": device, "msg_id": msg_id, "ts": self.stamp(ts_s, ts), "tx_id": tx_id,
                          "token": token, "label": self.label(token), "source": source, "text": txt,
                          "session_start": starts.get((device, ep, tx_id))})
        return items

    # --- figures ---------------------------------------------------------------------------

    def figures(self):
        f = {"sessions": 0, "energy_wh": 0, "open_sessions": self.open_sessions, "revenue": {}, "stations": {},
             "periods": {}, "drivers": {}, "daily": {}, "occupancy_s": _grid(), "stop_reasons": {},
             "power_loss": [], "uncertain_wh": 0, "labels": {}}
        periods = {"day": {}, "week": {}, "month": {}}
        station_occ = {}
        for s in self.sessions:
            cur = s["currency"]
            money_part = {"excl_minor": s["total_excl_minor"], "incl_minor": s["total_incl_minor"],
                          "parking_excl_minor": s["parking_excl_minor"] or 0,
                          "parking_incl_minor": s["parking_incl_minor"] or 0}
            f["sessions"] += 1
            f["energy_wh"] += s["energy_wh"]
            _add(f["revenue"].setdefault(cur, {}), money_part)
            st = f["stations"].setdefault(s["device"], {"sessions": 0, "energy_wh": 0, "parking_s": 0, "revenue": {},
                                                        "stop_reasons": {}, "power_loss": 0, "uncertain_wh": 0})
            st["sessions"] += 1
            st["energy_wh"] += s["energy_wh"]
            st["parking_s"] += s["parking_s"] or 0
            _add(st["revenue"].setdefault(cur, {}), money_part)
            reason = s["stop_reason"] or "unknown"
            _add(f["stop_reasons"].setdefault(reason, {}), {"sessions": 1, "energy_wh": s["energy_wh"]})
            st["stop_reasons"][reason] = st["stop_reasons"].get(reason, 0) + 1
            start = self.local(s["started_s"])
            end = self.local(s["ended_s"])
            uncertain = s["rec"].get("uncertain_wh")
            uncertain = uncertain if isinstance(uncertain, int) and uncertain > 0 else 0
            if reason == "PowerLoss" or uncertain:
                recovered = s["rec"].get("recovered_wh")
                st["power_loss"] += reason == "PowerLoss"
                st["uncertain_wh"] += uncertain
                f["uncertain_wh"] += uncertain
                f["power_loss"].append({"station": s["device"], "tx_id": s["tx_id"], "stop_reason": reason,
                                        "start": local_iso(s["started_s"], self.zone),
                                        "end": local_iso(s["ended_s"], self.zone), "energy_wh": s["energy_wh"],
                                        "uncertain_wh": uncertain,
                                        "recovered_wh": recovered if isinstance(recovered, int) else None,
                                        "token": s["token"], "label": self.label(s["token"])})
            keys = {"day": start.date().isoformat(), "week": "%04d-W%02d" % start.isocalendar()[:2],
                    "month": start.strftime("%Y-%m")}
            for kind, period in keys.items():
                row = periods[kind].setdefault((period, s["device"], cur), {
                    "period": period, "station": s["device"], "currency": cur, "sessions": 0, "energy_wh": 0,
                    "excl_minor": 0, "incl_minor": 0, "parking_s": 0, "parking_excl_minor": 0,
                    "parking_incl_minor": 0})
                row["sessions"] += 1
                row["energy_wh"] += s["energy_wh"]
                row["parking_s"] += s["parking_s"] or 0
                _add(row, money_part)
            day = f["daily"].setdefault(keys["day"], {"sessions": 0, "energy_wh": 0})
            day["sessions"] += 1
            day["energy_wh"] += s["energy_wh"]
            if s["token"]:
                if self.label(s["token"]):
                    f["labels"][s["token"]] = self.label(s["token"])
                f["drivers"].setdefault(s["token"], []).append({
                    "station": s["device"], "tx_id": s["tx_id"], "date": start.date().isoformat(),
                    "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"),
                    "duration_s": s["ended_s"] - s["started_s"], "energy_wh": s["energy_wh"], "currency": cur,
                    "excl_minor": s["total_excl_minor"], "incl_minor": s["total_incl_minor"],
                    "stop_reason": reason, "uncertain_wh": uncertain})
            self._occupy(f["occupancy_s"], s["started_s"], s["ended_s"])
            self._occupy(station_occ.setdefault(s["device"], _grid()), s["started_s"], s["ended_s"])
        for kind, rows in periods.items():
            out = []
            for key in sorted(rows):
                row = rows[key]
                row["avg_excl_per_kwh"] = per_kwh(row["excl_minor"], row["energy_wh"], row["currency"])
                row["avg_incl_per_kwh"] = per_kwh(row["incl_minor"], row["energy_wh"], row["currency"])
                out.append(row)
            f["periods"][kind] = out
        days = self._weekdays_in_period()
        f["occupancy_permille"] = _permille(f["occupancy_s"], days, len(f["stations"]))
        f["station_occupancy_s"] = station_occ
        f["station_occupancy_permille"] = {dev: _permille(occ, days, 1) for dev, occ in station_occ.items()}
        f["timeline"] = self.timeline(f["stations"])
        return f

    def _occupy(self, occ, start, end):
        """Adds the seconds of [start, end) to the (local weekday, hour) cells they fall in."""
        t = start
        while t < end:
            loc = self.local(t)
            hour_start = int(loc.replace(minute=0, second=0, microsecond=0).timestamp())
            nxt = min(end, hour_start + 3600)
            occ[loc.weekday()][loc.hour] += nxt - t
            t = nxt

    def _span(self):
        """(first, last) local day of the report: the --from/--to days, else the sessions' own."""
        if not self.sessions:
            return self.date_from or self.date_to, self.date_to or self.date_from
        first = self.date_from or self.local(self.sessions[0]["started_s"]).date()
        last = self.date_to or max(self.local(s["started_s"]).date() for s in self.sessions)
        return first, last

    def _weekdays_in_period(self):
        """How many of each weekday the period has (Monday first); ends of sessions extend it."""
        days = [0] * 7
        if not self.sessions:
            return days
        first, last = self._span()
        if self.date_to is None:
            last = max(self.local(s["ended_s"]).date() for s in self.sessions)
        d = first
        while d <= last:
            days[d.weekday()] += 1
            d += datetime.timedelta(days=1)
        return days

    def timeline(self, stations):
        """Sessions and Wh per station in every bin of the period (hours, days or ISO weeks), zeros included."""
        first, last = self._span()
        if first is None:
            return {"unit": "day", "first": None, "bins": [], "stations": {}}
        span = (last - first).days + 1
        unit = "hour" if span <= HOUR_BINS else "day" if span <= DAY_BINS else "week"
        if unit == "hour":
            bins = ["%02d" % h for h in range(24)]
        else:
            bins = []
            d = first
            while d <= last:
                key = d.isoformat() if unit == "day" else "%04d-W%02d" % d.isocalendar()[:2]
                if not bins or bins[-1] != key:
                    bins.append(key)
                d += datetime.timedelta(days=1)
        index = {b: i for i, b in enumerate(bins)}
        rows = {dev: {"sessions": [0] * len(bins), "energy_wh": [0] * len(bins)} for dev in stations}
        for s in self.sessions:
            start = self.local(s["started_s"])
            key = ("%02d" % start.hour if unit == "hour" else start.date().isoformat() if unit == "day"
                   else "%04d-W%02d" % start.isocalendar()[:2])
            i = index[key]
            rows[s["device"]]["sessions"][i] += 1
            rows[s["device"]]["energy_wh"][i] += s["energy_wh"]
        return {"unit": unit, "first": first.isoformat(), "bins": bins, "stations": rows}

    def maintenance(self):
        faults = self.read_faults()
        by_code = {}
        readers = {}
        latched = []
        notices = {}
        for ft in faults:
            if ft["event"] == "notice":
                n = notices.setdefault(ft["info"], {}).setdefault(ft["station"], {"count": 0, "last": None})
                n["count"] += 1
                n["last"] = ft["ts"]
                continue
            if ft["event"] != "raised":
                continue
            by_code.setdefault(ft["code"], {}).setdefault(ft["station"], 0)
            by_code[ft["code"]][ft["station"]] += 1
            if ft["code"] == "ReaderFailure":
                readers[ft["station"]] = readers.get(ft["station"], 0) + 1
            if ft["latched"]:
                cleared = [c for c in faults if c["event"] == "cleared" and c["station"] == ft["station"]
                           and c["code"] == ft["code"] and (c["ts_s"] or 0) >= (ft["ts_s"] or 0)]
                latched.append({"station": ft["station"], "code": ft["code"], "ts": ft["ts"], "tx_id": ft["tx_id"],
                                "detail": ft["detail"], "cleared": cleared[0]["ts"] if cleared else None})
        gaps = self.st.query("SELECT COUNT(*), COUNT(resolved_s) FROM gaps")[0]
        return {"faults": by_code, "latched": latched, "reader_failures": readers, "notices": notices,
                "contactors": self.read_contactors(), "gaps": {"flagged": gaps[0], "closed": gaps[1]},
                "rejects": self.st.count("rejects"), "fault_list": faults,
                "reinitialised": [{"station": r["device"], "ep": r["ep"], "previous": r["previous"],
                                   "ts": self.stamp(r["first_s"], None)} for r in self.st.reinitialised()]}

    # --- exports ---------------------------------------------------------------------------

    def cdrs(self, tariffs, party, locations):
        """OCPI CDRs of the sessions priced with `tariffs`; a session that cannot be priced is named."""
        if not tariffs:
            return None
        years = set()
        for s in self.sessions:
            years.update((self.local(s["started_s"]).year, self.local(s["ended_s"]).year))
        clock = tariff_clock(self.zone, years)
        out = []
        for s in self.sessions:
            name = "session %s tx %s" % (s["device"], s["tx_id"])
            tariff = tariffs.get(s["tariff_id"])
            if tariff is None:
                self.skip("%s: no CDR, tariff %r is not among the --tariff files" % (name, s["tariff_id"]))
                continue
            try:
                c = exports.cdr(s, tariff, clock, party, locations.get(s["device"], {}))
            except ValueError as e:
                self.skip("%s: no CDR, %s" % (name, e))
                continue
            billed = (text(s["total_excl_minor"], DECIMALS.get(s["currency"], 2)),
                      text(s["total_incl_minor"], DECIMALS.get(s["currency"], 2)))
            if s["currency"] != c["currency"] or billed != (c["total_cost"]["excl_vat"], c["total_cost"]["incl_vat"]):
                self.skip("%s: the CDR prices %s %s incl. VAT, the charger billed %s" % (
                    name, c["currency"], c["total_cost"]["incl_vat"], money(s["total_incl_minor"], s["currency"])))
            out.append(c)
        return out

    def curves(self, limit):
        """Power-curve plots of the latest `limit` sessions that carry a profile: [(session, PNG bytes)]."""
        out = []
        for s in reversed(self.sessions):
            if len(out) >= limit:
                break
            prof = s["rec"].get("profile")
            if prof is None:
                continue
            name = "session %s tx %s" % (s["device"], s["tx_id"])
            if not _profile_ok(prof):
                self.skip("%s: profile unreadable, no power curve" % name)
                continue
            title = "%s tx %s, %s, %s kWh, %s, %s" % (
                s["device"], s["tx_id"], local_text(s["started_s"], self.zone), kwh(s["energy_wh"]),
                s["stop_reason"] or "?", _who(s["token"], self.label(s["token"])))
            out.append((s, charts.png(charts.curve_figure(prof, s["started_s"], self.zone, self.tz, title))))
        out.reverse()
        return out


def _profile_ok(p):
    if not isinstance(p, dict) or not isinstance(p.get("bucket_s"), int) or p["bucket_s"] <= 0:
        return False
    mean = p.get("mean_w")
    if not isinstance(mean, list) or not mean:
        return False
    for k in ("mean_w", "min_w", "max_w", "max_ma"):
        v = p.get(k)
        if v is not None and (not isinstance(v, list) or len(v) != len(mean)
                              or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
            return False
    return True


def _permille(occ, days, stations):
    """Occupied share of each (weekday, hour) of the period over `stations` stations, in per mille."""
    if not stations:
        return _grid()
    return [[round_div(occ[w][h] * 1000, days[w] * 3600 * stations) if days[w] else 0 for h in range(24)]
            for w in range(7)]


def _add(into, part):
    for k, v in part.items():
        into[k] = into.get(k, 0) + v


# --- output -------------------------------------------------------------------------------

def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _table(header, rows, limit=HTML_ROWS, note=""):
    if not rows:
        return "<p class=none>none</p>"
    body = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % html.escape(str(c)) for c in r) for r in rows[:limit])
    more = ("<p class=note>%d more rows%s</p>" % (len(rows) - limit, note)) if len(rows) > limit else ""
    return "<table><tr>%s</tr>%s</table>%s" % ("".join("<th>%s</th>" % html.escape(h) for h in header), body, more)


def _period_rows(rows):
    return [(r["period"], r["station"], r["sessions"], kwh(r["energy_wh"]), money(r["excl_minor"], r["currency"]),
             money(r["incl_minor"], r["currency"]), _per(r["avg_excl_per_kwh"], r["currency"]),
             _per(r["avg_incl_per_kwh"], r["currency"]), hms(r["parking_s"]),
             money(r["parking_incl_minor"], r["currency"])) for r in rows]


def _per(avg, currency):
    return "%s %s" % (currency, avg) if avg else ""


def _who(token, label):
    """A driver as the operator knows them: the label, else the start of the pseudonym."""
    if label:
        return label
    return (token[:12] + "…") if token and len(token) > 12 else (token or "")


PERIOD_HEADER = ("period", "station", "sessions", "energy kWh", "revenue excl. VAT", "revenue incl. VAT",
                 "avg excl./kWh", "avg incl./kWh", "parking h:mm", "parking incl. VAT")

CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}h1{font-size:1.5em}h2{margin-top:1.6em;
border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;
padding:2px 8px;font-size:.9em;text-align:right;white-space:nowrap}summary{cursor:pointer;margin:.6em 0}
th{background:#eee;white-space:normal}td:first-child,td:nth-child(2){text-align:left}
img{max-width:100%;display:block;margin:.5em 0}.note,.none{color:#666;font-size:.9em}.warn{color:#a40}"""


def write_files(rep, f, m, feedback, cdrs, curves, out_dir):
    """CSV, text, JSON, PNG and the HTML page; returns {name: path}."""
    os.makedirs(out_dir, exist_ok=True)
    files = {}

    def path(name):
        files[name] = os.path.join(out_dir, name)
        return files[name]

    drows = []
    for token in sorted(f["drivers"]):
        for r in f["drivers"][token]:
            drows.append((token, r["station"], r["tx_id"], r["date"], r["start"], r["end"], r["duration_s"],
                          r["energy_wh"], r["currency"], r["excl_minor"], r["incl_minor"], r["stop_reason"],
                          f["labels"].get(token, "")))
    _csv(path("drivers.csv"), ("token", "station", "tx_id", "date", "start", "end", "duration_s", "energy_wh",
                               "currency", "cost_excl_vat_minor", "cost_incl_vat_minor", "stop_reason", "label"), drows)
    with open(path("drivers.txt"), "w") as fh:
        fh.write(driver_text(f["drivers"], f["labels"]))
    for kind in ("day", "week", "month"):
        _csv(path("revenue_%s.csv" % kind),
             ("period", "station", "currency", "sessions", "energy_wh", "excl_vat_minor", "incl_vat_minor",
              "avg_excl_per_kwh", "avg_incl_per_kwh", "parking_s", "parking_excl_vat_minor", "parking_incl_vat_minor"),
             [(r["period"], r["station"], r["currency"], r["sessions"], r["energy_wh"], r["excl_minor"],
               r["incl_minor"], r["avg_excl_per_kwh"], r["avg_incl_per_kwh"], r["parking_s"],
               r["parking_excl_minor"], r["parking_incl_minor"]) for r in f["periods"][kind]])
    _csv(path("sessions.csv"), exports.SESSION_HEADER,
         [exports.session_row(s, rep.zone, rep.label(s["token"])) for s in rep.sessions])
    if cdrs is not None:
        with open(path("cdrs.json"), "w", encoding="utf-8") as fh:
            fh.write(exports.dump(cdrs, indent=" "))
    _csv(path("faults.csv"), ("station", "msg_id", "event", "code", "ts", "latched", "tx_id", "detail", "info"),
         [(x["station"], x["msg_id"], x["event"], x["code"], x["ts"], int(x["latched"]), x["tx_id"], x["detail"],
           x["info"]) for x in m["fault_list"]])
    _csv(path("feedback.csv"), ("station", "msg_id", "ts", "tx_id", "session_start", "token", "source", "text",
                                "label"),
         [(x["station"], x["msg_id"], x["ts"], x["tx_id"], x["session_start"], x["token"], x["source"], x["text"],
           x["label"]) for x in feedback])
    images = [("occupancy.png", charts.png(charts.occupancy_figure(f["station_occupancy_permille"], rep.tz))),
              ("daily.png", charts.png(charts.timeline_figure(f["timeline"], rep.tz))),
              ("revenue.png", charts.png(charts.revenue_figure(f["periods"].get("month", []), DECIMALS)))]
    for name, data in images:
        with open(path(name), "wb") as fh:
            fh.write(data)
    curve_files = []
    if curves:
        os.makedirs(os.path.join(out_dir, "curves"), exist_ok=True)
    for s, data in curves:
        ep = "-ep%d" % s["ep"] if s["ep"] else ""   # tx ids start again in a new data epoch
        name = os.path.join("curves", "%s%s-tx%s.png" % (s["device"], ep, s["tx_id"]))
        with open(path(name), "wb") as fh:
            fh.write(data)
        curve_files.append(name)
    f["curves"] = curve_files
    with open(path("skipped.txt"), "w") as fh:
        fh.write("".join(s + "\n" for s in rep.skipped) or "nothing skipped\n")
    with open(path("report.html"), "w", encoding="utf-8") as fh:
        fh.write(page(rep, f, m, feedback, images, cdrs, curves))
    return files


def driver_text(drivers, labels):
    lines = []
    for token in sorted(drivers):
        rows = drivers[token]
        cur = rows[0]["currency"]
        total = sum(r["incl_minor"] for r in rows if r["currency"] == cur)
        lines.append("Driver %s%s: %d sessions, %s kWh, %s incl. VAT%s" % (
            token, " (%s)" % labels[token] if token in labels else "", len(rows),
            kwh(sum(r["energy_wh"] for r in rows)), money(total, cur),
            "" if all(r["currency"] == cur for r in rows) else " (+ other currencies)"))
        lines.append("  %-10s  %-5s  %-5s  %8s  %10s  %18s  %-8s  %s" % (
            "date", "start", "end", "duration", "energy kWh", "cost incl. VAT", "station", "stop reason"))
        for r in rows:
            lines.append("  %-10s  %-5s  %-5s  %8s  %10s  %18s  %-8s  %s" % (
                r["date"], r["start"], r["end"], hms(r["duration_s"]), kwh(r["energy_wh"]),
                money(r["incl_minor"], r["currency"]), r["station"], r["stop_reason"]))
        lines.append("")
    return "\n".join(lines) + "\n" if lines else "no sessions\n"


def page(rep, f, m, feedback, images, cdrs, curves):
    """The whole report as one HTML document; plots are embedded as data URIs."""
    esc = html.escape
    img = {name: "data:image/png;base64," + base64.b64encode(data).decode("ascii") for name, data in images}
    scope = []
    if rep.date_from or rep.date_to:
        scope.append("from %s to %s" % (rep.date_from or "the start", rep.date_to or "the end"))
    if rep.driver:
        scope.append("driver %s" % _who(rep.driver, rep.label(rep.driver)))
    scope.append("times in %s" % rep.tz)
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    h = ["<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Charging report</title>",
         "<style>%s</style></head><body>" % CSS,
         "<h1>Charging report</h1><p>%s; generated %s.</p>" % (esc(", ".join(scope)), local_text(now, rep.zone))]
    if rep.skipped:
        h.append("<p class=warn>%d records were skipped or used only in part: see Data quality.</p>"
                 % len(rep.skipped))
    h.append("<h2>Summary</h2>")
    rev = ", ".join("%s excl. / %s incl. VAT" % (money(v["excl_minor"], c), money(v["incl_minor"], c))
                    for c, v in sorted(f["revenue"].items())) or "none"
    losses = sum(st["power_loss"] for st in f["stations"].values())
    h.append("<p>%d sessions, %s kWh, revenue %s; %d sessions still open; %d ended by a power loss, "
             "%s kWh uncertain.</p>" % (f["sessions"], kwh(f["energy_wh"]), esc(rev), f["open_sessions"], losses,
                                        kwh(f["uncertain_wh"])))
    st_rows = []
    for dev, st in sorted(f["stations"].items()):
        for cur, v in sorted(st["revenue"].items()):
            st_rows.append((dev, st["sessions"], kwh(st["energy_wh"]), money(v["excl_minor"], cur),
                            money(v["incl_minor"], cur), _per(per_kwh(v["incl_minor"], st["energy_wh"], cur), cur),
                            hms(st["parking_s"]), money(v["parking_incl_minor"], cur), st["power_loss"],
                            kwh(st["uncertain_wh"])))
    h.append(_table(("station", "sessions", "energy kWh", "revenue excl. VAT", "revenue incl. VAT",
                     "avg incl./kWh", "parking h:mm", "parking incl. VAT", "power losses", "uncertain kWh"), st_rows))
    reasons = sorted(f["stop_reasons"].items(), key=lambda kv: (-kv[1]["sessions"], kv[0]))
    stations = sorted(f["stations"])
    h.append("<h3>Stop reasons</h3>")
    h.append(_table(("stop reason", "sessions", "energy kWh") + tuple(stations),
                    [(r, v["sessions"], kwh(v["energy_wh"])) + tuple(f["stations"][d]["stop_reasons"].get(r, 0)
                                                                      for d in stations) for r, v in reasons]))
    h.append("<h3>Power losses and uncertain energy</h3><p class=note>A session cut by a power failure is closed "
             "at the next boot (PowerLoss); energy drawn after its last checkpoint may be missing (uncertain), the "
             "meter's own count at boot was recovered.</p>")
    h.append(_table(("station", "tx", "start", "end", "energy kWh", "uncertain Wh", "recovered Wh", "driver"),
                    [(x["station"], x["tx_id"], short(x["start"]), short(x["end"]), kwh(x["energy_wh"]),
                      x["uncertain_wh"], "" if x["recovered_wh"] is None else x["recovered_wh"],
                      _who(x["token"], x["label"])) for x in f["power_loss"]]))
    per = {"hour": "hour", "day": "day", "week": "week"}[f["timeline"]["unit"]]
    h.append("<h2>Utilization</h2><img alt='sessions and energy per %s and station' src='%s'>"
             "<img alt='occupancy heat map per station' src='%s'>" % (per, img["daily.png"], img["occupancy.png"]))
    h.append("<h2>Revenue per station</h2><img alt='revenue per month' src='%s'><h3>Per month</h3>"
             % img["revenue.png"])
    h.append(_table(PERIOD_HEADER, _period_rows(f["periods"]["month"])))
    for kind in ("week", "day"):
        rows = f["periods"][kind]
        h.append("<details><summary>Per %s (%d rows)</summary>%s</details>" % (
            kind, len(rows), _table(PERIOD_HEADER, _period_rows(rows), note=": see revenue_%s.csv" % kind)))
    h.append("<h2>Driver history</h2>")
    drows = [(f["labels"].get(t, ""), t, len(rows), kwh(sum(r["energy_wh"] for r in rows)),
              ", ".join(money(sum(r["incl_minor"] for r in rows if r["currency"] == c), c)
                        for c in sorted(set(r["currency"] for r in rows))))
             for t, rows in sorted(f["drivers"].items(), key=lambda kv: (kv[0] not in f["labels"],
                                                                          f["labels"].get(kv[0], ""), kv[0]))]
    h.append(_table(("driver", "pseudonym", "sessions", "energy kWh", "cost incl. VAT"), drows,
                    note=": see drivers.csv"))
    if rep.driver or len(f["drivers"]) <= 20:
        for t, rows in sorted(f["drivers"].items()):
            h.append("<h3>%s</h3>" % esc("%s (%s)" % (f["labels"][t], t) if t in f["labels"] else t))
            h.append(_table(("date", "start", "end", "duration", "energy kWh", "cost incl. VAT", "station",
                             "stop reason"),
                            [(r["date"], r["start"], r["end"], hms(r["duration_s"]), kwh(r["energy_wh"]),
                              money(r["incl_minor"], r["currency"]), r["station"], r["stop_reason"]) for r in rows]))
    h.append("<h2>Power curves</h2>")
    if curves:
        h.append("<p class=note>The latest %d sessions with a power profile (mean power, min-max band, max current "
                 "per bucket); files in curves/.</p>" % len(curves))
        for s, data in curves:
            h.append("<details><summary>%s tx %s, %s, %s kWh, %s, %s</summary><img alt='power curve' "
                     "src='data:image/png;base64,%s'></details>" % (
                         esc(s["device"]), s["tx_id"], local_text(s["started_s"], rep.zone), kwh(s["energy_wh"]),
                         esc(s["stop_reason"] or "?"), esc(_who(s["token"], rep.label(s["token"]))),
                         base64.b64encode(data).decode("ascii")))
    else:
        h.append("<p class=none>no session in this period carries a power profile</p>")
    h.append("<h2>Maintenance</h2><h3>Faults raised, by code and station</h3>")
    h.append(_table(("code", "station", "count"), [(code, dev, n) for code, per_dev in sorted(m["faults"].items())
                                                   for dev, n in sorted(per_dev.items())]))
    h.append("<h3>Notices (not station faults)</h3>")
    h.append(_table(("notice", "station", "count", "last"),
                    [(info, dev, n["count"], short(n["last"])) for info, per_dev in sorted(m["notices"].items())
                     for dev, n in sorted(per_dev.items())]))
    h.append("<h3>Latched lockouts</h3>")
    h.append(_table(("station", "code", "raised", "tx", "detail", "cleared"),
                    [(x["station"], x["code"], short(x["ts"]), x["tx_id"], x["detail"] or "",
                      short(x["cleared"]) or "still latched") for x in m["latched"]]))
    h.append("<h3>Reader failures</h3>" + _table(("station", "count"), sorted(m["reader_failures"].items())))
    h.append("<h3>Contactor wear (rated life %d cycles)</h3>" % rep.life)
    h.append(_table(("station", "cycles", "wear", "cycles left", "cycles/day", "days left (est.)", "stats of"),
                    [(d, c["cycles"], text(c["wear_permille"], 1) + " %", c["remaining"],
                      "" if c["cycles_per_day"] is None else c["cycles_per_day"],
                      "" if c["days_left"] is None else c["days_left"], short(c["stats_ts"]))
                     for d, c in sorted(m["contactors"].items())]))
    h.append("<p>Sequence gaps flagged by the backend: %d (%d filled later). Malformed messages kept aside: %d.</p>"
             % (m["gaps"]["flagged"], m["gaps"]["closed"], m["rejects"]))
    if m["reinitialised"]:
        h.append("<h3>Chargers re-initialised (state and journal lost: transaction ids start again, "
                 "in a new data epoch)</h3>")
        h.append(_table(("station", "first seen", "epoch", "after epoch"),
                        [(x["station"], short(x["ts"]), x["ep"], x["previous"]) for x in m["reinitialised"]]))
    h.append("<h2>Driver feedback</h2>")
    h.append(_table(("station", "time", "tx", "session start", "driver", "source", "text"),
                    [(x["station"], short(x["ts"]), "" if x["tx_id"] is None else x["tx_id"], x["session_start"] or "",
                      _who(x["token"], x["label"]), x["source"] or "", x["text"] or "") for x in feedback]))
    h.append("<h2>Exports</h2><p>sessions.csv: %d sessions (times in %s). " % (len(rep.sessions), esc(rep.tz)))
    if cdrs is None:
        h.append("OCPI 2.2.1 CDRs: not exported (give --tariff FILE).</p>")
    else:
        h.append("cdrs.json: %d OCPI 2.2.1 CDRs (UTC, priced like tools/price.py).</p>" % len(cdrs))
    h.append("<h2>Data quality</h2>")
    if rep.skipped:
        h.append("<p class=warn>%d records skipped or used in part:</p><ul>%s</ul>" % (
            len(rep.skipped), "".join("<li>%s</li>" % esc(s) for s in rep.skipped[:SKIPPED_SHOWN])))
        if len(rep.skipped) > SKIPPED_SHOWN:
            h.append("<p class=note>%d more in skipped.txt</p>" % (len(rep.skipped) - SKIPPED_SHOWN))
    else:
        h.append("<p>Nothing skipped.</p>")
    h.append("</body></html>\n")
    return "".join(h)


def _party(value):
    cc, _, pid = (value or "").partition("-")
    if len(cc) != 2 or not cc.isalpha() or not 1 <= len(pid) <= 3 or not pid.isalnum():
        raise ValueError("--ocpi-party must be COUNTRY-PARTY like DE-ABC (got %r)" % value)
    return cc.upper(), pid.upper()


def _locations(path):
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh, parse_float=exports.Num)
    except OSError as e:
        raise ValueError("--locations: cannot read %s (%s)" % (path, e.strerror))
    except ValueError as e:
        raise ValueError("--locations: %s is not valid JSON (%s)" % (path, e))
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError("--locations: %s must map each station to its OCPI CdrLocation fields" % path)
    return data


def build_report(db_url, out_dir, date_from=None, date_to=None, driver=None, tz="UTC", contactor_life=100000,
                 progress_every=5000, out=None, labels=None, tariffs=(), ocpi_party="XX-XXX", locations=None,
                 curves=CURVES):
    """Reads the store, writes the report into out_dir and returns its figures (integers: Wh, minor units).

    Keys: sessions, open_sessions, energy_wh, revenue {currency: {excl_minor, incl_minor, parking_*}},
    stations {device: {sessions, energy_wh, parking_s, revenue, stop_reasons, power_loss, uncertain_wh}},
    periods {day|week|month: [rows]}, drivers {token: [rows]}, labels {token: name}, daily {date: {sessions,
    energy_wh}}, timeline {unit, first, bins, stations {device: {sessions, energy_wh}}}, occupancy_s and
    occupancy_permille [7][24] (Mon first), station_occupancy_s/_permille {device: [7][24]}, stop_reasons
    {reason: {sessions, energy_wh}}, power_loss [rows], uncertain_wh, cdr_count (None: no --tariff), curves,
    maintenance {faults, notices, latched, reader_failures, contactors, gaps, rejects}, feedback, skipped,
    files {name: path}. labels: a file (JSON or CSV token,name) or a dict; tariffs: tariff files for CDRs.
    """
    out = out or (lambda line: print(line, flush=True))
    if contactor_life < 1:
        raise ValueError("--contactor-life must be a positive number of cycles")
    if curves < 0:
        raise ValueError("--curves must be 0 or more sessions")
    if isinstance(date_from, str):
        date_from = _date(date_from, "--from")
    if isinstance(date_to, str):
        date_to = _date(date_to, "--to")
    if date_from and date_to and date_to < date_from:
        raise ValueError("--to %s is before --from %s" % (date_to, date_from))
    if isinstance(labels, str):
        labels = load_labels(labels)
    labels = {k.lower(): v for k, v in (labels or {}).items()}
    if driver and driver.lower() not in labels:      # a driver may be named by the operator's label
        named = [t for t, n in labels.items() if n.lower() == driver.lower()]
        driver = named[0] if len(named) == 1 else driver
    party = _party(ocpi_party)
    tariff_objs = exports.load_tariffs(tariffs) if tariffs else None
    places = _locations(locations) if isinstance(locations, str) else (locations or {})
    store = Store(db_url, create=False)
    try:
        rep = Report(store, tz, date_from, date_to, driver, contactor_life, progress_every, out, labels,
                     keep_periods=tariff_objs is not None, curves=curves)
        rep.read_sessions()
        f = rep.figures()
        starts = {(s["device"], s["ep"], s["tx_id"]): rep.local(s["started_s"]).strftime("%Y-%m-%d %H:%M")
                  for s in rep.sessions}
        feedback = rep.read_feedback(starts)
        m = rep.maintenance()
    finally:
        store.close()
    cdrs = rep.cdrs(tariff_objs, party, places)
    plotted = rep.curves(curves)
    f["maintenance"] = {k: v for k, v in m.items() if k != "fault_list"}
    f["feedback"] = feedback
    f["cdr_count"] = None if cdrs is None else len(cdrs)
    f["skipped"] = rep.skipped
    f["files"] = write_files(rep, f, m, feedback, cdrs, plotted, out_dir)
    return f


def _date(value, name):
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError("%s must be a date like 2026-03-01 (got %r)" % (name, value))


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python3 tools/report.py --db out/backend.sqlite --out out/report --tz Europe/Berlin\n"
               "  python3 tools/report.py --db postgresql://cp@localhost/cp --out out/march \\\n"
               "      --from 2026-03-01 --to 2026-03-31 --tz Europe/Berlin --labels drivers.csv\n"
               "  python3 tools/report.py --db out/backend.sqlite --out out/day --from 2026-03-02 --to 2026-03-02\n"
               "  python3 tools/report.py --db out/backend.sqlite --out out/cdrs --tz Europe/Berlin \\\n"
               "      --tariff tariff.json --ocpi-party DE-ABC --locations locations.json\n"
               "  python3 tools/report.py --db out/backend.sqlite --out out/driver \\\n"
               "      --driver 6f1c0e5d8a2b4c7e9f0a1b2c3d4e5f60\n"
               "Open DIR/report.html in a browser; the CSV files hold every row.")
    ap.add_argument("--db", default=os.path.join("out", "backend.sqlite"), help="SQLite file or postgresql:// URL")
    ap.add_argument("--out", required=True, metavar="DIR", help="where to write the report")
    ap.add_argument("--from", dest="date_from", metavar="DATE", help="first day (YYYY-MM-DD, local time), inclusive")
    ap.add_argument("--to", dest="date_to", metavar="DATE", help="last day, inclusive")
    ap.add_argument("--driver", metavar="PSEUDONYM", help="only this driver's sessions and feedback (or their label)")
    ap.add_argument("--tz", default="UTC", help="the site's time zone for every time shown, e.g. Europe/Berlin "
                                                "(default UTC)")
    ap.add_argument("--labels", metavar="FILE", help="driver names: JSON {pseudonym: name} or CSV with token,name")
    ap.add_argument("--tariff", action="append", default=[], metavar="FILE",
                    help="OCPI tariff (or a provisioned config.json) to price CDRs with; repeat for several ids")
    ap.add_argument("--ocpi-party", default="XX-XXX", metavar="CC-PID", help="CDR country_code and party_id")
    ap.add_argument("--locations", metavar="FILE", help="JSON {station: OCPI CdrLocation fields} for the CDRs")
    ap.add_argument("--curves", type=int, default=CURVES, metavar="N",
                    help="power-curve plots of the latest N sessions (default %d)" % CURVES)
    ap.add_argument("--contactor-life", type=int, default=100000, help="rated contactor cycles (default 100000)")
    ap.add_argument("--progress-every", type=int, default=5000, metavar="N", help="progress line every N sessions")
    args = ap.parse_args(argv)
    try:
        f = build_report(args.db, args.out, args.date_from, args.date_to, args.driver, args.tz,
                         args.contactor_life, args.progress_every, labels=args.labels, tariffs=args.tariff,
                         ocpi_party=args.ocpi_party, locations=args.locations, curves=args.curves)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print("report: %s" % e, file=sys.stderr)
        return 2
    rev = ", ".join("%s incl. VAT" % money(v["incl_minor"], c) for c, v in sorted(f["revenue"].items())) or "no revenue"
    print("report: %d sessions, %s kWh, %s -> %s" % (f["sessions"], kwh(f["energy_wh"]), rev,
                                                     f["files"]["report.html"]))
    if f["cdr_count"] is not None:
        print("report: %d OCPI CDRs -> %s" % (f["cdr_count"], f["files"]["cdrs.json"]))
    if f["skipped"]:
        print("report: %d records skipped or used in part (see %s)" % (len(f["skipped"]), f["files"]["skipped.txt"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
