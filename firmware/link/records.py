"""Time stamps of upstream records: UTC once the wall clock is known, boot + uptime_s until then.

One owner for "what time is it for a record": the controller, the fault reactions and the
session records all stamp through it, and it re-stamps this boot's waiting records (in the
outbox) when the wall clock becomes known (docs/journal.md).

    stamp = Stamp(clock, sync, journal, outbox, state.epoch())
    rec = stamp.record({"msg_id": "f-1", "ts": stamp.ts()}); ... if stamp.check(): stamp.restamp()

Every record names the data epoch (`ep`, firmware/app.py new_epoch) of the device's life: ids
(tx ids, msg_ids) start again after state.json and the journal are both lost, (ep, msg_id) never.
"""
import json

from firmware.core.timefmt import iso, parse_iso
from firmware.core.timesync import TimeSync
from firmware.storage.journal import COMPACT


def shift_record(rec, shift):
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


def rewrite_waiting(outbox, marker, change):
    """Rewrite the waiting outbox records whose payload holds marker and that change(rec) altered
    (in place, True); returns how many were rewritten."""
    n = 0
    for mid in outbox.pending():
        raw = outbox.payload(mid)
        if raw is None or marker not in raw:
            continue
        rec = json.loads(raw)
        if isinstance(rec, dict) and change(rec):
            outbox.replace(mid, json.dumps(rec, separators=COMPACT))
            n += 1
    return n


class Stamp:
    def __init__(self, clock, sync, journal, outbox, ep=0):
        self.clock = clock
        self.ep = ep
        self.time = TimeSync(clock)   # wall clock known yet? seconds since boot until it is
        self.sync = sync
        self.journal = journal
        self.outbox = outbox

    def now(self):
        """UTC seconds; until the wall clock is known seconds since boot (durations stay right)."""
        return self.clock.time() if self.time.synced else self.time.uptime_s()

    def ts(self):
        """The ISO time of now for a record, None until the wall clock is known."""
        return iso(self.clock.time()) if self.time.synced else None

    def boot_s(self):
        """Seconds since boot, always: a small int for what runs every second (a session's ticks)."""
        return self.time.uptime_s()

    def uptime_s(self):
        """Seconds since boot while the wall clock is unknown, None once it is (a session's start)."""
        return None if self.time.synced else self.time.uptime_s()

    def record(self, rec):
        """Name the data epoch; mark a record made offline, and one made before the wall clock was
        known (boot + uptime)."""
        rec["ep"] = self.ep
        if not self.sync.connected:
            rec["offline"] = True
        if rec["ts"] is None and "boot" not in rec:
            rec["boot"] = self.journal.boot
            rec["uptime_s"] = self.time.uptime_s()
        return rec

    def check(self):
        """True once, when the wall clock just became known (call every second)."""
        return self.time.check()

    def restamp(self):
        """This boot's waiting records get real times (UTC = uptime_s + shift); earlier boots' uptimes
        relate to nothing and stay. Returns (shift, records rewritten)."""
        shift = self.time.shift()
        boot = self.journal.boot

        def restamp(rec):
            if rec.get("ts") is not None or rec.get("boot") != boot or "sig" in rec \
                    or not isinstance(rec.get("uptime_s"), int):
                return False   # signed records keep what was signed: boot + uptime_s tell the time
            shift_record(rec, shift)
            return True

        return shift, rewrite_waiting(self.outbox, b"uptime_s", restamp)
