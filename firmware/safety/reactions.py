"""How the charger reacts to faults: the safe state first, then the stop, the record, the latch.

An emergency opens the contactor in the iteration that detected it; a fault with a stop reason
ends the running session with it (an emergency at once, the others by a soft stop); every
raised or cleared fault is queued upstream as a `fault` record with the last samples before
it; trip counts and latches are saved so a reboot does not forget them (firmware/safety/faults.py
holds what each fault means).

    reactions = Reactions(charger, faults, metering, state, outbox, stamp, log, contactor, forensics_n)
    reactions.react(safety.fast(limit_ma)); reactions.retry(init_meter)
"""
import json

from firmware.core.log import print_exception
from firmware.storage.journal import COMPACT


class Reactions:
    def __init__(self, charger, faults, metering, state, outbox, stamp, log, contactor, forensics_n):
        """charger: open(), stop(reason, emergency), abandon(reason), .session, .iteration."""
        self.charger = charger
        self.faults = faults
        self.metering = metering
        self.state = state
        self.outbox = outbox
        self.stamp = stamp
        self.log = log
        self.contactor = contactor
        self.forensics_n = forensics_n

    def react(self, new):
        """New faults: the safe state in this iteration (emergency) or via a soft stop, then report."""
        ch = self.charger
        for f in new:
            if f is None:
                continue
            if f.emergency:
                ch.open()
            self.log.event("fault", code=f.code, kind=f.kind, detail=f.detail, emergency=f.emergency,
                           latched=f.latched, trips=f.trips, it=ch.iteration)
            f.samples = self.metering.forensics(self.forensics_n)
            tx = ch.session.tx_id if ch.session is not None else None
            if tx is not None and f.stop_reason is not None:
                ch.stop(f.stop_reason, f.emergency)
            self.event(f, "raised", tx_id=tx)   # an emergency ended the session: still name it
            self.save()

    def trip(self, kind, detail):
        """Raise a fault found outside the safety checks (meter, reader, pilot) and react to it."""
        self.react([self.faults.trip(kind, detail)])

    def save(self):
        """Trip counts, latches and the contactor's wear survive a reboot."""
        self.state.set_faults(self.faults.persist())
        self.state.set_cycles(self.contactor.cycles)
        self.state.save()

    def event(self, f, event, **extra):
        """Queue a `fault` record: raised, cleared, or a notice (f None) about the session."""
        n = self.state.next("fault")
        s = self.charger.session
        rec = {"msg_id": "f-%d" % n, "event": event, "ts": self.stamp.ts(),
               "tx_id": s.tx_id if s is not None else None}
        if f is not None:
            rec.update({"code": f.code, "kind": f.kind, "stop_reason": f.stop_reason, "detail": f.detail,
                        "latched": f.latched, "trips": f.trips})
            if event == "raised":
                rec["samples"] = f.samples
        rec.update(extra)
        self.stamp.record(rec)
        self.outbox.put("fault", json.dumps(rec, separators=COMPACT), rec["msg_id"], "fault")
        if event != "raised":
            self.log.event("fault_" + event, code=rec.get("code"), info=rec.get("info"))

    def retry(self, restart_meter):
        """Clear the faults whose condition is gone and whose backoff is over; a failed meter is
        retried by restart_meter() (True: it works again)."""
        for f in self.faults.clearable():
            if f.kind == "meter" and not restart_meter():
                continue
            self.faults.clear(f.kind)
            self.event(f, "cleared")

    def internal_error(self, e):
        """A bug escaped the loop's step: power off, close the session, report it as a fault."""
        self.charger.open()
        print_exception(e)
        if self.charger.session is not None:
            self.charger.abandon("Other")
        self.trip("internal", "%s: %s" % (type(e).__name__, e))
        self.faults.gone("internal")   # the step that raised is over: retried after the backoff, latched
                                       # (a person clears it) if it keeps coming back
    def clear_fault(self, only=None):
        """A reset of latched faults: every one (a technician at the charger: tech.clear_fault()) or
        those of the kinds `only` names (MQTT cmd/clear_fault, as the config allows)."""
        latched = [f for f in self.faults.active.values() if f.latched and (only is None or f.kind in only)]
        kinds = self.faults.clear_latched(only)
        for f in latched:
            if f.kind not in self.faults.active:   # gone already: cleared now (the rest when gone)
                self.event(f, "cleared")
        self.state.set_faults(self.faults.persist())
        self.state.save()
        self.log.event("fault_reset", kinds=kinds, remote=only is not None)
        return kinds
