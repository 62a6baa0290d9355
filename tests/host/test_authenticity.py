"""On an OPEN broker (anyone may publish anything) the firmware's and the backend's own checks
must hold alone: forged acks delete nothing and the bill still reaches the backend, a forged
Accepted starts no session, a replayed genuine command is refused (docs/mqtt.md "Authenticity";
the backend's side with forged records: tests/host/test_backend.py)."""
import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

import sim
from backend import Backend
from broker import Broker
from mqtt_watch import Watch
from store import Store

DEVICE = "cp-seal-0001"
SCENARIO = {"board": "sim", "start": "2026-03-02T07:00:00Z", "device_id": DEVICE, "realtime": True,
            "cards": {"alice": "04A1B2C3D4E5F6", "mallory": "0BADCAFE"}, "allow": ["alice"],
            "events": [{"t": 1, "plug": True}, {"t": 2, "ev_current_a": 16}, {"t": 3, "tap": "alice"},
                       {"t": 8, "tap": "alice"},                       # tx 1 ends: its bill waits for an ack
                       {"t": 12, "tap": "mallory"},                    # unknown: asks the (absent) backend
                       {"t": 18, "remote_start": {"token": "alice"}},  # genuine, sealed: tx 2
                       {"t": 22, "remote_stop": True}],
            "end": 34}


class Attacker:
    """An anonymous client: acks every record it sees, answers every auth/req with Accepted, and
    replays the first genuine command it sees 4 s later; starts the real backend once the genuine
    remote_stop went out (the backend was away until then)."""

    def __init__(self, broker, start_backend):
        self.start_backend = start_backend
        self.replayed = []
        self.forged = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attacker")
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", broker.port)
        self.c.subscribe("cp/v1/%s/#" % DEVICE, qos=1)
        self.c.loop_start()
        time.sleep(0.2)

    def _on_message(self, client, userdata, msg):
        prefix = "cp/v1/%s/" % DEVICE
        suffix = msg.topic[len(prefix):]
        try:
            rec = json.loads(msg.payload)
        except ValueError:
            return
        if suffix in ("session", "fault", "feedback"):
            ack = json.dumps({"msg_ids": [rec["msg_id"]]})
            client.publish(prefix + "ack", ack, qos=1)
            client.publish(prefix + "ack", ack[:-1] + ',"mac":"%s"}' % ("0" * 64), qos=1)   # a made-up MAC
            self.forged += 2
        elif suffix == "auth/req":
            client.publish(prefix + "auth/resp", json.dumps({"id": rec["id"], "status": "Accepted"}), qos=1)
            self.forged += 1
        elif suffix == "cmd/remote_start" and not self.replayed:
            self.replayed.append(rec["id"])
            threading.Timer(4, lambda: client.publish(msg.topic, bytes(msg.payload), qos=1)).start()
        elif suffix == "cmd/remote_stop":
            threading.Thread(target=self.start_backend, daemon=True).start()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seal")
    db = str(tmp / "backend.sqlite")
    lines, backends = [], []
    with Broker(open=True) as broker:
        def start_backend():
            backends.append(Backend(db, **broker.client_args("backend"), auth={}, out=lambda line: None).start())
        watch = Watch(broker)
        attacker = Attacker(broker, start_backend)
        path = tmp / "scenario.json"
        path.write_text(json.dumps(SCENARIO))
        rc = sim.run(str(path), broker=broker, site_key=bytes(range(32)), raw=True, out=lines.append,
                     run_dir=str(tmp / "run"))
        attacker.close()
        assert backends, "the genuine remote_stop never went out"
        backends[0].wait_idle(0.5, timeout=10)
        backends[0].stop()
        watch.close()
    st = Store(db)
    sessions = st.query("SELECT tx_id, energy_wh, final FROM sessions WHERE device = ? ORDER BY tx_id", (DEVICE,))
    st.close()
    events = [json.loads(line[2:]) for line in lines if line.startswith("@ ")]
    return {"rc": rc, "lines": lines, "events": events, "sessions": [tuple(r) for r in sessions],
            "attacker": attacker, "watch": watch}


def _ev(run, kind, **match):
    return [e for e in run["events"] if e["ev"] == kind and all(e.get(k) == v for k, v in match.items())]


def test_the_run_ends_cleanly_and_was_attacked(attacked):
    assert attacked["rc"] == 0, "\n".join(attacked["lines"][-30:])
    assert attacked["attacker"].forged >= 5 and attacked["attacker"].replayed


def test_forged_acks_delete_nothing_and_the_bill_still_reaches_the_backend(attacked):
    refused = _ev(attacked, "command", topic="ack", result="refused")
    assert refused and all(e["reason"].startswith("unauthenticated") for e in refused)
    tx1 = [s for s in attacked["sessions"] if s[0] == 1]
    assert tx1 and tx1[0][2] == 1 and tx1[0][1] > 0, attacked["sessions"]   # the ended record, real energy


def test_a_forged_accepted_starts_no_session(attacked):
    refused = _ev(attacked, "command", topic="auth/resp", result="refused")
    assert refused and refused[0]["reason"].startswith("unauthenticated")
    starts = _ev(attacked, "session_start")
    assert len(starts) == 2 and all(e.get("auth") != "online" for e in starts), starts


def test_a_replayed_genuine_command_is_refused(attacked):
    cid = attacked["attacker"].replayed[0]
    acks = [a for a in attacked["watch"].records("cmd_ack") if a.get("id") == cid]
    assert [a["status"] for a in acks] == ["accepted", "rejected"], acks
    assert acks[1]["reason"].startswith("unauthenticated: replayed")
    assert [s[0] for s in attacked["sessions"]] == [1, 2]
