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
        machine.use_clock(self.clock)
        phases = board["meter"]["phases"]
        v = self.grid_v = float(sim.get("grid_v", 230))
        self.phases = phases
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
        self.coil = False        # what the firmware commands
        self.contactor = "ok"    # or "welded" (poles stay closed), "stuck_open" (never close)
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
            machine.net(k["aux"]).source = lambda a=aux_closed: a if self.closed else 1 - a
        if "plug" in board:
            plug_active = board["plug"].get("active", 1)
            machine.net(board["plug"]["pin"]).source = lambda a=plug_active: a if self.plugged else 1 - a
        self.residual = False    # a residual current is flowing (an insulation fault)
        self.rcd_broken = False  # the RCD module no longer trips, not even on its test input
        self.rcd_testing = False
        if "rcd" in board:
            r = board["rcd"]
            active = r.get("active", 1)
            machine.net(r["trip"]).source = lambda a=active: a if self.rcd_tripped() else 1 - a
            machine.net(r["test"]).listeners.append(lambda level, a=active: self._rcd_test(level == a))
        self.pressed = False     # the driver's "report a problem" button
        if "button" in board:
            active = board["button"].get("active", 0)
            machine.net(board["button"]["pin"]).source = lambda a=active: a if self.pressed else 1 - a

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
            w = machine.starved(c.ms)
            if w is not None:
                print("WATCHDOG RESET: not fed for %d ms (timeout %d ms)" % (c.ms - w.fed_at, w.timeout))
                raise SystemExit(9)
            if nxt is not None and nxt <= c.ms:
                _, _, kind, value = self._queue.pop(0)
                getattr(self, "_on_" + kind)(value)
            elif c.ms >= target_ms:
                self._update_line()
                return

    def _update_line(self):
        ev = self.ev
        powered = self.closed and not self.rcd_tripped()   # a tripped RCD cuts the supply
        if self.cp is not None:
            amps = ev.draw_a(self.clock.ms, self.cp.offered_a(), powered)
        else:  # a board without a pilot: the EV draws what it wants through closed poles
            amps = ev.wants_a if self.plugged and powered else 0
        line = self.line
        for ph in range(3):
            a = float(amps) if ph < ev.phases and line.volts[ph] > 0 else 0.0
            if a != line.amps[ph]:
                self.meter.flush()  # the energy so far was drawn at the old current
                line.amps[ph] = a

    def _coil(self, level):
        self.coil = bool(level)
        self._move_poles()

    def _move_poles(self):
        if self.contactor == "ok":
            self.closed = self.coil
        elif self.contactor == "stuck_open":
            self.closed = False
        else:                      # welded: closed poles stay closed
            self.closed = self.closed or self.coil
        self._update_line()

    def rcd_tripped(self):
        return not self.rcd_broken and (self.residual or self.rcd_testing)

    def _rcd_test(self, on):
        self.rcd_testing = on
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
        self.ev.wants_a = float(amps)   # decimals arrive as exact strings (firmware/jsonx.py)

    def _on_ev_phases(self, n):
        self.ev.phases = n

    def _on_ev_fault(self, fault):
        """An EV-side fault: "no_diode", "state_e", "ignore_offer" (draws above the offer), None."""
        self.ev.no_diode = fault == "no_diode"
        self.ev.state_e = fault == "state_e"
        self.ev.ignore_offer = fault == "ignore_offer"

    def _on_grid_v(self, volts):
        self.meter.flush()
        self.grid_v = float(volts)
        for ph in range(3):
            if self.line.volts[ph] > 0:
                self.line.volts[ph] = float(volts)

    def _on_grid_hz(self, hz):
        self.meter.flush()
        self.line.hz = float(hz)

    def _on_phase_loss(self, phase):
        """"L1".."L3" loses its voltage; "none" brings back every phase the board wires."""
        self.meter.flush()
        for ph in range(3):
            if phase == "none":
                if ph < self.phases:
                    self.line.volts[ph] = self.grid_v
            elif phase == "L%d" % (ph + 1):
                self.line.volts[ph] = 0.0

    def _on_temp_c(self, celsius):
        self.line.temp_c = float(celsius)

    def _on_rcd(self, state):
        """"trip": a residual current flows; "ok": it stops; "broken": the module stops working."""
        self.residual = state == "trip"
        self.rcd_broken = state == "broken"
        self._update_line()

    def _on_contactor(self, state):
        self.contactor = state
        self._move_poles()

    def _on_meter(self, state):
        self.meter.fault = None if state == "ok" else state

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
        self.clock.outside(500)  # it arrives within real milliseconds: keep virtual time with it

    def _on_broker(self, mode):
        self._ask_runner({"broker": mode})

    def _ask_runner(self, request):
        """Things outside the process (the broker) are the runner's: ask, and wait until done."""
        request["t_ms"] = self.clock.ms
        print("% " + json.dumps(request))
        reply = sys.stdin.readline().strip()
        if reply != "ok":
            raise OSError("simulator runner did not confirm %r (got %r)" % (request, reply))
