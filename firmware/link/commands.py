"""Commands from the backend (`cmd/<name>`), authorization answers and acknowledgements.

Every command is a JSON object with an `id`; it is validated, handed to the controller's
`cmd_<name>` method, and answered on `cmd_ack` with `accepted` or `rejected` and a reason.
Anything malformed, oversized or unknown is rejected and changes nothing.

    commands = Commands(ctl, sync, log); commands.handle_inbox()   # every loop iteration
"""
import json

from firmware.core import jsonx

NAMES = ("remote_start", "remote_stop", "list_update", "purge", "charging_profile", "report_problem",
         "tariff", "clear_fault", "update")
_MAX_ID = 64


class Commands:
    def __init__(self, ctl, sync, log):
        self.ctl = ctl
        self.sync = sync
        self.log = log

    def handle_inbox(self):
        inbox = self.sync.inbox
        while inbox:
            suffix, raw = inbox.pop(0)
            self.handle(suffix, raw)

    def handle(self, suffix, raw):
        try:
            payload = jsonx.loads(raw)   # prices stay exact decimals, never floats
        except ValueError:
            payload = None
        if suffix == "auth/resp":
            self._guard("auth/resp", lambda: self.ctl.auth_answer(payload))
        elif suffix == "ack":
            self._guard("ack", lambda: self.ctl.backend_ack(payload))
        elif suffix.startswith("cmd/"):
            self._command(suffix[4:], payload)

    def _guard(self, what, fn):
        try:
            fn()
        except ValueError as e:
            self.log.event("command", topic=what, result="ignored", reason=str(e))

    def _command(self, name, p):
        cid = p.get("id") if isinstance(p, dict) else None
        if not isinstance(p, dict):
            return self.answer(None, name, "rejected", "payload must be a JSON object")
        if not isinstance(cid, str) or not 0 < len(cid) <= _MAX_ID:
            return self.answer(None, name, "rejected", "id must be a string of 1..%d characters" % _MAX_ID)
        handler = getattr(self.ctl, "cmd_" + name, None) if name in NAMES else None
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
