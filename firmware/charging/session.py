"""A charging session and the records it sends upstream (MQTT contract v1, docs/mqtt.md).

Energy is the difference of two readings of the lifetime billing register (whole Wh), so
anyone can recompute it, and the cost from it, from the record alone. Before the wall clock is
known `started_at` is None and `start_uptime_s` says when, in seconds since boot (docs/journal.md).

    s = Session(7, decision, started_at="2026-03-02T07:55:15Z", meter_start_wh=1200, tariff_id="flat")
    rec = s.started(); ...; rec = s.ended(t2, 4850, "Local", tariff.price(3650))
"""


class Session:
    def __init__(self, tx_id, decision, started_at, meter_start_wh, tariff_id, start_uptime_s=None):
        self.tx_id = tx_id
        self.token = decision.token       # pseudonym under the current site key
        self.key = decision.key
        self.auth = decision.method
        self.group = decision.group
        self.max_current_a = decision.max_current_a
        self.max_wh = decision.max_wh
        self.offpeak_only = decision.offpeak_only
        self.started_at = started_at
        self.start_uptime_s = start_uptime_s
        self.meter_start_wh = meter_start_wh
        self.tariff_id = tariff_id
        self.seq = 0

    def _event(self, event, ts):
        rec = {"msg_id": "%d-%d" % (self.tx_id, self.seq), "tx_id": self.tx_id, "seq": self.seq,
               "event": event, "ts": ts, "token": self.token, "key": self.key}
        self.seq += 1
        return rec

    @classmethod
    def resume(cls, rec, seq):
        """The session a journal's `started` record describes (closing it after a power cut)."""
        s = object.__new__(cls)   # MicroPython has no cls.__new__
        s.tx_id = rec["tx_id"]
        s.token = rec["token"]
        s.key = rec.get("key", 1)
        s.auth = rec.get("auth")
        s.group = rec.get("group")
        s.max_current_a = None
        s.max_wh = rec.get("max_wh")
        s.offpeak_only = False
        s.started_at = rec["ts"]
        s.start_uptime_s = None   # an uptime of an earlier boot relates to nothing now
        s.meter_start_wh = rec["meter_start_wh"]
        s.tariff_id = rec.get("tariff_id")
        s.seq = max(seq, 1)
        return s

    def updated(self, ts, register_wh):
        """An intermediate event (droppable): how far the session got."""
        rec = self._event("updated", ts)
        rec["energy_wh"] = register_wh - self.meter_start_wh
        return rec

    def started(self):
        rec = self._event("started", self.started_at)
        rec["meter_start_wh"] = self.meter_start_wh
        rec["auth"] = self.auth
        rec["tariff_id"] = self.tariff_id
        return rec

    def ended(self, ended_at, meter_stop_wh, stop_reason, cost, **extra):
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
