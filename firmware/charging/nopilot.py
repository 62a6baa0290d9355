"""What the charger knows about the EV on a board without a control pilot (see evsense.py).

- `PinSense`: a plug-present contact (proximity); the EV is assumed to ask while plugged.
- `CurrentSense`: neither; the cable is assumed present once a driver is authorized, and
  demand is inferred from the current drawn (the board config says so: "ev_sense": "current").

    ev = PinSense(board.plug, board.plug_active, metering)   # or CurrentSense(metering)
"""
_DEMAND_MA = 500   # above this the EV is drawing


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
