"""The live fleet page (tools/fleetweb.py) and the backend's cmd_ack records, against a simulated
fleet: three chargers on one private broker, the backend started as `backend.py --http`, and the
page in headless Chromium driven over the DevTools protocol (a change shows up without a reload)."""
import base64
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest

import sim
from backend import Backend
from broker import Broker, free_port
from downlink import D2B, Sealer, derive, seal, to_device
from fleetweb import active_faults, day_bounds, snapshot, update_state, zone
from scenario import ROOT
from store import Store

OUTPUT = os.environ.get("TEST_OUTPUT_DIR", os.path.join(ROOT, "out", "test-output"))
TZ = "Europe/Berlin"
KEY = bytes(range(100, 132))
EVIL_ID = "cp-<img src=x onerror=alert(1)>"
EVIL_DETAIL = "<script>document.title='pwned'</script><b class=evil>bold</b>"
EVIL_CMD_ID = "<b class=evil>u-1</b>"


# --- how every client of these tests reaches the broker: the one place to add credentials ---

def broker_address(broker):
    """(host, port) of the test broker."""
    return "127.0.0.1", broker.port


def broker_arg(broker):
    """HOST:PORT, as the backend's --broker takes it."""
    return "%s:%d" % broker_address(broker)


def backend_argv(broker):
    """The backend process's --broker/--user/--fleet-key and the environment holding its password."""
    login = broker.login("backend")
    env = dict(os.environ, CP_BACKEND_PASSWORD=login["password"])
    fleet = os.path.join(broker.dir, "fleet.key")
    with open(fleet, "w") as f:
        f.write(broker.fleet_key.hex())
    return ["--broker", broker_arg(broker), "--user", login["username"], "--fleet-key", fleet], env


def as_device(broker, device, suffix, rec):
    """rec sealed as a charger publishes it (docs/mqtt.md "Authenticity"): the backend stores nothing else."""
    return seal(derive(broker.fleet_key, device), D2B, device, suffix, json.dumps(rec).encode())


def mqtt_client(broker, name, device=None):
    """A connected paho client for the test's own messages: the backend's rights (commands), or a
    device's account (a forged charger publishing as `device`)."""
    host, port = broker_address(broker)
    login = broker.device(device) if device else broker.login("backend")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=login["username"])
    c.username_pw_set(**login)
    c.connect(host, port)
    c.loop_start()
    return c


# --- the fleet ------------------------------------------------------------------------------

def _iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scenario(tmp, source, device_id, start_s, **changes):
    with open(os.path.join(ROOT, source)) as f:
        sc = json.load(f)
    sc.update(device_id=device_id, start=_iso(start_s), **changes)
    path = os.path.join(tmp, device_id + ".json")
    with open(path, "w") as f:
        json.dump(sc, f)
    return path


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read()


def _fleet(base, **query):
    q = "?" + "&".join("%s=%s" % kv for kv in query.items()) if query else ""
    _, _, body = _get(base + "/api/fleet" + q)
    return json.loads(body)


def _device(fleet, device):
    """The device's row, or None while the backend has not heard of it."""
    return next((d for d in fleet["devices"] if d["device"] == device), None)


def _wait(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError("timed out waiting for %s" % what)


class Fleet:
    """Broker, `backend.py --http` (a process) and the simulated chargers of one module."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.db = os.path.join(tmp, "backend.sqlite")
        self.lines = {}
        self.rc = {}
        self.live_thread = None

    def start(self):
        self.broker = Broker().__enter__()
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.log = open(os.path.join(self.tmp, "backend.log"), "w")
        argv, env = backend_argv(self.broker)
        self.backend = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tools", "backend.py")] + argv +
            ["--db", self.db, "--http", "127.0.0.1:%d" % self.port, "--tz", TZ, "--ack-delay-ms", "50"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

        def up():
            try:
                return _fleet(self.base) is not None
            except (OSError, ValueError):
                return False
        _wait("the fleet page to listen", up, 60)
        tz = zone(TZ)
        today = datetime.datetime.now(tz).date()
        self.day = today.isoformat()
        one_am = day_bounds(today, tz)[0] + 3600   # every session of the fast runs starts today
        # the fast ones, one after the other (the runner's own command client has one id per process)
        self.run("cp-fleet-a", _scenario(self.tmp, "demo/two_drivers.json", "cp-fleet-a", one_am))
        self.run("cp-fleet-b", _scenario(self.tmp, "tests/data/scenarios/faults/overcurrent.json", "cp-fleet-b",
                                         one_am))
        # in real time: a clock-aligned meter value (every 15 min of UTC) 10 s after the start
        aligned = (int(time.time()) // 900 + 1) * 900
        live = _scenario(self.tmp, "demo/two_drivers.json", "cp-fleet-c", aligned - 10, realtime=True, end=60,
                         events=[{"t": 1, "plug": True}, {"t": 2, "tap": "alice"}, {"t": 3, "ev_current_a": 16}])
        self.live_thread = threading.Thread(target=self.run, args=("cp-fleet-c", live), daemon=True)
        self.live_thread.start()
        return self

    def run(self, device, path):
        self.lines[device] = lines = []
        self.rc[device] = sim.run(path, broker=self.broker, site_key=KEY, out=lines.append)

    def stop(self):
        if self.live_thread is not None:
            self.live_thread.join(150)
        self.backend.terminate()
        try:
            self.backend.wait(20)
        except subprocess.TimeoutExpired:
            self.backend.kill()
        self.log.close()
        self.broker.__exit__()

    def backend_log(self):
        with open(os.path.join(self.tmp, "backend.log")) as f:
            return f.read()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = Fleet(str(tmp_path_factory.mktemp("fleet")))
    try:
        yield f.start()
    finally:
        f.stop()


def _stored(db, sql, params=()):
    st = Store(db)
    try:
        return st.query(sql, params)
    finally:
        st.close()


# --- the JSON API over the simulated fleet ------------------------------------------------------

def test_fast_chargers_ran_and_the_backend_stored_them(fleet):
    for device in ("cp-fleet-a", "cp-fleet-b"):
        assert fleet.rc[device] == 0, "\n".join(fleet.lines[device][-30:])
    assert "fleet page on http://127.0.0.1:%d/" % fleet.port in fleet.backend_log()


def test_api_reports_status_and_today_sessions_and_revenue(fleet):
    f = _fleet(fleet.base)
    assert f["tz"] == TZ and f["day"] == fleet.day
    a = _device(f, "cp-fleet-a")
    # the run is over: the Last Will says offline, the page keeps the last connector status it knew
    assert a["state"] == "offline" and a["connector"] == "Available" and a["session"] is None
    assert a["faults"] == [] and a["last_seen_s"] is not None
    ended = _stored(fleet.db, "SELECT energy_wh, total_incl_minor, total_excl_minor FROM sessions "
                              "WHERE device = 'cp-fleet-a' AND final = 1")
    assert len(ended) == 2
    assert a["today"] == [{"currency": "EUR", "sessions": 2, "energy_wh": sum(r[0] for r in ended),
                           "incl_minor": sum(r[1] for r in ended), "excl_minor": sum(r[2] for r in ended)}]
    expected_wh = 230 * 16 * 1800 / 3600 + 230 * 32 * 2400 / 3600   # V * I * t of the two sessions
    assert abs(a["today"][0]["energy_wh"] - expected_wh) <= 0.01 * expected_wh
    other_day = _fleet(fleet.base, day="2020-01-01")
    assert _device(other_day, "cp-fleet-a")["today"] == [] and other_day["day"] == "2020-01-01"


def test_api_reports_the_latched_fault_and_the_faulted_connector(fleet):
    b = _device(_fleet(fleet.base), "cp-fleet-b")
    assert b["state"] == "offline" and (b["connector"], b["error"]) == ("Faulted", "OverCurrentFailure")
    assert [(x["kind"], x["code"], x["latched"], x["trips"]) for x in b["faults"]] == [
        ("overcurrent", "OverCurrentFailure", True, 4)]
    assert "mA" in b["faults"][0]["detail"]


def test_the_backend_stores_every_cmd_ack_it_receives(fleet):
    rows = _stored(fleet.db, "SELECT cmd_id, cmd, status, reason, received_s FROM cmd_acks WHERE device = ?",
                   ("cp-fleet-b",))
    # the scenario's remote_stop at 700 s finds no session (the latched fault ended it)
    assert [(r[0], r[1], r[2]) for r in rows] == [("sim-1", "remote_stop", "rejected")]
    assert rows[0][3] and rows[0][4] > 0
    _, _, body = _get(fleet.base + "/api/devices/cp-fleet-b/acks")
    acks = json.loads(body)["acks"]
    assert [(x["id"], x["cmd"], x["status"], x["reason"]) for x in acks] == [("sim-1", "remote_stop", "rejected",
                                                                             rows[0][3])]


def test_api_shows_the_live_power_and_energy_of_a_running_session(fleet):
    def charging():
        c = _device(_fleet(fleet.base), "cp-fleet-c")
        return c if c and c["session"] and c["session"]["p_w"] else None
    c = _wait("cp-fleet-c's first meter value", charging, 60)
    assert c["state"] == "online" and c["connector"] == "Charging"
    meter = _stored(fleet.db, "SELECT tx_id, energy_wh, p_w FROM meter_values WHERE device = 'cp-fleet-c' "
                              "ORDER BY received_s DESC LIMIT 1")[0]
    assert (c["session"]["tx_id"], c["session"]["energy_wh"], c["session"]["p_w"]) == tuple(meter)
    assert abs(c["session"]["p_w"] - 230 * 16) <= 0.02 * 230 * 16


# --- the page in a browser ----------------------------------------------------------------------

def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Headless Chromium over the DevTools protocol: navigate, evaluate, screenshot, console."""

    def __init__(self, exe):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="cp-chromium-")
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--user-data-dir=" + self.profile, "--hide-scrollbars",
             "--window-size=1400,900", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        _wait("Chromium's DevTools port", lambda: os.path.exists(port_file) and os.path.getsize(port_file), 60)
        with open(port_file) as f:
            port = int(f.readline())
        _, _, body = _get("http://127.0.0.1:%d/json/list" % port)
        page = next(t for t in json.loads(body) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30, legacy=True)
        self.n = 0
        self.console = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(domain + ".enable")

    def call(self, method, timeout=30, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            msg = json.loads(self.ws.recv(max(0.1, deadline - time.time())))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg["result"]
            if msg.get("method") in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded"):
                self.console.append(msg)

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError("%s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


def _cell(device, cls):
    return ("(function(){var r=[...document.querySelectorAll('#fleet tr[data-device]')].find("
            "function(r){return r.getAttribute('data-device')===%s});"
            "return r ? r.querySelector('td.%s').innerText.trim() : null})()" % (json.dumps(device), cls))


def _forge_a_charger(fleet):
    """A charger whose id, status and fault detail carry HTML (device strings are attacker-controlled)."""
    c = mqtt_client(fleet.broker, "forger", device=EVIL_ID)
    try:
        prefix = "cp/v1/%s/" % EVIL_ID
        c.publish(prefix + "status", as_device(fleet.broker, EVIL_ID, "status", {
            "state": "online", "connector": "Faulted", "error": "OtherError", "ts": _iso(time.time())}),
            qos=1, retain=True).wait_for_publish(5)
        c.publish(prefix + "fault", as_device(fleet.broker, EVIL_ID, "fault", {
            "msg_id": "f-1", "event": "raised", "code": "OtherError", "kind": "<i>internal</i>", "detail": EVIL_DETAIL,
            "latched": True, "ts": _iso(time.time())}), qos=1).wait_for_publish(5)
        c.publish(prefix + "cmd_ack", as_device(fleet.broker, EVIL_ID, "cmd_ack", {
            "id": EVIL_CMD_ID, "cmd": "update", "status": "rejected", "reason": "<img src=y onerror=alert(2)>"}),
            qos=1).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


def test_page_shows_the_fleet_and_updates_live_without_a_reload(fleet):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the page render check is skipped")
    _forge_a_charger(fleet)
    _wait("the forged charger's fault", lambda: (_device(_fleet(fleet.base), EVIL_ID) or {}).get("faults"), 30)
    _wait("cp-fleet-c charging with a meter value",
          lambda: ((_device(_fleet(fleet.base), "cp-fleet-c") or {}).get("session") or {}).get("p_w"), 60)
    status, headers, page = _get(fleet.base + "/")
    assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
    assert b"<script>document.title" not in page and b"&lt;script&gt;document.title" in page
    os.makedirs(OUTPUT, exist_ok=True)
    shot = os.path.join(OUTPUT, "fleet_page.png")   # while cp-fleet-c charges; after the stop: _after_stop
    b = Browser(exe)
    try:
        b.call("Page.navigate", url=fleet.base + "/")
        _wait("the live stream", lambda: b.evaluate("(document.getElementById('live') || {}).textContent") == "live",
              30)
        assert b.evaluate(_cell("cp-fleet-c", "connector")).startswith("Charging")
        assert "kW" in b.evaluate(_cell("cp-fleet-c", "session"))
        assert "OverCurrentFailure" in b.evaluate(_cell("cp-fleet-b", "faults"))
        assert "latched" in b.evaluate(_cell("cp-fleet-b", "faults"))
        assert "2 sessions" in b.evaluate(_cell("cp-fleet-a", "today"))
        # device strings are text: no element of theirs made it into the page, the title is untouched
        assert b.evaluate("document.querySelectorAll('#fleet img, #fleet script, #fleet .evil, #fleet i').length") == 0
        assert EVIL_ID in b.evaluate("document.getElementById('fleet').innerText")
        assert EVIL_DETAIL in b.evaluate(_cell(EVIL_ID, "faults"))
        assert EVIL_CMD_ID in b.evaluate(_cell(EVIL_ID, "fw"))
        assert b.evaluate("document.title") == "Fleet – charge points"
        b.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        b.screenshot(shot)
        version = int(b.evaluate("document.body.getAttribute('data-version')"))
        b.evaluate("window.sameDocument = 'yes'")
        # the operator stops the session from the backend: the charger answers, the row changes live
        c = mqtt_client(fleet.broker, "operator")
        try:
            sealer = Sealer(fleet.broker.fleet_key)
            to_device(c, "cp-fleet-c", "cmd/remote_stop", {"id": "fleet-stop-1"}, sealer).wait_for_publish(5)
            to_device(c, "cp-fleet-c", "cmd/update", {"id": EVIL_CMD_ID}, sealer).wait_for_publish(5)
        finally:
            c.loop_stop()
            c.disconnect()
        _wait("the stop to reach the page", lambda: not b.evaluate(_cell("cp-fleet-c", "connector")).startswith(
            "Charging") and b.evaluate(_cell("cp-fleet-c", "session")) == "–"
            and "update" in b.evaluate(_cell("cp-fleet-c", "fw")), 45)
        assert b.evaluate("window.sameDocument") == "yes", "the page was reloaded"
        assert int(b.evaluate("document.body.getAttribute('data-version')")) > version
        api = _device(_fleet(fleet.base), "cp-fleet-c")
        assert b.evaluate(_cell("cp-fleet-c", "connector")).startswith(api["connector"])
        assert api["session"] is None and api["connector"] in ("Finishing", "SuspendedEVSE", "SuspendedEV")
        assert "rejected" in b.evaluate(_cell("cp-fleet-c", "fw")) and EVIL_CMD_ID in b.evaluate(_cell("cp-fleet-c", "fw"))
        assert b.evaluate("document.querySelectorAll('#fleet .evil').length") == 0
        b.screenshot(os.path.join(OUTPUT, "fleet_page_after_stop.png"))
        errors = [m for m in b.console if m.get("method") == "Runtime.exceptionThrown"
                  or m["params"].get("entry", {}).get("level") == "error"
                  or m["params"].get("type") == "error"]
        assert errors == [], errors
    finally:
        b.close()
    from PIL import Image
    with Image.open(shot) as im:
        assert im.size == (1400, 900)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the page shows the fleet, not a blank sheet"
    acks = _stored(fleet.db, "SELECT cmd, status FROM cmd_acks WHERE device = 'cp-fleet-c' AND cmd_id = ?",
                   ("fleet-stop-1",))
    assert acks == [("remote_stop", "accepted")]


# --- the store and the page's logic on both databases (no simulator) ---------------------------

def test_backend_keeps_cmd_acks_and_sets_malformed_ones_aside(tmp_path):
    db = str(tmp_path / "b.sqlite")
    lines = []
    with Broker() as broker:
        backend = Backend(db, **broker.client_args("backend"), out=lines.append).start()
        try:
            assert backend.wait_connected()
            c = mqtt_client(broker, "acks", device="cp-9")
            for rec in ({"id": "u-7", "cmd": "update", "status": "progress", "percent": 40},
                        {"id": "t-3", "cmd": "tariff", "status": "accepted", "tariff_id": "night", "version": 4},
                        {"id": None, "cmd": "bogus", "status": "rejected", "reason": "id must be a string"},
                        {"id": "x-1", "cmd": "update"},                       # no status
                        {"id": ["x"], "cmd": "update", "status": "rejected"}):
                c.publish("cp/v1/cp-9/cmd_ack", as_device(broker, "cp-9", "cmd_ack", rec), qos=1).wait_for_publish(5)
            c.loop_stop()
            c.disconnect()
            assert backend.wait_idle(0.5, timeout=20)
        finally:
            backend.stop()
    rows = _stored(db, "SELECT cmd_id, cmd, status, reason, extra FROM cmd_acks ORDER BY cmd")
    assert [tuple(r) for r in rows] == [(None, "bogus", "rejected", "id must be a string", None),
                                        ("t-3", "tariff", "accepted", None, '{"tariff_id":"night","version":4}'),
                                        ("u-7", "update", "progress", None, '{"percent":40}')]
    rejects = _stored(db, "SELECT reason FROM rejects ORDER BY reason")
    assert [r[0] for r in rejects] == ["id must be null or a string of at most 64 characters",
                                       "status must be a short string"]
    assert any(line.endswith("cp-9 cmd_ack update u-7 progress 40 %") for line in lines), lines
    assert backend.counts["stored"] == 3 and backend.counts["malformed"] == 2

def test_cmd_acks_are_kept_once_each_with_their_extra_fields(db_url):
    with Store(db_url) as st:
        assert st.add_cmd_ack("cp-1", {"id": "u-1", "cmd": "update", "status": "progress", "percent": 40}, 100)
        assert not st.add_cmd_ack("cp-1", {"id": "u-1", "cmd": "update", "status": "progress", "percent": 40}, 101)
        assert st.add_cmd_ack("cp-1", {"id": "u-1", "cmd": "update", "status": "progress", "percent": 50}, 101)
        assert st.add_cmd_ack("cp-1", {"id": None, "cmd": "x", "status": "rejected", "reason": "no id"}, 102)
        assert st.add_cmd_ack("cp-1", {"id": None, "cmd": "x", "status": "rejected", "reason": "no id"}, 103)
        assert st.add_cmd_ack("cp-2", {"id": "u-1", "cmd": "update", "status": "progress", "percent": 40}, 100)
        rows = st.query("SELECT cmd_id, cmd, status, reason, extra FROM cmd_acks WHERE device = 'cp-1' "
                        "ORDER BY received_s, extra")
        assert [tuple(r) for r in rows] == [("u-1", "update", "progress", None, '{"percent":40}'),
                                            ("u-1", "update", "progress", None, '{"percent":50}'),
                                            (None, "x", "rejected", "no id", None),
                                            (None, "x", "rejected", "no id", None)]
        assert [a["received_s"] for a in st.cmd_acks_of("cp-1", "update")] == [101, 100]


def test_snapshot_on_both_stores(db_url):
    tz = zone(TZ)
    day = datetime.date(2026, 3, 29)              # the clocks go forward in Berlin: a 23-hour day
    start, end = day_bounds(day, tz)
    assert end - start == 23 * 3600
    with Store(db_url) as st:
        st.add_status("cp-1", {"state": "online", "connector": "Charging", "ts": _iso(start + 7200)}, start + 7200)
        for tx, started, wh, incl in ((1, start - 60, 1000, 36), (2, start + 60, 2000, 72), (3, end - 1, 500, 18),
                                      (4, end, 700, 25)):
            st.add_session_event("cp-1", {"msg_id": "%d-1" % tx, "tx_id": tx, "seq": 1, "event": "ended",
                                          "started_at": _iso(started), "ended_at": _iso(started + 600),
                                          "ts": _iso(started + 600), "energy_wh": wh,
                                          "cost": {"currency": "EUR", "total_excl_vat_minor": incl * 10 // 12,
                                                   "total_incl_vat_minor": incl}}, start + 100)
        st.add_session_event("cp-1", {"msg_id": "5-0", "tx_id": 5, "seq": 0, "event": "started",
                                      "ts": _iso(start + 7000)}, start + 7000)
        st.add_meter("cp-1", {"ts": _iso(start + 7100), "tx_id": 4, "energy_wh": 9, "p_w": 1}, start + 7100)
        st.add_meter("cp-1", {"ts": _iso(start + 7200), "tx_id": 5, "energy_wh": 321, "p_w": 7360}, start + 7200)
        st.add_cmd_ack("cp-1", {"id": "u-2", "cmd": "update", "status": "installed", "version": "1.4.0"}, start + 50)
        # a fault raised and cleared, another raised; the clear arrived before the raise (offline)
        st.add_fault("cp-1", {"msg_id": "f-2", "event": "cleared", "code": "OverVoltage", "kind": "overvoltage",
                              "ts": _iso(start + 20)}, start + 30)
        st.add_fault("cp-1", {"msg_id": "f-1", "event": "raised", "code": "OverVoltage", "kind": "overvoltage",
                              "ts": _iso(start + 10)}, start + 40)
        st.add_fault("cp-1", {"msg_id": "f-3", "event": "raised", "code": "GroundFailure", "kind": "rcd",
                              "latched": True, "trips": 7, "detail": "trip", "ts": _iso(start + 50)}, start + 50)
        st.add_status("cp-2", {"state": "online", "connector": "Available", "ts": _iso(start)}, start)
        st.add_status("cp-2", {"state": "offline"}, start + 100)
        f = snapshot(st, TZ, day, now=start + 7300)
    assert [d["device"] for d in f["devices"]] == ["cp-1", "cp-2"]
    one, two = f["devices"]
    assert one["session"] == {"tx_id": 5, "started_at": _iso(start + 7000), "energy_wh": 321, "p_w": 7360,
                              "meter_ts": _iso(start + 7200), "meter_s": start + 7200}
    assert one["today"] == [{"currency": "EUR", "sessions": 2, "energy_wh": 2500, "excl_minor": 60 + 15,
                             "incl_minor": 90}]
    assert [(x["kind"], x["latched"], x["trips"]) for x in one["faults"]] == [("rcd", True, 7)]
    assert one["version"] == "1.4.0" and one["update"]["status"] == "installed"
    assert one["last_seen_s"] == start + 7200
    assert (two["state"], two["connector"], two["last_seen_s"]) == ("offline", "Available", start + 100)
    assert f["summary"] == {"chargers": 2, "online": 1, "charging": 1, "faulted": 1,
                            "today": [{"currency": "EUR", "sessions": 2, "energy_wh": 2500, "excl_minor": 75,
                                       "incl_minor": 90}]}
    json.dumps(f)   # plain data for the JSON API


def test_update_state_orders_the_answers_of_one_second():
    def ack(status, **extra):
        rec = dict(extra, id="u-9", cmd="update", status=status)
        return {"cmd_id": "u-9", "status": status, "reason": extra.get("reason"), "record": json.dumps(rec),
                "received_s": 5}
    state, installed = update_state([ack("progress", percent=100), ack("accepted"), ack("progress", percent=0),
                                     ack("rejected", reason="sha256 mismatch")])
    assert (state["status"], state["reason"], installed) == ("rejected", "sha256 mismatch", None)
    state, _ = update_state([ack("progress", percent=30), ack("accepted"), ack("progress", percent=0)])
    assert (state["status"], state["percent"]) == ("progress", 30)


def test_active_faults_follow_the_chargers_numbering_not_arrival():
    def ev(n, event, kind, received):
        return {"msg_id": "f-%d" % n, "event": event, "code": "X", "latched": 0, "detail": None, "ts": None,
                "received_s": received, "record": json.dumps({"kind": kind, "trips": 1})}
    assert active_faults([ev(2, "cleared", "a", 1), ev(1, "raised", "a", 2)]) == []
    assert [f["kind"] for f in active_faults([ev(3, "raised", "a", 1), ev(2, "cleared", "a", 2),
                                              ev(1, "raised", "b", 3)])] == ["b", "a"]


def test_backend_command_line_names_a_bad_http_or_tz(tmp_path):
    tool = os.path.join(ROOT, "tools", "backend.py")
    r = subprocess.run([sys.executable, tool, "--http", "nohost"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 2 and "--http must be HOST:PORT" in r.stdout
    with Broker() as broker:
        argv, env = backend_argv(broker)
        r = subprocess.run([sys.executable, tool] + argv + ["--db", str(tmp_path / "b.sqlite"), "--http",
                                                             "127.0.0.1:%d" % free_port(), "--tz", "Mars/Olympus"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "'Mars/Olympus' is not a known time zone" in r.stdout
