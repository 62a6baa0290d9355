"""Reference backend against a real private mosquitto: store, de-duplication, acks, gaps, auth."""
import json
import os
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from backend import Backend, load_auth
from broker import Broker
from downlink import B2D, D2B, derive, seal, unseal
from store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN_A = "6f1c0e5d8a2b4c7e9f0a1b2c3d4e5f60"
TOKEN_B = "00112233445566778899aabbccddeeff"


@pytest.fixture(scope="module")
def broker():
    with Broker() as b:
        yield b


class Peer:
    """Charger stand-ins: publish contract messages, each device logged in with its own account
    (the broker lets it use only its own topics), and collect what the backend sends back."""

    def __init__(self, broker):
        self.broker = broker
        self.got = []
        self.lock = threading.Lock()
        self.clients = {}   # device -> paho client logged in as that device

    def _on_message(self, client, userdata, msg):
        device, suffix = msg.topic.split("/", 3)[2:]
        body = json.loads(unseal(derive(self.broker.fleet_key, device), B2D, device, suffix, msg.payload))
        del body["ctr"]   # opened as the charger does: what it acts on
        with self.lock:
            self.got.append((msg.topic, body))

    def client(self, device):
        """The device's connection, opened with its subscriptions in place on first use."""
        if device not in self.clients:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
            c.username_pw_set(**self.broker.device(device))
            c.on_message = self._on_message
            subscribed = threading.Event()
            c.on_subscribe = lambda *a: subscribed.set()
            c.connect("127.0.0.1", self.broker.port)
            c.loop_start()
            c.subscribe([("cp/v1/%s/ack" % device, 1), ("cp/v1/%s/auth/resp" % device, 1)])
            assert subscribed.wait(5)
            self.clients[device] = c
        return self.clients[device]

    def send(self, device, kind, payload, retain=False, key=None, raw=False):
        """Sealed as the charger does (under `key` instead: a forger's); raw, or bytes that are no object, go bare."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if not raw and data[:1] == b"{" and data[-1:] == b"}":
            data = seal(key or derive(self.broker.fleet_key, device), D2B, device, kind, data)
        self.client(device).publish("cp/v1/%s/%s" % (device, kind), data, qos=1, retain=retain).wait_for_publish(5)

    def acked(self, device):
        with self.lock:
            return [i for t, p in self.got if t == "cp/v1/%s/ack" % device for i in p["msg_ids"]]

    def answers(self, device):
        with self.lock:
            return [p for t, p in self.got if t == "cp/v1/%s/auth/resp" % device]

    def close(self):
        for c in self.clients.values():
            c.disconnect()
            c.loop_stop()


@pytest.fixture
def peer(broker):
    p = Peer(broker)
    yield p
    p.close()


def start_backend(url, broker, **kw):
    lines = []
    b = Backend(url, **broker.client_args("backend"), out=lines.append, ack_delay_s=0.1, **kw).start()
    assert b.wait_connected(10)
    time.sleep(0.2)  # subscriptions in place
    b.lines = lines
    return b


@pytest.fixture
def backend(db_url, broker):
    b = start_backend(db_url, broker, verbose=True,
                      auth={TOKEN_A: {"status": "Accepted", "expiry": "2027-01-01T00:00:00Z", "group": "fleet-a",
                                      "max_current_a": 16, "max_kwh": "20", "offpeak_only": False}})
    yield b
    b.stop()


def wait_for(cond, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def session(tx, seq, event, **kw):
    """A record shaped like the firmware's (docs/mqtt.md)."""
    rec = {"msg_id": "%s-%s" % (tx, seq), "tx_id": tx, "seq": seq, "event": event,
           "ts": "2026-03-02T07:55:15Z", "token": TOKEN_A, "key": 1, "auth": "local_list", "tariff_id": "flat",
           "meter_start_wh": 1000}
    if event == "ended":
        rec.update({"ts": "2026-03-02T08:26:40Z", "started_at": "2026-03-02T07:55:15Z",
                    "ended_at": "2026-03-02T08:26:40Z", "meter_stop_wh": 2840, "energy_wh": 1840,
                    "stop_reason": "Local",
                    "cost": {"currency": "EUR", "total_excl_vat_minor": 55, "total_incl_vat_minor": 66}})
    rec.update(kw)
    return rec


def rows(url, sql, params=()):
    with Store(url) as st:
        return st.query(sql, params)


def test_a_session_is_stored_once_and_every_copy_acknowledged(backend, peer, db_url):
    peer.send("cp-a", "session", session(1, 0, "started"))
    peer.send("cp-a", "session", session(1, 1, "ended"))
    assert wait_for(lambda: sorted(peer.acked("cp-a")) == ["1-0", "1-1"])
    peer.send("cp-a", "session", session(1, 1, "ended"))   # the charger re-sends: the ack was "lost"
    assert wait_for(lambda: peer.acked("cp-a").count("1-1") == 2)
    got = rows(db_url, "SELECT token, key_version, auth, tariff_id, started_at, ended_at, energy_wh, meter_start_wh, "
                       "meter_stop_wh, stop_reason, currency, total_excl_minor, total_incl_minor, final, offline "
                       "FROM sessions WHERE device = ?", ("cp-a",))
    assert [tuple(r) for r in got] == [(TOKEN_A, 1, "local_list", "flat", "2026-03-02T07:55:15Z",
                                        "2026-03-02T08:26:40Z", 1840, 1000, 2840, "Local", "EUR", 55, 66, 1, 0)]
    events = rows(db_url, "SELECT seq, event, msg_id FROM session_events WHERE device = ? ORDER BY seq", ("cp-a",))
    assert [tuple(r) for r in events] == [(0, "started", "1-0"), (1, "ended", "1-1")]
    assert backend.counts["stored"] == 2 and backend.counts["duplicates"] == 1
    assert any("duplicate ignored" in line for line in backend.lines)
    assert any("session tx 1 seq 1 ended: 1840 Wh, EUR 0.55 excl. / EUR 0.66 incl. VAT" in line
               for line in backend.lines)
    assert not rows(db_url, "SELECT * FROM gaps")


def test_a_late_started_does_not_undo_the_ended_record(backend, peer, db_url):
    peer.send("cp-late", "session", session(4, 2, "ended", energy_wh=500, meter_stop_wh=1500))
    peer.send("cp-late", "session", session(4, 1, "updated", energy_wh=200))
    peer.send("cp-late", "session", session(4, 0, "started"))
    assert wait_for(lambda: len(peer.acked("cp-late")) == 3)
    got = rows(db_url, "SELECT energy_wh, final, started_at FROM sessions WHERE device = ?", ("cp-late",))
    assert [tuple(r) for r in got] == [(500, 1, "2026-03-02T07:55:15Z")]


def test_sequence_gaps_are_flagged_and_closed_when_the_event_arrives(backend, peer, db_url):
    peer.send("cp-g", "session", session(5, 0, "started"))
    peer.send("cp-g", "session", session(5, 2, "ended"))            # seq 1 lost
    peer.send("cp-g", "session", session(6, 1, "ended"))            # no started at all
    assert wait_for(lambda: len(peer.acked("cp-g")) == 3)
    gaps = rows(db_url, "SELECT tx_id, seq, kind, resolved_s FROM gaps WHERE device = ? ORDER BY tx_id", ("cp-g",))
    assert [tuple(r) for r in gaps] == [(5, 1, "seq_missing", None), (6, 0, "started_missing", None)]
    assert any("GAP tx 5: seq 1 missing" in line for line in backend.lines)
    assert any("GAP tx 6: seq 0 missing (no started event)" in line for line in backend.lines)
    peer.send("cp-g", "session", session(5, 1, "updated", energy_wh=900))
    assert wait_for(lambda: len(peer.acked("cp-g")) == 4)
    resolved = rows(db_url, "SELECT resolved_s FROM gaps WHERE device = ? AND tx_id = 5", ("cp-g",))
    assert resolved[0][0] is not None
    assert any("gap closed: tx 5 seq 1" in line for line in backend.lines)
    assert backend.counts["gaps"] == 2


def test_malformed_payloads_are_kept_aside_and_never_stop_the_backend(backend, peer, db_url):
    peer.send("cp-m", "session", b"{not json at all}")
    peer.send("cp-m", "session", b"[1, 2, 3]")
    peer.send("cp-m", "session", b"\xff\xfe")
    peer.send("cp-m", "session", session(9, "x", "started", msg_id="9-0"))
    peer.send("cp-m", "session", session(9, 1, "ended", energy_wh=1.5, msg_id="9-1"))
    peer.send("cp-m", "fault", {"msg_id": "f-1", "event": "raised"})          # no code
    peer.send("cp-m", "status", {"connector": "Available"})                   # no state
    peer.send("cp-m", "session", session(10, 0, "started"))
    assert wait_for(lambda: "10-0" in peer.acked("cp-m"))
    assert backend.counts["malformed"] == 5 and backend.counts["unauthenticated"] == 2   # [1, 2, 3], \xff\xfe: no MAC
    rej = rows(db_url, "SELECT topic, reason FROM rejects WHERE device = ?", ("cp-m",))
    assert len(rej) == 7
    reasons = " | ".join(r[1] for r in rej)
    assert "not JSON" in reasons and "unauthenticated: not sealed" in reasons and "seq must be" in reasons
    assert "energy_wh must be an integer" in reasons and "code must be" in reasons
    # malformed records that carry a msg_id are acknowledged so they cannot block the outbox
    assert sorted(peer.acked("cp-m")) == ["10-0", "9-0", "9-1", "f-1"]
    assert [tuple(r) for r in rows(db_url, "SELECT tx_id FROM sessions WHERE device = ?", ("cp-m",))] == [(10,)]
    assert sum("malformed session skipped" in line for line in backend.lines) == 3
    assert sum("REFUSED session: unauthenticated" in line for line in backend.lines) == 2


def test_offline_events_and_optional_fields_are_stored(backend, peer, db_url):
    breakdown = {"currency": "EUR", "total_excl_vat_minor": 150, "total_incl_vat_minor": 180,
                 "energy": {"excl_vat_minor": 100, "incl_vat_minor": 120},
                 "parking": {"excl_vat_minor": 50, "incl_vat_minor": 60}}
    peer.send("cp-o", "session", session(2, 0, "started", offline=True))
    peer.send("cp-o", "session", session(2, 1, "ended", offline=True, parking_s=1200, cost=breakdown,
                                         charging_periods=[{"start_date_time": "2026-03-02T07:55:15Z"}],
                                         peak_w=7360, chain_n=3, some_future_field={"x": 1}))
    peer.send("cp-o", "session", session(3, 0, "started"))   # online: no flag
    assert wait_for(lambda: len(peer.acked("cp-o")) == 3)
    got = rows(db_url, "SELECT tx_id, offline, parking_s, parking_excl_minor, parking_incl_minor, total_incl_minor, "
                       "record FROM sessions WHERE device = ? ORDER BY tx_id", ("cp-o",))
    assert [tuple(r[:6]) for r in got] == [(2, 1, 1200, 50, 60, 180), (3, 0, None, None, None, None)]
    rec = json.loads(got[0][6])
    assert rec["charging_periods"][0]["start_date_time"] == "2026-03-02T07:55:15Z" and rec["peak_w"] == 7360
    ev = rows(db_url, "SELECT seq, offline FROM session_events WHERE device = ? AND tx_id = 2 ORDER BY seq", ("cp-o",))
    assert [tuple(r) for r in ev] == [(0, 1), (1, 1)]
    assert any("(offline)" in line and "parked 1200 s" in line for line in backend.lines)


def test_faults_feedback_status_and_stats_are_stored(backend, peer, db_url):
    fault = {"msg_id": "f-3", "event": "raised", "ts": "2026-03-02T08:00:00Z", "code": "OverCurrentFailure",
             "stop_reason": "OvercurrentFault", "tx_id": 7, "detail": "L1 41.2 A > offer 32 A + 10 %",
             "latched": True, "trips": 1, "samples": [[0, 23000, 41200, 9476]]}
    peer.send("cp-f", "fault", fault)
    assert wait_for(lambda: "f-3" in peer.acked("cp-f"))
    peer.send("cp-f", "fault", fault)
    peer.send("cp-f", "feedback", {"msg_id": "fb-2", "ts": "2026-03-02T08:01:00Z", "tx_id": 7, "token": TOKEN_A,
                                   "source": "button", "text": None})
    status = {"state": "online", "connector": "Faulted", "error": "OverCurrentFailure", "ts": "2026-03-02T08:00:01Z"}
    peer.send("cp-f", "status", status, retain=True)
    peer.send("cp-f", "status", status, retain=True)
    peer.send("cp-f", "status", {"state": "offline"}, retain=True)
    totals = {"sessions": 2, "energy_wh": 6746, "excl_vat_minor": 202, "incl_vat_minor": 243}
    stats = {"ts": "2026-03-02T09:00:00Z", "currency": "EUR", "day": dict(totals, date="2026-03-02"),
             "month": dict(totals, month="2026-03"), "contactor_cycles": 2, "boots": 1}
    peer.send("cp-f", "stats", stats, retain=True)
    peer.send("cp-f", "meter", {"ts": "2026-03-02T08:00:00Z", "tx_id": 7, "register_wh": 18231, "energy_wh": 1203,
                                "v_cv": [23010, 0, 0], "i_ma": [15980, 0, 0], "p_w": 3676, "offered_a": 16})
    assert wait_for(lambda: peer.acked("cp-f").count("f-3") == 2 and "fb-2" in peer.acked("cp-f"))
    assert backend.wait_idle(0.5, timeout=10)
    f = rows(db_url, "SELECT code, latched, tx_id, trips, stop_reason, ts_s FROM faults WHERE device = ?", ("cp-f",))
    assert [tuple(r) for r in f] == [("OverCurrentFailure", 1, 7, 1, "OvercurrentFault", 1772438400)]
    fb = rows(db_url, "SELECT msg_id, tx_id, token, source FROM feedback WHERE device = ?", ("cp-f",))
    assert [tuple(r) for r in fb] == [("fb-2", 7, TOKEN_A, "button")]
    hist = rows(db_url, "SELECT state, connector, error FROM status_history WHERE device = ? ORDER BY received_s",
                ("cp-f",))
    assert [tuple(r) for r in hist] == [("online", "Faulted", "OverCurrentFailure"), ("offline", None, None)]
    cur = rows(db_url, "SELECT state FROM status_current WHERE device = ?", ("cp-f",))
    assert [tuple(r) for r in cur] == [("offline",)]
    st = rows(db_url, "SELECT day, day_energy_wh, month_incl_minor, contactor_cycles, boots FROM stats "
                      "WHERE device = ?", ("cp-f",))
    assert [tuple(r) for r in st] == [("2026-03-02", 6746, 243, 2, 1)]
    m = rows(db_url, "SELECT tx_id, register_wh, p_w FROM meter_values WHERE device = ?", ("cp-f",))
    assert [tuple(r) for r in m] == [(7, 18231, 3676)]
    for kind in ("status", "stats"):   # clean up retained messages for later tests
        peer.send("cp-f", kind, b"", retain=True)


def test_auth_requests_are_answered_from_the_auth_table(backend, peer):
    peer.send("cp-au", "auth/req", {"id": "a-12", "token": TOKEN_A.upper(), "key": 1})
    peer.send("cp-au", "auth/req", {"id": "a-13", "token": TOKEN_B, "key": 1})
    assert wait_for(lambda: len(peer.answers("cp-au")) == 2)
    a = {r["id"]: r for r in peer.answers("cp-au")}
    assert a["a-12"] == {"id": "a-12", "status": "Accepted", "expiry": "2027-01-01T00:00:00Z", "group": "fleet-a",
                         "max_current_a": 16, "max_kwh": "20", "offpeak_only": False}
    assert a["a-13"] == {"id": "a-13", "status": "Invalid"}


def test_without_an_auth_file_requests_are_not_answered(tmp_path, broker, peer):
    b = start_backend(str(tmp_path / "b.sqlite"), broker)
    try:
        peer.send("cp-na", "auth/req", {"id": "a-1", "token": TOKEN_A, "key": 1})
        time.sleep(1.0)
        assert peer.answers("cp-na") == []
        assert b.counts["auth"] == 0
    finally:
        b.stop()


def test_auth_file_is_checked(tmp_path):
    good = tmp_path / "auth.json"
    good.write_text(json.dumps({TOKEN_A.upper(): {"status": "Blocked"}}))
    assert load_auth(str(good)) == {TOKEN_A: {"status": "Blocked"}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({TOKEN_A: {"status": "Maybe"}}))
    with pytest.raises(ValueError, match="needs \"status\""):
        load_auth(str(bad))
    bad.write_text(json.dumps({"04A1B2C3": {"status": "Accepted"}}))
    with pytest.raises(ValueError, match="not a 32-hex-digit pseudonym"):
        load_auth(str(bad))


def test_two_shared_instances_split_the_load_and_store_each_message_once(db_url, broker, peer):
    peer.send("cp-s", "status", {"state": "online", "connector": "Available", "ts": "2026-03-02T07:00:00Z"},
              retain=True)
    a = start_backend(db_url, broker, share="g1", verbose=True)
    b = start_backend(db_url, broker, share="g1", verbose=True)
    try:
        assert a.topics()[0] == ("$share/g1/cp/v1/+/session", 1)
        for tx in range(1, 11):
            for seq, event in ((0, "started"), (1, "ended")):
                rec = session(tx, seq, event)
                peer.send("cp-s", "session", rec)
                peer.send("cp-s", "session", rec)       # every message twice, as after a lost ack
        # 40 session messages, plus the retained status that each instance got when it subscribed
        assert wait_for(lambda: a.counts["stored"] + a.counts["duplicates"] + b.counts["stored"]
                        + b.counts["duplicates"] == 42, 15)
        assert a.counts["stored"] + b.counts["stored"] == 21
        for x in (a, b):   # mosquitto deals shared messages round robin: each instance took a share
            assert any(" session tx " in line or "duplicate ignored: session" in line for line in x.lines)
        got = rows(db_url, "SELECT COUNT(*), COUNT(DISTINCT tx_id) FROM session_events WHERE device = ?", ("cp-s",))
        assert tuple(got[0]) == (20, 10)
        assert wait_for(lambda: set(peer.acked("cp-s")) == {"%d-%d" % (t, s) for t in range(1, 11) for s in (0, 1)})
        hist = rows(db_url, "SELECT state, connector FROM status_history WHERE device = ?", ("cp-s",))
        assert [tuple(r) for r in hist] == [("online", "Available")]   # retained: seen by both, stored once
    finally:
        a.stop()
        b.stop()
        peer.send("cp-s", "status", b"", retain=True)


def test_command_line_runs_until_idle_and_prints_one_line_per_event(tmp_path, broker, peer):
    peer.send("cp-cli", "status", {"state": "online", "connector": "Available", "ts": "2026-03-02T07:00:00Z"},
              retain=True)
    db = tmp_path / "cli.sqlite"
    login = broker.login("backend")
    fleet = tmp_path / "fleet.key"
    fleet.write_text(broker.fleet_key.hex())
    try:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "backend.py"), "--broker",
                            "127.0.0.1:%d" % broker.port, "--user", login["username"], "--db", str(db),
                            "--fleet-key", str(fleet),
                            "--until-idle", "1.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
                           text=True, env=dict(os.environ, CP_BACKEND_PASSWORD=login["password"]))
    finally:
        peer.send("cp-cli", "status", b"", retain=True)
    assert r.returncode == 0, r.stdout
    assert "cp-cli status online Available" in r.stdout
    assert "backend: 1 stored, 0 duplicates" in r.stdout
    assert rows(str(db), "SELECT state, connector FROM status_current") == [("online", "Available")]


def test_a_user_without_its_password_stops_at_once(tmp_path):
    env = dict(os.environ)
    env.pop("CP_BACKEND_PASSWORD", None)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "backend.py"), "--broker", "127.0.0.1:1",
                        "--user", "backend-1", "--db", str(tmp_path / "b.sqlite"), "--fleet-key", "x"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30, text=True, env=env)
    assert r.returncode == 2 and "--user backend-1 needs its password in $CP_BACKEND_PASSWORD" in r.stdout


def test_help_shows_an_example():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "backend.py"), "--help"],
                       stdout=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0 and "examples:" in r.stdout and "--share" in r.stdout


def test_forged_and_conflicting_records_are_refused_or_kept_aside_never_acked_as_duplicates(db_url):
    """On an open broker anyone may publish as the charger: only what carries its MAC counts."""
    with Broker(open=True) as ob:
        b = start_backend(db_url, ob)
        p = Peer(ob)
        try:
            dev = "cp-forge"
            forged = session(3, 1, "ended", energy_wh=0, meter_stop_wh=1000,
                             cost={"currency": "EUR", "total_excl_vat_minor": 0, "total_incl_vat_minor": 0})
            p.send(dev, "session", forged, key=derive(b"another fleet secret", dev))   # a forger's key
            p.send(dev, "session", json.dumps(forged).encode()[:-1] + b',"mac":"' + b"1" * 64 + b'"}', raw=True)
            p.send(dev, "session", forged, key=derive(ob.fleet_key, "cp-other"))        # another charger's key
            genuine = session(3, 1, "ended")
            p.send(dev, "session", genuine)
            assert wait_for(lambda: p.acked(dev) == ["3-1"])
            assert b.counts["unauthenticated"] == 3 and b.counts["stored"] == 1
            got = rows(db_url, "SELECT energy_wh, total_incl_minor FROM sessions WHERE device = ?", (dev,))
            assert [tuple(r) for r in got] == [(1840, 66)]
            assert sum("REFUSED session: unauthenticated: bad MAC" in line for line in b.lines) == 3
            # a second, different copy under the same msg_id is a conflict: kept and reported, not a duplicate
            p.send(dev, "session", dict(genuine, energy_wh=1))
            assert wait_for(lambda: b.counts["conflicts"] == 1)
            assert b.counts["duplicates"] == 0
            assert any("CONFLICT session 3-1" in line for line in b.lines)
            conflicts = rows(db_url, "SELECT reason FROM rejects WHERE device = ? AND reason LIKE 'conflict%'", (dev,))
            assert len(conflicts) == 1
            got = rows(db_url, "SELECT energy_wh FROM sessions WHERE device = ?", (dev,))
            assert [tuple(r) for r in got] == [(1840,)]   # the first copy stays the bill
            # the acks it sends carry the MAC and a rising counter under the charger's key
            raw = []
            c = p.client(dev)
            c.on_message = lambda cl, u, m: raw.append(bytes(m.payload))   # as it arrives
            p.send(dev, "session", session(3, 2, "updated"))
            assert wait_for(lambda: raw)
            body = json.loads(unseal(derive(ob.fleet_key, dev), B2D, dev, "ack", raw[-1]))
            assert "3-2" in body["msg_ids"] and body["ctr"] >= 2
        finally:
            p.close()
            b.stop()


def _acks(peer, device):
    """(msg_ids, ep) of each ack the backend sent the device."""
    with peer.lock:
        return [(p["msg_ids"], p.get("ep")) for t, p in peer.got if t == "cp/v1/%s/ack" % device]


def test_a_charger_that_lost_state_and_journal_is_billed_for_its_new_life(backend, peer, db_url):
    dev = "cp-reinit"
    peer.send(dev, "session", session(1, 0, "started", ep=100))
    peer.send(dev, "session", session(1, 1, "ended", ep=100))
    peer.send(dev, "fault", {"msg_id": "f-1", "event": "raised", "code": "GroundFailure", "ep": 100})
    assert wait_for(lambda: sorted(peer.acked(dev)) == ["1-0", "1-1", "f-1"])
    # state.json and the journal are lost: tx 1 and f-1 again, in a new data epoch
    peer.send(dev, "status", {"state": "online", "connector": "Available", "ep": 250})
    peer.send(dev, "session", session(1, 0, "started", ep=250, meter_start_wh=0))
    peer.send(dev, "session", session(1, 1, "ended", ep=250, meter_start_wh=0, meter_stop_wh=700, energy_wh=700,
                                      cost={"currency": "EUR", "total_excl_vat_minor": 21, "total_incl_vat_minor": 25}))
    peer.send(dev, "fault", {"msg_id": "f-1", "event": "raised", "code": "OverCurrentFailure", "ep": 250})
    assert wait_for(lambda: len(peer.acked(dev)) == 6)
    # on main: a conflict each (a different copy of a stored msg_id), the new session never billed
    assert backend.counts["conflicts"] == 0 and backend.counts["duplicates"] == 0
    got = rows(db_url, "SELECT ep, tx_id, energy_wh, total_incl_minor, final FROM sessions WHERE device = ? "
                       "ORDER BY ep", (dev,))
    assert [tuple(r) for r in got] == [(100, 1, 1840, 66, 1), (250, 1, 700, 25, 1)]
    assert [tuple(r) for r in rows(db_url, "SELECT ep, code FROM faults WHERE device = ? ORDER BY ep", (dev,))] \
        == [(100, "GroundFailure"), (250, "OverCurrentFailure")]
    for ep in (100, 250):   # each ack names the epoch of the records it acknowledges
        assert sorted(i for ids, e in _acks(peer, dev) if e == ep for i in ids) == ["1-0", "1-1", "f-1"]
    assert [tuple(r) for r in rows(db_url, "SELECT ep, previous FROM epochs WHERE device = ? ORDER BY ep", (dev,))] \
        == [(100, None), (250, 100)]
    assert backend.counts["reinitialised"] == 1
    assert sum("RE-INITIALISED: new data epoch 250 after 100" in line for line in backend.lines) == 1
    # a late copy from the old life is still a duplicate of the old life, acknowledged as such
    peer.send(dev, "session", session(1, 1, "ended", ep=100))
    assert wait_for(lambda: backend.counts["duplicates"] == 1)
    assert wait_for(lambda: _acks(peer, dev)[-1] == (["1-1"], 100))
    assert backend.counts["reinitialised"] == 1 and backend.counts["conflicts"] == 0


V1_TABLES = (   # tools/store.py schema 1: the tables that schema 2 keys on the data epoch too
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE sessions (device TEXT NOT NULL, tx_id BIGINT NOT NULL, token TEXT, key_version INTEGER, auth TEXT,"
    " tariff_id TEXT, started_at TEXT, started_s BIGINT, ended_at TEXT, ended_s BIGINT, energy_wh BIGINT,"
    " meter_start_wh BIGINT, meter_stop_wh BIGINT, stop_reason TEXT, currency TEXT, total_excl_minor BIGINT,"
    " total_incl_minor BIGINT, parking_s BIGINT, parking_excl_minor BIGINT, parking_incl_minor BIGINT,"
    " offline INTEGER NOT NULL DEFAULT 0, final INTEGER NOT NULL DEFAULT 0, record TEXT, updated_s BIGINT,"
    " PRIMARY KEY (device, tx_id))",
    "CREATE TABLE session_events (device TEXT NOT NULL, tx_id BIGINT NOT NULL, seq INTEGER NOT NULL, msg_id TEXT,"
    " event TEXT, ts TEXT, ts_s BIGINT, offline INTEGER NOT NULL DEFAULT 0, record TEXT, received_s BIGINT,"
    " PRIMARY KEY (device, tx_id, seq))",
    "CREATE TABLE gaps (device TEXT NOT NULL, tx_id BIGINT NOT NULL, seq INTEGER NOT NULL, kind TEXT,"
    " found_s BIGINT, resolved_s BIGINT, PRIMARY KEY (device, tx_id, seq))",
    "CREATE TABLE faults (device TEXT NOT NULL, msg_id TEXT NOT NULL, event TEXT, code TEXT, ts TEXT, ts_s BIGINT,"
    " tx_id BIGINT, latched INTEGER, trips INTEGER, stop_reason TEXT, detail TEXT,"
    " offline INTEGER NOT NULL DEFAULT 0, record TEXT, received_s BIGINT, PRIMARY KEY (device, msg_id))",
    "CREATE TABLE feedback (device TEXT NOT NULL, msg_id TEXT NOT NULL, ts TEXT, ts_s BIGINT, tx_id BIGINT,"
    " token TEXT, source TEXT, text TEXT, offline INTEGER NOT NULL DEFAULT 0, record TEXT, received_s BIGINT,"
    " PRIMARY KEY (device, msg_id))",
    "CREATE TABLE meter_values (device TEXT NOT NULL, tx_id BIGINT, ts TEXT, ts_s BIGINT, register_wh BIGINT,"
    " energy_wh BIGINT, p_w BIGINT, record TEXT, received_s BIGINT)",
    "CREATE INDEX sessions_started ON sessions (started_s)",
    "CREATE INDEX meter_values_device ON meter_values (device, received_s)",
)


def test_a_store_of_schema_1_is_migrated_and_keeps_its_rows(db_url):
    if db_url.startswith("postgresql"):
        import psycopg
        conn = psycopg.connect(db_url)
        ph = "%s"
    else:
        import sqlite3
        conn = sqlite3.connect(db_url)
        ph = "?"
    for stmt in V1_TABLES:
        conn.execute(stmt)
    ins = lambda sql, *p: conn.execute(sql.replace("?", ph), p)   # noqa: E731
    ins("INSERT INTO meta VALUES ('schema_version', '1')")
    ins("INSERT INTO sessions (device, tx_id, energy_wh, final, updated_s) VALUES (?, ?, ?, ?, ?)", "cp-old", 1, 900, 1, 5)
    ins("INSERT INTO session_events (device, tx_id, seq, msg_id, event, record, received_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
        "cp-old", 1, 1, "1-1", "ended", "{}", 5)
    ins("INSERT INTO gaps (device, tx_id, seq, kind, found_s) VALUES (?, ?, ?, ?, ?)", "cp-old", 1, 0, "started_missing", 5)
    ins("INSERT INTO faults (device, msg_id, code, received_s) VALUES (?, ?, ?, ?)", "cp-old", "f-1", "WeakSignal", 4)
    ins("INSERT INTO feedback (device, msg_id, text, received_s) VALUES (?, ?, ?, ?)", "cp-old", "fb-1", "slow", 6)
    ins("INSERT INTO meter_values (device, tx_id, energy_wh, received_s) VALUES (?, ?, ?, ?)", "cp-old", 1, 450, 3)
    conn.commit()
    conn.close()
    with Store(db_url) as st:
        assert st.query("SELECT value FROM meta WHERE name = 'schema_version'")[0][0] == "2"
        for table, n in (("sessions", 1), ("session_events", 1), ("gaps", 1), ("faults", 1), ("feedback", 1),
                         ("meter_values", 1)):
            assert [tuple(r) for r in st.query("SELECT device, ep FROM %s" % table)] == [("cp-old", 0)] * n, table
        assert [tuple(r) for r in st.query("SELECT energy_wh, final FROM sessions")] == [(900, 1)]
        assert [tuple(r) for r in st.query("SELECT device, ep, first_s, previous FROM epochs")] == [("cp-old", 0, 4, None)]
        # the old rows are epoch 0: tx 1 of a new life is another session
        assert st.add_session_event("cp-old", session(1, 1, "ended", ep=7), 10)[0]
        assert st.note_epoch("cp-old", 7, 10) == 0
        assert st.count("sessions") == 2
    with Store(db_url) as st:   # opening it again changes nothing
        assert st.count("sessions") == 2 and st.count("session_events") == 2
