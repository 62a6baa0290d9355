"""A charging session: its life (tariff, charging periods, energy baseline, soft stop) and every
record it sends upstream (MQTT contract v1, docs/mqtt.md).

Energy is the difference of two readings of the lifetime billing register (whole Wh), so
anyone can recompute it, and the cost from it, from the record alone. Before the wall clock is
known `started_at` is None and `start_uptime_s` says when, in seconds since boot (docs/journal.md).
The controller decides when a session starts and stops; the session knows what it was.

    s = Session(7, decision, tariff, settings, utc, iso(utc), 1200, metering.start_session(), ticks)
    rec = s.started(stamp); ...; rec, cost = s.ended(ts, utc, 4850, "Local", integral_wh, profile)
"""
from firmware.billing.periods import PeriodBuilder
from firmware.core.log import print_exception
from firmware.core.timefmt import iso
from firmware.core.timesync import synced


class Session:
    def __init__(self, tx_id, decision, tariff, settings, start_utc, started_at, meter_start_wh, integral0,
                 now_ms, boot_s=0):
        self.tx_id = tx_id
        self.token = decision.token       # pseudonym under the current site key
        self.key = decision.key
        self.auth = decision.method
        self.group = decision.group
        self.max_current_a = decision.max_current_a
        self.max_wh = decision.max_wh
        self.offpeak_only = decision.offpeak_only
        self.s = settings
        self.tariff = tariff              # the tariff valid when the session started
        self.tariff_id = tariff.id
        self.start_utc = start_utc        # UTC seconds, or seconds since boot until the clock is known
        self.started_at = started_at
        self.start_uptime_s = None if started_at is not None else start_utc
        self.meter_start_wh = meter_start_wh
        self.integral0 = integral0        # the ∫P·dt mark the energy cross-check starts from
        self.periods = PeriodBuilder(tariff, settings.tz, start_utc)   # OCPI charging periods
        self.start_boot_s = boot_s        # seconds since boot at the start: tick() counts from it
        self.stopping = None              # (reason, deadline ms): the EV was asked to stop first
        self.drawing_at = now_ms          # when the EV last drew current
        self.idle_told = False            # "authorized, plugged, no current" reported once
        self.seq = 0

    def _event(self, event, ts):
        rec = {"msg_id": "%d-%d" % (self.tx_id, self.seq), "tx_id": self.tx_id, "seq": self.seq,
               "event": event, "ts": ts, "token": self.token, "key": self.key}
        self.seq += 1
        return rec

    def energy_wh(self, register_wh):
        return register_wh - self.meter_start_wh

    def soft_stop(self, reason, deadline_ms):
        """The offer was withdrawn: the session ends with reason when the EV stops, or at the deadline."""
        self.stopping = (reason, deadline_ms)

    def drew(self, now_ms):
        self.drawing_at = now_ms

    def idle_reported(self):
        """True the first time only: "plugged, no current" is reported once per session."""
        told, self.idle_told = self.idle_told, True
        return not told

    def finishing(self):
        """The session is being closed: a soft stop in progress is over."""
        self.stopping = None

    def tick(self, boot_s, register_wh, i_sum_ma, p_w, charging):
        """Once a second: account the time since the last tick into the charging periods (boot_s:
        seconds since boot, a small int whether or not the wall clock is known)."""
        self.periods.update(self.since_s(boot_s), register_wh - self.meter_start_wh, i_sum_ma, p_w,
                            charging)

    def since_s(self, boot_s):
        """Seconds since the start, at boot_s seconds since boot."""
        return boot_s - self.start_boot_s

    def rebase(self, shift):
        """The wall clock became known: the start moves from seconds since boot to UTC."""
        self.start_utc += shift
        self.started_at = iso(self.start_utc)
        self.periods.rebase(shift)

    def started(self, stamp):
        """The `started` record, stamped (offline, boot + uptime) like every record."""
        rec = self._event("started", self.started_at)
        rec["meter_start_wh"] = self.meter_start_wh
        rec["auth"] = self.auth
        rec["tariff_id"] = self.tariff_id
        stamp.record(rec)
        rec["max_wh"] = self.max_wh
        rec["group"] = self.group
        rec["start_utc"] = self.start_utc
        return rec

    def updated(self, ts, register_wh):
        """An intermediate event (droppable): how far the session got."""
        rec = self._event("updated", ts)
        rec["meter_start_wh"] = self.meter_start_wh   # docs/mqtt.md: every event carries it
        rec["energy_wh"] = register_wh - self.meter_start_wh
        return rec

    def checkpoint(self, journal, register_wh, rem, utc, rec=None, gasp=False):
        """Journal how far the session got (the register's whole Wh and sub-Wh counts), with an
        `updated` record to send if rec; gasp: the last gasp's (Journal.checkpoint)."""
        journal.checkpoint(self.tx_id, register_wh, utc, self.seq, rem, rec, gasp)

    def ended(self, at, utc, stop_wh, reason, integral_wh, profile):
        """The `ended` record and its cost; if building it fails (out of memory, a bug) a reduced
        one priced from energy and duration alone: the bill must still close."""
        energy = stop_wh - self.meter_start_wh
        pb, self.periods = self.periods, None
        try:
            integral = integral_wh - self.integral0
            tolerance = max(energy * self.s.crosscheck_pct // 100, self.s.crosscheck_min_wh)
            periods = pb.finish(utc, energy)
            cost = self.tariff.price_cdr(periods, self.start_utc, utc, self.s.tz)
            rec = self._ended(at, stop_wh, reason, cost, charging_periods=periods, parking_s=pb.parking_s,
                              profile=profile.record(), integral_wh=integral,
                              energy_mismatch=abs(energy - integral) > tolerance)
        except Exception as e:  # noqa: BLE001 - out of memory, a bug: the bill must still close
            print_exception(e)
            cost = self.tariff.price(energy, self.start_utc, max(0, utc - self.start_utc), self.s.tz)
            rec = self._ended(at, stop_wh, reason, cost, detail="record reduced: %s" % type(e).__name__)
        return rec, cost

    def _ended(self, ended_at, meter_stop_wh, stop_reason, cost, **extra):
        rec = self._event("ended", ended_at)
        rec["started_at"] = self.started_at
        if self.started_at is None and self.start_uptime_s is not None:
            rec["started_uptime_s"] = self.start_uptime_s
        rec["ended_at"] = ended_at
        rec["meter_start_wh"] = self.meter_start_wh
        rec["meter_stop_wh"] = meter_stop_wh
        rec["energy_wh"] = meter_stop_wh - self.meter_start_wh
        rec["stop_reason"] = stop_reason
        rec["auth"] = self.auth
        rec["tariff_id"] = self.tariff_id
        rec["cost"] = cost
        rec.update(extra)
        return rec

    @classmethod
    def recovered(cls, st, cp, register_wh, tariff, tz, **extra):
        """At boot, the session a journal's `started` record (st) and last checkpoint (cp) describe,
        closed with PowerLoss: (session, unstamped `ended` record, cost). Priced with `tariff` from
        the energy and the time up to the last checkpoint, when both times are of one clock."""
        s = object.__new__(cls)   # MicroPython has no cls.__new__
        s.tx_id = st["tx_id"]
        s.token = st["token"]
        s.key = st.get("key", 1)
        s.auth = st.get("auth")
        s.group = st.get("group")
        s.max_current_a = None
        s.max_wh = st.get("max_wh")
        s.offpeak_only = False
        s.started_at = st["ts"]
        s.start_uptime_s = None   # an uptime of an earlier boot relates to nothing now
        s.meter_start_wh = st["meter_start_wh"]
        s.tariff_id = st.get("tariff_id")
        s.seq = max(cp.get("seq", 1), 1)
        s.stopping = None
        last_t = cp.get("t", 0)
        start_utc = st.get("start_utc", 0)
        same = synced(start_utc) == synced(last_t)   # both UTC, or both uptimes of that boot
        energy = register_wh - s.meter_start_wh
        cost = tariff.price(energy, start_utc, max(0, last_t - start_utc) if last_t and same else 0, tz)
        ended_at = (iso(last_t) if synced(last_t) else None) if last_t else s.started_at
        rec = s._ended(ended_at, register_wh, "PowerLoss", cost, **extra)
        if ended_at is None:   # the session's boot and uptime: never re-stamped (see Stamp.restamp)
            rec["boot"], rec["uptime_s"] = st.get("boot"), last_t or st.get("uptime_s")
        return s, rec, cost
