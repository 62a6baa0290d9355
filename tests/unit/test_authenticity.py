"""Backend -> charger messages are believed only when sealed under this charger's key: unsealed,
altered, another charger's, or replayed ones change nothing, across a reboot too; the charger's
own messages leave sealed."""
import binascii
import json
import os

from fakes import FakeLink, ListLog
from firmware.link.commands import Commands
from firmware.link.seal import B2D, D2B, derive, unseal
from firmware.link.sync import Sync
from firmware.storage.outbox import Outbox
from firmware.storage.state import State, ensure_dir
from hal.sim.clock import VirtualClock
from simharness import Harness
from test_commands import DEV, KEY
from test_commands import State as FakeState
from test_commands import Sync as FakeSync
from test_commands import sealed

CARDS = {"alice": "04A1B2C3"}


def _rig(state=None, key=KEY):
    calls = []
    sync, log = FakeSync(), ListLog()
    routes = {"remote_stop": lambda p: calls.append(p) or None}
    answers = {"ack": lambda p: calls.append(("ack", p["msg_ids"])), "auth/resp": lambda p: calls.append(("auth", p))}
    return Commands(routes, answers, sync, log, VirtualClock(), key, DEV, state or FakeState(), per_pass=100), \
        calls, sync, log


def _reasons(sync):
    return [(a["id"], a["status"], a.get("reason")) for a in sync.acks]


def test_unsealed_altered_and_other_devices_commands_are_rejected_and_run_nothing():
    c, calls, sync, log = _rig()
    good = sealed("cmd/remote_stop", {"id": "s1"}, ctr=5)
    other_key = sealed("cmd/remote_stop", {"id": "s2"}, key=derive(b"fleet", "cp-other"), ctr=6)
    other_dev = sealed("cmd/remote_stop", {"id": "s3"}, device="cp-other", ctr=7)
    c.handle("cmd/remote_stop", json.dumps({"id": "s0", "ctr": 4}))          # unsealed
    c.handle("cmd/remote_stop", good.replace(b'"s1"', b'"s9"'))             # altered after sealing
    c.handle("cmd/remote_stop", other_key)
    c.handle("cmd/remote_stop", other_dev)                                   # meant for another charger
    c.handle("cmd/purge", sealed("cmd/remote_stop", {"id": "s4"}, ctr=8))    # moved to another topic
    assert calls == [] and c.counter.last == 0
    reasons = _reasons(sync)
    assert reasons[0] == ("s0", "rejected", 'unauthenticated: not sealed (no trailing "mac" member)')
    bad_mac = "unauthenticated: bad MAC (altered, forged, or for another device or topic)"
    assert reasons[1:] == [("s9", "rejected", bad_mac), ("s2", "rejected", bad_mac), ("s3", "rejected", bad_mac),
                           ("s4", "rejected", bad_mac)]
    c.handle("cmd/remote_stop", good)
    assert calls == [{"id": "s1"}] and _reasons(sync)[-1] == ("s1", "accepted", None)   # ctr is not passed on


def test_a_replayed_or_counterless_command_is_rejected():
    state = FakeState()
    c, calls, sync, log = _rig(state)
    first = sealed("cmd/remote_stop", {"id": "a"}, ctr=10)
    c.handle("cmd/remote_stop", first)
    c.handle("cmd/remote_stop", first)                                          # replayed as is
    c.handle("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "b"}, ctr=9))  # an older one
    c.handle("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "c"}, ctr=10))
    c.handle("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "d"}, ctr="12"))
    c.handle("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "e"}, ctr=1 << 30))
    c.handle("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "f"}, ctr=11))
    assert [p["id"] for p in calls] == ["a", "f"]
    r = _reasons(sync)
    assert r[1] == ("a", "rejected", "unauthenticated: replayed or out of order (ctr 10, last 10)")
    assert r[2] == ("b", "rejected", "unauthenticated: replayed or out of order (ctr 9, last 10)")
    assert r[3][2].startswith("unauthenticated: replayed") and r[4][1] == r[5][1] == "rejected"
    assert state.saved == 11 and state.saves == 2   # spent before the command ran, one write each


def test_a_flash_error_on_the_counter_rejects_the_command_and_spends_nothing():
    state = FakeState()
    c, calls, sync, log = _rig(state)
    state.fail = OSError(28)
    c.handle("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "a"}, ctr=3))
    assert calls == [] and _reasons(sync)[0][2].startswith("storage error") and c.counter.last == 0
    assert state.cmd_ctr() == 0
    state.fail = None
    c.handle("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "a"}, ctr=3))   # the backend's retry
    assert [p["id"] for p in calls] == ["a"]


def test_the_command_counter_survives_a_reboot():
    d = "/tmp/cp-auth-%s" % binascii.hexlify(os.urandom(4)).decode()
    ensure_dir(d)
    path = d + "/state.json"
    c, calls, sync, log = _rig(State(path))
    old = sealed("cmd/remote_stop", {"id": "a"}, ctr=41)
    c.handle("cmd/remote_stop", old)
    assert len(calls) == 1
    c, calls, sync, log = _rig(State(path))   # the charger rebooted: a new Commands, the same flash
    c.handle("cmd/remote_stop", old)
    assert calls == [] and _reasons(sync)[0][2].startswith("unauthenticated: replayed")
    c.handle("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "b"}, ctr=42))
    assert [p["id"] for p in calls] == ["b"]
    os.remove(path)


def test_answers_need_a_seal_but_no_counter():
    c, calls, sync, log = _rig()
    c.handle("ack", json.dumps({"msg_ids": ["1-0"]}))
    c.handle("auth/resp", json.dumps({"id": "ab12cd34", "status": "Accepted"}))
    c.handle("ack", sealed("ack", {"msg_ids": ["1-0"]}, key=derive(b"fleet", DEV)))
    assert calls == [] and sync.acks == []
    assert [e["reason"][:20] for e in log.events] == ["unauthenticated: not"] * 2 + ["unauthenticated: bad"]
    c.handle("ack", sealed("ack", {"msg_ids": ["1-0"]}))
    c.handle("auth/resp", sealed("auth/resp", {"id": "ab12cd34", "status": "Accepted"}))
    assert calls == [("ack", ["1-0"]), ("auth", {"id": "ab12cd34", "status": "Accepted"})]


def test_without_a_device_key_nothing_is_accepted_and_the_boot_says_so():
    c, calls, sync, log = _rig(key=None)
    assert log.events[0]["result"] == "disabled" and "device_key" in log.events[0]["reason"]
    c.handle("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "a"}))
    c.handle("ack", sealed("ack", {"msg_ids": ["1-0"]}))
    assert calls == [] and _reasons(sync)[0][2].startswith("unauthenticated: no device_key")


def test_an_unsealed_ack_deletes_no_outbox_record_and_the_bill_still_goes_out():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 20000, "tap": "alice"}], 40000)
    h.acking = False   # the backend is away
    h.run(until_ms=30000)
    waiting = h.outbox.pending()
    assert len(waiting) == 2   # started, ended
    forged = json.dumps({"msg_ids": waiting}).encode()
    h.sync.inbox.append(("ack", forged))
    h.sync.inbox.append(("ack", forged[:-1] + b',"mac":"' + b"0" * 64 + b'"}'))
    h.run(until_ms=31000)
    assert h.outbox.pending() == waiting
    refused = [e["reason"] for e in h.events("command") if e.get("result") == "refused"]
    assert len(refused) == 2 and all(r.startswith("unauthenticated") for r in refused)
    h.inject("ack", {"msg_ids": waiting})   # the backend is back: its sealed ack
    h.run()
    assert h.outbox.pending() == []


def test_what_the_charger_publishes_is_sealed_under_its_key():
    clock = VirtualClock(start_utc=1772438100)
    link = FakeLink()
    ob = Outbox(8, clock=clock)
    s = Sync(link, clock, ListLog(), ob, "cp/v1/%s/" % DEV, KEY, DEV)
    ob.put("session", '{"msg_id":"1-0","tx_id":1}', "1-0")
    s.set_connector("Available")
    s.set_stats('{"day":"x"}')
    for _ in range(3):
        s.tick()
    s.publish_now("cmd_ack", json.dumps({"id": "a"}), 1)
    out = dict((t[len("cp/v1/cp-test/"):], p) for t, p, _, _ in link.published)
    assert sorted(out) == ["cmd_ack", "session", "stats", "status"]
    for suffix, payload in out.items():
        body = json.loads(unseal(KEY, D2B, DEV, suffix, payload))
        assert isinstance(body, dict)
    assert json.loads(unseal(KEY, D2B, DEV, "session", out["session"])) == {"msg_id": "1-0", "tx_id": 1}
    assert json.loads(unseal(KEY, D2B, DEV, "status", link.will[1])) == {"state": "offline"}
    try:
        unseal(KEY, B2D, DEV, "session", out["session"])   # a record cannot pass for a backend message
        raise AssertionError("direction not bound")
    except ValueError:
        pass
