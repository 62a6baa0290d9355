"""What the charger knows about the EV: plugged in, asking for power, how much it is offered.

Three kinds of board, one interface for the controller:
- `PilotSense`: IEC 61851-1 control pilot; plug and demand from the CP state, the offer by PWM,
  EV-side errors (state E/F, missing diode) reported as `fault`.
- `PinSense`: a plug-present contact (proximity); the EV is assumed to ask while plugged.
- `CurrentSense`: neither; the cable is assumed present once a driver is authorized, and
  demand is inferred from the current drawn (the board config says so: "ev_sense": "current").

    ev = PilotSense(board.pilot, clock, debounce_ms=20)
    if ev.poll(): ...react to ev.state...;  ev.offer(16);  ev.plugged, ev.requesting, ev.fault
"""
from firmware.charging.pilot import PilotMonitor, connector_status, duty_for_current

_DEMAND_MA = 500   # CurrentSense: above this the EV is drawing


class PilotSense:
    has_pilot = True
    knows_plug = True

    def __init__(self, pilot, clock, debounce_ms):
        self.pilot = pilot
        self.monitor = PilotMonitor(clock, debounce_ms)
        self.offered_a = 0
        pilot.off()

    def poll(self):
        """Read the CP line (allocation-free); True when the debounced state changed."""
        p = self.pilot
        p.read()
        return self.monitor.update(p.high_mv, p.low_mv, p.oscillating)

    @property
    def state(self):
        return self.monitor.state

    @property
    def plugged(self):
        return self.monitor.state in ("B", "C", "D")

    @property
    def requesting(self):
        return self.monitor.state in ("C", "D")

    @property
    def fault(self):
        """An EV-side pilot error: None, "diode" or the state letter E/F."""
        m = self.monitor
        if m.diode_fault:
            return "diode"
        return m.state if m.state in ("E", "F") else None

    def offer(self, amps):
        """Signal `amps` per phase by PWM (0: no offer, constant +12 V)."""
        self.offered_a = amps if amps >= 6 else 0
        if self.offered_a:
            self.pilot.offer(duty_for_current(amps * 10))
        else:
            self.pilot.off()

    def status(self, session, contactor_closed, finished):
        return connector_status(self.monitor.state, session, self.offered_a > 0, contactor_closed, finished)


class _NoPilot:
    has_pilot = False
    fault = None
    state = None

    def __init__(self):
        self.offered_a = 0

    def poll(self):
        return False

    def offer(self, amps):
        self.offered_a = amps if amps >= 6 else 0

    def status(self, session, contactor_closed, finished):
        if session:
            if not self.offered_a:
                return "SuspendedEVSE"
            return "Charging" if self.requesting and contactor_closed else "SuspendedEV"
        if finished:
            return "Finishing"
        return "Preparing" if self.plugged else "Available"


class PinSense(_NoPilot):
    knows_plug = True

    def __init__(self, pin, active, metering):
        super().__init__()
        self._pin = pin
        self._active = active
        self._metering = metering

    @property
    def plugged(self):
        return self._pin() == self._active

    @property
    def requesting(self):
        return self.plugged and self._metering.i_max_ma > _DEMAND_MA


class CurrentSense(_NoPilot):
    plugged = True  # unknown: assumed once someone is authorized
    knows_plug = False

    def __init__(self, metering):
        super().__init__()
        self._metering = metering

    @property
    def requesting(self):
        return self._metering.i_max_ma > _DEMAND_MA

    def status(self, session, contactor_closed, finished):
        if not session and not finished:
            return "Available"
        return _NoPilot.status(self, session, contactor_closed, finished)
