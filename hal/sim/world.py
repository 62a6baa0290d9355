"""The simulated physical world around the charger: grid, EV, contactor, cards, in virtual time.

It owns the virtual clock. When the firmware sleeps, the world plays the scenario's events
in order and integrates the electricity that flowed, so the simulated meter chip counts
exactly what the EV drew. The firmware only sees pins and SPI answers.

    world = World(hw, scenario)   # hw: the parsed board settings; scenario as normalised by tools/sim.py
    clock = world.clock; ...; world.finished()

Under the runner (tools/sim.py) the world asks it for what lies outside the process (`%` lines:
the broker, backend commands, power cuts) and keeps its physical state where the runner finds it
after a power cut kills the process; the next process resumes from it. See docs/simulator.md.
"""
import binascii
import json
import struct
import sys

from hal.sim import machine
from hal.sim.atm90e32 import SimATM90E32
from hal.sim.clock import VirtualClock
from hal.sim.cp import SimCP
from hal.sim.ev import SimEV
from hal.sim.fram import SimFRAM
from hal.sim.mfrc522 import SimCard, SimMFRC522

# The world's state file (docs/simulator.md): this fixed part, then `nregs` x "<BH" (address, value)
# of the chip's configuration registers, then the CRC-32 of everything before it ("<I").
STATE_MAGIC = b"CPW1"
STATE_FIXED = "<4sHIqqB8H8q6q9dB"
_TICKS_MASK = 0x3FFFFFFF
_BEACON_MS = 100   # chaos runs: the saved state is never older than this (virtual ms)


class _WatchedChip(SimATM90E32):
    """The meter chip, telling the world at once when the firmware changes what it holds: an
    energy register read (cleared), a register write, a brown-out."""
    watch = None   # watch(configuration_changed)

    def _read(self, addr):
        v = SimATM90E32._read(self, addr)
        if 0x80 <= addr < 0x88 and self.watch is not None:
            self.watch(False)
        return v

    def _write(self, addr, v):
        SimATM90E32._write(self, addr, v)
        if self.watch is not None:
            self.watch(True)

    def brownout(self):
        SimATM90E32.brownout(self)
        if self.watch is not None:
            self.watch(True)


def read_state(path):
    """The world's last saved state as a dict (see World.save_state), or None if absent or damaged."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    n = struct.calcsize(STATE_FIXED)
    if len(data) < n + 4:
        return None
    v = struct.unpack(STATE_FIXED, data[:n])
    end = n + 3 * v[-1]
    if v[0] != STATE_MAGIC or len(data) < end + 4 or \
            struct.unpack("<I", data[end:end + 4])[0] != binascii.crc32(data[:end]) & 0xFFFFFFFF:
        return None
    regs = {}
    for i in range(n, end, 3):
        a, val = struct.unpack("<BH", data[i:i + 3])
        regs[a] = val
    x = list(v[6:-1])
    return {"life": v[1], "seq": v[2], "ms": v[3], "lazy_ms": v[4], "closed": bool(v[5]), "energy": x[0:8],
            "acc_fwd": x[8:12], "acc_rev": x[12:16], "made_fwd": x[16:19], "made_rev": x[19:22],
            "volts": x[22:25], "amps": x[25:28], "pf": x[28:31], "regs": regs}


class Line:
    """The electrical state at the meter: what the simulated chip measures."""

    def __init__(self, volts, hz):
        self.volts = volts
        self.amps = [0.0, 0.0, 0.0]
        self.pf = [1.0, 1.0, 1.0]
        self.hz = hz
        self.temp_c = 25.0


class Typed:
    """The console's receive buffer: bytes typed, kept (up to 256, as a UART's) until read."""

    def __init__(self):
        self._buf = bytearray()

    def typed(self, b):
        if len(self._buf) < 256:
            self._buf.append(b)

    def waiting(self):
        return bool(self._buf)

    def read_byte(self):
        if not self._buf:
            return None
        b = self._buf[0]
        self._buf = self._buf[1:]
        return b


class World:
    def __init__(self, hw, scenario):
        """hw: the board settings as records (firmware/core/settings.py board_settings), the same
        the firmware builds its Board from, so the simulated wiring is the configured one."""
        machine.reset()
        sim = hw.sim
        runner = scenario.get("runner") or {}
        resume = runner.get("resume")
        # after a power cut the ticks start from 0 again, as on a board
        self.clock = VirtualClock(scenario["start_utc"], self.run_until, ticks0=-resume["at_ms"] & _TICKS_MASK
                                  if resume else 0, realtime=scenario.get("realtime", False),
                                  unset=scenario.get("clock_unset", False))
        machine.use_clock(self.clock)
        m = hw.meter
        phases = m.phases
        v = self.grid_v = float(sim.grid_v)
        self.phases = phases
        self.line = Line([v if ph < phases else 0.0 for ph in range(3)], float(sim.grid_hz))
        # the simulated hardware is exactly what the board's calibration says it is
        self._runner = bool(runner)           # a runner answers `%` requests (tools/sim.py)
        self._state_path = runner.get("state")
        self._life = runner.get("life", 0)    # the how-many-th process of this run (0: the first)
        self._seq = 0
        self._state_file = None
        self._regs_blob = None
        self._saved_ms = -_BEACON_MS
        self._beacon = bool(runner.get("beacon"))
        self._replaying = False
        self._ended = False
        self._cut_ms = -1
        chip = _WatchedChip if self._beacon else SimATM90E32
        self.meter = chip(self.line, lsb_per_w=m.pmean_lsb_per_w, ucal=list(m.ugain), ical=list(m.igain))
        machine.bus(hw.spi.meter.id).attach(self.meter, cs=m.cs)
        self.rfid = SimMFRC522(rst=hw.reader.rst)
        machine.bus(hw.spi.reader.id).attach(self.rfid, cs=hw.reader.cs)
        self.card_hold_ms = sim.card_hold_ms
        self.supply = True       # the board's supply; a power_cut drops it hold_up_ms before the kill
        self.hold_up_ms = 0
        g = hw.power_good
        if g is not None:
            self.hold_up_ms = g.hold_up_ms
            machine.net(g.pin).source = lambda a=g.active: a if self.supply else 1 - a
        self.fram = None
        if hw.fram is not None:   # under the runner its cells are a file next to the world's state
            path = self._state_path.rsplit("/", 1)[0] + "/fram.bin" if self._state_path else None
            self.fram = SimFRAM(hw.fram.size, path=path)
            machine.i2c_bus(hw.fram.i2c).attach(self.fram, addr=hw.fram.addr)

        self.closed = False      # contactor poles
        self.coil = False        # what the firmware commands
        self.contactor = "ok"    # or "welded" (poles stay closed), "stuck_open" (never close)
        self.plugged = False
        self.ev = SimEV(wants_a=0, follow_delay_ms=sim.ev_follow_delay_ms)
        self.cp = None
        p = hw.pilot
        if hw.ev_sense == "pilot":   # the firmware drives the CP: the EV follows its PWM offer
            self.cp = SimCP(self.ev, p.pwm, p.cal, invert=p.invert, step_us=sim.cp_step_us, noise_mv=sim.cp_noise_mv)
            machine.adc_source(p.adc, self.cp.read_u16)
        k = hw.contactor
        machine.net(k.coil).listeners.append(self._coil)
        if k.aux is not None:
            machine.net(k.aux).source = lambda a=k.aux_closed: a if self.closed else 1 - a
        if hw.plug.pin is not None:
            machine.net(hw.plug.pin).source = lambda a=hw.plug.active: a if self.plugged else 1 - a
        self.residual = False    # a residual current is flowing (an insulation fault)
        self.rcd_broken = False  # the RCD module no longer trips, not even on its test input
        self.rcd_testing = False
        r = hw.rcd
        if r is not None:
            machine.net(r.trip).source = lambda a=r.active: a if self.rcd_tripped() else 1 - a
            machine.net(r.test).listeners.append(lambda level, a=r.active: self._rcd_test(level == a))
        self.pressed = False     # the driver's "report a problem" button
        if hw.button is not None:
            machine.net(hw.button.pin).source = lambda a=hw.button.active: a if self.pressed else 1 - a

        self._console = None
        self.console = None      # what the firmware reads of the console (hal/console.py's interface)
        if scenario.get("console"):   # tools/ptyrun.py: the console is a terminal, like a board's USB UART
            import select

            self._console = select.poll()
            self._console.register(sys.stdin, select.POLLIN)
            self.console = Typed()

        if runner.get("flash_cap") is not None:   # chaos runs: a full flash (hal/sim/flashcap.py)
            import os

            from hal.sim.flashcap import CappedDir

            os.mount(CappedDir(runner["data"], runner["flash_cap"]), runner["data"])
        self._mains = None       # chaos runs on a power-good board: the runner says when the mains fails
        if self._beacon and self.hold_up_ms:
            import select

            self._mains = select.poll()
            self._mains.register(sys.stdin, select.POLLIN)

        self.end_ms = scenario["end_ms"]
        self._retap_ms = scenario.get("retap_after_cut_ms")
        self._last_tap = None    # the UIDs of the last tap: a driver taps them again after a cut
        self._queue = []
        for n, e in enumerate(scenario["events"]):
            for kind in e:
                if kind != "t":
                    self._queue.append((e["t"], n, kind, e[kind]))
        self._queue.sort()
        self._n = len(self._queue)
        if resume:
            self._resume(resume)
        if self._beacon:   # chaos runs: a kill may come at any moment
            self.meter.watch = self.save_state
            self.save_state()

    def finished(self):
        done = self.clock.ms >= self.end_ms
        if done and self._runner and not self._ended:
            self._ended = True   # the runner's measure of the truth: every count the chip ever made
            self._ask_runner({"end": {"made_fwd": self.meter.counts_made(), "made_rev": self.meter.counts_made(True)}})
        return done

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
        if self._console is not None:
            self._console_input()
        if self._mains is not None:
            while self._mains.poll(0):
                self._runner_line(sys.stdin.readline().strip())
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
                if self._beacon and c.ms - self._saved_ms >= _BEACON_MS:
                    self.save_state(False)   # a kill finds the world within _BEACON_MS of it
                return

    def _console_input(self):
        """Ctrl-C typed on the console raises KeyboardInterrupt here, between two steps of the world,
        as an ESP32's UART driver schedules it for the next bytecode. (The unix port's own SIGINT
        lands anywhere, even inside a garbage collection, and can leave the heap locked.) Other
        bytes wait in `console` for the firmware, as in the UART's receive buffer."""
        while self._console.poll(0):
            b = sys.stdin.buffer.read(1)
            if not b:
                self._console = None   # the terminal is gone
                return
            if b == b"\x03":
                raise KeyboardInterrupt
            self.console.typed(b[0])

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
        was = self.closed
        if self.contactor == "ok":
            self.closed = self.coil
        elif self.contactor == "stuck_open":
            self.closed = False
        else:                      # welded: closed poles stay closed
            self.closed = self.closed or self.coil
        self._update_line()
        if self.closed != was and self._runner:   # the runner splits the chip's counts by session
            self._ask_runner({"contactor": "closed" if self.closed else "open",
                              "made_fwd": self.meter.counts_made()})
            if self._beacon:
                self.save_state(False)

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
        self._last_tap = uids
        cards = [SimCard(bytes.fromhex(u)) for u in uids]
        for card in cards:
            self.rfid.place(card)
        self._at(self.clock.ms + self.card_hold_ms, "card_away", cards)

    def _on_card_away(self, cards):
        for card in cards:
            self.rfid.remove(card)

    def _on_ev_current_a(self, amps):
        self.ev.wants_a = float(amps)   # decimals arrive as exact strings (firmware/core/jsonx.py)

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
        if self._replaying and state == "brownout" and self.clock.ms <= self._cut_ms:
            return   # a one-off that the chip state saved at the cut already shows
        self.meter.fault = None if state == "ok" else state

    def _on_ntp(self, value):
        """NTP answers: the board's wall clock is the real UTC from now on. Not after a power cut:
        the RTC starts from 2000-01-01 again and waits for the next `ntp` event."""
        if not self._replaying:
            self.clock.sync()

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

    def _on_clear_fault(self, _):
        self._command("clear_fault", {})

    def _on_tariff(self, args):
        self._command("tariff", args)

    def _on_update(self, args):
        self._command("update", args)

    def _command(self, name, args):
        """The backend sends a command: the runner publishes it, the firmware gets it by MQTT."""
        self._ask_runner({"command": name, "args": args})
        self.clock.outside(500)  # it arrives within real milliseconds: keep virtual time with it

    def _on_broker(self, mode):
        self._ask_runner({"broker": mode})

    def _on_power_cut(self, cut):
        """The supply fails: with a power-good output it falls now and the board runs on its hold-up
        capacitors for hold_up_ms; then the runner kills this process hard and starts the next later."""
        if self._replaying:
            return
        if not self._runner:
            raise ValueError("power_cut needs the simulator runner (tools/sim.py)")
        if self.hold_up_ms:
            self.supply = False
            self._at(self.clock.ms + self.hold_up_ms, "power_off", cut)
            return
        self._on_power_off(cut)

    def _on_power_off(self, cut):
        """The hold-up capacitors are empty: the process dies here (cut None: a chaos run's cut)."""
        self.save_state()
        self._ask_runner({"power_cut": cut["off_ms"], "meter_kept": cut["meter_kept"]} if cut else {"power_off": 1})

    def _runner_line(self, line):
        """A line the runner sends unasked: "mains_off" (a chaos run cuts a power-good board's supply:
        power-good falls now, the process dies hold_up_ms later, as at a scenario's power_cut)."""
        if line != "mains_off":
            raise OSError("simulator runner sent %r" % line)
        if self.supply:
            self.supply = False
            self._at(self.clock.ms + self.hold_up_ms, "power_off", None)

    # -- power cuts (docs/simulator.md) ---------------------------------------------------------
    def save_state(self, regs_changed=True):
        """Write what a power cut must not lose (the chip, the line, the time) in one write."""
        c = self.meter
        ln = self.line
        self._seq += 1
        self._saved_ms = self.clock.ms
        if regs_changed or self._regs_blob is None:   # the configuration: written at init only
            regs = sorted(c._regs.items())
            self._regs_blob = bytes([len(regs)]) + b"".join(struct.pack("<BH", a, v) for a, v in regs)
        data = struct.pack(STATE_FIXED[:-1], STATE_MAGIC, self._life, self._seq, self.clock.ms, c._lazy,
                           1 if self.closed else 0, *(c._m[0:8] + c._acc_fwd + c._acc_rev + c.made_fwd + c.made_rev
                                                      + ln.volts + ln.amps + ln.pf)) + self._regs_blob
        data += struct.pack("<I", binascii.crc32(data) & 0xFFFFFFFF)
        f = self._state_file
        if f is None:
            try:
                f = open(self._state_path, "r+b")
            except OSError:
                f = open(self._state_path, "w+b")
            self._state_file = f
        f.seek(0)
        f.write(data)   # one write: a kill comes before it or after it

    def _resume(self, r):
        """Power is back: the chip as the cut left it (or blank), the scenario's world at this time."""
        at = r["at_ms"]
        back = {"cut_ms": at, "made_fwd": 0, "pending": 0, "meter_kept": False, "closed": False, "from": None}
        if r["from"] is not None:
            back = self._restore(r)
        self._replay(at)
        machine.set_reset_cause(machine.PWRON_RESET)
        if self._retap_ms and self.plugged and self.ev.wants_a > 0 and self._last_tap:
            self._at(at + self._retap_ms, "tap", self._last_tap)   # the driver sees it stopped
        self._ask_runner({"powered": back})

    def _restore(self, r):
        """The meter chip as the cut left it: its counts, and its registers if it kept its supply."""
        s = read_state(self._state_path)
        if s is None or [s["life"], s["seq"]] != r["from"]:
            raise OSError("simulator: the state saved at the power cut is missing or not the one expected")
        c = self.meter
        ln = self.line
        c._regs = s["regs"]
        c._m[0:8] = s["energy"]
        c._acc_fwd[:] = s["acc_fwd"]
        c._acc_rev[:] = s["acc_rev"]
        c.made_fwd[:] = s["made_fwd"]
        c.made_rev[:] = s["made_rev"]
        now = (ln.volts, ln.amps, ln.pf)
        ln.volts, ln.amps, ln.pf = list(s["volts"]), list(s["amps"]), list(s["pf"])
        c.integrate(s["lazy_ms"])          # the energy drawn until the cut, at the line the cut found
        ln.volts, ln.amps, ln.pf = now     # the contactor dropped with the board's supply
        made = c.counts_made()
        kept = r["meter_kept"]
        pending = sum(c._m[1:4]) if kept else 0
        if not kept:
            c._power_on()                  # registers and configuration gone; counts_made() stays
        self._cut_ms = s["ms"]
        return {"cut_ms": s["ms"], "made_fwd": made, "pending": pending, "meter_kept": kept,
                "closed": s["closed"], "from": r["from"]}

    def _replay(self, at):
        """The scenario's events before `at` change the world (nothing is asked of the runner)."""
        clock = self.clock
        self._replaying = True
        while self._queue and self._queue[0][0] < at:
            t, _, kind, value = self._queue.pop(0)
            clock.ms = t
            getattr(self, "_on_" + kind)(value)
        self._replaying = False
        clock.ms = at
        if clock._real0 is not None:   # realtime: the wall clock is at `at` now
            clock._real0 = clock._time.ticks_add(clock._time.ticks_ms(), -at)

    def _ask_runner(self, request):
        """Things outside the process (the broker) are the runner's: ask, and wait until done."""
        if self._replaying:
            return   # resuming after a power cut: what happened outside meanwhile is the runner's
        request["t_ms"] = self.clock.ms
        print("% " + json.dumps(request))
        reply = sys.stdin.readline().strip()
        while reply == "mains_off" and self._mains is not None:
            self._runner_line(reply)
            reply = sys.stdin.readline().strip()
        if reply != "ok":
            raise OSError("simulator runner did not confirm %r (got %r)" % (request, reply))
