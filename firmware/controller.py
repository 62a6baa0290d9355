"""The charge-point controller: the one cooperative loop and the only place that decides.

Each iteration samples the meter, reads the energy registers when due, polls the card
reader, follows the plug, starts and stops sessions, drives the LED and lets the sync talk to
the broker. Nothing in it waits on the network.

    ctl = Controller(settings, board, clock, log, sync, outbox, state)
    ctl.run(stop=lambda: False)
"""
import gc
import json

from firmware.cardreader import COLLISION, CardReader
from firmware.feedback import Feedback
from firmware.metering import Metering
from firmware.pseudonym import pseudonym
from firmware.schedule import Every
from firmware.session import Session
from firmware.timefmt import iso

_CONTROL_MS = 100
_HOUSEKEEPING_MS = 1000
try:
    _mem_alloc = gc.mem_alloc  # MicroPython: collect at quiet points, track the live heap
except AttributeError:
    _mem_alloc = None          # CPython (tests on a PC): its collector needs no help
_CHARGING_W = 100  # above this the EV is drawing power: Charging, else SuspendedEV


class Controller:
    def __init__(self, settings, board, clock, log, sync, outbox, state):
        self.s = settings
        self.board = board
        self.clock = clock
        self.log = log
        self.sync = sync
        self.outbox = outbox
        self.state = state
        self.reader = CardReader(board.rfid, clock)
        self.contactor = board.contactor
        self.feedback = Feedback(board.led, clock)
        self.metering = Metering(board.meter, clock, settings.phases, settings.ring_samples,
                                 settings.max_power_w)
        self.metering.forward.restore(state.values["meter_wh"], state.values["meter_rem"])
        self._sample = Every(clock, settings.sample_ms)
        self._energy = Every(clock, self.metering.energy_interval_ms)
        self._poll = Every(clock, settings.reader_poll_ms)
        self._control = Every(clock, _CONTROL_MS)
        self._meter_values = Every(clock, settings.meter_values_s * 1000)
        self._aligned_slot = None   # the clock-aligned interval last reported
        self._housekeeping = Every(clock, _HOUSEKEEPING_MS)
        self.heap_peak = 0          # most live heap seen after a collection, bytes
        self._tasks = (self._sample, self._energy, self._poll, self._control)
        self._integral0 = 0
        self.session = None
        self.authorized = None      # token waiting for the EV to be plugged
        self._auth_at = 0
        self._finishing = False     # a session ended and the EV is still plugged
        self.meter_error = None
        try:
            board.meter.init(settings.board["meter"])
        except OSError as e:
            self._meter_failed(e)
        self.connector = None
        self._update_status()

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop):
        while not stop():
            self.step()
            now = self.clock.ticks_ms()
            wait = min(t.wait_ms(now) for t in self._tasks)
            if wait:
                self.clock.sleep_ms(wait)

    def step(self):
        self.idle()
        now = self.clock.ticks_ms()
        if self._poll.due(now):
            self._read_card()
        if self._control.due(now):
            self._follow_plug()
            self._update_status()
            self._report_meter(now)
        if _mem_alloc is not None and self._housekeeping.due(now):
            gc.collect()  # once a second at a quiet point: short pauses, no fragmentation build-up
            self.heap_peak = max(self.heap_peak, _mem_alloc())
        self.feedback.tick()
        self.sync.tick()

    def idle(self):
        """Meter work that must never wait: also run by the MQTT link while it waits."""
        now = self.clock.ticks_ms()
        try:
            if self._sample.due(now):
                self.metering.sample()
            if self._energy.due(now):
                self.metering.read_energy()
        except OSError as e:
            self._meter_failed(e)

    # -- meter ------------------------------------------------------------------------------
    def _meter_failed(self, err):
        """Safe state first: open the contactor; the session is closed by the next step."""
        self.contactor.open()
        if self.meter_error is None:
            self.meter_error = str(err)
            self.log.event("fault", code="PowerMeterFailure", error=self.meter_error)

    # -- cards ------------------------------------------------------------------------------
    def _read_card(self):
        got = self.reader.poll()
        if got is None:
            return
        if got is COLLISION:
            self.log.event("tap", result="refused", reason="one card please")
            self.feedback.flash("refused")
            return
        self._tap(pseudonym(self.s.site_key, got))  # the raw UID goes no further

    def _tap(self, token):
        s = self.session
        if s is not None:
            if token == s.token:
                self.log.event("tap", token=token, result="stop")
                self._stop("Local")
            else:
                self._refuse(token, "ConcurrentTx")
            return
        if self.authorized is not None:
            if token == self.authorized:
                self.authorized = None
                self.log.event("tap", token=token, result="cancelled")
                self.feedback.flash("accepted")
            else:
                self._refuse(token, "ConcurrentTx")
            return
        if self.meter_error is not None:
            self._refuse(token, "Unavailable")
            return
        if token not in self.s.allow:
            self._refuse(token, "Invalid")
            return
        self.authorized = token
        self._auth_at = self.clock.ticks_ms()
        self.log.event("tap", token=token, result="accepted", auth="local_list")
        self.feedback.flash("accepted")

    def _refuse(self, token, status):
        self.log.event("tap", token=token, result="refused", status=status)
        self.feedback.flash("refused")

    # -- sessions ---------------------------------------------------------------------------
    def _follow_plug(self):
        plugged = self.board.plugged()
        if self.session is not None:
            if self.meter_error is not None:
                self._stop("Other")
            elif not plugged:
                self._stop("EVDisconnected")
            return
        if not plugged:
            self._finishing = False
        if self.authorized is None:
            return
        if plugged:
            self._start()
        elif self.clock.ticks_diff(self.clock.ticks_ms(), self._auth_at) > self.s.auth_timeout_s * 1000:
            self.log.event("auth_expired", token=self.authorized)
            self.authorized = None

    def _start(self):
        self.metering.read_energy()  # the start reading includes everything counted so far
        tx = self.state.next_tx()
        m = self.metering.forward
        self.session = Session(tx, self.authorized, "local_list", iso(self.clock.time()), m.wh,
                               self.s.tariff.id)
        self.authorized = None
        self._finishing = False
        self._integral0 = self.metering.start_session()
        self._aligned_slot = self.clock.time() // self.s.meter_aligned_s if self.s.meter_aligned_s else None
        self.contactor.close()
        self.outbox.put("session", json.dumps(self.session.started()))
        self.log.event("session_start", tx_id=tx, token=self.session.token, meter_wh=m.wh)
        self.log.event("contactor", closed=True)

    def _stop(self, reason):
        s = self.session
        self.contactor.open()
        self.log.event("contactor", closed=False)
        if self.meter_error is None:
            self.metering.read_energy()  # what the chip counted up to the opening
        m = self.metering
        m.end_session()
        stop_wh = m.forward.wh
        energy = stop_wh - s.meter_start_wh
        integral = m.integral_wh - self._integral0
        tolerance = max(energy * self.s.crosscheck_pct // 100, self.s.crosscheck_min_wh)
        cost = self.s.tariff.price(energy)
        rec = s.ended(iso(self.clock.time()), stop_wh, reason, cost, profile=m.profile.record(),
                      integral_wh=integral, energy_mismatch=abs(energy - integral) > tolerance)
        self.outbox.put("session", json.dumps(rec))
        self.session = None
        self._finishing = self.board.plugged()
        v = self.state.values
        v["meter_wh"], v["meter_rem"] = self.metering.forward.wh, self.metering.forward.rem
        self.state.save()
        self.log.event("session_end", tx_id=s.tx_id, token=s.token, energy_wh=rec["energy_wh"],
                       reason=reason, cost=cost)

    def _report_meter(self, now):
        """Meter values upstream while a session runs: periodic, and at clock-aligned instants."""
        s = self.session
        periodic = self._meter_values.due(now)
        if s is None:
            return
        aligned = False
        if self._aligned_slot is not None:
            slot = self.clock.time() // self.s.meter_aligned_s
            aligned = slot != self._aligned_slot
            self._aligned_slot = slot
        if not (periodic or aligned):
            return
        m = self.metering
        r = m.ring
        b = 3 * r.index(0)
        self.sync.publish_now("meter", json.dumps({
            "ts": iso(self.clock.time()), "tx_id": s.tx_id, "register_wh": m.forward.wh,
            "energy_wh": m.forward.wh - s.meter_start_wh, "v_cv": list(r.u[b:b + 3]),
            "i_ma": list(r.i[b:b + 3]), "p_w": m.p_w, "offered_a": self.s.max_current_a,
            "aligned": aligned}))

    # -- status -----------------------------------------------------------------------------
    def _update_status(self):
        if self.meter_error is not None:
            status, pattern = "Faulted", "fault"
        elif self.session is not None:
            if self.metering.p_w > _CHARGING_W:
                status, pattern = "Charging", "charging"
            else:
                status, pattern = "SuspendedEV", "charging"
        elif self._finishing:
            status, pattern = "Finishing", "finished"
        elif self.authorized is not None or self.board.plugged():
            status, pattern = "Preparing", "waiting"
        else:
            status, pattern = "Available", "ready"
        if status != self.connector:
            self.connector = status
            self.sync.set_connector(status)
            self.log.event("status", connector=status)
        self.feedback.steady(pattern)
