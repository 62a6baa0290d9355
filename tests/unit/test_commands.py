"""Commands: an explicit route table, malformed or unknown commands rejected unchanged, a bounded
number per loop pass, and every command name reaching its own handler."""
import json

from fakes import ListLog
from firmware.link.commands import PER_PASS, Commands
from firmware.link.handlers import Handlers
from firmware.link.seal import B2D, seal
from hal.sim.clock import VirtualClock

NAMES = ("remote_start", "remote_stop", "list_update", "purge", "charging_profile", "report_problem",
         "tariff", "clear_fault", "update")


KEY = bytes(range(32))   # this charger's device key
DEV = "cp-test"
_ctr = [0]   # the backend's counter for this charger


class State:
    """firmware/storage/state.py's command counter; save() raises `fail` when set, counts writes."""

    def __init__(self, ctr=0):
        self.ctr = self.saved = ctr
        self.fail = None
        self.saves = 0

    def cmd_ctr(self):
        return self.ctr

    def set_cmd_ctr(self, n):
        self.ctr = n

    def save(self):
        if self.fail:
            raise self.fail
        self.saved = self.ctr
        self.saves += 1


def sealed(suffix, payload, key=KEY, device=DEV, ctr=None):
    """payload (an object, or raw text) sealed as the backend does; a command gets the next ctr."""
    if not isinstance(payload, (str, bytes)):
        if suffix.startswith("cmd/"):
            if ctr is None:
                _ctr[0] += 1
                ctr = _ctr[0]
            payload = dict(payload, ctr=ctr)
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return seal(key, B2D, device, suffix, payload)


def commands(routes, answers, sync, log, per_pass=PER_PASS, state=None):
    return Commands(routes, answers, sync, log, KEY, DEV, state or State(), per_pass=per_pass)


class Sync:
    def __init__(self):
        self.inbox = []
        self.acks = []

    def publish_now(self, suffix, payload, qos=0):
        self.acks.append(json.loads(payload))
        return True


def _cmd(sync, name, **payload):
    sync.inbox.append(("cmd/" + name, sealed("cmd/" + name, payload)))


def test_routed_commands_are_answered_and_unknown_or_malformed_ones_change_nothing():
    calls = []

    def stop(p):
        calls.append(p["id"])
        return {"tx_id": 3}

    def refuse(p):
        raise ValueError("no session running")

    sync, log = Sync(), ListLog()
    c = commands({"remote_stop": stop, "remote_start": refuse}, {}, sync, log)
    for suffix, raw in (("cmd/remote_stop", sealed("cmd/remote_stop", "{not json}")), ("cmd/remote_stop", "[1]"),
                        ("cmd/remote_stop", sealed("cmd/remote_stop", {"id": 5})),
                        ("cmd/cmd_remote_stop", sealed("cmd/cmd_remote_stop", {"id": "a"})),
                        ("cmd/__init__", sealed("cmd/__init__", {"id": "b"})),
                        ("cmd/remote_stop", sealed("cmd/remote_stop", {"id": "ok"})),
                        ("cmd/remote_start", sealed("cmd/remote_start", {"id": "r"}))):
        c.handle(suffix, raw)
    assert calls == ["ok"]
    assert [(a["id"], a["status"], a.get("reason")) for a in sync.acks] == [
        (None, "rejected", "payload must be a JSON object"),
        (None, "rejected", 'unauthenticated: not sealed (no trailing "mac" member)'),
        (None, "rejected", "id must be a string of 1..64 characters"),
        ("a", "rejected", "unknown command 'cmd_remote_stop'"), ("b", "rejected", "unknown command '__init__'"),
        ("ok", "accepted", None), ("r", "rejected", "no session running")]
    assert sync.acks[5]["tx_id"] == 3


def test_a_flash_error_rejects_the_command_and_an_answer_that_fits_nothing_is_ignored():
    def fail(p):
        raise OSError(28)

    def answer(p):
        raise ValueError("id: nothing waiting")

    sync, log = Sync(), ListLog()
    c = commands({"list_update": fail}, {"auth/resp": answer}, sync, log)
    c.handle("cmd/list_update", sealed("cmd/list_update", {"id": "l"}))
    c.handle("auth/resp", sealed("auth/resp", {"id": 3}))
    c.handle("other/topic", "{}")
    assert sync.acks[0]["status"] == "rejected" and sync.acks[0]["reason"].startswith("storage error")
    assert len(sync.acks) == 1 and log.events[-1]["result"] == "ignored" and log.events[-1]["topic"] == "auth/resp"


def test_at_most_per_pass_messages_are_handled_the_rest_next_pass():
    seen = []
    sync = Sync()
    c = commands({"report_problem": lambda p: seen.append(p["id"])}, {}, sync, ListLog())
    for i in range(PER_PASS + 2):
        _cmd(sync, "report_problem", id="p%d" % i)
    c.handle_inbox()
    assert PER_PASS == 4 and seen == ["p0", "p1", "p2", "p3"] and len(sync.inbox) == 2
    c.handle_inbox()
    assert seen == ["p%d" % i for i in range(6)] and sync.inbox == []


class Fake:
    """Stands for every collaborator: each method records its name and the payload."""

    def __init__(self, calls, result=None):
        self.calls = calls
        self.result = result
        self.version = 2
        self.local_list = self
        self.current = self
        self.id = "t2"

    def _call(self, name, *args):
        self.calls.append((name,) + args)
        return self.result

    def remote_start(self, p):
        return self._call("remote_start", p["id"])

    def remote_stop(self, tx_id):
        self._call("remote_stop", tx_id)
        return 3

    def report_problem(self, source, text):
        return self._call("report_problem", source, text)

    def busy_with(self, token):
        return token == "busy"

    def forget(self, token):
        return self._call("forget", token)

    def auth_answer(self, p):
        return self._call("auth_answer", p["id"])

    def update(self, p):
        return self._call("list_update", p["id"])

    def purge(self, token, key):
        self._call("purge", token)
        return {"token": token}

    def set_profile(self, kind, profile):
        return self._call("set_profile", kind)

    def clear_profile(self, kind, level):
        return self._call("clear_profile", kind)

    def replace(self, p):
        self._call("tariff", p["version"])
        return self

    def price_text(self):
        return None

    def clear_fault(self):
        self._call("clear_fault")
        return ["rcd"]

    def start(self, p):
        return self._call("update", p["id"])

    def pending(self):
        return []

    def ack(self, ids):
        return self._call("ack", ids)

    def scrub(self):
        self._call("scrub")
        return 0


def test_every_command_reaches_its_own_handler():
    calls = []
    f = Fake(calls)
    h = Handlers(f, f, f, f, f, f, f, f, VirtualClock(), ListLog())
    routes = h.routes()
    assert sorted(routes) == sorted(NAMES)
    sync = Sync()
    c = commands(routes, h.answers(), sync, ListLog(), per_pass=100)
    _cmd(sync, "remote_start", id="s")
    _cmd(sync, "remote_stop", id="t", tx_id=3)
    _cmd(sync, "list_update", id="l")
    _cmd(sync, "purge", id="p", token="abc")
    _cmd(sync, "charging_profile", id="c", kind="station_max", profile={"periods": []})
    _cmd(sync, "charging_profile", id="c2", kind="tx_default")
    _cmd(sync, "report_problem", id="r", text="cable")
    _cmd(sync, "tariff", id="tf", version=3, tariff={})
    _cmd(sync, "clear_fault", id="cf")
    _cmd(sync, "update", id="u")
    sync.inbox.append(("auth/resp", sealed("auth/resp", {"id": "corr"})))
    sync.inbox.append(("ack", sealed("ack", {"msg_ids": ["1-0"]})))
    c.handle_inbox()
    assert calls == [("remote_start", "s"), ("remote_stop", 3), ("list_update", "l"), ("purge", "abc"),
                     ("forget", "abc"), ("scrub",), ("set_profile", "station_max"), ("clear_profile", "tx_default"),
                     ("report_problem", "app", "cable"), ("tariff", 3), ("clear_fault",), ("update", "u"),
                     ("auth_answer", "corr"), ("ack", ["1-0"])]
    assert [a["status"] for a in sync.acks] == ["accepted"] * 10
    assert sync.acks[1]["tx_id"] == 3 and sync.acks[7] == {"id": "tf", "cmd": "tariff", "status": "accepted",
                                                           "tariff_id": "t2", "version": 2}


def test_handlers_refuse_bad_payloads_before_changing_anything():
    calls = []
    f = Fake(calls)
    h = Handlers(f, f, f, f, f, None, f, f, VirtualClock(), ListLog())
    sync = Sync()
    c = commands(h.routes(), h.answers(), sync, ListLog(), per_pass=100)
    _cmd(sync, "purge", id="p", token="busy")
    _cmd(sync, "charging_profile", id="c", kind="nonsense", profile={})
    _cmd(sync, "report_problem", id="r", text=7)
    _cmd(sync, "update", id="u")
    c.handle_inbox()
    assert calls == []
    assert [a["reason"].split(":")[0].split(" ")[0] for a in sync.acks] == ["token", "kind", "text", "over-the-air"]
