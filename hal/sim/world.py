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
from hal.sim.cp import SimCP
from hal.sim.ev import SimEV
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
        self.ev = SimEV(wants_a=0, follow_delay_ms=sim.get("ev_follow_delay_ms", 2000))
        self.cp = None
        p = board.get("pilot")
        if p is not None:        # the firmware drives the CP: the EV follows its PWM offer
            self.cp = SimCP(self.ev, p["pwm"], p["cal"], invert=p.get("invert", 0),
                            step_us=sim.get("cp_step_us", 23), noise_mv=sim.get("cp_noise_mv", 0))
            machine.adc_source(p["adc"], self.cp.read_u16)
        k = board["contactor"]
        machine.net(k["coil"]).listeners.append(self._coil)
        if "aux" in k:
            aux_closed = k.get("aux_closed", 1)
            machine.net(k["aux"]).source = lambda: aux_closed if self.closed else 1 - aux_closed
        if "plug" in board:
            plug_active = board["plug"].get("active", 1)
            machine.net(board["plug"]["pin"]).source = lambda: plug_active if self.plugged else 1 - plug_active
        self.pressed = False     # the driver's "report a problem" button
        if "button" in board:
            active = board["button"].get("active", 0)
            machine.net(board["button"]["pin"]).source = lambda: active if self.pressed else 1 - active

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
            self._update_line()  # the EV answers the pilot the firmware set before sleeping
            nxt = self._queue[0][0] if self._queue else None
            stop = target_ms if nxt is None or nxt > target_ms else nxt
            due = self.ev.due_ms()  # the EV follows a lower offer at this moment
            if due is not None and c.ms < due < stop:
                stop = due
            if stop > c.ms:
                self.meter.advance(stop - c.ms)  # integrated when read, or before the line changes
                c.ms = stop
            if nxt is not None and nxt <= c.ms:
                _, _, kind, value = self._queue.pop(0)
                getattr(self, "_on_" + kind)(value)
            elif c.ms >= target_ms:
                self._update_line()
                return

    def _update_line(self):
        ev = self.ev
        if self.cp is not None:
            amps = ev.draw_a(self.clock.ms, self.cp.offered_a(), self.closed)
        else:  # a board without a pilot: the EV draws what it wants through closed poles
            amps = ev.wants_a if self.plugged and self.closed else 0
        line = self.line
        for ph in range(3):
            a = float(amps) if ph < ev.phases and line.volts[ph] > 0 else 0.0
            if a != line.amps[ph]:
                self.meter.flush()  # the energy so far was drawn at the old current
                line.amps[ph] = a

    def _coil(self, level):
        self.closed = bool(level)
        self._update_line()

    # -- scenario events (tools/sim.py validates them first) ------------------------------------
    def _on_plug(self, value):
        self.plugged = value
        self.ev.plugged = value

    def _on_tap(self, uids):
        cards = [SimCard(bytes.fromhex(u)) for u in uids]
        for card in cards:
            self.rfid.place(card)
        self._at(self.clock.ms + self.card_hold_ms, "card_away", cards)

    def _on_card_away(self, cards):
        for card in cards:
            self.rfid.remove(card)

    def _on_ev_current_a(self, amps):
        self.ev.wants_a = amps

    def _on_ev_phases(self, n):
        self.ev.phases = n

    def _on_ev_fault(self, fault):
        """A scenario fault on the EV side: "no_diode", "state_e", or None to clear it."""
        self.ev.no_diode = fault == "no_diode"
        self.ev.state_e = fault == "state_e"

    def _on_reader(self, state):
        """The RFID reader chip stops answering ("offline") or comes back ("online")."""
        self.rfid.fault = "silent" if state == "offline" else None

    def _on_button(self, name):
        self.pressed = True
        self._at(self.clock.ms + 300, "button_release", None)

    def _on_button_release(self, _):
        self.pressed = False

    def _on_remote_start(self, args):
        self._command("remote_start", args)

    def _on_remote_stop(self, args):
        self._command("remote_stop", args)

    def _command(self, name, args):
        """The backend sends a command: the runner publishes it, the firmware gets it by MQTT."""
        self._ask_runner({"command": name, "args": args})
        self.clock.real_pace_for(500)  # it arrives within real milliseconds: keep virtual time with it

    def _on_broker(self, mode):
        self._ask_runner({"broker": mode})

    def _ask_runner(self, request):
        """Things outside the process (the broker) are the runner's: ask, and wait until done."""
        request["t_ms"] = self.clock.ms
        print("% " + json.dumps(request))
        reply = sys.stdin.readline().strip()
        if reply != "ok":
            raise OSError("simulator runner did not confirm %r (got %r)" % (request, reply))
