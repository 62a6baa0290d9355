"""The backend's commands, one handler each, and the route table that names them.

A handler validates its payload before it changes anything and raises ValueError with the
reason to reject it (firmware/link/commands.py answers). Decisions about sessions stay with
the controller: these only check and hand over.

    h = Handlers(ctl, auth, limits, tariffs, reactions, updater, outbox, journal, clock, log, ocpp, remote_clear)
    Commands(h.routes(), h.answers(), sync, log, clock, device_key, device_id, state)
"""
from firmware.charging.limits import KINDS
from firmware.link.sync import parse_ack

_TEXT_MAX = 200


def _waiting(outbox, marker):
    """How many records waiting for the backend's acknowledgement hold marker."""
    n = 0
    for mid in outbox.pending():
        raw = outbox.payload(mid)
        if raw is not None and marker in raw:
            n += 1
    return n


class Handlers:
    def __init__(self, ctl, auth, limits, tariffs, reactions, updater, outbox, journal, clock, log, ocpp=None,
                 remote_clear=()):
        """ocpp: the OCPP central system's commands (firmware/link/ocpp_cmds.py); remote_clear: the
        latched fault kinds cmd/clear_fault may clear (config faults.remote_clear)."""
        self.ctl = ctl
        self.auth = auth
        self.limits = limits
        self.tariffs = tariffs
        self.reactions = reactions
        self.updater = updater
        self.outbox = outbox
        self.journal = journal
        self.clock = clock
        self.log = log
        self.ocpp = ocpp
        self.remote_clear = tuple(k for k in remote_clear if k != "welded")   # never from afar

    def routes(self):
        """Command name -> handler: the only commands there are."""
        r = {"remote_start": self.remote_start, "remote_stop": self.remote_stop,
             "list_update": self.list_update, "purge": self.purge,
             "charging_profile": self.charging_profile, "report_problem": self.report_problem,
             "tariff": self.tariff, "clear_fault": self.clear_fault, "update": self.update}
        if self.ocpp is not None:
            r.update(self.ocpp.routes())
        return r

    def answers(self):
        """Topic suffix -> handler for what is not a command: authorization answers, acknowledgements."""
        return {"auth/resp": self.ctl.auth_answer, "ack": self.ack}

    def remote_start(self, p):
        self.ctl.remote_start(p)

    def remote_stop(self, p):
        """A stop may name the data epoch of its tx_id: one meant for an earlier life is refused."""
        ep = p.get("ep", self.journal.ep)
        if ep != self.journal.ep or isinstance(ep, bool):
            raise ValueError("ep %r is not this charger's data epoch (%r)" % (ep, self.journal.ep))
        return {"tx_id": self.ctl.remote_stop(p.get("tx_id"))}

    def list_update(self, p):
        return self.auth.local_list.update(p)

    def purge(self, p):
        """Forget a pseudonym: list, cache, waiting requests, older journal records. Refused (nothing
        changes) while records naming it wait for the backend's acknowledgement: anonymizing an
        undelivered `ended` record would make the session unbillable; purge again once delivered."""
        token = p.get("token")
        if isinstance(token, str):
            token = token.lower()
            if self.ctl.busy_with(token):
                raise ValueError("token: its session or authorization is in progress; stop it first")
            n = _waiting(self.outbox, token.encode())
            if n:
                raise ValueError("token: %d records naming it are not yet acknowledged by the backend; "
                                 "purge again once they are" % n)
        done = self.auth.purge(token, p.get("key"))
        self.ctl.forget(done["token"])
        done["journal"] = self.journal.scrub()   # older records naming it leave the flash now
        return done

    def charging_profile(self, p):
        kind = p.get("kind")
        if kind not in KINDS:
            raise ValueError("kind must be one of %s" % ", ".join(KINDS))
        if p.get("profile") is None:
            self.limits.clear_profile(kind, p.get("stack_level"))
        else:
            self.limits.set_profile(kind, p.get("profile"))

    def report_problem(self, p):
        text = p.get("text")
        if text is not None and (not isinstance(text, str) or len(text) > _TEXT_MAX):
            raise ValueError("text must be a string of at most %d characters" % _TEXT_MAX)
        self.ctl.report_problem("app", text)

    def clear_fault(self, p):
        """Clear the latched faults the operator's config lets the backend clear; the rest need a
        person at the charger (a welded contactor always does)."""
        latched = self.reactions.faults.latched
        if not latched:
            raise ValueError("no latched fault to clear")
        kept = [k for k in latched if k not in self.remote_clear]
        if len(kept) == len(latched):
            raise ValueError("latched %s: cleared only at the charger (tech.clear_fault())%s"
                             % (", ".join(kept), "" if "welded" in kept else "; faults.remote_clear does not list it"))
        extra = {"cleared": self.reactions.clear_fault(self.remote_clear)}
        if kept:
            extra["kept"] = kept   # latched still: only at the charger
        return extra

    def tariff(self, p):
        """A new tariff for new sessions: {"id", "version", "tariff": {OCPI Tariff}}; version must grow."""
        t = self.tariffs.replace(p)
        version = self.tariffs.version
        self.log.event("tariff", id=t.id, version=version, text=self.tariffs.price_text())
        return {"tariff_id": t.id, "version": version}

    def update(self, p):
        if self.updater is None:
            raise ValueError("over-the-air updates are not set up on this charger")
        return self.updater.start(p)

    def ack(self, payload):
        """End-to-end acknowledgements: those messages leave the persistent outbox."""
        self.outbox.ack(parse_ack(payload, self.journal.ep))
        if not self.outbox.pending():
            self.clock.outside(0)
