"""The charge-point controller: the one cooperative loop and the only place that decides.

Each iteration samples the meter and checks for emergencies, follows the EV (control pilot,
plug contact or current), polls the card reader, handles the backend's commands, starts and
stops sessions, journals them, sets the offered current, detects faults and reacts, drives the
LED and lets the sync talk to the broker. Nothing in it waits on the network. The watchdog is
fed only when every task of the loop ran within its deadline. Until the wall clock is known its
records carry boot + uptime_s; they are re-stamped when it is (docs/journal.md).

    ctl = Controller(settings, board, clock, log, sync, outbox, state, auth, journal)
    ctl.recover(journal.recover()); ctl.run(stop=lambda: False)
"""
import gc
import json

from firmware.auth.authorize import may_stop
from firmware.auth.cardreader import COLLISION, CardReader
from firmware.link.commands import Commands
from firmware.charging.evsense import CurrentSense, PilotSense, PinSense
from firmware.safety.faults import Faults
from firmware.ops.feedback import Feedback
from firmware.storage.journal import COMPACT
from firmware.charging.limits import KINDS
from firmware.core.log import print_exception
from firmware.core import jsonx
from firmware.metering.meter import Metering
from firmware.billing.periods import PeriodBuilder
from firmware.billing.revenue import Revenue
from firmware.safety.checks import Safety
from firmware.billing.signing import Chain
from firmware.storage.state import write_atomic
from firmware.billing.tariff import Tariff
from firmware.core.schedule import Every
from firmware.charging.session import Session
from firmware.link.sync import parse_ack
from firmware.core.timefmt import iso, parse_iso
from firmware.core.timesync import TimeSync, synced

_CONTROL_MS = 100
_HOUSEKEEPING_MS = 1000
_FOLLOW_MS = 5000       # IEC 61851-1: an EV has 5 s to follow a lower offer
_TEXT_MAX = 200
_DRAWING_MA = 500
_CHARGING_W = 100       # above this the EV is charging; below, an authorized EV is parking
try:
    _mem_alloc = gc.mem_alloc  # MicroPython: collect at quiet points, track the live heap
except AttributeError:
    _mem_alloc = None          # CPython (tests on a PC): its collector needs no help

_PATTERNS = {"Available": "ready", "Preparing": "waiting", "Charging": "charging",
             "SuspendedEV": "charging", "SuspendedEVSE": "waiting", "Finishing": "finished",
             "Faulted": "fault", "Unavailable": "fault"}


def _shift(rec, shift):
    """Re-stamp a record made before the wall clock was known: its uptimes plus shift are UTC."""
    rec["ts"] = iso(rec["uptime_s"] + shift)
    if rec.get("event") == "started" and isinstance(rec.get("start_utc"), int):
        rec["start_utc"] += shift
    if rec.get("event") == "ended":
        if rec.get("ended_at") is None:
            rec["ended_at"] = rec["ts"]
        up = rec.get("started_uptime_s")
        if rec.get("started_at") is None and isinstance(up, int):
            rec["started_at"] = iso(up + shift)
        for p in rec.get("charging_periods") or ():   # built from seconds since boot as if 1970
            p["start_date_time"] = iso(parse_iso(p["start_date_time"]) + shift)


class Controller:
    def __init__(self, settings, board, clock, log, sync, outbox, state, auth, journal, data_dir, updater=None):
        self.s = settings
        self.board = board
        self.clock = clock
        self.time = TimeSync(clock)   # wall clock known yet? seconds since boot until it is
        self.log = log
        self.sync = sync
        self.outbox = outbox
        self.state = state
        self.auth = auth
        self.journal = journal
        self.limits = settings.limits
        self.contactor = board.contactor
        self.reader = CardReader(board.rfid, clock)
        self.feedback = Feedback(board.led, clock, board.buzzer)
        self.commands = Commands(self, sync, log)
        self.metering = Metering(board.meter, clock, settings.phases, settings.ring_samples,
                                 settings.max_power_w, settings.profile_bucket_s)
        self.metering.forward.restore(state.values["meter_wh"], state.values["meter_rem"])
        self.contactor.cycles = state.values["cycles"]
        if board.ev_sense == "pilot":
            self.ev = PilotSense(board.pilot, clock, settings.pilot_debounce_ms)
        elif board.ev_sense == "pin":
            self.ev = PinSense(board.plug, board.plug_active, self.metering)
        else:
            self.ev = CurrentSense(self.metering)
        self.faults = Faults(clock, state.values.get("faults"))
        self.data_dir = data_dir
        self.tariff, self.tariff_version = self._load_tariff()
        self.revenue = Revenue(data_dir + "/revenue.json")
        self.chain = None           # signs each ended record, chained to the one before
        if settings.device_key is not None:
            self.chain = Chain(settings.device_key, state.values["chain_prev"], state.values["chain_n"])
        self._periods = None        # the running session's OCPI charging periods
        self.updater = updater      # over-the-air updates (firmware/link/ota.py)
        self.reset_requested = None  # "install" / "rollback": the loop ends, the board resets
        self.safety = Safety(settings.board, board, self.metering, self.faults, clock)
        self._sample = Every(clock, settings.sample_ms)
        self._energy = Every(clock, self.metering.energy_interval_ms)
        self._poll = Every(clock, settings.reader_poll_ms)
        self._pilot = Every(clock, settings.pilot_poll_ms) if self.ev.has_pilot else None
        self._control = Every(clock, _CONTROL_MS)
        self._housekeeping = Every(clock, _HOUSEKEEPING_MS)
        self._meter_values = Every(clock, settings.meter_values_s * 1000)
        self._updated = Every(clock, settings.updated_s * 1000) if settings.updated_s else None
        self._tasks = [t for t in (self._sample, self._energy, self._poll, self._pilot, self._control,
                                   self._housekeeping) if t is not None]
        self._aligned_slot = None   # the clock-aligned interval last reported
        self._integral0 = 0
        self.heap_peak = 0          # most live heap seen after a collection, bytes
        self.iteration = 0          # loop iterations since boot (fault reports name the one that acted)
        self.session = None
        self._session_utc = 0
        self.last_tx = None         # (tx_id, token) of the last session, for feedback after it
        self.authorized = None      # accepted Decision waiting for the EV
        self._auth_at = 0
        self.pending = None         # Decision waiting for the backend's answer
        self._stopping = None       # (reason, deadline): the EV was asked to stop before opening
        self._finishing = False     # a session ended and the EV is still plugged
        self._button_was = False
        self._offer_high = 0        # the highest offer of the last 5 s: what the EV may still draw
        self._offer_high_until = 0
        self._drawing_at = clock.ticks_ms()
        self._not_charging_told = False
        self.temp_c = None
        self.freq_chz = None
        self.meter_ok = True
        self._storage_told = False
        self.connector = None       # OCPP connector status
        self.error_code = None      # OCPP error code with it, None for NoError
        self._init_meter()
        self._update_status()
        self._publish_stats()

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop):
        while not stop() and self.reset_requested is None:
            self.iteration += 1
            try:
                self.step()
            except Exception as e:   # a bug must not leave power flowing: safe state, report
                self._internal_error(e)
            now = self.clock.ticks_ms()
            wait = 1000
            for t in self._tasks:
                w = t.wait_ms(now)
                if w < wait:
                    wait = w
            if wait:
                self.clock.sleep_ms(wait)

    def step(self):
        self.idle()
        now = self.clock.ticks_ms()
        if self._poll.due(now):
            self._read_card()
        if self._control.due(now):
            self.commands.handle_inbox()
            self._auth_timeouts()
            self._follow_ev()
            self._apply_offer()
            self._check_faults()
            self._check_button()
            self._checkpoint()
            self._update_status()
            self._report_meter(now)
        if self._housekeeping.due(now):
            self._housekeep()
        self.feedback.tick()
        self.sync.tick()
        if self.updater is not None:
            self._update_step()
        self._feed_watchdog(now)

    def idle(self):
        """What must never wait (the EV, the meter, emergencies): first in every loop pass."""
        now = self.clock.ticks_ms()
        if self._pilot is not None and self._pilot.due(now) and self.ev.poll():
            self._ev_changed()
        if self.board.has_rcd:
            self._react(self.safety.rcd())
        sample = self._sample.due(now)
        energy = self._energy.due(now)
        if self.meter_ok:   # a failed meter is not read (never bill from it) until it works again
            try:
                if sample:
                    self.metering.sample()
                    self._react(self.safety.fast(self._offer_limit_ma()))
                if energy:
                    self.metering.read_energy()
            except OSError as e:
                self._meter_failed(e)

    def _update_step(self):
        """Download in bounded steps; switch versions only when nobody is charging or waiting."""
        u = self.updater
        u.tick(busy=self.session is not None)
        if u.ready_to_switch() and self.session is None and self.authorized is None and self.pending is None:
            self.reset_requested = u.switch()
            self.log.event("update", action=self.reset_requested, version=u.version)

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
        if self.time.check():
            self._restamp()
        s = self.session
        if s is not None:
            m = self.metering
            self._periods.update(self._now(), m.forward.wh - s.meter_start_wh, m.i_sum_ma, m.p_w,
                                 m.p_w > _CHARGING_W)
        if self.meter_ok:
            try:
                self.board.meter.check()   # MeterEn still set: the chip did not brown out
                self.temp_c = self.board.meter.temp()
                self.freq_chz = self.board.meter.freq()
            except OSError as e:
                self._meter_failed(e)
        if self.reader.failed:
            self._react([self.faults.trip("reader", self.reader.error)])
        else:
            self.faults.gone("reader")
        if self.journal.full and not self._storage_told:
            self._storage_told = True
            self.log.event("storage", state="full", error=self.journal.error,
                           note="charging goes on; intermediate updates are dropped first")
        elif not self.journal.full:
            self._storage_told = False
        if self.updater is not None and self.sync.connected:
            self.updater.confirm()   # a version on trial proved itself: connected, loop running
        if _mem_alloc is not None:
            gc.collect()  # once a second at a quiet point: short pauses, no fragmentation build-up
            self.heap_peak = max(self.heap_peak, _mem_alloc())

    # -- the EV and the meter ----------------------------------------------------------------
    def _ev_changed(self):
        """The pilot state changed: react at once (within 100 ms of the change, IEC 61851-1)."""
        ev = self.ev
        self.log.event("pilot", state=ev.state, previous=ev.monitor.previous, fault=ev.fault, it=self.iteration)
        if ev.state == "C" or ev.state == "D":
            if self.session is not None and self._stopping is None and ev.offered_a:
                self._close()
            return
        self._open()  # B: the EV stopped asking; A, E, F: gone or in error
        if ev.fault is not None:
            self._react([self.faults.trip("pilot", "state %s%s" % (ev.state, ", no diode" if ev.fault == "diode" else ""))])
            return
        self.faults.gone("pilot")
        if self.session is None:
            return
        if ev.state == "B":
            if self._stopping is not None:
                self._finish(self._stopping[0])
        elif ev.state == "A":
            self._finish("EVDisconnected")

    def _init_meter(self):
        try:
            self.board.meter.init(self.s.board["meter"])
            self.meter_ok = True
            self.faults.gone("meter")
            self.metering.restart()   # time the meter was down is neither a sample gap nor energy
            if hasattr(self, "safety"):
                self.safety.meter_started()
        except OSError as e:
            self._meter_failed(e)

    def _meter_failed(self, err):
        """Safe state first: the contactor opens in this iteration, billing stops at the last read."""
        self.meter_ok = False
        self._open()
        self._react([self.faults.trip("meter", str(err))])

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

    def _open(self):
        if self.contactor.commanded:
            self.contactor.open()
            self.log.event("contactor", closed=False, it=self.iteration)

    # -- faults -----------------------------------------------------------------------------
    def _check_faults(self):
        self._react(self.safety.check(self.session is not None, self.temp_c, self.freq_chz))
        for f in self.faults.clearable():
            if f.kind == "meter":
                self._init_meter()          # retry: a working chip clears the fault
                if not self.meter_ok:
                    continue
            self.faults.clear(f.kind)
            self._fault_event(f, "cleared")
        s = self.session
        if s is not None and self.ev.offered_a:   # a pilot EV that never asks (state B) counts too
            now = self.clock.ticks_ms()
            if self.metering.i_max_ma > _DRAWING_MA:
                self._drawing_at = now
            elif not self._not_charging_told and \
                    self.clock.ticks_diff(now, self._drawing_at) > self.s.ev_idle_report_s * 1000:
                self._not_charging_told = True     # a battery-side matter, not a station fault
                self._fault_event(None, "notice", info="ev_not_charging",
                                  detail="authorized and plugged, no current for %d s" % self.s.ev_idle_report_s)

    def _react(self, new):
        """New faults: the safe state in this iteration (emergency) or via a soft stop, then report."""
        for f in new:
            if f is None:
                continue
            if f.emergency:
                self._open()
            self.log.event("fault", code=f.code, kind=f.kind, detail=f.detail, emergency=f.emergency,
                           latched=f.latched, trips=f.trips, it=self.iteration)
            f.samples = self._forensics()
            tx = self.session.tx_id if self.session is not None else None
            if tx is not None and f.stop_reason is not None:
                self._stop(f.stop_reason, emergency=f.emergency)
            self._fault_event(f, "raised", tx_id=tx)   # an emergency ended the session: still name it
            self.state.values["faults"] = self.faults.persist()
            self.state.values["cycles"] = self.contactor.cycles
            self.state.save()

    def _forensics(self):
        """The last samples before the trip, frozen: [ms before, U cV, I mA, P W per phase…]."""
        r = self.metering.ring
        n = min(r.count, self.s.forensics_samples)
        t0 = r.t[r.index(0)] if n else 0
        out = []
        for age in range(n - 1, -1, -1):
            i = r.index(age)
            b = 3 * i
            out.append([self.clock.ticks_diff(r.t[i], t0)] + list(r.u[b:b + 3]) + list(r.i[b:b + 3])
                       + list(r.p[b:b + 3]))
        return out

    def _fault_event(self, f, event, **extra):
        n = self.state.next("fault")
        rec = {"msg_id": "f-%d" % n, "event": event, "ts": self._ts(),
               "tx_id": self.session.tx_id if self.session is not None else None}
        if f is not None:
            rec.update({"code": f.code, "kind": f.kind, "stop_reason": f.stop_reason, "detail": f.detail,
                        "latched": f.latched, "trips": f.trips})
            if event == "raised":
                rec["samples"] = f.samples
        rec.update(extra)
        self._record(rec)
        self.outbox.put("fault", json.dumps(rec, separators=COMPACT), rec["msg_id"], "fault")
        if event != "raised":
            self.log.event("fault_" + event, code=rec.get("code"), info=rec.get("info"))

    def _internal_error(self, e):
        self._open()
        print_exception(e)
        if self.session is not None:
            try:
                self._finish("Other")
            except Exception as e2:  # noqa: BLE001 - the journal still holds it: closed at next boot
                print_exception(e2)
                self.session = None
        self._react([self.faults.trip("internal", "%s: %s" % (type(e).__name__, e))])

    def clear_fault(self):
        """A technician's reset of latched faults (REPL tech.clear_fault(), MQTT cmd/clear_fault)."""
        latched = [f for f in self.faults.active.values() if f.latched]
        kinds = self.faults.clear_latched()
        for f in latched:
            if f.kind not in self.faults.active:   # gone already: cleared now (the rest when gone)
                self._fault_event(f, "cleared")
        self.state.values["faults"] = self.faults.persist()
        self.state.save()
        self.log.event("fault_reset", kinds=kinds)
        return kinds

    # -- cards ------------------------------------------------------------------------------
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
                self._stop("Local")
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
        return self.faults.blocking() is not None or self.ev.fault is not None

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

    # -- sessions ---------------------------------------------------------------------------
    def _follow_ev(self):
        ev = self.ev
        s = self.session
        now = self.clock.ticks_ms()
        if s is None or self.metering.i_max_ma > _DRAWING_MA:
            self._drawing_at = now
        if s is not None:
            if not ev.plugged:
                self._stop("EVDisconnected", emergency=True)
            elif s.max_wh is not None and self.metering.forward.wh - s.meter_start_wh >= s.max_wh:
                self._stop("EnergyLimitReached")
            elif self._stopping is not None and self.clock.ticks_diff(now, self._stopping[1]) >= 0:
                self._finish(self._stopping[0])   # the EV did not stop in time: open anyway
            elif self.s.idle_end_s and self.clock.ticks_diff(now, self._drawing_at) > self.s.idle_end_s * 1000:
                self._stop("StoppedByEV")          # boards that cannot see the plug: no draw for long
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
        if s is None or self._stopping is not None or self._unavailable() or \
                s.offpeak_only and not self.s.offpeak_now(self.clock.time()):
            amps = 0   # off-peak-only drivers wait (SuspendedEVSE) until the site's off-peak hours
        else:
            amps = self.limits.offer_a(self._now(), self._session_utc, s.max_current_a, self.temp_c)
        old = self.ev.offered_a
        if amps != old:
            if amps < old:   # the EV may keep drawing the old offer for 5 s
                self._offer_high = old
                self._offer_high_until = self.clock.ticks_add(self.clock.ticks_ms(), _FOLLOW_MS)
            self.ev.offer(amps)
            self.log.event("offer", amps=self.ev.offered_a, limit=self.limits.reason)

    def _record(self, rec):
        if not self.sync.connected:
            rec["offline"] = True
        if rec["ts"] is None and "boot" not in rec:   # made before the wall clock was known
            rec["boot"] = self.journal.boot
            rec["uptime_s"] = self.time.uptime_s()
        return rec

    def _rewrite_waiting(self, marker, change):
        """Rewrite the waiting outbox records whose payload holds marker and that change(rec)
        altered (in place, True); returns how many were rewritten."""
        n = 0
        for mid in self.outbox.pending():
            raw = self.outbox.payload(mid)
            if raw is None or marker not in raw:
                continue
            rec = json.loads(raw)
            if isinstance(rec, dict) and change(rec):
                self.outbox.replace(mid, json.dumps(rec, separators=COMPACT))
                n += 1
        return n

    def _now(self):
        """UTC seconds; until the wall clock is known seconds since boot (durations stay right)."""
        return self.clock.time() if self.time.synced else self.time.uptime_s()

    def _ts(self):
        """The ISO time of now for a record, None until the wall clock is known."""
        return iso(self.clock.time()) if self.time.synced else None

    def _restamp(self):
        """The wall clock just became known: this boot's waiting records and the open session get real
        times (UTC = uptime_s + shift). Earlier boots' uptimes relate to nothing: those stay as they are."""
        shift = self.time.shift()
        boot = self.journal.boot

        def restamp(rec):
            if rec.get("ts") is not None or rec.get("boot") != boot or "sig" in rec \
                    or not isinstance(rec.get("uptime_s"), int):
                return False   # signed records keep what was signed: boot + uptime_s tell the time
            _shift(rec, shift)
            return True

        n = self._rewrite_waiting(b"uptime_s", restamp)
        s = self.session
        if s is not None and s.started_at is None:
            self._session_utc += shift
            s.started_at = iso(self._session_utc)
            self._periods.rebase(shift)
            if self._aligned_slot is not None:
                self._aligned_slot = self.clock.time() // self.s.meter_aligned_s
        self.log.event("time_synced", restamped=n, shift_s=shift)

    def _start(self, d):
        self.metering.read_energy()  # the start reading includes everything counted so far
        tx = self.state.next_tx()
        m = self.metering.forward
        self._session_utc = self._now()
        self.session = s = Session(tx, d, self._ts(), m.wh, self.tariff.id,
                                   None if self.time.synced else self._session_utc)
        s.tariff = self.tariff       # the session keeps the tariff valid when it started
        self._periods = PeriodBuilder(self.tariff, self.s.tz, self._session_utc)
        self.authorized = None
        self._finishing = False
        self._not_charging_told = False
        self._integral0 = self.metering.start_session()
        if self._updated is not None:
            self._updated.restart(self.clock.ticks_ms())
        self._aligned_slot = self.clock.time() // self.s.meter_aligned_s if self.s.meter_aligned_s else None
        rec = self._record(s.started())
        rec["max_wh"] = s.max_wh
        rec["group"] = s.group
        rec["start_utc"] = self._session_utc
        self.journal.session_started(rec)
        self.log.event("session_start", tx_id=tx, token=d.token, auth=d.method, meter_wh=m.wh)
        self._apply_offer()
        if not self.ev.has_pilot:
            self._close()   # no pilot: the EV cannot ask, power is simply made available

    def _checkpoint(self):
        s = self.session
        if s is None:
            return
        m = self.metering.forward
        t = self._now()
        if self._updated is not None and self._updated.due(self.clock.ticks_ms()):
            rec = self._record(s.updated(self._ts(), m.wh))
            self.journal.checkpoint(s.tx_id, m.wh, t, s.seq, m.rem, rec)
        elif self.journal.checkpoint_due(m.wh, t):
            self.journal.checkpoint(s.tx_id, m.wh, t, s.seq, m.rem)

    def _stop(self, reason, emergency=False):
        """End the session; with a pilot, first withdraw the offer and let the EV stop drawing."""
        if self._stopping is not None and not emergency:
            return
        if emergency or not self.ev.has_pilot or not self.contactor.commanded or not self.s.soft_stop_ms:
            self._finish(reason)
            return
        self.ev.offer(0)
        self._stopping = (reason, self.clock.ticks_add(self.clock.ticks_ms(), self.s.soft_stop_ms))
        self.log.event("stopping", tx_id=self.session.tx_id, reason=reason)

    def _finish(self, reason):
        s = self.session
        self._stopping = None
        self._open()
        if self.meter_ok:
            try:
                self.metering.read_energy()  # what the chip counted up to the opening
            except OSError as e:
                self._meter_failed(e)
        m = self.metering
        m.end_session()
        stop_wh = m.forward.wh
        energy = stop_wh - s.meter_start_wh
        now = self._now()
        at = self._ts()
        pb, self._periods = self._periods, None
        try:
            integral = m.integral_wh - self._integral0
            tolerance = max(energy * self.s.crosscheck_pct // 100, self.s.crosscheck_min_wh)
            periods = pb.finish(now, energy)
            cost = s.tariff.price_cdr(periods, self._session_utc, now, self.s.tz)
            rec = s.ended(at, stop_wh, reason, cost, charging_periods=periods, parking_s=pb.parking_s,
                          profile=m.profile.record(), integral_wh=integral,
                          energy_mismatch=abs(energy - integral) > tolerance)
        except Exception as e:  # noqa: BLE001 - out of memory, a bug: the bill must still close
            print_exception(e)
            cost = s.tariff.price(energy, self._session_utc, max(0, now - self._session_utc), self.s.tz)
            rec = s.ended(at, stop_wh, reason, cost, detail="record reduced: %s" % type(e).__name__)
        self._close_session(s, self._record(rec), energy, cost, reason)

    def _close_session(self, s, rec, energy, cost, reason):
        v = self.state.values
        if self.chain is not None:
            rec = self.chain.sign(rec)   # last: every field is set; tamper evidence for the backend
            v["chain_prev"], v["chain_n"] = self.chain.prev_hash, self.chain.n
        # saved before the END record: a cut between the two finds the session open and the register
        # where it was, never the register of the session's start (it only goes up)
        v["meter_wh"], v["meter_rem"] = self.metering.forward.wh, self.metering.forward.rem
        v["cycles"] = self.contactor.cycles
        self.state.save()
        self.journal.session_ended(s.tx_id, rec)
        self.revenue.add(self.s.tz.local(self.clock.time())[:3], energy, cost["total_excl_vat_minor"],
                         cost["total_incl_vat_minor"], cost["currency"])
        self._publish_stats()
        self.session = None
        self.last_tx = (s.tx_id, s.token)
        self._finishing = self.ev.knows_plug and self.ev.plugged
        self.log.event("session_end", tx_id=s.tx_id, token=s.token, energy_wh=energy, reason=reason, cost=cost)
        self._apply_offer()

    def recover(self, boot):
        """At boot: a session open at a power cut is closed with PowerLoss; the record says how much
        energy may be missing (drawn after the last checkpoint, before the cut)."""
        st = boot.get("session")
        if st is None:
            return
        cp = boot.get("checkpoint") or {}
        f = self.metering.forward
        wh = cp.get("energy_wh", st.get("meter_start_wh", 0))
        rem = cp.get("rem", 0) if isinstance(cp.get("rem"), int) else 0
        if (wh, rem) > (f.wh, f.rem):
            f.restore(wh, rem)
        counted = f.wh
        try:
            self.metering.read_energy()   # a meter that kept its power still holds the last counts
        except OSError as e:
            self._meter_failed(e)
        last_t = cp.get("t", 0)
        j, p = self.journal, self.s.max_power_w
        uncertain = max(j.every_wh, p * j.min_s // 3600)   # no checkpoint is due before both are passed
        if last_t and self.clock.time() > last_t:
            uncertain = min(uncertain, p * (self.clock.time() - last_t) // 3600)
        s = Session.resume(st, cp.get("seq", 1))
        energy = f.wh - s.meter_start_wh
        start_utc = st.get("start_utc", 0)
        same = synced(start_utc) == synced(last_t)   # both UTC, or both uptimes of that boot
        cost = self.tariff.price(energy, start_utc, max(0, last_t - start_utc) if last_t and same else 0, self.s.tz)
        ended_at = (iso(last_t) if synced(last_t) else None) if last_t else s.started_at
        rec = s.ended(ended_at, f.wh, "PowerLoss", cost, uncertain_wh=uncertain, recovered_wh=f.wh - counted)
        if ended_at is None:   # the session's boot and uptime: never re-stamped (see _restamp)
            rec["boot"], rec["uptime_s"] = st.get("boot"), last_t or st.get("uptime_s")
        rec = self._record(rec)
        self.log.event("recovered", tx_id=s.tx_id, energy_wh=energy, uncertain_wh=uncertain)
        self._close_session(s, rec, energy, cost, "PowerLoss")

    def shutdown(self, reason, why):
        """The loop was interrupted (Ctrl-C at the console, or an escaping error): safe state now."""
        self._open()
        tx = None
        if self.session is not None:
            tx = self.session.tx_id
            self._finish(reason)
        self.state.values["faults"] = self.faults.persist()
        self.state.save()
        self.connector, self.error_code = "Unavailable", None
        self.log.event("status", connector="Unavailable", error=None)
        self.log.event("shutdown", why=why, tx_id=tx)
        return tx

    # -- driver feedback --------------------------------------------------------------------
    def _check_button(self):
        pressed = self.board.button_pressed()
        if pressed and not self._button_was:
            self._report_problem("button", None)
        self._button_was = pressed

    def _report_problem(self, source, text):
        """"Report a problem": tied to the running session, or the last one."""
        s = self.session
        tx, token = (s.tx_id, s.token) if s is not None else (self.last_tx or (None, None))
        n = self.state.next("fb")
        rec = self._record({"msg_id": "fb-%d" % n, "ts": self._ts(), "tx_id": tx, "token": token,
                            "source": source, "text": text})
        self.outbox.put("feedback", json.dumps(rec, separators=COMPACT), rec["msg_id"], "feedback")
        self.log.event("feedback", source=source, tx_id=tx)
        self.feedback.flash("accepted")

    # -- commands from the backend (firmware/link/commands.py calls these) --------------------------
    def cmd_remote_start(self, p):
        if self.session is not None:
            raise ValueError("ConcurrentTx: a session is running")
        if self.authorized is not None or self.pending is not None:
            raise ValueError("ConcurrentTx: a driver is already authorized")
        if self._unavailable():
            raise ValueError("Unavailable: the charger is faulted")
        d = self.auth.remote_start(p, self.sync.connected)
        self._decided(d)
        if not d.pending and not d.accepted:
            raise ValueError("%s: %s" % (d.status, d.method))

    def cmd_remote_stop(self, p):
        s = self.session
        if s is None:
            raise ValueError("no session running")
        if p.get("tx_id") is not None and p.get("tx_id") != s.tx_id:
            raise ValueError("tx_id %r is not the running session (%d)" % (p.get("tx_id"), s.tx_id))
        self._stop("Remote")
        return {"tx_id": s.tx_id}

    def cmd_list_update(self, p):
        return self.auth.local_list.update(p)

    def cmd_purge(self, p):
        """Forget a pseudonym: list, cache, waiting requests, unsent records naming it, older journal records."""
        token = p.get("token")
        if isinstance(token, str):
            for d in (self.session, self.authorized, self.pending):
                if d is not None and d.token == token.lower():
                    raise ValueError("token: its session or authorization is in progress; stop it first")
        done = self.auth.purge(token, p.get("key"))
        token = done["token"]

        def anonymize(rec):
            if rec.get("token") != token:
                return False
            rec["token"] = None
            rec["purged"] = True
            return True

        n = self._rewrite_waiting(token.encode(), anonymize)
        if self.last_tx is not None and self.last_tx[1] == token:
            self.last_tx = (self.last_tx[0], None)   # a later problem report names the session, not the card
        done["outbox"] = n
        done["journal"] = self.journal.scrub()   # older records naming it leave the flash now
        return done

    def cmd_charging_profile(self, p):
        kind = p.get("kind")
        if kind not in KINDS:
            raise ValueError("kind must be one of %s" % ", ".join(KINDS))
        if p.get("profile") is None:
            self.limits.clear_profile(kind, p.get("stack_level"))
        else:
            self.limits.set_profile(kind, p.get("profile"))

    def cmd_report_problem(self, p):
        text = p.get("text")
        if text is not None and (not isinstance(text, str) or len(text) > _TEXT_MAX):
            raise ValueError("text must be a string of at most %d characters" % _TEXT_MAX)
        self._report_problem("app", text)

    def cmd_clear_fault(self, p):
        kinds = self.clear_fault()
        if not kinds:
            raise ValueError("no latched fault to clear")
        return {"cleared": kinds}

    def cmd_tariff(self, p):
        """A new tariff for new sessions: {"id", "version", "tariff": {OCPI Tariff}}; version must grow."""
        version = p.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version <= self.tariff_version:
            raise ValueError("version must be an integer above the current %d" % self.tariff_version)
        t = Tariff(p.get("tariff"))   # ValueError names the field: the old tariff stays
        write_atomic(self.data_dir + "/tariff.json", json.dumps({"version": version, "tariff": p["tariff"]}))
        self.tariff, self.tariff_version = t, version
        self.log.event("tariff", id=t.id, version=version, text=self.price_text())
        return {"tariff_id": t.id, "version": version}

    def _load_tariff(self):
        """The newest tariff: one received over MQTT (persisted) if any, else the config's."""
        try:
            with open(self.data_dir + "/tariff.json") as f:
                saved = jsonx.loads(f.read())
            return Tariff(saved["tariff"]), saved["version"]
        except OSError:
            return self.s.tariff, 0
        except (ValueError, KeyError, TypeError) as e:
            self.log.event("storage", file="tariff", error="unusable, config tariff used (%s)" % e)
            return self.s.tariff, 0

    def price_text(self):
        """The tariff's driver-facing text (OCPI tariff_alt_text), for the display and the REPL."""
        alt = self.tariff.alt_text or []
        return alt[0].get("text") if alt and isinstance(alt[0], dict) else None

    def _publish_stats(self):
        snap = self.revenue.snapshot()
        snap["ts"] = iso(self.clock.time())
        snap["contactor_cycles"] = self.contactor.cycles
        snap["boots"] = self.journal.boot
        self.sync.set_stats(json.dumps(snap))

    def cmd_update(self, p):
        if self.updater is None:
            raise ValueError("over-the-air updates are not set up on this charger")
        return self.updater.start(p)

    def backend_ack(self, payload):
        """End-to-end acknowledgements: those messages leave the persistent outbox."""
        self.outbox.ack(parse_ack(payload))
        if not self.outbox.pending():
            self.clock.outside(0)

    # -- status -----------------------------------------------------------------------------
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
            "i_ma": list(r.i[b:b + 3]), "p_w": m.p_w, "offered_a": self.ev.offered_a,
            "aligned": aligned}))

    def _update_status(self):
        f = self.faults.blocking()
        error = None
        if f is not None:
            status, error = "Faulted", f.code
        elif self.ev.fault is not None:
            status, error = "Faulted", "EVCommunicationError"
        else:
            status = self.ev.status(self.session is not None, self.contactor.commanded, self._finishing)
            if status == "Available" and (self.authorized is not None or self.pending is not None):
                status = "Preparing"
            if "reader" in self.faults.active:
                error = "ReaderFailure"
        if status != self.connector or error != self.error_code:
            self.connector, self.error_code = status, error
            self.sync.set_connector(status, error)
            self.log.event("status", connector=status, error=error)
        self.feedback.steady(_PATTERNS[status])
