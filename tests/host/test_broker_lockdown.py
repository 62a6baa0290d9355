"""The shipped broker configuration (tools/broker.py, docs/security.md) against attackers, with a real
simulated charger connected (real time) and the reference backend storing: anonymous clients, another
charger's account, the read-only observer and a client-id takeover.

Every test runs twice: on the locked-down broker, where the attack must fail, and on an open broker
(`Broker(open=True)`), where the same check must see the attack work (so each test can fail)."""
import base64
import json
import shutil
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

import sim
from backend import Backend
from broker import Broker, mqtt_connect, password_line
from mqtt_watch import Watch
from store import Store

DEVICE = "cp-lock-0001"
OTHER = "cp-lock-0002"     # another charger of the fleet, with its own valid account
THIRD = "cp-lock-0003"
SCENARIO = {"board": "sim", "start": "2026-03-02T07:00:00Z", "device_id": DEVICE, "realtime": True,
            "cards": {"alice": "04A1B2C3D4E5F6"}, "allow": ["alice"],
            "events": [{"t": 1, "plug": True}, {"t": 2, "tap": "alice"}, {"t": 3, "ev_current_a": 16}],
            "end": 16}
FORGED_SESSION = {"msg_id": "forged-session", "tx_id": 999, "seq": 0, "event": "started",
                  "ts": "2026-03-02T07:00:05Z", "token": "00112233445566778899aabbccddeeff", "key": 1,
                  "auth": "local_list", "tariff_id": "flat", "meter_start_wh": 0}
FORGED_FAULT = {"msg_id": "forged-fault", "event": "raised", "code": "GroundFailure", "latched": True,
                "ts": "2026-03-02T07:00:05Z"}


def _client(broker, login, client_id, got=None):
    """A paho client logged in with `login` (None: anonymous), collecting what it receives into `got`."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if login:
        c.username_pw_set(login["username"], login["password"])
    if got is not None:
        c.on_message = lambda client, userdata, msg: got.append((msg.topic, bytes(msg.payload)))
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def _close(c):
    c.disconnect()
    c.loop_stop()


class Attack:
    """Runs in its own thread once the charger is connected; `window` holds what the charger and the
    observer showed from the first attack until 3 s after the last one."""

    def __init__(self, broker, watch, lines):
        self.broker = broker
        self.watch = watch
        self.lines = lines
        self.eavesdropped = []
        self.done = threading.Event()
        self.error = None

    def start(self):
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            self._attack()
        except Exception as e:  # noqa: BLE001 - reported by the tests
            self.error = repr(e)
        finally:
            self.done.set()

    def _attack(self):
        b = self.broker
        prefix = "cp/v1/%s/" % DEVICE
        first_line, first_message = len(self.lines), len(self.watch.messages)
        self.anonymous = mqtt_connect("127.0.0.1", b.port)
        other = _client(b, b.device(OTHER), OTHER, self.eavesdropped)
        other.subscribe(prefix + "#", qos=1)
        for suffix, payload in (("cmd/remote_stop", {"id": "forged-stop"}),
                                ("ack", {"msg_ids": 7, "forged": True}),
                                ("auth/resp", {"id": "forged-auth", "status": "Accepted"}),
                                ("session", FORGED_SESSION), ("fault", FORGED_FAULT)):
            other.publish(prefix + suffix, json.dumps(payload), qos=1).wait_for_publish(5)
        time.sleep(0.5)
        _close(other)
        observer = _client(b, b.login("observer"), "observer")
        observer.publish(prefix + "cmd/clear_fault", json.dumps({"id": "observer-cmd"}), qos=1).wait_for_publish(5)
        _close(observer)
        # the charger's client id, with another account's valid credentials, then with a wrong password
        kick = _client(b, b.device(THIRD), DEVICE)
        time.sleep(1.0)
        _close(kick)
        self.wrong_password = mqtt_connect("127.0.0.1", b.port, DEVICE, "not-the-password", DEVICE)
        time.sleep(3.0)
        self.window_events = [json.loads(line[2:]) for line in self.lines[first_line:] if line.startswith("@ ")]
        self.window_messages = list(self.watch.messages[first_message:])


class Attacked:
    """One run: the charger connected, attacked, then ran to the scenario's end."""

    def __init__(self, mode, tmp):
        self.locked = mode == "locked"
        self.lines = []
        db = str(tmp / "backend.sqlite")
        with Broker(open=not self.locked) as broker:
            backend = Backend(db, **broker.client_args("backend"), auth={}, out=lambda line: None).start()
            assert backend.wait_connected()
            watch = Watch(broker, topic="#")
            self.attack = Attack(broker, watch, self.lines)
            path = tmp / "scenario.json"
            path.write_text(json.dumps(SCENARIO))
            self.rc = sim.run(str(path), broker=broker, site_key=bytes(range(32)), raw=True, out=self._line,
                              run_dir=str(tmp / "run"))
            self.attack.done.wait(30)
            backend.wait_idle(0.5, timeout=10)
            backend.stop()
            watch.close()
        self.events = [json.loads(line[2:]) for line in self.lines if line.startswith("@ ")]
        st = Store(db)
        self.stored_tx = [r[0] for r in st.query("SELECT tx_id FROM session_events WHERE device = ?", (DEVICE,))]
        self.stored_faults = [r[0] for r in st.query("SELECT msg_id FROM faults WHERE device = ?", (DEVICE,))]
        st.close()

    def _line(self, line):
        self.lines.append(line)
        if line.startswith("@ ") and not self.attack.done.is_set() and not hasattr(self, "_started"):
            ev = json.loads(line[2:])
            if ev.get("ev") == "mqtt" and ev.get("state") == "connected":
                self._started = True
                self.attack.start()

    def received(self):
        """What of the forged input the charger's firmware got (its `command` events)."""
        got = set()
        for e in self.attack.window_events:
            if e["ev"] == "command":
                got.add(e.get("id") or e.get("topic"))
        return got

    def seen(self, suffix):
        """Forged messages any subscriber could read on the charger's `suffix` topic."""
        return [p for t, p, _ in self.attack.window_messages
                if t == "cp/v1/%s/%s" % (DEVICE, suffix) and b"forged" in p]


@pytest.fixture(scope="module", params=["locked", "open"])
def attacked(request, tmp_path_factory):
    run = Attacked(request.param, tmp_path_factory.mktemp(request.param))
    assert run.attack.done.is_set() and run.attack.error is None, (run.attack.error, run.lines[-20:])
    assert run.rc == 0, "\n".join(run.lines[-30:])
    return run


def test_an_anonymous_client_is_refused(attacked):
    assert (attacked.attack.anonymous == 5) is attacked.locked   # 5: not authorized
    assert (attacked.attack.anonymous == 0) is not attacked.locked


def test_another_device_cannot_send_commands_acks_or_answers_to_this_charger(attacked):
    got = attacked.received()
    for forged in ("forged-stop", "ack", "auth/resp"):
        assert (forged not in got) is attacked.locked, (forged, got)
    for suffix in ("cmd/remote_stop", "ack", "auth/resp"):
        assert (not attacked.seen(suffix)) is attacked.locked, suffix


def test_another_device_cannot_publish_records_as_this_charger(attacked):
    # locked: the broker refuses them; open: they pass the broker but carry no MAC, so the backend
    # refuses them too (docs/mqtt.md "Authenticity")
    assert 999 not in attacked.stored_tx, attacked.stored_tx
    assert "forged-fault" not in attacked.stored_faults, attacked.stored_faults
    assert (not attacked.seen("session") and not attacked.seen("fault")) is attacked.locked
    assert 1 in attacked.stored_tx   # the charger's own records still arrive


def test_on_an_open_broker_the_charger_refuses_what_another_device_forges(attacked):
    refused = [e for e in attacked.attack.window_events if e["ev"] == "command"
               and e.get("result") in ("refused", "rejected")]
    if not attacked.locked:
        assert {e.get("id") or e.get("topic") for e in refused} >= {"forged-stop", "ack", "auth/resp", "observer-cmd"}
        assert all(e["reason"].startswith("unauthenticated") for e in refused), refused


def test_the_observer_cannot_send_commands(attacked):
    assert ("observer-cmd" not in attacked.received()) is attacked.locked


def test_another_device_cannot_read_this_chargers_traffic(attacked):
    assert (attacked.attack.eavesdropped == []) is attacked.locked, attacked.attack.eavesdropped[:3]


def test_the_chargers_client_id_cannot_be_taken_over(attacked):
    """With another account's valid credentials or a wrong password: no `offline` Last Will, the
    charger's connection stays up."""
    offline = [p for t, p, _ in attacked.attack.window_messages
               if t == "cp/v1/%s/status" % DEVICE and json.loads(p or b"{}").get("state") == "offline"]
    dropped = [e for e in attacked.attack.window_events if e["ev"] == "mqtt" and e["state"] != "connected"]
    assert (not offline and not dropped) is attacked.locked, (offline, dropped)
    assert (attacked.attack.wrong_password == 5) is attacked.locked
    if attacked.locked:
        assert [e["state"] for e in attacked.events if e["ev"] == "mqtt"] == ["connected"]


def test_password_lines_are_mosquitto_passwd_lines(tmp_path):
    """tools/broker.py writes the password_file without mosquitto_passwd (an operator's machine may
    lack it): the same salt gives byte for byte the line mosquitto_passwd writes."""
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.skip("mosquitto_passwd is not installed (it comes with the mosquitto package)")
    path = tmp_path / "passwd"
    subprocess.run([exe, "-b", "-c", str(path), "cp-0001", "s3cret-pw"], check=True, timeout=30)
    line = path.read_text()
    salt = base64.b64decode(line.split("$")[3])
    assert password_line("cp-0001", "s3cret-pw", salt) == line
    assert password_line("cp-0001", "s3cret-pw") != line   # a new salt each time
    with pytest.raises(ValueError):
        password_line("cp:0001", "s3cret-pw")


def test_a_revoked_account_is_disconnected_and_refused():
    """docs/security.md: delete the line, reload mosquitto; the device's open connection ends too."""
    with Broker() as broker:
        login = broker.device(OTHER)
        ended = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=OTHER)
        c.username_pw_set(login["username"], login["password"])
        c.on_disconnect = lambda *a: ended.set()
        c.reconnect_delay_set(30, 60)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        try:
            time.sleep(0.3)
            assert c.is_connected() and not ended.is_set()
            broker.remove(OTHER)
            assert ended.wait(5)
            assert mqtt_connect("127.0.0.1", broker.port, OTHER, login["password"]) == 5
        finally:
            c.loop_stop()


def test_a_charger_with_a_wrong_password_is_refused_and_keeps_its_records(tmp_path):
    """As between a password rotation on the broker and the charger's new secrets.json: refused,
    it charges on and keeps every record for later (docs/security.md, Rotation)."""
    sc = {"board": "sim", "start": "2026-03-02T07:00:00Z", "device_id": DEVICE, "cards": {"alice": "04A1B2C3D4E5F6"},
          "allow": ["alice"], "events": [{"t": 10, "plug": True}, {"t": 15, "tap": "alice"}, {"t": 20, "ev_current_a": 16},
                                         {"t": 600, "tap": "alice"}, {"t": 620, "plug": False}], "end": 660}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(sc))
    lines = []
    with Broker() as broker:
        broker.device(DEVICE)
        runner = broker.login("backend")
        rc = sim.run(str(path), sim.Logins(broker.address, "an-old-password", runner["username"], runner["password"]),
                     raw=True, out=lines.append)
    events = [json.loads(line[2:]) for line in lines if line.startswith("@ ")]
    assert rc == 0, "\n".join(lines[-20:])
    mqtt_states = [e["state"] for e in events if e["ev"] == "mqtt"]
    assert mqtt_states and set(mqtt_states) == {"unreachable"}
    ended = [e for e in events if e["ev"] == "session_end"]
    assert len(ended) == 1 and ended[0]["energy_wh"] > 0
    halt = [e for e in events if e["ev"] == "halt"][0]
    assert halt["delivered"] == 0 and halt["queued"] == 2   # started and ended, kept in the outbox
