"""Reports over the backend's store: driver history, revenue, utilization, maintenance, feedback.

Reads the store written by tools/backend.py (SQLite file or PostgreSQL URL, same code) and
writes CSV and text tables, PNG plots and one self-contained HTML page (report.html) into DIR.
Money and energy are summed as integers (minor units, Wh); only the plots use floats.

    python3 tools/report.py --db out/backend.sqlite --out out/report --from 2026-03-01 --to 2026-03-31
    figures = build_report("out/backend.sqlite", "out/report")   # figures["energy_wh"], ...

A record the report cannot use (unreadable JSON, missing fields) is skipped and listed in the
"Data quality" section and in skipped.txt; the rest of the report still renders.
"""
import argparse
import base64
import csv
import datetime
import html
import io
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.dirname(os.path.abspath(__file__)), os.path.join(ROOT, "tools", "compat"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from firmware.billing.fixed import round_div, text  # noqa: E402
from store import DECIMALS, Store, money  # noqa: E402

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SESSION_COLS = ("device", "tx_id", "token", "auth", "started_s", "ended_s", "energy_wh", "currency",
                "total_excl_minor", "total_incl_minor", "parking_s", "parking_excl_minor", "parking_incl_minor",
                "offline", "final", "stop_reason", "record")
HTML_ROWS = 400      # rows of one table shown in the page; the CSV files hold all of them
SKIPPED_SHOWN = 200


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


def _zone(name):
    if name in ("UTC", "Z", None):
        return datetime.timezone.utc
    import zoneinfo
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("--tz %r is not a known time zone (e.g. Europe/Berlin or UTC)" % name)


class Report:
    """Collects figures from the store, then writes the files."""

    def __init__(self, store, tz, date_from, date_to, driver, contactor_life, progress_every, out):
        self.st = store
        self.tz = tz
        self.zone = _zone(tz)
        self.date_from = date_from
        self.date_to = date_to
        self.driver = driver.lower() if driver else None
        self.life = contactor_life
        self.progress_every = progress_every
        self.out = out
        self.skipped = []
        self.sessions = []
        self.open_sessions = 0

    def local(self, t):
        return datetime.datetime.fromtimestamp(t, self.zone)

    def skip(self, what):
        self.skipped.append(what)

    def _in_range(self, t):
        d = self.local(t).date()
        return (self.date_from is None or d >= self.date_from) and (self.date_to is None or d <= self.date_to)

    # --- reading ---------------------------------------------------------------------------

    def read_sessions(self):
        n = 0
        sql = "SELECT %s FROM sessions ORDER BY started_s, device, tx_id" % ", ".join(SESSION_COLS)
        for row in self.st.iterate(sql):
            n += 1
            if self.progress_every and n % self.progress_every == 0:
                self.out("report: %d sessions read" % n)
            s = dict(zip(SESSION_COLS, row))
            name = "session %s tx %s" % (s["device"], s["tx_id"])
            if s["record"] is not None:
                try:
                    json.loads(s["record"])
                except ValueError:
                    self.skip("%s: record JSON unreadable, used the stored columns" % name)
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
        if self.progress_every and n >= self.progress_every and n % self.progress_every:
            self.out("report: %d sessions read in all" % n)

    def read_faults(self):
        rows = self.st.query("SELECT device, msg_id, event, code, ts_s, ts, latched, tx_id, detail, record "
                             "FROM faults ORDER BY device, ts_s, msg_id")
        faults = []
        for device, msg_id, event, code, ts_s, ts, latched, tx_id, detail, record in rows:
            if record is not None:
                try:
                    json.loads(record)
                except ValueError:
                    self.skip("fault %s %s: record JSON unreadable, used the stored columns" % (device, msg_id))
            if not code or event not in ("raised", "cleared"):
                self.skip("fault %s %s: skipped, no code or event" % (device, msg_id))
                continue
            if ts_s is not None and not self._in_range(ts_s):
                continue
            faults.append({"station": device, "msg_id": msg_id, "event": event, "code": code, "ts_s": ts_s,
                           "ts": ts, "latched": bool(latched), "tx_id": tx_id, "detail": detail})
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
                 "remaining": max(self.life - c1, 0), "stats_ts": ts, "cycles_per_day": None, "days_left": None}
            if t1 - t0 >= 86400 and c1 > c0:
                c["cycles_per_day"] = round_div((c1 - c0) * 86400, t1 - t0)
                c["days_left"] = round_div(c["remaining"] * (t1 - t0), c1 - c0) // 86400
            result[device] = c
        return result

    def read_feedback(self, starts):
        rows = self.st.query("SELECT device, msg_id, ts, ts_s, tx_id, token, source, text, record FROM feedback "
                             "ORDER BY ts_s, device, msg_id")
        items = []
        for device, msg_id, ts, ts_s, tx_id, token, source, txt, record in rows:
            if record is not None:
                try:
                    json.loads(record)
                except ValueError:
                    self.skip("feedback %s %s: record JSON unreadable, used the stored columns" % (device, msg_id))
            if self.driver and (token or "").lower() != self.driver:
                continue
            if ts_s is not None and not self._in_range(ts_s):
                continue
            items.append({"station": device, "msg_id": msg_id, "ts": ts, "tx_id": tx_id, "token": token,
                          "source": source, "text": txt, "session_start": starts.get((device, tx_id))})
        return items

    # --- figures ---------------------------------------------------------------------------

    def figures(self):
        f = {"sessions": 0, "energy_wh": 0, "open_sessions": self.open_sessions, "revenue": {}, "stations": {},
             "periods": {}, "drivers": {}, "daily": {}, "occupancy_s": [[0] * 24 for _ in range(7)]}
        periods = {"day": {}, "week": {}, "month": {}}
        for s in self.sessions:
            cur = s["currency"]
            money_part = {"excl_minor": s["total_excl_minor"], "incl_minor": s["total_incl_minor"],
                          "parking_excl_minor": s["parking_excl_minor"] or 0,
                          "parking_incl_minor": s["parking_incl_minor"] or 0}
            f["sessions"] += 1
            f["energy_wh"] += s["energy_wh"]
            _add(f["revenue"].setdefault(cur, {}), money_part)
            st = f["stations"].setdefault(s["device"], {"sessions": 0, "energy_wh": 0, "parking_s": 0, "revenue": {}})
            st["sessions"] += 1
            st["energy_wh"] += s["energy_wh"]
            st["parking_s"] += s["parking_s"] or 0
            _add(st["revenue"].setdefault(cur, {}), money_part)
            start = self.local(s["started_s"])
            end = self.local(s["ended_s"])
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
                f["drivers"].setdefault(s["token"], []).append({
                    "station": s["device"], "tx_id": s["tx_id"], "date": start.date().isoformat(),
                    "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"),
                    "duration_s": s["ended_s"] - s["started_s"], "energy_wh": s["energy_wh"], "currency": cur,
                    "excl_minor": s["total_excl_minor"], "incl_minor": s["total_incl_minor"]})
            self._occupy(f["occupancy_s"], s["started_s"], s["ended_s"])
        for kind, rows in periods.items():
            out = []
            for key in sorted(rows):
                row = rows[key]
                row["avg_excl_per_kwh"] = per_kwh(row["excl_minor"], row["energy_wh"], row["currency"])
                row["avg_incl_per_kwh"] = per_kwh(row["incl_minor"], row["energy_wh"], row["currency"])
                out.append(row)
            f["periods"][kind] = out
        f["occupancy_permille"] = self._occupancy_permille(f["occupancy_s"], len(f["stations"]))
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

    def _occupancy_permille(self, occ, stations):
        """Occupied share of each (weekday, hour) of the period, over all stations, in per mille."""
        if not self.sessions or not stations:
            return [[0] * 24 for _ in range(7)]
        first = self.date_from or self.local(self.sessions[0]["started_s"]).date()
        last = self.date_to or max(self.local(s["ended_s"]).date() for s in self.sessions)
        days = [0] * 7
        d = first
        while d <= last:
            days[d.weekday()] += 1
            d += datetime.timedelta(days=1)
        return [[round_div(occ[w][h] * 1000, days[w] * 3600 * stations) if days[w] else 0 for h in range(24)]
                for w in range(7)]

    def maintenance(self):
        faults = self.read_faults()
        by_code = {}
        readers = {}
        latched = []
        for ft in faults:
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
        return {"faults": by_code, "latched": latched, "reader_failures": readers,
                "contactors": self.read_contactors(), "gaps": {"flagged": gaps[0], "closed": gaps[1]},
                "rejects": self.st.count("rejects"), "fault_list": faults}


def _add(into, part):
    for k, v in part.items():
        into[k] = into.get(k, 0) + v


# --- output -------------------------------------------------------------------------------

def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _png(fig):
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def plots(f):
    """(name, PNG bytes) of the utilization and revenue plots."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(10, 3.6))
    occ = [[v / 10 for v in row] for row in f["occupancy_permille"]]
    im = ax.imshow(occ, aspect="auto", cmap="YlOrRd", vmin=0, vmax=max(10, max(max(r) for r in occ)))
    ax.set_yticks(range(7), WEEKDAYS)
    ax.set_xticks(range(24), [str(h) for h in range(24)])
    ax.set_xlabel("hour of day (local time)")
    ax.set_title("Occupancy: share of connector time in use, %")
    fig.colorbar(im, ax=ax, label="%")
    fig.tight_layout()
    out.append(("occupancy.png", _png(fig)))

    fig, ax = plt.subplots(figsize=(10, 3.6))
    days = sorted(f["daily"])
    if days:
        x = [datetime.date.fromisoformat(d) for d in days]
        ax.bar(x, [f["daily"][d]["sessions"] for d in days], color="#4c78a8", label="sessions")
        ax.set_ylabel("sessions per day")
        ax2 = ax.twinx()
        ax2.plot(x, [f["daily"][d]["energy_wh"] / 1000 for d in days], color="#e45756", marker="o", label="energy")
        ax2.set_ylabel("energy per day, kWh")
        fig.autofmt_xdate()
    else:
        ax.text(0.5, 0.5, "no sessions in this period", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Sessions (bars) and energy (line) per day")
    fig.tight_layout()
    out.append(("daily.png", _png(fig)))

    fig, ax = plt.subplots(figsize=(10, 3.6))
    months = f["periods"].get("month", [])
    currencies = sorted(set(r["currency"] for r in months))
    if months:
        cur = currencies[0]
        labels = sorted(set(r["period"] for r in months))
        stations = sorted(set(r["station"] for r in months))
        width = 0.8 / max(len(stations), 1)
        scale = 10 ** DECIMALS.get(cur, 2)
        for i, st in enumerate(stations):
            vals = {r["period"]: r["incl_minor"] / scale for r in months if r["station"] == st and r["currency"] == cur}
            ax.bar([j + i * width for j in range(len(labels))], [vals.get(p, 0) for p in labels], width, label=st)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels)
        ax.set_ylabel("revenue incl. VAT, %s" % cur)
        if len(stations) <= 12:
            ax.legend(fontsize="small")
        title = "Revenue per station and month (%s%s)" % (cur, ", other currencies in the tables"
                                                          if len(currencies) > 1 else "")
    else:
        ax.text(0.5, 0.5, "no revenue in this period", ha="center", va="center", transform=ax.transAxes)
        title = "Revenue per station and month"
    ax.set_title(title)
    fig.tight_layout()
    out.append(("revenue.png", _png(fig)))
    return out


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


PERIOD_HEADER = ("period", "station", "sessions", "energy kWh", "revenue excl. VAT", "revenue incl. VAT",
                 "avg excl./kWh", "avg incl./kWh", "parking h:mm", "parking incl. VAT")

CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}h1{font-size:1.5em}h2{margin-top:1.6em;
border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;
padding:2px 8px;font-size:.9em;text-align:right;white-space:nowrap}summary{cursor:pointer;margin:.6em 0}
th{background:#eee;white-space:normal}td:first-child,td:nth-child(2){text-align:left}
img{max-width:100%;display:block;margin:.5em 0}.note,.none{color:#666;font-size:.9em}.warn{color:#a40}"""


def write_files(rep, f, m, feedback, out_dir):
    """CSV, text, PNG and the HTML page; returns {name: path}."""
    os.makedirs(out_dir, exist_ok=True)
    files = {}

    def path(name):
        files[name] = os.path.join(out_dir, name)
        return files[name]

    drows = []
    for token in sorted(f["drivers"]):
        for r in f["drivers"][token]:
            drows.append((token, r["station"], r["tx_id"], r["date"], r["start"], r["end"], r["duration_s"],
                          r["energy_wh"], r["currency"], r["excl_minor"], r["incl_minor"]))
    _csv(path("drivers.csv"), ("token", "station", "tx_id", "date", "start", "end", "duration_s", "energy_wh",
                               "currency", "cost_excl_vat_minor", "cost_incl_vat_minor"), drows)
    with open(path("drivers.txt"), "w") as fh:
        fh.write(driver_text(f["drivers"]))
    for kind in ("day", "week", "month"):
        _csv(path("revenue_%s.csv" % kind),
             ("period", "station", "currency", "sessions", "energy_wh", "excl_vat_minor", "incl_vat_minor",
              "avg_excl_per_kwh", "avg_incl_per_kwh", "parking_s", "parking_excl_vat_minor", "parking_incl_vat_minor"),
             [(r["period"], r["station"], r["currency"], r["sessions"], r["energy_wh"], r["excl_minor"],
               r["incl_minor"], r["avg_excl_per_kwh"], r["avg_incl_per_kwh"], r["parking_s"],
               r["parking_excl_minor"], r["parking_incl_minor"]) for r in f["periods"][kind]])
    _csv(path("faults.csv"), ("station", "msg_id", "event", "code", "ts", "latched", "tx_id", "detail"),
         [(x["station"], x["msg_id"], x["event"], x["code"], x["ts"], int(x["latched"]), x["tx_id"], x["detail"])
          for x in m["fault_list"]])
    _csv(path("feedback.csv"), ("station", "msg_id", "ts", "tx_id", "session_start", "token", "source", "text"),
         [(x["station"], x["msg_id"], x["ts"], x["tx_id"], x["session_start"], x["token"], x["source"], x["text"])
          for x in feedback])
    with open(path("skipped.txt"), "w") as fh:
        fh.write("".join(s + "\n" for s in rep.skipped) or "nothing skipped\n")
    images = plots(f)
    for name, data in images:
        with open(path(name), "wb") as fh:
            fh.write(data)
    with open(path("report.html"), "w", encoding="utf-8") as fh:
        fh.write(page(rep, f, m, feedback, images))
    return files


def driver_text(drivers):
    lines = []
    for token in sorted(drivers):
        rows = drivers[token]
        cur = rows[0]["currency"]
        total = sum(r["incl_minor"] for r in rows if r["currency"] == cur)
        lines.append("Driver %s: %d sessions, %s kWh, %s incl. VAT%s" % (
            token, len(rows), kwh(sum(r["energy_wh"] for r in rows)), money(total, cur),
            "" if all(r["currency"] == cur for r in rows) else " (+ other currencies)"))
        lines.append("  %-10s  %-5s  %-5s  %8s  %10s  %18s  %s" % ("date", "start", "end", "duration", "energy kWh",
                                                                  "cost incl. VAT", "station"))
        for r in rows:
            lines.append("  %-10s  %-5s  %-5s  %8s  %10s  %18s  %s" % (
                r["date"], r["start"], r["end"], hms(r["duration_s"]), kwh(r["energy_wh"]),
                money(r["incl_minor"], r["currency"]), r["station"]))
        lines.append("")
    return "\n".join(lines) + "\n" if lines else "no sessions\n"


def page(rep, f, m, feedback, images):
    """The whole report as one HTML document; plots are embedded as data URIs."""
    esc = html.escape
    img = {name: "data:image/png;base64," + base64.b64encode(data).decode("ascii") for name, data in images}
    scope = []
    if rep.date_from or rep.date_to:
        scope.append("from %s to %s" % (rep.date_from or "the start", rep.date_to or "the end"))
    if rep.driver:
        scope.append("driver %s" % rep.driver)
    scope.append("times in %s" % rep.tz)
    h = ["<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Charging report</title>",
         "<style>%s</style></head><body>" % CSS,
         "<h1>Charging report</h1><p>%s; generated %s UTC.</p>" % (
             esc(", ".join(scope)), datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"))]
    if rep.skipped:
        h.append("<p class=warn>%d records were skipped or used only in part: see Data quality.</p>"
                 % len(rep.skipped))
    h.append("<h2>Summary</h2>")
    rev = ", ".join("%s excl. / %s incl. VAT" % (money(v["excl_minor"], c), money(v["incl_minor"], c))
                    for c, v in sorted(f["revenue"].items())) or "none"
    h.append("<p>%d sessions, %s kWh, revenue %s; %d sessions still open.</p>" % (
        f["sessions"], kwh(f["energy_wh"]), esc(rev), f["open_sessions"]))
    st_rows = []
    for dev, st in sorted(f["stations"].items()):
        for cur, v in sorted(st["revenue"].items()):
            st_rows.append((dev, st["sessions"], kwh(st["energy_wh"]), money(v["excl_minor"], cur),
                            money(v["incl_minor"], cur), _per(per_kwh(v["incl_minor"], st["energy_wh"], cur), cur),
                            hms(st["parking_s"]), money(v["parking_incl_minor"], cur)))
    h.append(_table(("station", "sessions", "energy kWh", "revenue excl. VAT", "revenue incl. VAT",
                     "avg incl./kWh", "parking h:mm", "parking incl. VAT"), st_rows))
    h.append("<h2>Utilization</h2><img alt='occupancy heat map' src='%s'><img alt='sessions and energy per day' "
             "src='%s'>" % (img["occupancy.png"], img["daily.png"]))
    h.append("<h2>Revenue per station</h2><img alt='revenue per month' src='%s'><h3>Per month</h3>"
             % img["revenue.png"])
    h.append(_table(PERIOD_HEADER, _period_rows(f["periods"]["month"])))
    for kind in ("week", "day"):
        rows = f["periods"][kind]
        h.append("<details><summary>Per %s (%d rows)</summary>%s</details>" % (
            kind, len(rows), _table(PERIOD_HEADER, _period_rows(rows), note=": see revenue_%s.csv" % kind)))
    h.append("<h2>Driver history</h2>")
    drows = [(t, len(rows), kwh(sum(r["energy_wh"] for r in rows)),
              ", ".join(money(sum(r["incl_minor"] for r in rows if r["currency"] == c), c)
                        for c in sorted(set(r["currency"] for r in rows))))
             for t, rows in sorted(f["drivers"].items())]
    h.append(_table(("pseudonym", "sessions", "energy kWh", "cost incl. VAT"), drows, note=": see drivers.csv"))
    if rep.driver or len(f["drivers"]) <= 20:
        for t, rows in sorted(f["drivers"].items()):
            h.append("<h3>%s</h3>" % esc(t))
            h.append(_table(("date", "start", "end", "duration", "energy kWh", "cost incl. VAT", "station"),
                            [(r["date"], r["start"], r["end"], hms(r["duration_s"]), kwh(r["energy_wh"]),
                              money(r["incl_minor"], r["currency"]), r["station"]) for r in rows]))
    h.append("<h2>Maintenance</h2><h3>Faults raised, by code and station</h3>")
    h.append(_table(("code", "station", "count"), [(code, dev, n) for code, per in sorted(m["faults"].items())
                                                   for dev, n in sorted(per.items())]))
    h.append("<h3>Latched lockouts</h3>")
    h.append(_table(("station", "code", "raised", "tx", "detail", "cleared"),
                    [(x["station"], x["code"], x["ts"], x["tx_id"], x["detail"] or "", x["cleared"] or "still latched")
                     for x in m["latched"]]))
    h.append("<h3>Reader failures</h3>" + _table(("station", "count"), sorted(m["reader_failures"].items())))
    h.append("<h3>Contactor wear (rated life %d cycles)</h3>" % rep.life)
    h.append(_table(("station", "cycles", "wear", "cycles left", "cycles/day", "days left (est.)", "stats of"),
                    [(d, c["cycles"], text(c["wear_permille"], 1) + " %", c["remaining"],
                      "" if c["cycles_per_day"] is None else c["cycles_per_day"],
                      "" if c["days_left"] is None else c["days_left"], c["stats_ts"])
                     for d, c in sorted(m["contactors"].items())]))
    h.append("<p>Sequence gaps flagged by the backend: %d (%d filled later). Malformed messages kept aside: %d.</p>"
             % (m["gaps"]["flagged"], m["gaps"]["closed"], m["rejects"]))
    h.append("<h2>Driver feedback</h2>")
    h.append(_table(("station", "time", "tx", "session start", "pseudonym", "source", "text"),
                    [(x["station"], x["ts"], "" if x["tx_id"] is None else x["tx_id"], x["session_start"] or "",
                      (x["token"] or "")[:12], x["source"] or "", x["text"] or "") for x in feedback]))
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


def build_report(db_url, out_dir, date_from=None, date_to=None, driver=None, tz="UTC", contactor_life=100000,
                 progress_every=5000, out=None):
    """Reads the store, writes the report into out_dir and returns its figures (integers: Wh, minor units).

    Keys: sessions, open_sessions, energy_wh, revenue {currency: {excl_minor, incl_minor, parking_*}},
    stations {device: {sessions, energy_wh, parking_s, revenue {currency: {...}}}}, periods {day|week|month:
    [rows]}, drivers {token: [rows]}, daily {date: {sessions, energy_wh}}, occupancy_s [7][24] (Mon first),
    occupancy_permille [7][24], maintenance {faults {code: {device: n}}, latched, reader_failures,
    contactors, gaps, rejects}, feedback [..], skipped [text], files {name: path}.
    """
    out = out or (lambda line: print(line, flush=True))
    if contactor_life < 1:
        raise ValueError("--contactor-life must be a positive number of cycles")
    if isinstance(date_from, str):
        date_from = _date(date_from, "--from")
    if isinstance(date_to, str):
        date_to = _date(date_to, "--to")
    if date_from and date_to and date_to < date_from:
        raise ValueError("--to %s is before --from %s" % (date_to, date_from))
    store = Store(db_url, create=False)
    try:
        rep = Report(store, tz, date_from, date_to, driver, contactor_life, progress_every, out)
        rep.read_sessions()
        f = rep.figures()
        starts = {(s["device"], s["tx_id"]): rep.local(s["started_s"]).strftime("%Y-%m-%d %H:%M")
                  for s in rep.sessions}
        feedback = rep.read_feedback(starts)
        m = rep.maintenance()
    finally:
        store.close()
    f["maintenance"] = {k: v for k, v in m.items() if k != "fault_list"}
    f["feedback"] = feedback
    f["skipped"] = rep.skipped
    f["files"] = write_files(rep, f, m, feedback, out_dir)
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
               "  python3 tools/report.py --db out/backend.sqlite --out out/report\n"
               "  python3 tools/report.py --db postgresql://cp@localhost/cp --out out/march \\\n"
               "      --from 2026-03-01 --to 2026-03-31 --tz Europe/Berlin\n"
               "  python3 tools/report.py --db out/backend.sqlite --out out/driver \\\n"
               "      --driver 6f1c0e5d8a2b4c7e9f0a1b2c3d4e5f60\n"
               "Open DIR/report.html in a browser; the CSV files hold every row.")
    ap.add_argument("--db", default=os.path.join("out", "backend.sqlite"), help="SQLite file or postgresql:// URL")
    ap.add_argument("--out", required=True, metavar="DIR", help="where to write the report")
    ap.add_argument("--from", dest="date_from", metavar="DATE", help="first day (YYYY-MM-DD, local time), inclusive")
    ap.add_argument("--to", dest="date_to", metavar="DATE", help="last day, inclusive")
    ap.add_argument("--driver", metavar="PSEUDONYM", help="only this driver's sessions and feedback")
    ap.add_argument("--tz", default="UTC", help="time zone for days and hours, e.g. Europe/Berlin (default UTC)")
    ap.add_argument("--contactor-life", type=int, default=100000, help="rated contactor cycles (default 100000)")
    ap.add_argument("--progress-every", type=int, default=5000, metavar="N", help="progress line every N sessions")
    args = ap.parse_args(argv)
    try:
        f = build_report(args.db, args.out, args.date_from, args.date_to, args.driver, args.tz,
                         args.contactor_life, args.progress_every)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print("report: %s" % e, file=sys.stderr)
        return 2
    rev = ", ".join("%s incl. VAT" % money(v["incl_minor"], c) for c, v in sorted(f["revenue"].items())) or "no revenue"
    print("report: %d sessions, %s kWh, %s -> %s" % (f["sessions"], kwh(f["energy_wh"]), rev,
                                                     f["files"]["report.html"]))
    if f["skipped"]:
        print("report: %d records skipped or used in part (see %s)" % (len(f["skipped"]), f["files"]["skipped.txt"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
