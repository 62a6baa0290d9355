"""Commands: an explicit route table, malformed or unknown commands rejected unchanged, a bounded
number per loop pass, and every command name reaching its own handler."""
import json

from fakes import ListLog
from firmware.link.commands import BURST, PER_PASS, RATE, Commands
from firmware.link.handlers import Handlers
from firmware.link.seal import B2D, seal
from hal.sim.clock import VirtualClock

NAMES = ("remote_start", "remote_stop", "list_update", "purge", "charging_profile", "report_problem",
         "tariff", "clear_fault", "update")


KEY = bytes(range(32))   # this charger's device key
DEV = "cp-test"
_ctr = [0]   # the backend's counter for this charger


class State:
    """firmware/storage/state.py's command counter: save() never raises; with `fail` set the flash
    refuses the write and the values stay `dirty` in RAM, as the real one does. Counts writes."""

    def __init__(self, ctr=0):
        self.ctr = self.saved = ctr
        self.fail = None
        self.dirty = False
        self.saves = 0

    def cmd_ctr(self):
        return self.ctr

    def set_cmd_ctr(self, n):
        self.ctr = n

    def save(self):
        self.dirty = self.fail is not None
        if self.dirty:
            return
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


def commands(routes, answers, sync, log, per_pass=PER_PASS, state=None, clock=None, burst=BURST):
    return Commands(routes, answers, sync, log, clock or VirtualClock(), KEY, DEV, state or State(),
                    per_pass=per_pass, burst=burst)


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
        self.ep = None   # the journal's data epoch: not known, every ack counts
        self.local_list = self
        self.current = self
        self.faults = self
        self.latched = ["rcd"]
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

    def clear_fault(self, only=None):
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
    h = Handlers(f, f, f, f, f, f, f, f, VirtualClock(), ListLog(), remote_clear=("rcd",))
    routes = h.routes()
    assert sorted(routes) == sorted(NAMES)
    sync = Sync()
    c = commands(routes, h.answers(), sync, ListLog(), per_pass=100, burst=100)
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
    c = commands(h.routes(), h.answers(), sync, ListLog(), per_pass=100, burst=100)
    _cmd(sync, "purge", id="p", token="busy")
    _cmd(sync, "charging_profile", id="c", kind="nonsense", profile={})
    _cmd(sync, "report_problem", id="r", text=7)
    _cmd(sync, "update", id="u")
    c.handle_inbox()
    assert calls == []
    assert [a["reason"].split(":")[0].split(" ")[0] for a in sync.acks] == ["token", "kind", "text", "over-the-air"]


OCPP_NAMES = ("availability", "clear_cache", "list_version", "reset", "trigger", "get_config", "set_config")


def test_the_ocpp_commands_are_registered_in_the_route_table():
    from firmware.link.ocpp_cmds import OcppCommands

    class Status:
        def set_operative(self, operative):
            pass

    calls = []
    f = Fake(calls)
    oc = OcppCommands(f, f, None, Status(), "/nonexistent-dir/ocpp.json", ListLog())
    routes = Handlers(f, f, f, f, f, f, f, f, VirtualClock(), ListLog(), oc).routes()
    assert sorted(routes) == sorted(NAMES + OCPP_NAMES)
    sync = Sync()
    c = commands(routes, {}, sync, ListLog(), per_pass=100)
    _cmd(sync, "list_version", id="l")
    c.handle_inbox()
    assert sync.acks == [{"id": "l", "cmd": "list_version", "status": "accepted", "version": 2}]


def test_any_exception_in_a_handler_is_a_refusal_not_an_internal_fault():
    def boom(p):
        raise RuntimeError("maximum recursion depth exceeded")

    def typo(p):
        return p["missing"]   # KeyError: a bug no check foresaw

    def bad_answer(p):
        raise TypeError("unhashable")

    sync, log = Sync(), ListLog()
    c = commands({"tariff": boom, "purge": typo}, {"ack": bad_answer}, sync, log)
    c.handle("cmd/tariff", sealed("cmd/tariff", {"id": "t"}))
    c.handle("cmd/purge", sealed("cmd/purge", {"id": "p"}))
    c.handle("ack", sealed("ack", {"msg_ids": ["x"]}))
    c.handle("cmd/tariff", sealed("cmd/tariff", b'{"id":"\xff\xfe"}'))   # not UTF-8, under a good MAC
    assert [(a["id"], a["status"], a["reason"]) for a in sync.acks] == [
        ("t", "rejected", "internal error: RuntimeError; not applied"),
        ("p", "rejected", "internal error: KeyError; not applied"),
        (None, "rejected", "payload must be a JSON object")]
    assert log.events[-2]["result"] == "ignored" and "TypeError" in log.events[-2]["reason"]


def test_deep_or_long_payloads_are_refused_naming_the_bound():
    seen = []
    sync = Sync()
    c = commands({"tariff": seen.append}, {}, sync, ListLog())
    c.handle("cmd/tariff", sealed("cmd/tariff", '{"id": "d", "tariff": {"x": ' + "[" * 3000 + "]" * 3000 + "}}"))
    c.handle("cmd/tariff", sealed("cmd/tariff", '{"id": "n", "version": %s}' % ("9" * 8037)))
    assert seen == []
    assert [a["reason"] for a in sync.acks] == ["payload: nested deeper than 16",
                                                 "payload: number longer than 32 characters"]


def test_a_command_flood_is_dropped_over_the_rate_unanswered_and_answers_still_pass():
    clock = VirtualClock()
    seen = []
    sync, log = Sync(), ListLog()
    c = commands({"report_problem": lambda p: seen.append(p["id"])}, {"ack": lambda p: seen.append("ack")},
                 sync, log, clock=clock)
    handled = []
    for second in range(12):                     # ~30 commands a second for 12 s, a pass every 100 ms
        for tenth in range(10):
            for i in range(3):
                _cmd(sync, "report_problem", id="f%d-%d-%d" % (second, tenth, i))
            if tenth == 5:
                sync.inbox.append(("ack", sealed("ack", {"msg_ids": ["m"]})))
            before = len(seen)
            c.handle_inbox()
            handled.append(len(seen) - before)
            clock.advance(100)
    assert max(handled) <= PER_PASS
    assert seen.count("ack") == 12                   # backend acknowledgements are never rate limited
    cmds = len(seen) - 12
    assert cmds <= BURST + RATE * 12 + 1 and cmds >= RATE * 12   # the rate holds, and it still serves
    assert len(sync.acks) == cmds                    # the dropped ones are not answered one by one
    assert c.dropped > 0 and c.dropped + cmds + len(sync.inbox) == 360
    drops = [e for e in log.events if e.get("result") == "dropped"]
    assert 1 <= len(drops) <= 2 and sum(e["n"] for e in drops) <= c.dropped
