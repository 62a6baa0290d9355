"""The backend's commands, one handler each, and the route table that names them.

A handler validates its payload before it changes anything and raises ValueError with the
reason to reject it (firmware/link/commands.py answers). Decisions about sessions stay with
the controller: these only check and hand over.

    h = Handlers(ctl, auth, limits, tariffs, reactions, updater, outbox, journal, clock, log, ocpp)
    Commands(h.routes(), h.answers(), sync, log)
"""
from firmware.charging.limits import KINDS
from firmware.link.records import rewrite_waiting
from firmware.link.sync import parse_ack

_TEXT_MAX = 200


class Handlers:
    def __init__(self, ctl, auth, limits, tariffs, reactions, updater, outbox, journal, clock, log, ocpp=None):
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
        self.ocpp = ocpp            # firmware/link/ocpp_cmds.py: the OCPP central system's commands

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
        return {"tx_id": self.ctl.remote_stop(p.get("tx_id"))}

    def list_update(self, p):
        return self.auth.local_list.update(p)

    def purge(self, p):
        """Forget a pseudonym: list, cache, waiting requests, unsent records naming it, older journal records."""
        token = p.get("token")
        if isinstance(token, str) and self.ctl.busy_with(token.lower()):
            raise ValueError("token: its session or authorization is in progress; stop it first")
        done = self.auth.purge(token, p.get("key"))
        token = done["token"]

        def anonymize(rec):
            if rec.get("token") != token:
                return False
            rec["token"] = None
            rec["purged"] = True
            return True

        n = rewrite_waiting(self.outbox, token.encode(), anonymize)
        self.ctl.forget(token)
        done["outbox"] = n
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
        kinds = self.reactions.clear_fault()
        if not kinds:
            raise ValueError("no latched fault to clear")
        return {"cleared": kinds}

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
        self.outbox.ack(parse_ack(payload))
        if not self.outbox.pending():
            self.clock.outside(0)
