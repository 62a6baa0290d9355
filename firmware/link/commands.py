"""Commands from the backend (`cmd/<name>`), authorization answers and acknowledgements.

Every message is sealed by the backend under this charger's key (firmware/link/seal.py): one
without a valid MAC is refused before it is even parsed, so a broker peer can neither forge nor
alter one. A command also carries a counter `ctr` above the last accepted one, persisted before
the command runs, so a replay is refused even after a reboot. Answers (`ack`, `auth/resp`) need
no counter: an ack names msg_ids that are never reused (a replay acknowledges a record already
gone) and an authorization answer names a random correlation id that is answered once.

A command is a JSON object with an `id`; it is validated, handed to the handler its name
maps to in an explicit route table (firmware/link/handlers.py builds it) and answered on
`cmd_ack` with `accepted` or `rejected` and a reason. Anything malformed, oversized or unknown
is rejected and changes nothing. At most `per_pass` messages are handled per loop pass; the
rest wait in the inbox for the next one, so a burst cannot stall the loop.

    commands = Commands({"remote_stop": h.remote_stop}, {"ack": h.ack}, sync, log, key, "cp-0001", state)
    commands.handle_inbox()   # every control step
"""
import json

from micropython import const

from firmware.core import jsonx
from firmware.link.seal import B2D, Counter, unseal

_MAX_ID = const(64)
PER_PASS = 4
NO_KEY = "no device_key in secrets.json: every backend message is refused"


class Commands:
    def __init__(self, routes, answers, sync, log, key, device_id, state, per_pass=PER_PASS):
        """routes: command name -> handler(payload) returning extra ack fields or None, raising
        ValueError to reject; answers: topic suffix (auth/resp, ack) -> handler(payload);
        key: the device key (None: nothing is accepted); state: keeps the command counter."""
        self.routes = routes
        self.answers = answers
        self.sync = sync
        self.log = log
        self.key = key
        self.device_id = device_id
        self.state = state
        self.counter = Counter(state.cmd_ctr())
        self.per_pass = per_pass
        if key is None:
            log.event("command", result="disabled", reason=NO_KEY)

    def handle_inbox(self):
        """Handle what the broker delivered, at most per_pass messages."""
        inbox = self.sync.inbox
        n = 0
        while inbox and n < self.per_pass:
            suffix, raw = inbox.pop(0)
            self.handle(suffix, raw)
            n += 1

    def handle(self, suffix, raw):
        command = suffix.startswith("cmd/")
        fn = None if command else self.answers.get(suffix)
        if not command and fn is None:
            return
        try:
            body = self._open(suffix, raw)
        except ValueError as e:
            if command:
                return self.answer(_id_of(raw), suffix[4:], "rejected", "unauthenticated: %s" % e)
            self.log.event("command", topic=suffix, result="refused", reason="unauthenticated: %s" % e)
            return
        try:
            payload = jsonx.loads(body)   # prices stay exact decimals, never floats
        except ValueError:
            payload = None
        if command:
            self._command(suffix[4:], payload)
            return
        try:
            fn(payload)
        except ValueError as e:
            self.log.event("command", topic=suffix, result="ignored", reason=str(e))

    def _open(self, suffix, raw):
        """The body of a sealed message; ValueError with the reason if it is not this backend's."""
        if self.key is None:
            raise ValueError(NO_KEY)
        if isinstance(raw, str):
            raw = raw.encode()
        return unseal(self.key, B2D, self.device_id, suffix, raw)

    def _command(self, name, p):
        cid = p.get("id") if isinstance(p, dict) else None
        if not isinstance(p, dict):
            return self.answer(None, name, "rejected", "payload must be a JSON object")
        if not isinstance(cid, str) or not 0 < len(cid) <= _MAX_ID:
            return self.answer(None, name, "rejected", "id must be a string of 1..%d characters" % _MAX_ID)
        ctr = p.get("ctr")
        try:
            self.counter.check(ctr)
        except ValueError as e:
            return self.answer(cid, name, "rejected", "unauthenticated: %s" % e)
        try:   # the counter is spent before the command runs: a replay never runs it twice
            self.state.set_cmd_ctr(ctr)
            self.state.save()
        except OSError as e:
            self.state.set_cmd_ctr(self.counter.last)
            return self.answer(cid, name, "rejected", "storage error: %s; try again" % e)
        self.counter.take(ctr)
        del p["ctr"]   # transport, not a command field: handlers refuse what they do not know
        handler = self.routes.get(name)
        if handler is None:
            return self.answer(cid, name, "rejected", "unknown command %r" % name[:32])
        try:
            extra = handler(p)
        except ValueError as e:
            return self.answer(cid, name, "rejected", str(e))
        except OSError as e:   # the flash failed: the command did not take effect, the charge goes on
            return self.answer(cid, name, "rejected", "storage error: %s; try again" % e)
        self.answer(cid, name, "accepted", None, extra)

    def answer(self, cid, name, status, reason, extra=None):
        ack = {"id": cid, "cmd": name[:32], "status": status}
        if reason:
            ack["reason"] = reason
        if extra:
            ack.update(extra)
        self.log.event("command", cmd=ack["cmd"], id=cid, result=status, reason=reason)
        self.sync.publish_now("cmd_ack", json.dumps(ack), 1)


def _id_of(raw):
    """The id a refused message claims, to name it in the answer (it is not trusted for anything)."""
    try:
        cid = jsonx.loads(raw).get("id")
    except (ValueError, AttributeError):
        return None
    return cid if isinstance(cid, str) and 0 < len(cid) <= _MAX_ID else None
