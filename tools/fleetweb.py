"""Live fleet page: every charger's status, running session, faults, firmware and today's takings.

A read-only web view over the backend's store (tools/store.py, SQLite or PostgreSQL): one HTML
page, a JSON API behind it and a server-sent event stream that pushes the page's content when
the store changes, so an operator sees a charger start, stop or trip without reloading.
Starlette + uvicorn serve it, Jinja2 renders it (autoescaped: device ids, fault details and
command answers come from devices and are shown as text, never as markup).

    python3 tools/backend.py --db out/backend.sqlite --http 127.0.0.1:8080 --tz Europe/Berlin
    web = FleetWeb("out/backend.sqlite", tz="Europe/Berlin").start("127.0.0.1", 8080); ...; web.stop()

Routes: `/` the page, `/api/fleet[?day=YYYY-MM-DD]` the fleet as JSON, `/api/devices/<id>/acks`
a charger's latest command answers, `/api/events` the live stream, `/static/fleet.{js,css,svg}`.
No authentication: bind it to loopback (the default) or put it behind a proxy that has some.
"""
import asyncio
import datetime
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from packages import require  # noqa: E402

require("jinja2", "uvicorn", "starlette")
import jinja2  # noqa: E402
import uvicorn  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from store import Store, money  # noqa: E402

REFRESH_S = 1.0          # how often the store is read while someone watches the live stream
HEARTBEAT_S = 15.0       # an SSE comment this often keeps proxies from closing an idle stream
MAX_LISTENERS = 64       # live streams served at once; more get 503 (each holds a connection)
FAULT_ROWS = 1000        # newest fault records read per charger to work out the active ones
HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                      "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
                                      "frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def zone(name):
    """A --tz name as a tzinfo; ValueError naming it when unknown."""
    if name in ("UTC", "Z", None):
        return datetime.timezone.utc
    import zoneinfo
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("--tz %r is not a known time zone (e.g. Europe/Berlin or UTC)" % name)


def day_bounds(day, tz):
    """[start, end) of a local calendar day as Unix seconds (23 or 25 hours on DST days)."""
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=tz)
    nxt = day + datetime.timedelta(days=1)
    return int(start.timestamp()), int(datetime.datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp())


def _record(text):
    try:
        rec = json.loads(text) if text else {}
    except ValueError:
        return {}
    return rec if isinstance(rec, dict) else {}


def _fault_no(msg_id):
    """The charger numbers its fault records f-1, f-2 …: that number orders them, not arrival."""
    tail = (msg_id or "").rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def active_faults(events):
    """Faults raised and not cleared since, per fault kind, oldest first."""
    latest = {}
    for e in sorted(events, key=lambda e: (_fault_no(e["msg_id"]), e["received_s"] or 0)):
        rec = _record(e["record"])
        key = rec.get("kind") if isinstance(rec.get("kind"), str) else e["code"]
        latest[key] = (e, rec)
    out = []
    for key, (e, rec) in latest.items():
        if e["event"] == "raised":
            out.append({"kind": key, "code": e["code"], "latched": bool(e["latched"]), "detail": e["detail"],
                        "trips": rec.get("trips") if isinstance(rec.get("trips"), int) else None, "ts": e["ts"],
                        "msg_id": e["msg_id"]})
    return sorted(out, key=lambda f: _fault_no(f["msg_id"]))


_ACK_RANK = {"accepted": 0, "progress": 1}   # answers to one update within one second: this order


def update_state(acks):
    """The newest answer to an `update` command, and the version last reported installed."""
    ordered = sorted(acks, key=lambda a: (a["received_s"] or 0, _ACK_RANK.get(a["status"], 2),
                                          _record(a["record"]).get("percent") or 0))
    state = installed = None
    for a in ordered:
        rec = _record(a["record"])
        state = {"id": a["cmd_id"], "status": a["status"], "reason": a["reason"],
                 "version": rec.get("version") if isinstance(rec.get("version"), str) else None,
                 "percent": rec.get("percent") if isinstance(rec.get("percent"), int) else None,
                 "received_s": a["received_s"]}
        if a["status"] == "installed" and state["version"]:
            installed = state["version"]
    return state, installed


def charger(st, device, totals):
    """One charger's row of the fleet page from the store."""
    status = st.status_of(device)
    rec = _record(status["record"]) if status else {}
    state = status["state"] if status and status["state"] in ("online", "offline") else "unknown"
    connector, error = (status["connector"], status["error"]) if status else (None, None)
    if state != "online":   # the Last Will names no connector: show the last one known
        last = st.last_connector(device)
        connector, error = (last["connector"], last["error"]) if last else (None, None)
    session = None
    tx = st.latest_session(device)
    if tx and not tx["final"]:
        session = {"tx_id": tx["tx_id"], "started_at": tx["started_at"], "energy_wh": tx["energy_wh"],
                   "p_w": None, "meter_ts": None, "meter_s": None}
        m = st.latest_meter(device)
        if m and (m["ep"], m["tx_id"]) == (tx["ep"], tx["tx_id"]):
            if m["energy_wh"] is not None and (session["energy_wh"] is None or m["energy_wh"] >= session["energy_wh"]):
                session["energy_wh"] = m["energy_wh"]
            session.update(p_w=m["p_w"], meter_ts=m["ts"], meter_s=m["received_s"])
    update, installed = update_state(st.cmd_acks_of(device, "update", limit=200))
    version = rec.get("version") if isinstance(rec.get("version"), str) else installed
    stats = st.latest_stats(device)
    return {"device": device, "state": state, "connector": connector, "error": error,
            "status_ts": status["ts"] if status else None, "status_s": status["received_s"] if status else None,
            "last_seen_s": st.last_seen(device), "session": session,
            "faults": active_faults(st.fault_events(device, FAULT_ROWS)),
            "version": version, "update": update, "today": totals.get(device, []),
            "contactor_cycles": stats["contactor_cycles"] if stats else None,
            "boots": stats["boots"] if stats else None}


def snapshot(st, tz_name, day=None, now=None):
    """The whole fleet as plain JSON-able data; `day` (a date) defaults to today in the site's zone."""
    tz = zone(tz_name)
    now = int(time.time()) if now is None else now
    if day is None:
        day = datetime.datetime.fromtimestamp(now, tz).date()
    start, end = day_bounds(day, tz)
    totals = st.day_totals(start, end)
    devices = [charger(st, d, totals) for d in st.devices()]
    revenue = {}
    for d in devices:
        for t in d["today"]:
            into = revenue.setdefault(t["currency"] or "?", {"sessions": 0, "energy_wh": 0, "excl_minor": 0,
                                                             "incl_minor": 0})
            for k in into:
                into[k] += t[k]
    return {"generated_s": now, "tz": tz_name, "day": day.isoformat(), "devices": devices,
            "summary": {"chargers": len(devices), "online": sum(d["state"] == "online" for d in devices),
                        "charging": sum(d["session"] is not None for d in devices),
                        "faulted": sum(bool(d["faults"]) or d["connector"] == "Faulted" for d in devices),
                        "today": [dict(v, currency=k) for k, v in sorted(revenue.items())]}}


# --- rendering ----------------------------------------------------------------------------------

def _kw(w):
    return "–" if w is None else "%.2f kW" % (w / 1000)


def _kwh(wh):
    return "–" if wh is None else "%.3f kWh" % (wh / 1000)


TEMPLATES = {
    "page.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fleet – charge points</title>
<link rel="stylesheet" href="static/fleet.css">
<link rel="icon" href="static/fleet.svg" type="image/svg+xml">
<script src="static/fleet.js" defer></script>
</head><body>
<header><h1>Charge-point fleet</h1>
<span id="live" class="live off" title="live updates from the backend">connecting…</span></header>
<main id="fleet">{% include "fleet.html" %}</main>
<noscript><p class="note">Live updates need JavaScript: reload the page to refresh.</p></noscript>
</body></html>
""",
    "fleet.html": """{% set s = f.summary %}
<section class="summary">
 <div><b>{{ s.chargers }}</b> chargers</div>
 <div class="{{ 'ok' if s.online == s.chargers else 'warn' }}"><b>{{ s.online }}</b> online</div>
 <div><b>{{ s.charging }}</b> charging</div>
 <div class="{{ 'bad' if s.faulted else 'ok' }}"><b>{{ s.faulted }}</b> with faults</div>
 <div>Today {{ f.day }} ({{ f.tz }}): <b>{{ s.today | sum(attribute='sessions') }}</b> sessions{% for t in s.today %},
  <b>{{ kwh(t.energy_wh) }}</b>, <b>{{ money(t.incl_minor, t.currency) }}</b> incl. VAT{% endfor %}</div>
</section>
<table class="fleet"><thead><tr>
 <th>Charger</th><th>Connection</th><th>Connector</th><th>Running session</th><th>Faults</th>
 <th>Firmware</th><th>Today</th></tr></thead>
<tbody>
{% for d in f.devices %}
<tr class="row {{ d.state }}{{ ' faulted' if d.faults or d.connector == 'Faulted' }}" data-device="{{ d.device }}">
 <td class="device">{{ d.device }}</td>
 <td class="conn"><span class="badge {{ d.state }}">{{ d.state }}</span>
  <div class="small">seen {% if d.last_seen_s %}<span data-since="{{ d.last_seen_s }}">{{ clock(d.last_seen_s) }}</span>{% else %}never{% endif %}</div></td>
 <td class="connector"><span class="badge c-{{ (d.connector or 'unknown') | lower }}">{{ d.connector or 'unknown' }}</span>
  {% if d.error %}<div class="small err">{{ d.error }}</div>{% endif %}
  {% if d.state != 'online' and d.connector %}<div class="small">last known</div>{% endif %}</td>
 <td class="session">{% if d.session %}<div class="power">{{ kw(d.session.p_w) }}</div>
  <div>{{ kwh(d.session.energy_wh) }} · tx {{ d.session.tx_id }}</div>
  <div class="small">{% if d.session.meter_s %}meter <span data-since="{{ d.session.meter_s }}">{{ clock(d.session.meter_s) }}</span>{% else %}no meter value yet{% endif %}</div>
  {% else %}<span class="dim">–</span>{% endif %}</td>
 <td class="faults">{% for x in d.faults %}<div class="fault{{ ' latched' if x.latched }}"><b>{{ x.code }}</b>
  {{ x.kind }}{% if x.latched %} <span class="badge latched">latched: technician</span>{% endif %}
  {% if x.detail %}<div class="small">{{ x.detail }}</div>{% endif %}</div>
  {% else %}<span class="dim">none</span>{% endfor %}</td>
 <td class="fw"><div>{{ d.version or 'version not reported' }}</div>
  {% set u = d['update'] %}{% if u %}<div class="small update u-{{ u.status }}">update {{ u.id }}: {{ u.status }}
  {%- if u.percent is not none %} {{ u.percent }} %{% endif %}
  {%- if u.version %} {{ u.version }}{% endif %}
  {%- if u.reason %} – {{ u.reason }}{% endif %}</div>{% endif %}</td>
 <td class="today">{% for t in d.today %}<div>{{ t.sessions }} session{{ 's' if t.sessions != 1 }}, {{ kwh(t.energy_wh) }}</div>
  <div><b>{{ money(t.incl_minor, t.currency) }}</b></div>{% else %}<span class="dim">no sessions</span>{% endfor %}</td>
</tr>
{% else %}
<tr><td colspan="7" class="dim">No charger has reported yet.</td></tr>
{% endfor %}
</tbody></table>
<p class="small dim">Times in {{ f.tz }}. Today: finished sessions started on {{ f.day }}, prices incl. VAT as
the chargers computed them. Power and energy of a running session: its latest meter value.</p>
""",
}

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2329;background:#f4f6f8}
header{display:flex;align-items:center;gap:16px;padding:12px 20px;background:#1f3a4d;color:#fff}
h1{font-size:20px;margin:0}
main{padding:12px 20px}
.live{padding:2px 10px;border-radius:10px;font-size:12px}
.live.on{background:#2e9e5b}.live.off{background:#a66b00}
.summary{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:12px}
.summary div{background:#fff;border-radius:6px;padding:8px 12px;box-shadow:0 1px 2px #0002}
.summary .ok b{color:#1c7c43}.summary .warn b{color:#a66b00}.summary .bad b{color:#b3261e}
table.fleet{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;vertical-align:top;padding:8px 10px;border-bottom:1px solid #e2e6ea}
th{background:#e9eef2;font-weight:600}
tr.offline td{background:#f7f7f7;color:#555}
tr.faulted td.device{border-left:5px solid #b3261e}
td.device{font-weight:600;font-family:ui-monospace,monospace;word-break:break-all;max-width:220px}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;font-weight:600;background:#dde3e8}
.badge.online{background:#2e9e5b;color:#fff}.badge.offline{background:#6b7280;color:#fff}
.badge.c-available{background:#cdeed9;color:#14532d}
.badge.c-charging{background:#1d6fd1;color:#fff}
.badge.c-preparing,.badge.c-finishing{background:#d8e7fb;color:#0b3d78}
.badge.c-suspendedev,.badge.c-suspendedevse{background:#fde9b8;color:#6b4500}
.badge.c-faulted{background:#b3261e;color:#fff}
.badge.c-unavailable{background:#6b7280;color:#fff}
.badge.latched{background:#b3261e;color:#fff}
td.session,td.today{min-width:150px}
.power{font-size:18px;font-weight:700;color:#1d6fd1}
.fault{color:#b3261e;margin-bottom:4px;word-break:break-word}
.small{font-size:12px;color:#555}.err{color:#b3261e}.dim{color:#999}
.update.u-rejected,.update.u-rolled_back{color:#b3261e}.update.u-installed{color:#1c7c43}
.note{padding:0 20px}
"""

ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
        'fill="#1f3a4d"/><path d="M9 1 3 9h4l-1 6 6-8H8z" fill="#ffd23f"/></svg>')

JS = """"use strict";
(function () {
  var offset = 0;
  function ago(s) {
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function ages() {
    var now = Date.now() / 1000 + offset;
    document.querySelectorAll("[data-since]").forEach(function (el) {
      if (!el.title) el.title = el.textContent;
      el.textContent = ago(Math.max(0, Math.round(now - Number(el.getAttribute("data-since")))));
    });
  }
  var live = document.getElementById("live");
  var es = new EventSource("api/events");
  es.addEventListener("fleet", function (e) {
    var d = JSON.parse(e.data);
    offset = d.now - Date.now() / 1000;
    document.getElementById("fleet").innerHTML = d.html;   // rendered and escaped by the server
    document.body.setAttribute("data-version", String(d.version));
    live.textContent = "live";
    live.className = "live on";
    ages();
  });
  es.onerror = function () {
    live.textContent = "reconnecting…";
    live.className = "live off";
  };
  setInterval(ages, 1000);
  ages();
})();
"""


class FleetWeb:
    """The page's web server: its own store connection, a thread running uvicorn until stop()."""

    def __init__(self, db_url, tz="UTC", refresh_s=REFRESH_S, out=None):
        self.db_url = db_url
        self.tz = tz
        zone(tz)   # a bad --tz fails at start, not at the first request
        self.refresh_s = refresh_s
        self.out = out or (lambda line: print(line, flush=True))
        self.env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True,
                                      undefined=jinja2.StrictUndefined)
        self.env.globals.update(kw=_kw, kwh=_kwh, money=money, clock=self._clock)
        self._store = None
        self._lock = threading.Lock()        # one query at a time on the one connection
        self._changed = None                 # asyncio.Condition, created in the server's loop
        self._current = None                 # (version, html, now) pushed to the live streams
        self._listeners = 0
        self._closing = False
        self.server = None
        self._thread = None
        self._loop = None                    # the server thread's event loop
        self.app = Starlette(routes=[
            Route("/", self.page), Route("/api/fleet", self.api_fleet),
            Route("/api/devices/{device}/acks", self.api_acks), Route("/api/events", self.events),
            Route("/static/fleet.js", lambda r: Response(JS, media_type="text/javascript", headers=HEADERS)),
            Route("/static/fleet.css", lambda r: Response(CSS, media_type="text/css", headers=HEADERS)),
            Route("/static/fleet.svg", lambda r: Response(ICON, media_type="image/svg+xml", headers=HEADERS))],
            lifespan=self._lifespan)

    def _clock(self, t):
        return datetime.datetime.fromtimestamp(t, zone(self.tz)).strftime("%H:%M:%S") if t else "–"

    # --- store access (worker threads) ---

    def read(self, fn):
        """Runs fn(store) on the page's own connection; reopens it after a database error."""
        with self._lock:
            if self._store is None:
                self._store = Store(self.db_url)
            st = self._store
            try:
                result = fn(st)
                st.rollback()   # ends the read transaction (PostgreSQL): the next read sees new rows
                return result
            except st.errors:
                self._store = None
                try:
                    st.close()
                except st.errors:
                    pass
                raise

    def fleet(self, day=None):
        return self.read(lambda st: snapshot(st, self.tz, day))

    def render(self, fleet):
        return self.env.get_template("fleet.html").render(f=fleet)

    # --- routes ---

    async def _call(self, fn, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except Exception as e:  # noqa: BLE001 - a store outage is a 503, the server stays up
            self.out("fleetweb: store error: %s" % e)
            return None

    async def page(self, request):
        f = await self._call(self.fleet)
        if f is None:
            return HTMLResponse("<p>The store is not reachable; try again shortly.</p>", 503, headers=HEADERS)
        return HTMLResponse(self.env.get_template("page.html").render(f=f), headers=HEADERS)

    async def api_fleet(self, request):
        day = request.query_params.get("day")
        if day is not None:
            try:
                if not _DAY.match(day):
                    raise ValueError
                day = datetime.date.fromisoformat(day)
            except ValueError:
                return JSONResponse({"error": "day must be YYYY-MM-DD"}, 400, headers=HEADERS)
        f = await self._call(self.fleet, day)
        if f is None:
            return JSONResponse({"error": "store not reachable"}, 503, headers=HEADERS)
        return JSONResponse(f, headers=HEADERS)

    async def api_acks(self, request):
        device = request.path_params["device"]
        rows = await self._call(self.read, lambda st: st.cmd_acks_of(device, limit=50))
        if rows is None:
            return JSONResponse({"error": "store not reachable"}, 503, headers=HEADERS)
        acks = [dict(_record(r["record"]), received_s=r["received_s"]) for r in rows]
        return JSONResponse({"device": device, "acks": acks}, headers=HEADERS)

    async def events(self, request):
        if self._listeners >= MAX_LISTENERS:
            return JSONResponse({"error": "too many live streams"}, 503, headers=HEADERS)
        return StreamingResponse(self._stream(), media_type="text/event-stream",
                                 headers=dict(HEADERS, **{"X-Accel-Buffering": "no"}))

    async def _stream(self):
        self._listeners += 1
        sent = None
        try:
            yield "retry: 2000\n\n"
            while not self._closing:
                async with self._changed:
                    if self._current is None or self._current[0] == sent:
                        try:
                            await asyncio.wait_for(self._changed.wait(), HEARTBEAT_S)
                        except asyncio.TimeoutError:
                            pass
                    current = self._current
                if current is None or current[0] == sent:
                    yield ": keep-alive\n\n"
                    continue
                sent = current[0]
                data = json.dumps({"version": current[0], "html": current[1], "now": current[2]})
                yield "event: fleet\nid: %d\ndata: %s\n\n" % (current[0], data)
        finally:
            self._listeners -= 1

    async def _watch(self):
        """While someone listens: reads the store every refresh_s and wakes the streams on a change."""
        version, last = 0, None
        while not self._closing:
            if not self._listeners:
                self._current = last = None   # a stream opened later waits for a fresh read
            else:
                f = await self._call(self.fleet)
                if f is not None:
                    html = self.render(f)
                    if html != last:
                        version, last = version + 1, html
                    async with self._changed:
                        self._current = (version, html, f["generated_s"])
                        self._changed.notify_all()
            await asyncio.sleep(self.refresh_s)

    async def _close_streams(self):
        """Ends the live streams, so the server can stop without waiting for their clients."""
        self._closing = True
        async with self._changed:
            self._changed.notify_all()

    def _lifespan(self, app):
        web = self

        class Span:
            async def __aenter__(self):
                web._changed = asyncio.Condition()
                web._loop = asyncio.get_running_loop()
                self.task = web._loop.create_task(web._watch())

            async def __aexit__(self, *exc):
                await web._close_streams()
                self.task.cancel()

        return Span()

    # --- the server thread ---

    def start(self, host="127.0.0.1", port=8080, timeout=15):
        """Serves in a background thread; returns once it listens (RuntimeError if it cannot)."""
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning", access_log=False,
                                lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="fleetweb", daemon=True)
        self._thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the fleet page could not listen on %s:%d" % (host, port))
            time.sleep(0.05)
        self.out("fleetweb: fleet page on http://%s:%d/ (times in %s)" % (host, port, self.tz))
        return self

    def stop(self):
        if self.server is not None:
            if self._loop is not None and self._thread.is_alive():
                asyncio.run_coroutine_threadsafe(self._close_streams(), self._loop).result(5)
            self.server.should_exit = True
            self._thread.join(10)
            self.server = None
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
