"""The simulated physical world around the charger: grid, EV, contactor, cards, in virtual time.

It owns the virtual clock. When the firmware sleeps, the world plays the scenario's events
in order and integrates the electricity that flowed, so the simulated meter chip counts
exactly what the EV drew. The firmware only sees pins and SPI answers.

    world = World(board_cfg, scenario)        # scenario as normalised by tools/sim.py
    clock = world.clock; ...; world.finished()
"""
import json
import sys

from hal.sim import machine
from hal.sim.atm90e32 import SimATM90E32
from hal.sim.clock import VirtualClock
from hal.sim.mfrc522 import SimCard, SimMFRC522


class Line:
    """The electrical state at the meter: what the simulated chip measures."""

    def __init__(self, volts, hz):
        self.volts = volts
        self.amps = [0.0, 0.0, 0.0]
        self.pf = [1.0, 1.0, 1.0]
        self.hz = hz
        self.temp_c = 25.0


class World:
    def __init__(self, board, scenario):
        machine.reset()
        sim = board.get("sim", {})
        self.clock = VirtualClock(scenario["start_utc"], self.run_until, realtime=scenario.get("realtime", False))
        phases = board["meter"]["phases"]
        v = float(sim.get("grid_v", 230))
        self.line = Line([v if ph < phases else 0.0 for ph in range(3)], float(sim.get("grid_hz", 50)))
        m = board["meter"]
        # the simulated hardware is exactly what the board's calibration says it is
        self.meter = SimATM90E32(self.line, lsb_per_w=m.get("pmean_lsb_per_w", 3125),
                                 ucal=m["ugain"], ical=m["igain"])
        machine.bus(board["spi"]["meter"]["id"]).attach(self.meter, cs=board["meter"]["cs"])
        self.rfid = SimMFRC522(rst=board["reader"].get("rst"))
        machine.bus(board["spi"]["reader"]["id"]).attach(self.rfid, cs=board["reader"]["cs"])
        self.card_hold_ms = sim.get("card_hold_ms", 1000)

        self.closed = False      # contactor poles
        self.plugged = False
        self.ev_amps = 0.0       # what the EV wants to draw per phase
        self.ev_phases = 1
        k = board["contactor"]
        machine.net(k["coil"]).listeners.append(self._coil)
        if "aux" in k:
            aux_closed = k.get("aux_closed", 1)
            machine.net(k["aux"]).source = lambda: aux_closed if self.closed else 1 - aux_closed
        plug_active = board["plug"].get("active", 1)
        machine.net(board["plug"]["pin"]).source = lambda: plug_active if self.plugged else 1 - plug_active

        self.end_ms = scenario["end_ms"]
        self._queue = []
        for n, e in enumerate(scenario["events"]):
            for kind in e:
                if kind != "t":
                    self._queue.append((e["t"], n, kind, e[kind]))
        self._queue.sort()
        self._n = len(self._queue)

    def finished(self):
        return self.clock.ms >= self.end_ms

    def _at(self, t_ms, kind, value):
        """Schedule a world event (e.g. a card leaving the field) in time order."""
        self._n += 1
        item = (t_ms, self._n, kind, value)
        i = len(self._queue)
        while i and self._queue[i - 1] > item:
            i -= 1
        self._queue.insert(i, item)

    def run_until(self, target_ms):
        """Play events and physics up to target_ms (called by the clock when the firmware sleeps)."""
        c = self.clock
        while True:
            nxt = self._queue[0][0] if self._queue else None
            stop = target_ms if nxt is None or nxt > target_ms else nxt
            if stop > c.ms:
                self.meter.integrate(stop - c.ms)
                c.ms = stop
            if nxt is None or nxt > target_ms:
                return
            _, _, kind, value = self._queue.pop(0)
            getattr(self, "_on_" + kind)(value)
            self._update_line()

    def _update_line(self):
        flowing = self.plugged and self.closed
        for ph in range(3):
            on = flowing and ph < self.ev_phases and self.line.volts[ph] > 0
            self.line.amps[ph] = self.ev_amps if on else 0.0

    def _coil(self, level):
        self.closed = bool(level)
        self._update_line()

    # -- scenario events (tools/sim.py validates them first) ------------------------------------
    def _on_plug(self, value):
        self.plugged = value

    def _on_tap(self, uids):
        cards = [SimCard(bytes.fromhex(u)) for u in uids]
        for card in cards:
            self.rfid.place(card)
        self._at(self.clock.ms + self.card_hold_ms, "card_away", cards)

    def _on_card_away(self, cards):
        for card in cards:
            self.rfid.remove(card)

    def _on_ev_current_a(self, amps):
        self.ev_amps = float(amps)

    def _on_ev_phases(self, n):
        self.ev_phases = n

    def _on_broker(self, mode):
        self._ask_runner({"broker": mode})

    def _ask_runner(self, request):
        """Things outside the process (the broker) are the runner's: ask, and wait until done."""
        request["t_ms"] = self.clock.ms
        print("% " + json.dumps(request))
        reply = sys.stdin.readline().strip()
        if reply != "ok":
            raise OSError("simulator runner did not confirm %r (got %r)" % (request, reply))
