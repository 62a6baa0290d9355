"""What the charger shows: the OCPP connector status and error code, the LED pattern, meter values
while a session runs, the retained revenue/usage stats, and a full journal.

Derived each control step from the faults, the EV and the session; published only on change
(the status topic is retained, firmware/link/sync.py sends it).

    status = Status(settings, clock, sync, log, feedback, faults, ev, contactor, metering, revenue, journal)
    status.update(session is not None, waiting, finishing); status.report_meter(now, session)
"""
import json

from firmware.core.clock import BASE
from firmware.core.schedule import Every
from firmware.core.timefmt import iso

_PATTERNS = {"Available": "ready", "Preparing": "waiting", "Charging": "charging",
             "SuspendedEV": "charging", "SuspendedEVSE": "waiting", "Finishing": "finished",
             "Faulted": "fault", "Unavailable": "fault"}


class Status:
    def __init__(self, settings, clock, sync, log, feedback, faults, ev, contactor, metering, revenue, journal):
        self.clock = clock
        self.sync = sync
        self.log = log
        self.feedback = feedback
        self.faults = faults
        self.ev = ev
        self.contactor = contactor
        self.metering = metering
        self.revenue = revenue
        self.journal = journal
        self.connector = None       # OCPP connector status
        self.error_code = None      # OCPP error code with it, None for NoError
        self._meter_values = Every(clock, settings.meter_values_s * 1000)
        self._aligned_s = settings.meter_aligned_s
        self._phase = BASE % self._aligned_s if self._aligned_s else 0   # aligned to Unix time, not BASE
        self._aligned_slot = None   # the clock-aligned interval last reported, None: no aligned values
        self._storage_told = False
        self.operative = True       # False: taken out of service by the backend (Unavailable)

    def identify(self, firmware, vendor=None, model=None):
        """What the retained status says the charger is: firmware version, vendor, model."""
        ident = {"firmware": firmware}
        if vendor:
            ident["vendor"] = vendor
        if model:
            ident["model"] = model
        self.sync.set_identity(ident)

    def set_operative(self, operative):
        """Availability (OCPP ChangeAvailability): Inoperative shows Unavailable unless faulted."""
        self.operative = operative

    def set_intervals(self, meter_values_s, aligned_s):
        """New meter value intervals (ChangeConfiguration), live: periodic from now, aligned from the next slot."""
        self._meter_values = Every(self.clock, meter_values_s * 1000)
        self._aligned_s = aligned_s
        self._phase = BASE % aligned_s if aligned_s else 0
        if not aligned_s:
            self._aligned_slot = None
        elif self._aligned_slot is not None:
            self._aligned_slot = self._slot()

    def republish(self):
        """TriggerMessage StatusNotification: the retained status goes out again."""
        self.sync.republish()

    def update(self, session, waiting, finishing):
        """session: one runs; waiting: a driver is authorized or being asked about; finishing: a
        session ended and the EV is still plugged."""
        f = self.faults.blocking()
        error = None
        if f is not None:
            status, error = "Faulted", f.code
        elif self.ev.fault is not None:
            status, error = "Faulted", "EVCommunicationError"
        elif not self.operative and not session:
            status = "Unavailable"
        else:
            status = self.ev.status(session, self.contactor.commanded, finishing)
            if status == "Available" and waiting:
                status = "Preparing"
            if "reader" in self.faults.active:
                error = "ReaderFailure"
        if status != self.connector or error != self.error_code:
            self.connector, self.error_code = status, error
            self.sync.set_connector(status, error)
            self.log.event("status", connector=status, error=error)
        self.feedback.steady(_PATTERNS[status])

    def storage(self):
        """Tell once that the journal is full (every second; again after it had room)."""
        j = self.journal
        if j.full and not self._storage_told:
            self._storage_told = True
            self.log.event("storage", state="full", error=j.error,
                           note="charging goes on; intermediate updates are dropped first")
        elif not j.full:
            self._storage_told = False

    def halted(self):
        """The loop ended (shutdown): nothing is offered until the next boot."""
        self.connector, self.error_code = "Unavailable", None
        self.log.event("status", connector="Unavailable", error=None)

    def session_started(self):
        """Clock-aligned meter values count from the session's start."""
        self._aligned_slot = self._slot() if self._aligned_s else None

    def rebased(self):
        """The wall clock became known during a session: aligned instants are real ones now."""
        if self._aligned_slot is not None:
            self._aligned_slot = self._slot()

    def _slot(self):
        """The clock-aligned interval now (Unix time // aligned_s), from small ints: every step asks."""
        return (self.clock.seconds() + self._phase) // self._aligned_s

    def report_meter(self, now, s, now_asked=False):
        """Meter values upstream while session s runs: periodic, at clock-aligned instants, and
        when asked (TriggerMessage)."""
        periodic = self._meter_values.due(now) or now_asked
        if s is None:
            return
        aligned = False
        if self._aligned_slot is not None:
            slot = self._slot()
            aligned = slot != self._aligned_slot
            self._aligned_slot = slot
        if not (periodic or aligned):
            return
        m = self.metering
        u, i = m.latest()
        wh = m.register_wh()
        self.sync.publish_now("meter", json.dumps({
            "ts": iso(self.clock.time()), "ep": self.sync.ep, "tx_id": s.tx_id, "register_wh": wh,
            "energy_wh": s.energy_wh(wh), "v_cv": u, "i_ma": i, "p_w": m.p_w,
            "offered_a": self.ev.offered_a, "aligned": aligned}))

    def publish_stats(self):
        """Revenue and usage totals, contactor wear and boots: the retained stats topic."""
        snap = self.revenue.snapshot()
        snap["ts"] = iso(self.clock.time())
        snap["contactor_cycles"] = self.contactor.cycles
        snap["boots"] = self.journal.boot
        self.sync.set_stats(json.dumps(snap))
