"""Issue 4 end to end: the firmware on the MicroPython unix port, a real mosquitto, the reference
backend answering online authorization, and a test client publishing commands at scenario sync
points; then THE PRIVACY GREP over everything the run produced."""
import hashlib
import hmac
import json
import os
import re
import sqlite3

import paho.mqtt.client as mqtt
import pytest

import sim
from backend import Backend
from broker import Broker
from downlink import B2D, Sealer, seal, to_device
from mqtt_watch import Watch
from scenario import ROOT

KEY = bytes(range(7, 39))
SCENARIOS = os.path.join(ROOT, "tests", "data", "scenarios", "auth")
CARDS = {"alice": "04A1B2C3D4E5F6", "bob": "DEADBEEF", "carol": "0102030405060708090A",
         "mallory": "0BADCAFE", "erin": "55667788", "dave": "1A2B3C4D", "frank": "CAFEF00D"}


def token(alias):
    return hmac.new(KEY, bytes.fromhex(CARDS[alias]), hashlib.sha256).hexdigest()[:32]


class Injector:
    """The runner's output callback: records every line and, when the runner has just published a
    scenario command at one of the `batches` times ("HH:MM:SS" into the scenario; the world waits for
    it, then runs at the wall clock's pace for 0.5 s), publishes that batch of raw MQTT messages."""

    def __init__(self, broker, device_id, batches):
        self.prefix = "cp/v1/%s/" % device_id
        self.device = device_id
        self.sealer = Sealer(broker.fleet_key)   # sealed as the backend does (tools/downlink.py)
        self.batches = dict(batches)
        self.lines = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-injector-%d" % os.getpid())
        self.client.username_pw_set(**broker.login("backend"))   # commands come from the backend's side
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def __call__(self, line):
        self.lines.append(line)
        at = line[2:10] if line.startswith("[+") and " backend " in line and " sent " in line else None
        if at in self.batches:
            for suffix, payload in self.batches.pop(at):
                if isinstance(payload, bytes):   # raw bytes, sealed as they are
                    payload = seal(self.sealer.key(self.device), B2D, self.device, suffix, payload)
                    self.client.publish(self.prefix + suffix, payload, qos=1).wait_for_publish(5)
                else:
                    to_device(self.client, self.device, suffix, payload, self.sealer).wait_for_publish(5)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


class Run:
    """Everything one e2e run produced."""

    def __init__(self, rc, lines, backend_lines, watch, run_dir, db):
        self.rc = rc
        self.lines = lines
        self.backend_lines = backend_lines
        self.messages = watch.messages
        self.run_dir = run_dir
        self.db = db
        self.events = [json.loads(line[2:]) for line in lines if line.startswith("@ ")]

    def of(self, suffix):
        return [json.loads(p) for t, p, _ in self.messages if t.endswith("/" + suffix)]

    def sessions(self):
        seen, out = set(), []
        for r in self.of("session"):
            if r["msg_id"] not in seen:
                seen.add(r["msg_id"])
                out.append(r)
        return out

    def ended(self):
        return [r for r in self.sessions() if r["event"] == "ended"]

    def log(self, kind, **match):
        return [e for e in self.events if e["ev"] == kind and all(e.get(k) == v for k, v in match.items())]

    def acks(self):
        return dict((a["id"], a) for a in self.of("cmd_ack"))

    def tail(self):
        return "\n".join(self.lines[-40:])


def e2e(scenario, tmp_path, auth=None, batches=None, broker=True):
    """Broker, reference backend (answering auth/req from `auth`, or not at all with None), a
    subscriber to `#`, the test's injector; the run directory is kept for the grep."""
    db = str(tmp_path / "backend.sqlite")
    run_dir = str(tmp_path / "run")
    backend_lines = []
    with Broker() as b:
        backend = Backend(db, **b.client_args("backend"), auth=auth, out=backend_lines.append).start()
        backend.wait_connected()
        watch = Watch(b, topic="#")
        inject = Injector(b, "cp-auth-0001", batches or {})
        rc = sim.run(os.path.join(SCENARIOS, scenario), broker=b if broker else None,
                     site_key=KEY, run_dir=run_dir, raw=True, out=inject)
        backend.wait_idle(0.5, timeout=10)
        backend.stop()
        inject.close()
        watch.close()
    return Run(rc, inject.lines, backend_lines, watch, run_dir, db)


def entry(alias, **fields):
    e = {"token": token(alias), "key": 1, "status": "Accepted"}
    e.update(fields)
    return e


# -- the big run: every card path, commands over MQTT, the privacy grep ----------------------------
BATCHES = {
    # t=300, with a remote_stop without a session: list management and bad commands
    "00:05:00": [("cmd/list_update", {"id": "l-2", "version": 2, "type": "full",
                          "entries": [entry("alice", group="fleet-a"), entry("bob", group="fleet-a"),
                                      entry("carol", max_kwh="0.05"), entry("erin", status="Blocked")]}),
     ("cmd/list_update", {"id": "l-3", "version": 3, "type": "diff",
                          "entries": [entry("frank", max_current_a=10), {"token": token("bob"), "remove": True}]}),
     ("cmd/list_update", {"id": "l-4", "version": 4, "type": "diff",
                          "entries": [entry("bob"), entry("mallory", status="Unknown")]}),
     ("cmd/list_update", b'{"id": "l-5", "version": 5, "type": "full", "entries": [}'),   # sealed, not JSON
     ("cmd/format_flash", {"id": "u-1"}),
     ("cmd/remote_start", {"id": "w-1", "token": 123})],
    # t=310: an oversized command, a purge of dave (cached after his online accept), a report
    "00:05:10": [("cmd/list_update", json.dumps({"id": "big", "version": 9, "type": "full",
                                     "entries": [entry("mallory")] * 120}).encode()),
     ("cmd/purge", {"id": "p-1", "token": token("dave")}),
     ("cmd/report_problem", {"id": "fb-1", "text": "the display is dark"})],
}
AUTH = {token("dave"): {"status": "Accepted", "max_current_a": 10}}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return e2e("cards_and_privacy.json", tmp_path_factory.mktemp("auth"), AUTH, BATCHES)


def test_the_run_ends_cleanly(big):
    assert big.rc == 0, big.tail()
    assert not big.log("fault", code="InternalError") and not [l for l in big.lines if "Traceback" in l]


def test_4_7_and_10_byte_cards_charge_and_are_billed_under_their_pseudonyms(big):
    by_token = dict((r["token"], r) for r in big.ended())
    for alias in ("alice", "carol", "frank"):
        rec = by_token[token(alias)]
        assert rec["auth"] == "local_list" and rec["energy_wh"] > 0, rec
        assert rec["cost"]["currency"] == "EUR"
    assert len(CARDS["alice"]) == 14 and len(CARDS["carol"]) == 20 and len(CARDS["frank"]) == 8


def test_two_cards_at_once_are_refused_and_the_session_goes_on(big):
    assert len(big.log("tap", result="refused", reason="one card please")) == 1
    assert big.ended()[0]["token"] == token("alice") and big.ended()[0]["stop_reason"] == "Local"


def test_a_card_of_the_same_group_stops_the_session(big):
    assert big.log("tap", token=token("bob"), result="stop")
    first = big.ended()[0]
    assert first["token"] == token("alice") and first["stop_reason"] == "Local"
    assert "2026-03-02T07:56:00Z" <= first["ended_at"] <= "2026-03-02T07:56:03Z"   # bob's tap at 60 s


def test_the_energy_cap_ends_carols_session(big):
    rec = [r for r in big.ended() if r["token"] == token("carol")][0]
    assert rec["stop_reason"] == "EnergyLimitReached" and 50 <= rec["energy_wh"] <= 56


def test_online_answers_refuse_and_accept_with_the_cards_limit(big):
    assert big.log("tap", token=token("mallory"), result="refused", status="Invalid", auth="online")
    assert big.log("tap", token=token("erin"), result="refused", status="Blocked", auth="local_list")
    reqs = big.of("auth/req")
    assert [r["token"] for r in reqs][:2] == [token("mallory"), token("dave")]
    dave = [r for r in big.ended() if r["token"] == token("dave")]
    assert [(r["auth"], r["stop_reason"]) for r in dave][0] == ("online", "Remote")
    meter = [m for m in big.of("meter") if m["tx_id"] == dave[0]["tx_id"]]
    assert meter and all(m["offered_a"] == 10 for m in meter)     # the backend's max_current_a


def test_remote_start_and_stop_through_mqtt_with_acks(big):
    acks = big.acks()
    stops = sorted((a for a in big.of("cmd_ack") if a["cmd"] == "remote_stop"), key=lambda a: int(a["id"][4:]))
    assert [(a["status"], a.get("reason")) for a in stops] == [
        ("accepted", None), ("rejected", "no session running"), ("rejected", "no session running")]
    start = [a for a in acks.values() if a["cmd"] == "remote_start" and a["id"].startswith("sim-")]
    assert [a["status"] for a in start] == ["accepted"]
    mallory = [r for r in big.ended() if r["token"] == token("mallory")]
    assert [(r["auth"], r["stop_reason"]) for r in mallory] == [("remote", "Local")]


def test_remote_starts_are_authorized_like_taps(tmp_path):
    made_up = "ab" * 16
    run = e2e("remote_start_checked.json", tmp_path, {}, {"00:00:30": [
        ("cmd/remote_start", {"id": "x-erin", "token": token("erin")}),    # a pseudonym read off the broker
        ("cmd/remote_start", {"id": "x-made", "token": made_up})]})        # the backend does not know it
    assert run.rc == 0, run.tail()
    acks = run.acks()
    assert (acks["x-erin"]["status"], acks["x-erin"]["reason"]) == ("rejected", "Blocked: remote")
    assert [r["token"] for r in run.of("auth/req")][:1] == [made_up]      # checked online, as a tap
    assert run.log("tap", token=made_up, result="refused", status="Invalid")
    assert [(r["event"], r["token"], r["auth"]) for r in run.sessions()][:1] == [("started", token("alice"), "remote")]
    assert all(r["token"] == token("alice") for r in run.sessions())   # main started erin's and the made-up one


def test_list_updates_full_and_diff_and_a_bad_one_rejected_whole(big):
    acks = big.acks()
    assert (acks["l-2"]["status"], acks["l-2"]["version"], acks["l-2"]["entries"]) == ("accepted", 2, 4)
    assert (acks["l-3"]["status"], acks["l-3"]["version"], acks["l-3"]["entries"]) == ("accepted", 3, 4)
    assert acks["l-4"]["status"] == "rejected" and acks["l-4"]["reason"].startswith("entries[1].status:")
    # frank was added by version 3 (10 A); bob removed by it, and the rejected version 4 did not bring him back
    assert big.log("tap", token=token("frank"), result="accepted", auth="local_list")
    assert big.log("offer", amps=10, limit="card")
    assert big.log("tap", token=token("bob"), result="refused", status="Invalid", auth="online")


def test_malformed_oversized_wrong_typed_and_unknown_commands_are_refused(big):
    acks = big.of("cmd_ack")
    assert {"id": None, "cmd": "list_update", "status": "rejected", "reason": "payload must be a JSON object"} in acks
    assert big.acks()["u-1"]["reason"] == "unknown command 'format_flash'"
    assert big.acks()["w-1"]["reason"] == "token: must be a pseudonym of 32 hex digits"
    assert "big" not in big.acks()
    assert big.log("command", topic="cmd/list_update", result="refused", reason="larger than 8192 bytes")


def test_purge_forgets_the_cached_card_which_is_asked_online_again(big):
    ack = big.acks()["p-1"]
    assert (ack["status"], ack["token"], ack["list"], ack["cache"]) == ("accepted", token("dave"), 0, 1)
    asked = [r["token"] for r in big.of("auth/req")]
    assert asked.count(token("dave")) == 2      # before, and again after the purge (08:01:40)
    with open(os.path.join(big.run_dir, "data", "auth_cache.jsonl")) as f:
        cached = [json.loads(line) for line in f][1:]
    assert [c["cached_at"] for c in cached if c["token"] == token("dave")] == ["2026-03-02T08:01:40Z"]


def test_an_online_accept_authorizes_from_the_cache_while_the_broker_is_down(big):
    dave = [r for r in big.ended() if r["token"] == token("dave")]
    assert [(r["auth"], r.get("offline", False)) for r in dave] == [("online", False), ("online", False),
                                                                    ("cache", True)]
    assert big.log("tap", token=token("dave"), result="accepted", auth="cache")


def test_problem_reports_are_tied_to_the_session(big):
    fb = big.of("feedback")
    carol = [r for r in big.ended() if r["token"] == token("carol")][0]
    assert [(f["source"], f["tx_id"], f["token"]) for f in fb][0] == ("button", carol["tx_id"], token("carol"))
    app = [f for f in fb if f["source"] == "app"]
    assert app and app[0]["text"] == "the display is dark" and app[0]["tx_id"] is not None


def test_a_dead_reader_is_reported_and_clears(big):
    faults = [(f["event"], f["code"]) for f in big.of("fault")]
    assert faults == [("raised", "ReaderFailure"), ("cleared", "ReaderFailure")]
    assert len(big.log("tap", token=token("alice"), result="accepted")) == 1   # her tap at 290 s was not read


# -- THE PRIVACY GREP -------------------------------------------------------------------------------
def uid_patterns(uid_hex):
    """Regular expressions for a UID in hex, any case, with or without ':', '-' or ' ' between bytes,
    in either byte order."""
    out = []
    for hx in (uid_hex, bytes.fromhex(uid_hex)[::-1].hex()):
        pairs = [hx[i:i + 2] for i in range(0, len(hx), 2)]
        out.append(re.compile("[:\\- ]?".join(pairs), re.IGNORECASE))
    return out


def test_uid_patterns_find_every_spelling():
    pats = uid_patterns("04A1B2C3")
    for text in ("04a1b2c3", "04:A1:B2:C3", "04-a1-b2-c3", "04 A1 B2 C3", "c3b2a104", "C3:B2:A1:04"):
        assert any(p.search("x" + text + "y") for p in pats), text
    assert not any(p.search("04a1b2c4") for p in pats)


def _leaks(text, where):
    found = []
    for alias, uid in CARDS.items():
        for p in uid_patterns(uid):
            if p.search(text):
                found.append("%s: UID of %s" % (where, alias))
    return found


def test_no_raw_uid_in_any_topic_payload_file_store_or_log_line(big):
    assert big.rc == 0, big.tail()
    leaks = []
    # every MQTT topic and payload a subscriber to # saw
    assert len(big.messages) > 50
    for topic, payload, _ in big.messages:
        leaks += _leaks(topic + " " + payload.decode("utf-8", "replace"), "mqtt " + topic)
    # every file written under the run directory (the runner's own world input is the simulated
    # cards themselves, so it is left out), as text and as raw bytes
    files = 0
    for d, _, names in os.walk(big.run_dir):
        for n in names:
            path = os.path.join(d, n)
            if os.path.relpath(path, big.run_dir) in ("scenario.json", "world.state"):
                continue
            with open(path, "rb") as f:
                data = f.read()
            files += 1
            leaks += _leaks(data.decode("latin-1"), path)
            for alias, uid in CARDS.items():
                raw = bytes.fromhex(uid)
                if raw in data or raw[::-1] in data:
                    leaks.append("%s: raw bytes of %s" % (path, alias))
    assert files >= 5
    # the backend's store: the database file and every row of every table
    with open(big.db, "rb") as f:
        data = f.read()
    leaks += _leaks(data.decode("latin-1"), "backend db file")
    con = sqlite3.connect(big.db)
    leaks += _leaks("\n".join(con.iterdump()), "backend db rows")
    con.close()
    # every log line: the firmware's, the runner's and the backend's
    leaks += _leaks("\n".join(big.lines), "firmware/runner log")
    leaks += _leaks("\n".join(big.backend_lines), "backend log")
    assert leaks == []
    # and the grep can see: the pseudonyms are there, and the runner's world input, left out
    # above, holds every UID (so the grep is looking at real spellings of real cards)
    assert token("alice") in "\n".join(big.lines)
    with open(os.path.join(big.run_dir, "scenario.json")) as f:
        world = f.read()
    assert len(set(_leaks(world, "world"))) == len(CARDS)


def test_the_grep_would_catch_a_leak():
    assert _leaks("token 04:a1:b2:c3:d4:e5:f6", "x") == ["x: UID of alice"]
    assert _leaks("EF BE AD DE", "x") == ["x: UID of bob"]


# -- the offline rules: a backend that never answers, then no broker -------------------------------
@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    return e2e("offline_policies.json", tmp_path_factory.mktemp("offline"), auth=None)


def test_without_an_answer_the_offline_rules_decide_after_the_timeout(offline):
    assert offline.rc == 0, offline.tail()
    assert [e["token"] for e in offline.log("auth_timeout")] == [token("alice"), token("mallory")]
    assert [r["token"] for r in offline.of("auth/req")] == [token("alice"), token("mallory")]
    taps = [(e["token"], e["result"], e.get("auth")) for e in offline.log("tap")]
    assert taps == [(token("alice"), "asking", None), (token("alice"), "accepted", "local_list"),
                    (token("alice"), "stop", None),
                    (token("mallory"), "asking", None), (token("mallory"), "accepted", "offline_unknown"),
                    (token("mallory"), "stop", None),
                    (token("alice"), "accepted", "local_list"), (token("alice"), "stop", None),
                    (token("mallory"), "accepted", "offline_unknown"), (token("mallory"), "stop", None)]


def test_offline_sessions_arrive_later_flagged_with_how_they_were_authorized(offline):
    recs = [(r["event"], r["token"], r["auth"], r.get("offline", False)) for r in offline.sessions()]
    assert recs == [("started", token("alice"), "local_list", False), ("ended", token("alice"), "local_list", False),
                    ("started", token("mallory"), "offline_unknown", False),
                    ("ended", token("mallory"), "offline_unknown", False),
                    ("started", token("alice"), "local_list", True), ("ended", token("alice"), "local_list", True),
                    ("started", token("mallory"), "offline_unknown", True),
                    ("ended", token("mallory"), "offline_unknown", True)]
    store = sqlite3.connect(offline.db)
    n = store.execute("SELECT COUNT(*) FROM session_events").fetchone()[0]
    store.close()
    assert n == 8


def test_no_raw_uid_in_the_offline_run_either(offline):
    leaks = []
    for topic, payload, _ in offline.messages:
        leaks += _leaks(topic + " " + payload.decode("utf-8", "replace"), topic)
    leaks += _leaks("\n".join(offline.lines + offline.backend_lines), "logs")
    assert leaks == []
