"""Commands from the backend (`cmd/<name>`), authorization answers and acknowledgements.

Every command is a JSON object with an `id`; it is validated, handed to the handler its name
maps to in an explicit route table (firmware/link/handlers.py builds it) and answered on
`cmd_ack` with `accepted` or `rejected` and a reason. Anything malformed, oversized or unknown
is rejected and changes nothing. At most `per_pass` messages are handled per loop pass; the
rest wait in the inbox for the next one, so a burst cannot stall the loop.

    commands = Commands({"remote_stop": h.remote_stop}, {"ack": h.ack}, sync, log)
    commands.handle_inbox()   # every control step
"""
import json

from micropython import const

from firmware.core import jsonx

_MAX_ID = const(64)
PER_PASS = 4


class Commands:
    def __init__(self, routes, answers, sync, log, per_pass=PER_PASS):
        """routes: command name -> handler(payload) returning extra ack fields or None, raising
        ValueError to reject; answers: topic suffix (auth/resp, ack) -> handler(payload)."""
        self.routes = routes
        self.answers = answers
        self.sync = sync
        self.log = log
        self.per_pass = per_pass

    def handle_inbox(self):
        """Handle what the broker delivered, at most per_pass messages."""
        inbox = self.sync.inbox
        n = 0
        while inbox and n < self.per_pass:
            suffix, raw = inbox.pop(0)
            self.handle(suffix, raw)
            n += 1

    def handle(self, suffix, raw):
        try:
            payload = jsonx.loads(raw)   # prices stay exact decimals, never floats
        except ValueError:
            payload = None
        if suffix.startswith("cmd/"):
            self._command(suffix[4:], payload)
            return
        fn = self.answers.get(suffix)
        if fn is None:
            return
        try:
            fn(payload)
        except ValueError as e:
            self.log.event("command", topic=suffix, result="ignored", reason=str(e))

    def _command(self, name, p):
        cid = p.get("id") if isinstance(p, dict) else None
        if not isinstance(p, dict):
            return self.answer(None, name, "rejected", "payload must be a JSON object")
        if not isinstance(cid, str) or not 0 < len(cid) <= _MAX_ID:
            return self.answer(None, name, "rejected", "id must be a string of 1..%d characters" % _MAX_ID)
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
