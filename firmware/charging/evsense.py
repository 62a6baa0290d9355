"""What the charger knows about the EV on a board with a control pilot (the common one).

Three kinds of board, one interface for the controller (firmware/controller.py imports only the
board's own, so the others take no heap):
- `PilotSense` (here): IEC 61851-1 control pilot; plug and demand from the CP state, the offer by
  PWM, EV-side errors (state E/F, missing diode) reported as `fault`.
- `PinSense`, `CurrentSense` (firmware/charging/nopilot.py): a plug contact, or neither.

    ev = PilotSense(board.pilot, clock, debounce_ms=20)
    if ev.poll(): ...react to ev.state...;  ev.offer(16);  ev.plugged, ev.requesting, ev.fault
"""
from firmware.charging.pilot import PilotMonitor, connector_status, duty_for_current


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
