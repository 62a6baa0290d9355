"""The charge-point controller: the one cooperative loop and the only place that decides.

Each iteration samples the meter and checks for emergencies, follows the EV (control pilot,
plug contact or current), polls the card reader, handles the backend's commands, starts and
stops sessions, sets the offered current and lets the sync talk to the broker. Nothing in it
waits on the network. The watchdog is fed only when every task of the loop ran within its
deadline. Running short of heap is not an outage: a MemoryError in a task outside the safety
path defers that task to its next turn (commands are answered busy, messages sent later, meter
values dropped) while the charge goes on; one in the safety path suspends charging (fault
`memory`) until a collection leaves room again. What it decides is carried out by small
owners: the Session (its records and billing), Reactions (faults), Status (connector, LED,
meter values), Handlers (commands).

    ctl = Controller(settings, board, clock, log, sync, outbox, state, auth, journal, data_dir)
    ctl.recover(journal.recover()); ctl.run(stop=lambda: False)
"""
import gc
import json

from firmware.auth.authorize import may_stop
from firmware.auth.cardreader import COLLISION, CardReader
from firmware.billing.revenue import Revenue
from firmware.billing.signing import Chain
from firmware.billing.tariffs import Tariffs
from firmware.charging.session import Session
from firmware.core.schedule import Every
from firmware.link.commands import Commands
from firmware.link.handlers import Handlers
from firmware.link.ocpp_cmds import OcppCommands
from firmware.link.records import Stamp
from firmware.metering.meter import Metering
from firmware.ops.feedback import Feedback
from firmware.ops.status import Status
from firmware.core.log import print_exception
from firmware.storage.health import Health
from firmware.safety.checks import Safety
from firmware.safety.faults import Faults
from firmware.safety.lowmem import LowMemory
from firmware.safety.reactions import Reactions
from firmware.storage.journal import COMPACT
from firmware.version import VERSION

_CONTROL_MS = 100
_HOUSEKEEPING_MS = 1000
_FOLLOW_MS = 5000       # IEC 61851-1: an EV has 5 s to follow a lower offer
_DRAWING_MA = 500
_CHARGING_W = 100       # above this the EV is charging; below, an authorized EV is parking
# the control step's tasks in order (_control_task); a MemoryError defers the one it hit, except in
# the safety checks (None), which suspend charging instead
_CONTROL = ("commands", "authorization", "charging", None, "feedback", "checkpoint", "status")
_SAFETY = 3
try:
    _mem_alloc = gc.mem_alloc  # MicroPython: collect at quiet points, track the live heap
except AttributeError:
    _mem_alloc = None          # CPython (tests on a PC): its collector needs no help


def _ev_sense(board, clock, settings, metering):
    """How this board knows the EV: control pilot, plug contact, or the current drawn (only that
    kind's module is loaded)."""
    if board.ev_sense == "pilot":
        from firmware.charging.evsense import PilotSense

        return PilotSense(board.pilot, clock, settings.pilot_debounce_ms)
    from firmware.charging.nopilot import CurrentSense, PinSense

    if board.ev_sense == "pin":
        return PinSense(board.plug, board.plug_active, metering)
    return CurrentSense(metering)


class Controller:
    def __init__(self, settings, board, clock, log, sync, outbox, state, auth, journal, data_dir, updater=None):
        self.s = settings
        self.board = board
        self.clock = clock
        self.log = log
        self.sync = sync
        self.outbox = outbox
        self.state = state
        self.auth = auth
        self.journal = journal
        self.limits = settings.limits
        self.updater = updater      # over-the-air updates (firmware/link/ota.py)
        self.contactor = board.contactor
        self.contactor.restore(state.cycles())
        self.reader = CardReader(board.rfid, clock)
        self.feedback = Feedback(board.led, clock, board.buzzer)
        self.metering = Metering(board.meter, clock, settings.phases, settings.ring_samples,
                                 settings.max_power_w, settings.profile_bucket_s)
        self.metering.restore(*state.meter())
        if board.fram is not None:
            self.metering.keep_in(board.fram)   # the register as the last energy read before a cut left it
            if self.metering.nv_error is not None:
                log.event("storage", file="fram", error=self.metering.nv_error)
        self.ev = _ev_sense(board, clock, settings, self.metering)
        self.faults = Faults(clock, state.faults())
        self.stamp = Stamp(clock, sync, journal, outbox, state.epoch())
        sync.ep = state.epoch()   # named in every online status
        self.tariffs = Tariffs(data_dir + "/tariff.json", settings.tariff, log)
        self.revenue = Revenue(data_dir + "/revenue.json")
        self.chain = None           # signs each ended record, chained to the one before
        if settings.device_key is not None:
            self.chain = Chain(settings.device_key, *state.chain())
        self.safety = Safety(settings.board, board, self.metering, self.faults, clock)
        self.reactions = Reactions(self, self.faults, self.metering, state, outbox, self.stamp, log,
                                   self.contactor, settings.forensics_samples)
        self.status = Status(settings, clock, sync, log, self.feedback, self.faults, self.ev, self.contactor,
                             self.metering, self.revenue, journal)
        parts = (("state", state), ("journal", journal), ("revenue", self.revenue), ("tariff", self.tariffs))
        if journal.reserve is not None:
            parts += (("reserve", journal.reserve),)
        self.health = Health(log, self._notice, parts)
        self.limits.load(data_dir + "/profiles.json")
        self.admin = OcppCommands(self, auth, settings, self.status, data_dir + "/ocpp.json", log)
        for what in (self.limits, self.admin):
            if what.load_error:
                log.event("storage", error=what.load_error)
        self.status.identify(updater.version if updater is not None and updater.version else VERSION,
                             settings.vendor, settings.model)
        h = Handlers(self, auth, self.limits, self.tariffs, self.reactions, updater, outbox, journal, clock, log,
                     self.admin, settings.faults.remote_clear)
        self.commands = Commands(h.routes(), h.answers(), sync, log, clock, settings.device_key, settings.device_id,
                                 state)
        self._sample = Every(clock, settings.sample_ms)
        self._energy = Every(clock, self.metering.energy_interval_ms)
        self._poll = Every(clock, settings.reader_poll_ms)
        self._pilot = Every(clock, settings.pilot_poll_ms) if self.ev.has_pilot else None
        self._control = Every(clock, _CONTROL_MS)
        self._housekeeping = Every(clock, _HOUSEKEEPING_MS)
        self._updated = Every(clock, settings.updated_s * 1000) if settings.updated_s else None
        self._tasks = [t for t in (self._sample, self._energy, self._poll, self._pilot, self._control,
                                   self._housekeeping) if t is not None]
        self.reset_requested = None  # "install" / "rollback" / "reset_soft" / "reset_hard": the loop ends, the board resets
        self.heap_peak = 0          # most live heap seen after a collection, bytes
        self.lowmem = LowMemory(clock, log, outbox, self.contactor, self.reactions, self.faults, self._notice)
        self._ending = None         # the stop reason of a session close in progress (out of heap: retried)
        self._closing = None        # its signed end record, energy, cost and reason, built once
        self.iteration = 0          # loop iterations since boot (fault reports name the one that acted)
        self.session = None         # the running Session
        self.last_tx = None         # (tx_id, token) of the last session, for feedback after it
        self.authorized = None      # accepted Decision waiting for the EV
        self._auth_at = 0
        self.pending = None         # Decision waiting for the backend's answer
        self._finishing = False     # a session ended and the EV is still plugged
        self._button_was = False
        self._offer_high = 0        # the highest offer of the last 5 s: what the EV may still draw
        self._offer_high_until = 0
        self.temp_c = None
        self.freq_chz = None
        self.meter_ok = True
        self._gasped = False        # the last-gasp checkpoint was written since the supply failed
        # with a power-good input the loop looks at it at least twice per hold-up time
        self._supply_ms = board.hold_up_ms // 2 if board.power_good is not None else 1000
        self._init_meter()
        self._update_status()
        self.status.publish_stats()

    @property
    def connector(self):
        return self.status.connector

    @property
    def error_code(self):
        return self.status.error_code

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop):
        while not stop() and self.reset_requested is None:
            self.iteration += 1
            try:
                self.step()
            except MemoryError:      # the safety path (the rest defers its own): suspend charging
                self.lowmem.safety()
            except Exception as e:   # a bug must not leave power flowing: safe state, report
                self.reactions.internal_error(e)
            now = self.clock.ticks_ms()
            wait = self._supply_ms
            for t in self._tasks:
                w = t.wait_ms(now)
                if w < wait:
                    wait = w
            if wait:
                self.clock.sleep_ms(wait)

    def step(self):
        self.idle()
        if self.lowmem.tripped:
            self.lowmem.safety()
        now = self.clock.ticks_ms()
        if self._poll.due(now):
            try:
                self._read_card()
            except MemoryError:
                self.lowmem.deferred("card")
        if self._control.due(now):
            for i in range(len(_CONTROL)):
                try:
                    self._control_task(i, now)
                except MemoryError:
                    if i == _SAFETY:
                        raise
                    self.lowmem.deferred(_CONTROL[i])
        if self._housekeeping.due(now):
            try:
                self.lowmem.check(now)
                self._housekeep()
            except MemoryError:
                self.lowmem.deferred("housekeeping")
        self.feedback.tick()
        try:
            self.sync.tick()
        except MemoryError:
            self.lowmem.deferred("sync")
        if self.updater is not None:
            try:
                self._update_step()
            except MemoryError:
                self.lowmem.deferred("update")
        self._feed_watchdog(now)

    def _control_task(self, i, now):
        """The control step's task i, as _CONTROL names them."""
        if i == 0:
            self.commands.handle_inbox()
        elif i == 1:
            self.admin.tick()
            self._auth_timeouts()
        elif i == 2:
            self._follow_ev()
            self._apply_offer()
        elif i == _SAFETY:
            self._check_faults()
        elif i == 4:
            self._check_button()
        elif i == 5:
            self._checkpoint()
        else:
            self._update_status()
            self.status.report_meter(now, self.session)

    def idle(self):
        """What must never wait (the EV, the meter, emergencies): first in every loop pass."""
        if self.board.power_good is not None:
            self._watch_supply()
        now = self.clock.ticks_ms()
        if self._pilot is not None and self._pilot.due(now) and self.ev.poll():
            self._ev_changed()
        if self.board.has_rcd:
            self.reactions.react(self.safety.rcd())
        sample = self._sample.due(now)
        energy = self._energy.due(now)
        if self.meter_ok:   # a failed meter is not read (never bill from it) until it works again
            try:
                if sample:
                    self.metering.sample()
                    self.reactions.react(self.safety.fast(self._offer_limit_ma()))
                if energy:
                    self.metering.read_energy()
            except OSError as e:
                self._meter_failed(e)

    def _watch_supply(self):
        """Power-good fell: within the hold-up time put the register where a reboot finds it, by an
        energy read (which writes the FRAM) and, without FRAM, a journal checkpoint of the session,
        flagged as the gasp's when that read made the register current (recovery then bounds what is
        missing by the hold-up time). A dip that recovered writes a plain checkpoint over it."""
        failing = self.board.supply_failing()
        if failing == self._gasped:
            return
        self._gasped = failing
        read = False
        if failing and self.meter_ok:
            try:
                self.metering.read_energy()
                read = True
            except OSError as e:
                self._meter_failed(e)
        s = self.session
        if s is not None and self.metering.nv is None:
            wh, rem = self.metering.register()
            s.checkpoint(self.journal, wh, rem, self.stamp.now(), gasp=read)
        if failing:
            self.log.event("last_gasp", tx_id=s.tx_id if s is not None else None, meter_wh=self.metering.register_wh())

    def _update_step(self):
        """Download in bounded steps; switch versions only when nobody is charging or waiting."""
        u = self.updater
        u.tick(busy=self.session is not None)
        if u.ready_to_switch() and self.session is None and self.authorized is None and self.pending is None:
            self.reset_requested = u.switch()
            self.log.event("update", action=self.reset_requested, version=u.version)

    def restart(self, why):
        """End the loop: the board restarts (firmware/app.py), as after an update's switch."""
        self.reset_requested = why
        self.log.event("restart", why=why)

    def _feed_watchdog(self, now):
        """Fed only when every task of the loop ran within three of its periods."""
        wdt = self.board.wdt
        if wdt is None:
            return
        for t in self._tasks:
            if self.clock.ticks_diff(now, t.next) > 3 * t.period_ms:
                return
        wdt.feed()

    def _housekeep(self):
        if self.stamp.check():
            self._restamp()
        s = self.session
        if s is not None and self._ending is None:
            m = self.metering
            s.tick(self.stamp.boot_s(), m.register_wh(), m.i_sum_ma, m.p_w, m.p_w > _CHARGING_W)
        if self.meter_ok:
            try:
                self.board.meter.check()   # MeterEn still set: the chip did not brown out
                self.temp_c = self.board.meter.temp()
                self.freq_chz = self.board.meter.freq()
            except OSError as e:
                self._meter_failed(e)
        if self.reader.failed:
            self.reactions.trip("reader", self.reader.error)
        else:
            self.faults.gone("reader")
        self.status.storage()
        self.health.check()   # a full flash: retry what waits in RAM, report a change upstream
        if self.updater is not None and self.sync.connected:
            self.updater.confirm()   # a version on trial proved itself: connected, loop running
        if _mem_alloc is not None:
            gc.collect()  # once a second at a quiet point: short pauses, no fragmentation build-up
            self.heap_peak = max(self.heap_peak, _mem_alloc())

    def _restamp(self):
        """The wall clock just became known: this boot's waiting records and the open session get
        real times. Earlier boots' uptimes relate to nothing: those stay as they are."""
        shift, n = self.stamp.restamp()
        s = self.session
        if s is not None and s.started_at is None:
            s.rebase(shift)
            self.status.rebased()
        self.log.event("time_synced", restamped=n, shift_s=shift)

    # -- the EV and the meter ----------------------------------------------------------------
    def _ev_changed(self):
        """The pilot state changed: react at once (within 100 ms of the change, IEC 61851-1)."""
        ev = self.ev
        s = self.session
        self.log.event("pilot", state=ev.state, previous=ev.monitor.previous, fault=ev.fault, it=self.iteration)
        if ev.state == "C" or ev.state == "D":
            if s is not None and s.stopping is None and ev.offered_a:
                self._close()
            return
        self.open()  # B: the EV stopped asking; A, E, F: gone or in error
        if ev.fault is not None:
            self.reactions.trip("pilot", "state %s%s" % (ev.state, ", no diode" if ev.fault == "diode" else ""))
            return
        self.faults.gone("pilot")
        if s is None:
            return
        if ev.state == "B":
            if s.stopping is not None:
                self._finish(s.stopping[0])
        elif ev.state == "A":
            self._finish("EVDisconnected")

    def _init_meter(self):
        """(Re)start the meter chip; True if it answers."""
        try:
            self.board.meter.init()
            self.meter_ok = True
            self.faults.gone("meter")
            self.metering.restart()   # time the meter was down is neither a sample gap nor energy
            if hasattr(self, "safety"):
                self.safety.meter_started()
        except OSError as e:
            self._meter_failed(e)
        return self.meter_ok

    def _meter_failed(self, err):
        """Safe state first: the contactor opens in this iteration, billing stops at the last read."""
        self.meter_ok = False
        self.open()
        self.reactions.trip("meter", str(err))

    def _offer_limit_ma(self):
        """What the EV may draw now: the offer, or a higher one it still has 5 s to leave."""
        if self.ev.has_pilot:
            a = self.ev.offered_a
            if self.clock.ticks_diff(self.clock.ticks_ms(), self._offer_high_until) < 0 and self._offer_high > a:
                a = self._offer_high
            if not a:
                a = self.s.max_current_a   # no offer: only the breaker limit means anything
        else:
            a = self.s.max_current_a       # an EV without a pilot cannot know any lower limit
        return a * 1000

    def _close(self):
        if not self.contactor.commanded:
            self.contactor.close()
            self.log.event("contactor", closed=True, it=self.iteration)

    def open(self):
        """Open the contactor now (a stop, an emergency)."""
        if self.contactor.commanded:
            self.contactor.open()
            self.log.event("contactor", closed=False, it=self.iteration)

    def _check_faults(self):
        self.reactions.react(self.safety.check(self.session is not None, self.temp_c, self.freq_chz))
        if self.faults.active:   # else nothing to retry (and no bound method made every step)
            self.reactions.retry(self._init_meter)
        s = self.session
        if s is not None and self.ev.offered_a:   # a pilot EV that never asks (state B) counts too
            now = self.clock.ticks_ms()
            if self.metering.i_max_ma > _DRAWING_MA:
                s.drew(now)
            elif self.clock.ticks_diff(now, s.drawing_at) > self.s.ev_idle_report_s * 1000 and s.idle_reported():
                self.reactions.event(None, "notice", info="ev_not_charging",   # a battery-side matter
                                     detail="authorized and plugged, no current for %d s" % self.s.ev_idle_report_s)

    def clear_fault(self):
        """A technician's reset of latched faults (REPL tech.clear_fault())."""
        return self.reactions.clear_fault()

    def _update_status(self):
        self.status.update(self.session is not None, self.authorized is not None or self.pending is not None,
                           self._finishing)

    # -- cards and authorization --------------------------------------------------------------
    def _read_card(self):
        got = self.reader.poll()
        if got is None:
            return
        if got is COLLISION:
            self.log.event("tap", result="refused", reason="one card please")
            self.feedback.flash("refused")
            return
        self._tap(self.s.keys.tap(got))  # the raw UID goes no further than this line

    def _tap(self, pairs):
        token = pairs[0][1]
        s = self.session
        if s is not None:
            if may_stop(s.token, s.group, pairs, self.auth.group_of(pairs)):
                self.log.event("tap", token=token, result="stop")
                self.stop("Local")
            else:
                self._refuse(token, "ConcurrentTx")
            return
        if self.pending is not None:
            self._refuse(token, "Busy")   # an online check is running for another tap
            return
        a = self.authorized
        if a is not None:
            if any(t == a.token for _, t in pairs):
                self.authorized = None
                self.log.event("tap", token=token, result="cancelled")
                self.feedback.flash("accepted")
            else:
                self._refuse(token, "ConcurrentTx")
            return
        if self._unavailable():
            self._refuse(token, "Unavailable")
            return
        self._decided(self.auth.tap(pairs, self.sync.connected))

    def _unavailable(self):
        return self.lowmem.tripped or self.faults.blocking() is not None or self.ev.fault is not None \
            or not self.admin.accepting() or self.reset_requested is not None

    def _decided(self, d):
        """Act on an authorization decision (from a tap, a remote start or the backend)."""
        if d.pending:
            if self.sync.publish_now("auth/req", json.dumps(d.request()), 1):
                self.pending = d
                self.clock.outside(self.auth.timeout_ms)
                self.log.event("tap", token=d.token, result="asking", corr=d.corr)
                return
            d = self.auth.online_timeout(d.corr)
        if self.pending is None:
            self.clock.outside(0)
        if d.accepted:
            self.authorized = d
            self._auth_at = self.clock.ticks_ms()
            self.log.event("tap", token=d.token, result="accepted", auth=d.method)
            self.feedback.flash("accepted")
        else:
            self._refuse(d.token, d.status, d.method)

    def _refuse(self, token, status, method=None):
        self.log.event("tap", token=token, result="refused", status=status, auth=method)
        self.feedback.flash("refused")

    def auth_answer(self, payload):
        """The backend's answer on auth/resp (ValueError if it matches nothing waiting)."""
        d = self.auth.online_answer(payload.get("id") if isinstance(payload, dict) else None, payload)
        self.pending = None
        self._decided(d)

    def _auth_timeouts(self):
        for d in self.auth.timeouts():
            if self.pending is not None and d.corr == self.pending.corr:
                self.pending = None
                self.log.event("auth_timeout", token=d.token)
                self._decided(d)

    def remote_start(self, p):
        """The backend starts a session for a driver (ValueError: refused, nothing changed)."""
        if self.session is not None:
            raise ValueError("ConcurrentTx: a session is running")
        if self.authorized is not None or self.pending is not None:
            raise ValueError("ConcurrentTx: a driver is already authorized")
        if self._unavailable():
            raise ValueError("Unavailable: the charger is faulted or out of service")
        d = self.auth.remote_start(p, self.sync.connected)
        self._decided(d)
        if not d.pending and not d.accepted:
            raise ValueError("%s: %s" % (d.status, d.method))

    def remote_stop(self, tx_id):
        """The backend stops the running session (tx_id None: whichever runs); its tx_id."""
        s = self.session
        if s is None:
            raise ValueError("no session running")
        if tx_id is not None and tx_id != s.tx_id:
            raise ValueError("tx_id %r is not the running session (%d)" % (tx_id, s.tx_id))
        self.stop("Remote")
        return s.tx_id

    def busy_with(self, token):
        """A session, authorization or online check for this pseudonym is in progress."""
        return any(d is not None and d.token == token for d in (self.session, self.authorized, self.pending))

    def forget(self, token):
        """A purged pseudonym: a later problem report names the last session, not the card."""
        if self.last_tx is not None and self.last_tx[1] == token:
            self.last_tx = (self.last_tx[0], None)

    # -- sessions ---------------------------------------------------------------------------
    def _follow_ev(self):
        ev = self.ev
        s = self.session
        now = self.clock.ticks_ms()
        if s is not None:
            if self._ending is not None:
                self._finish(self._ending)   # a close that ran out of heap: finished now
                return
            if self.metering.i_max_ma > _DRAWING_MA:
                s.drew(now)
            if not ev.plugged:
                self.stop("EVDisconnected", emergency=True)
            elif s.max_wh is not None and s.energy_wh(self.metering.register_wh()) >= s.max_wh:
                self.stop("EnergyLimitReached")
            elif s.stopping is not None and self.clock.ticks_diff(now, s.stopping[1]) >= 0:
                self._finish(s.stopping[0])   # the EV did not stop in time: open anyway
            elif self.s.idle_end_s and self.clock.ticks_diff(now, s.drawing_at) > self.s.idle_end_s * 1000:
                self.stop("StoppedByEV")          # boards that cannot see the plug: no draw for long
            elif not ev.has_pilot and not self.contactor.commanded and s.stopping is None \
                    and self.faults.blocking() is None and not self.lowmem.tripped:
                self._close()   # a suspension is over (memory): no pilot asks, power is made available
            return
        if not ev.plugged:
            self._finishing = False
        a = self.authorized
        if a is None:
            return
        if ev.plugged and not self._unavailable():
            self._start(a)
        elif self.clock.ticks_diff(now, self._auth_at) > self.s.auth_timeout_s * 1000:
            self.log.event("auth_expired", token=a.token)
            self.authorized = None

    def _apply_offer(self):
        s = self.session
        if s is None or s.stopping is not None or self._ending is not None or self._unavailable() or \
                s.offpeak_only and not self.s.offpeak_now(self.clock.seconds()):
            amps = 0   # off-peak-only drivers wait (SuspendedEVSE) until the site's off-peak hours
        else:
            now = self.clock.seconds()   # every step: small ints (firmware/core/clock.py)
            amps = self.limits.offer_a(now, now - s.since_s(self.stamp.boot_s()), s.max_current_a, self.temp_c)
        old = self.ev.offered_a
        if amps != old:
            if amps < old:   # the EV may keep drawing the old offer for 5 s
                self._offer_high = old
                self._offer_high_until = self.clock.ticks_add(self.clock.ticks_ms(), _FOLLOW_MS)
            self.ev.offer(amps)
            self.log.event("offer", amps=self.ev.offered_a, limit=self.limits.reason)

    def _start(self, d):
        m = self.metering
        m.read_energy()  # the start reading includes everything counted so far
        tx = self.state.next_tx()
        wh = m.register_wh()
        self.session = s = Session(tx, d, self.tariffs.current, self.s, self.stamp.now(), self.stamp.ts(), wh,
                                   m.start_session(tx), self.clock.ticks_ms(), self.stamp.boot_s())
        self.authorized = None
        self._finishing = False
        if self._updated is not None:
            self._updated.restart(self.clock.ticks_ms())
        self.status.session_started()
        self.journal.session_started(s.started(self.stamp))
        self.log.event("session_start", tx_id=tx, token=d.token, auth=d.method, meter_wh=wh)
        self._apply_offer()
        if not self.ev.has_pilot:
            self._close()   # no pilot: the EV cannot ask, power is simply made available

    def _checkpoint(self):
        s = self.session
        if s is None or self._ending is not None:
            return
        m = self.metering
        if self._updated is not None and self._updated.due(self.clock.ticks_ms()):
            wh, rem = m.register()
            s.checkpoint(self.journal, wh, rem, self.stamp.now(), self.stamp.record(s.updated(self.stamp.ts(), wh)))
        elif self.journal.checkpoint_due(m.register_wh(), self.stamp.boot_s()):   # every step: no big int
            wh, rem = m.register()
            s.checkpoint(self.journal, wh, rem, self.stamp.now())

    def stop(self, reason, emergency=False):
        """End the session; with a pilot, first withdraw the offer and let the EV stop drawing."""
        s = self.session
        if s.stopping is not None and not emergency:
            return
        if emergency or not self.ev.has_pilot or not self.contactor.commanded or not self.s.soft_stop_ms:
            self._finish(reason)
            return
        self.ev.offer(0)
        s.soft_stop(reason, self.clock.ticks_add(self.clock.ticks_ms(), self.s.soft_stop_ms))
        self.log.event("stopping", tx_id=s.tx_id, reason=reason)

    def _finish(self, reason):
        """Close the session. Its end record is built and signed once; a close that runs out of heap
        is finished by the next control step (_follow_ev), with the same record."""
        s = self.session
        if self._ending is None:
            self._ending = reason
        reason = self._ending
        if self._closing is None:
            s.finishing()
            self.open()
            if self.meter_ok:
                try:
                    self.metering.read_energy()  # what the chip counted up to the opening
                except OSError as e:
                    self._meter_failed(e)
            m = self.metering
            m.end_session()
            stop_wh = m.register_wh()
            rec, cost = s.ended(self.stamp.ts(), self.stamp.now(), stop_wh, reason, m.integral_wh, m.profile)
            self._closing = (self._signed(self.stamp.record(rec)), s.energy_wh(stop_wh), cost, reason)
        self._close_session(s, *self._closing)

    def abandon(self, reason):
        """Close the session after an internal error; if even that fails the journal still holds it
        (closed at the next boot)."""
        try:
            self._finish(reason)
        except Exception as e:  # noqa: BLE001
            print_exception(e)
            self.session = None
            self._ending = self._closing = None

    def _signed(self, rec):
        """The end record signed last (every field is set), chained: tamper evidence for the backend."""
        if self.chain is not None:
            rec = self.chain.sign(rec)
            self.state.set_chain(self.chain.prev_hash, self.chain.n)
        return rec

    def _close_session(self, s, rec, energy, cost, reason):
        # saved before the END record: a cut between the two finds the session open and the register
        # where it was, never the register of the session's start (it only goes up)
        self.state.set_meter(*self.metering.register())
        self.state.set_cycles(self.contactor.cycles)
        self.state.save()
        self.journal.session_ended(s.tx_id, rec)
        self.session = None   # closed: what follows are statistics and the log
        self._ending = self._closing = None
        self.last_tx = (s.tx_id, s.token)
        self._finishing = self.ev.knows_plug and self.ev.plugged
        self.revenue.add(self.s.tz.local(self.clock.time())[:3], energy, cost["total_excl_vat_minor"],
                         cost["total_incl_vat_minor"], cost["currency"])
        self.status.publish_stats()
        self.log.event("session_end", tx_id=s.tx_id, token=s.token, energy_wh=energy, reason=reason, cost=cost)
        self._apply_offer()

    def recover(self, boot):
        """At boot: a session open at a power cut is closed with PowerLoss; the record says how much
        energy may be missing (drawn after the last checkpoint, before the cut)."""
        st = boot.get("session")
        if st is None:
            return
        cp = boot.get("checkpoint") or {}
        m = self.metering
        fram = m.fram_session(st["tx_id"])   # the register at the last energy read before the cut
        m.restore(cp.get("energy_wh", st.get("meter_start_wh", 0)), cp.get("rem", 0) if isinstance(cp.get("rem"), int) else 0)
        counted = m.register_wh()
        try:
            m.read_energy()   # a meter that kept its power still holds the last counts
        except OSError as e:
            self._meter_failed(e)
        last_t = cp.get("t", 0)
        j, p = self.journal, self.s.max_power_w
        uncertain = max(j.every_wh, p * j.min_s // 3600)   # no checkpoint is due before both are passed
        if last_t and self.clock.time() > last_t:
            uncertain = min(uncertain, p * (self.clock.time() - last_t) // 3600)
        if fram is not None:   # only what the chip counted after its last read, if it lost its supply
            uncertain = min(uncertain, (p * m.energy_interval_ms + 3599999) // 3600000)
        if cp.get("gasp") and self.board.power_good is not None:   # only what was drawn during the hold-up
            uncertain = min(uncertain, (p * self.board.hold_up_ms + 3599999) // 3600000)
        wh = m.register_wh()
        s, rec, cost = Session.recovered(st, cp, wh, self.tariffs.current, self.s.tz, uncertain_wh=uncertain,
                                         recovered_wh=wh - counted)
        energy = s.energy_wh(wh)
        self.log.event("recovered", tx_id=s.tx_id, energy_wh=energy, uncertain_wh=uncertain)
        self._close_session(s, self._signed(self.stamp.record(rec)), energy, cost, "PowerLoss")

    def shutdown(self, reason, why):
        """The loop was interrupted (Ctrl-C at the console, or an escaping error): safe state now."""
        self.open()
        tx = None
        if self.session is not None:
            tx = self.session.tx_id
            self._finish(reason)
        self.state.set_faults(self.faults.persist())
        self.state.save()
        self.status.halted()
        self.log.event("shutdown", why=why, tx_id=tx)
        return tx

    def _notice(self, **fields):
        """A storage condition for the backend: a `fault` notice (firmware/storage/health.py)."""
        self.reactions.event(None, "notice", **fields)

    # -- driver feedback --------------------------------------------------------------------
    def _check_button(self):
        pressed = self.board.button_pressed()
        if pressed and not self._button_was:
            self.report_problem("button", None)
        self._button_was = pressed

    def report_problem(self, source, text):
        """"Report a problem": tied to the running session, or the last one."""
        s = self.session
        tx, token = (s.tx_id, s.token) if s is not None else (self.last_tx or (None, None))
        n = self.state.next("fb")
        rec = self.stamp.record({"msg_id": "fb-%d" % n, "ts": self.stamp.ts(), "tx_id": tx, "token": token,
                                 "source": source, "text": text})
        self.outbox.put("feedback", json.dumps(rec, separators=COMPACT), rec["msg_id"], "feedback")
        self.log.event("feedback", source=source, tx_id=tx)
        self.feedback.flash("accepted")
