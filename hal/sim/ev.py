"""A simulated electric vehicle on the charger's cable: its control-pilot state and its draw.

The EV behaves as IEC 61851-1 asks: it requests charge (state C, or D with `ventilation`)
only while it wants current and the pilot offers at least 6 A, draws more at once when the
offer rises, and takes `follow_delay_ms` (the standard allows up to 5 s) to follow a lower
offer or the end of the offer, then goes back to B. It draws nothing through open contacts.

    ev = SimEV(wants_a=16, phases=1, follow_delay_ms=2000); ev.plugged = True
    amps = ev.draw_a(now_ms, offered_a=16.0, contactor_closed=True)   # ev.state == "C"

The EV reads the offer from the PWM duty with its own table, written from IEC 61851-1 (table
A.8) and not shared with the firmware's (firmware/charging/pilot.py), so an error in either
shows up in tests (tests/unit/test_sim_ev.py cross-checks them at every duty).
"""

MAX_FOLLOW_MS = 5000  # IEC 61851-1: the EV follows a lower PWM offer within 5 s


def milliamps_for_duty(permille):
    """The current a duty (permille of +12 V time) allows, in mA; 0 when it allows none."""
    if permille < 80 or permille > 970:   # under 8 % (5 %: digital communication only) or over 97 %
        return 0
    if permille < 100:                    # 8-10 %: 6 A
        return 6000
    if permille <= 850:                   # 10-85 %: D x 0.6 A, i.e. 60 mA per permille
        return permille * 60
    if permille <= 960:                   # 85-96 %: (D - 64) x 2.5 A
        return (permille - 640) * 250
    return 80000                          # 96-97 %: 80 A


def amps_for_duty(permille):
    """What the EV reads from a duty: A to the nearest 0.1 A, 0.0 for no charging allowed."""
    return ((milliamps_for_duty(permille) + 50) // 100) / 10


class SimEV:
    def __init__(self, wants_a=16, phases=1, follow_delay_ms=2000, ventilation=False):
        if not 0 <= follow_delay_ms <= MAX_FOLLOW_MS:
            raise ValueError("follow_delay_ms must be 0..%d" % MAX_FOLLOW_MS)
        if phases not in (1, 2, 3):
            raise ValueError("phases must be 1, 2 or 3")
        self.plugged = False
        self.wants_a = wants_a          # what it would draw per phase, given the offer
        self.phases = phases
        self.follow_delay_ms = follow_delay_ms
        self.ventilation = ventilation  # asks in state D (3 V) instead of C (6 V)
        self.no_diode = False           # fault: the CP diode is bypassed
        self.state_e = False            # fault: CP shorted to PE (state E, 0 V)
        self.ignore_offer = False       # fault: draws what it wants, whatever the pilot offers
        self.state = "A"
        self._draw = 0                  # its current setpoint per phase, in A
        self._lower_since = None        # when the offer fell below the setpoint

    def draw_a(self, now_ms, offered_a, contactor_closed):
        """Amps per phase it draws at now_ms for this pilot offer; moves its CP state."""
        if not self.plugged:
            self._draw = 0
            self._lower_since = None
            self.state = "E" if self.state_e else "A"
            return 0
        limit = offered_a if offered_a >= 6 else 0
        want = self.wants_a if self.wants_a > 0 else 0
        if self.ignore_offer and limit:
            limit = max(limit, want)
        if limit >= self._draw:
            self._lower_since = None
            self._draw = min(want, limit)
        else:
            if self._lower_since is None:
                self._lower_since = now_ms
            if now_ms - self._lower_since >= self.follow_delay_ms:
                self._lower_since = None
                self._draw = min(want, limit)
            else:
                self._draw = min(self._draw, want)  # its own wish to draw less is immediate
        if self.state_e:
            self.state = "E"
        elif want > 0 and (limit > 0 or self._draw > 0):
            self.state = "D" if self.ventilation else "C"
        else:
            self.state = "B"
        return self._draw if contactor_closed else 0

    def due_ms(self):
        """When a pending decrease takes effect (virtual ms), or None: a step the world needs."""
        if self._lower_since is None:
            return None
        return self._lower_since + self.follow_delay_ms
