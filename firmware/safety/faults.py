"""Faults: what each one means (OCPP error code, stop reason), how the charger reacts, when it retries.

Every fault kind has a policy: `emergency` ones open the contactor in the iteration that
detects them; the others first withdraw the offer and let the EV stop. An emergency without a
stop reason (`memory`: the safety checks ran out of heap) suspends the session instead of ending
it: power off and no offer until it clears, then the same session charges again. After a trip the
charger retries after a backoff; past `max_retries` trips the fault LATCHES and only a
technician clears it at the charger (REPL `tech.clear_fault()`); MQTT `cmd/clear_fault` clears
only the kinds the operator's `faults.remote_clear` lists, never a welded contactor. Trip counts and
latches persist across reboots (the caller stores `persist()` and hands it back at boot).
A failed meter is not read, so its fault is due for a retry while still present; tripping it
again after that retry counts as a new trip.

    faults = Faults(clock, saved)
    f = faults.trip("overcurrent", "L1 41.2 A > 35.2 A")   # None if already active
    faults.gone("overcurrent")                             # condition cleared: retry when due
    faults.blocking()                                      # no new session while true
"""

# kind: (OCPP error code, OCPP 2.0.1 stop reason, emergency, retry after s, max retries or None)
POLICIES = {
    "overcurrent": ("OverCurrentFailure", "OvercurrentFault", True, 60, 3),
    "rcd": ("GroundFailure", "GroundFault", True, 300, 6),
    "rcd_selftest": ("GroundFailure", "GroundFault", True, 0, 0),
    "overvoltage": ("OverVoltage", "PowerQuality", False, 60, None),
    "undervoltage": ("UnderVoltage", "PowerQuality", False, 60, None),
    "frequency": ("OtherError", "PowerQuality", False, 60, None),
    "phase_loss": ("OtherError", "PowerQuality", False, 60, None),
    "meter": ("PowerMeterFailure", "Other", True, 30, 5),
    "welded": ("PowerSwitchFailure", "Other", True, 0, 0),
    "stuck_open": ("PowerSwitchFailure", "Other", False, 60, 2),
    "overtemp": ("HighTemperature", "Other", False, 0, None),
    "pilot": ("EVCommunicationError", "Other", True, 0, None),
    "internal": ("InternalError", "Other", True, 10, 3),
    "memory": ("InternalError", None, True, 10, None),   # suspends; clears when memory allows
    "reader": ("ReaderFailure", None, False, 0, None),   # non-fatal: remote start still works
}
# conditions only a retry can test (a failed meter is not read): due for a retry while present
_PROBED = ("meter",)


_QUIET_S = 86400   # trips more than a day apart do not add up to a latch


class Fault:
    """One active fault."""

    def __init__(self, kind, detail, at_ms, trips):
        self.kind = kind
        self.code, self.stop_reason, self.emergency, self.retry_s, self.max_retries = POLICIES[kind]
        self.detail = detail
        self.at_ms = at_ms
        self.trips = trips          # times this kind tripped, this one included (persisted)
        self.latched = self.max_retries is not None and trips > self.max_retries
        self.present = True         # the condition still holds
        self.probed = kind in _PROBED
        self.samples = None         # forensic snapshot, set by the caller


class Faults:
    def __init__(self, clock, saved=None):
        self.clock = clock
        self.active = {}            # kind -> Fault
        saved = saved or {}
        self.trips = dict(saved.get("trips", {}))
        self.last_trip = dict(saved.get("last_trip", {}))   # kind -> UTC seconds of its last trip
        self.latched = list(saved.get("latched", []))   # kinds a technician must clear

    def trip(self, kind, detail):
        """Raise a fault; the Fault if it is new (react to it), None if already active."""
        f = self.active.get(kind)
        if f is not None and not (f.probed and not f.latched and self._due(f, self.clock.ticks_ms())):
            f.present = True
            f.detail = detail
            return None
        now = self.clock.time()
        if now - self.last_trip.get(kind, now) > _QUIET_S and kind not in self.latched:
            self.trips[kind] = 0   # a day without this fault: old trips no longer count towards a latch
        n = self.trips.get(kind, 0) + 1   # new, or a retry that found the condition still there
        f = Fault(kind, detail, self.clock.ticks_ms(), n)   # first: out of heap, nothing was counted
        self.last_trip[kind] = now
        self.trips[kind] = n
        if kind in self.latched:
            f.latched = True
        elif f.latched:
            self.latched.append(kind)
        self.active[kind] = f
        return f

    def gone(self, kind):
        """The condition behind an active fault no longer holds."""
        f = self.active.get(kind)
        if f is not None:
            f.present = False

    def clearable(self):
        """Faults to clear now: condition gone, retry time reached, not latched (a tuple, () if none:
        every control step asks, and waiting out a backoff allocates nothing)."""
        now = self.clock.ticks_ms()
        out = ()
        for kind in self.active:   # keys, not values(): a view would be a heap object
            f = self.active[kind]
            if (not f.present or f.probed) and not f.latched and self._due(f, now):
                out = out + (f,)
        return out

    def _due(self, f, now):
        """The backoff since the trip is over: retry_s, doubled with each earlier trip (at most 16x)."""
        return self.clock.ticks_diff(now, f.at_ms) >= f.retry_s * 1000 * (1 << min(f.trips - 1, 4))

    def clear(self, kind):
        """Forget an active fault (auto-retry, or a technician's clear_fault)."""
        return self.active.pop(kind, None)

    def clear_latched(self, only=None):
        """A technician's reset: latched faults (all, or those also in `only`) clear and their trip
        counts restart."""
        kinds = [k for k in self.latched if only is None or k in only]
        for kind in kinds:
            self.trips[kind] = 0
            f = self.active.get(kind)
            if f is not None:
                f.latched = False
                if not f.present:
                    del self.active[kind]
        self.latched = [k for k in self.latched if k not in kinds]
        return kinds

    def blocking(self):
        """The active fault that keeps the charger from charging (the oldest), or None."""
        worst = None
        for kind in self.active:
            f = self.active[kind]
            if (f.stop_reason is not None or f.emergency) and (worst is None or self.clock.ticks_diff(f.at_ms, worst.at_ms) < 0):
                worst = f
        return worst

    def persist(self):
        return {"trips": self.trips, "latched": self.latched, "last_trip": self.last_trip}
