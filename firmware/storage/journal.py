"""Journal: the charging session on the record log, so a boot after a power cut can close it.

BOOT, START, CHECKPOINT and END records on a RecordLog (firmware/storage/recordlog.py); a session
event and its outbox message are written in one record, so a power cut cannot leave a session
ended without its `ended` message or a `started` message without a session to close. recover()
rebuilds the open session, its last checkpoint and the outbox at boot. See docs/journal.md.

    log = RecordLog("data/journal"); ob = Outbox(64, log, clock); j = Journal(log, ob)
    log.attach(j, ob); boot = j.recover()
    j.session_started(rec); j.checkpoint(tx, wh, t, seq); j.session_ended(tx, ended_rec)
"""
import json
import struct

from micropython import const

from firmware.storage.jsonpack import dump, unpack
from firmware.storage.recordlog import DONE, HAS_MSG, KEEP, TYPE, UNREADABLE, message_at

# record types (the low 6 bits of the type byte; 5 and 6 are the outbox's)
BOOT = const(1)        # body: u32 boot count [, u32 data epoch] (older firmware: the count alone)
START = const(2)       # body: message section whose payload is the `started` record (the state)
CHECKPOINT = const(3)  # body: [message section] u32 tx_id, u32 energy_wh, u32 t, u32 seq, u16 rem [u8 flags]
END = const(4)         # body: [message section] u32 tx_id

_CP_BODY = const(18)   # a checkpoint's fields after its message section (the flags byte is optional)
_GASP = const(1)       # checkpoint flag: written by the last gasp, as the supply failed
_TOPIC = "session"
COMPACT = (",", ":")   # JSON separators of every queued message: flash bytes are the budget


def read_session(rtype, body):
    """What a session record says: START the state (the `started` record), CHECKPOINT (tx_id,
    energy_wh, t, seq, rem, flags), END the tx_id, BOOT the boot count; None for another client's record.
    Raises one of recordlog.UNREADABLE if the body is not what its type says (for recover, tech)."""
    base = rtype & TYPE
    if not BOOT <= base <= END:
        return None
    a = 0
    if rtype & HAS_MSG:
        p, a = message_at(body)[3:]
        if base == START:
            state = json.loads(unpack(body[p:a]))
            _tx_of(state)
            return state
    elif base == START:
        raise ValueError("journal: a start without its state")
    if len(body) < a + (_CP_BODY if base == CHECKPOINT else 4):
        raise ValueError("journal: short record")
    if base == CHECKPOINT:   # a checkpoint without the flags byte (all before the last gasp had one) has none
        return struct.unpack_from("<IIIIH", body, a) + (body[a + _CP_BODY] if len(body) > a + _CP_BODY else 0,)
    return struct.unpack_from("<I", body, a)[0]


def _boot_ep(body):
    """The data epoch a BOOT record names, None if it names none (older firmware)."""
    return struct.unpack_from("<I", body, 4)[0] if len(body) >= 8 else None


def _ended_of(body):
    """The `ended` record an END record carries (boot only: it allocates), None if unreadable."""
    p, a = message_at(body)[3:]
    try:
        rec = json.loads(unpack(body[p:a]))
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _tx_of(rec):
    """The integer tx_id of a session record (ValueError names the field if it is missing)."""
    tx = rec.get("tx_id") if isinstance(rec, dict) else None
    if not isinstance(tx, int) or isinstance(tx, bool) or not 0 <= tx <= 0xFFFFFFFF:
        raise ValueError("journal: the session record needs an integer tx_id")
    return tx


def _u32(name, v):
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFFFFFF:
        raise ValueError("journal: %s must be an integer 0..2**32-1, got %r" % (name, v))
    return v


class Journal:
    def __init__(self, log, outbox, every_wh=250, every_s=300, min_s=150, reserve=None):
        if every_wh < 1 or not 1 <= min_s <= every_s:
            raise ValueError("journal: need every_wh >= 1 and 1 <= min_s <= every_s")
        self.log = log
        self.outbox = outbox   # session messages go into its queue, carried by session records
        self.every_wh = every_wh
        self.every_s = every_s
        self.min_s = min_s
        self.reserve = reserve   # flash kept back for START and END records (storage/reserve.py)
        self.boot = 0
        self.ep = None   # the data epoch the latest BOOT record names (app.py sets it: set_epoch)
        self._open = None
        self._start_seq = self._cp_seq = self._boot_seq = -1
        self._cp = self._base = None

    @property
    def full(self):
        """The last write failed (no space, or live records fill every segment)."""
        return self.log.full

    @property
    def error(self):
        """errno of the last failed write, 0 after a good one."""
        return self.log.error

    # -- session API ------------------------------------------------------------------------
    def recover(self):
        """Scan once at boot: rebuild the open session, the counters and the outbox; count this boot."""
        log, ob = self.log, self.outbox
        if self not in log.clients or ob not in log.clients:   # compaction would drop their records
            raise ValueError("journal: attach the journal and its outbox to the record log before recover()")
        ob.reset()
        log.open()
        records = 0
        opened = cp = None
        start_seq = cp_seq = boot_seq = -1
        boot, ep = 0, None
        top_tx, meter = 0, (0, 0)   # the highest tx id and meter register seen: a lost state.json is rebuilt from them
        last_end, end_seq = None, -1   # the latest `ended` record: its signing chain fields
        for rtype, seq, body, loc in log.records():
            try:
                v = read_session(rtype, body)
                if not ob.load(rtype, seq, body, loc, v is not None):
                    raise ValueError("unknown type")
            except UNREADABLE:
                log.damaged(loc)  # CRC-valid yet not understood: skip it, keep going
                continue
            base = rtype & TYPE
            if base == START:
                opened, start_seq = v, seq
                top_tx = max(top_tx, _tx_of(v))
                w = v.get("meter_start_wh")
                if isinstance(w, int) and not isinstance(w, bool) and (w, 0) > meter:
                    meter = (w, 0)
            elif base == CHECKPOINT:
                top_tx = max(top_tx, v[0])
                if (v[1], v[4]) > meter:
                    meter = (v[1], v[4])
                if seq > cp_seq:
                    cp, cp_seq = v, seq
            elif base == END:
                top_tx = max(top_tx, v)
                if rtype & HAS_MSG and seq > end_seq:
                    last_end, end_seq = _ended_of(body), seq
                    w = last_end.get("meter_stop_wh") if last_end is not None else None
                    if isinstance(w, int) and not isinstance(w, bool) and (w, 0) > meter:
                        meter = (w, 0)
                if opened is not None and v == _tx_of(opened):
                    opened, start_seq = None, -1
            elif base == BOOT and seq > boot_seq:
                boot, boot_seq, ep = v, seq, _boot_ep(body)
            records += 1
        self._open = opened
        self._start_seq = start_seq
        self._cp = self._cp_seq = self._base = None
        if opened is not None and cp is not None and cp[0] == _tx_of(opened):
            self._cp = {"tx_id": cp[0], "energy_wh": cp[1], "t": cp[2], "seq": cp[3], "rem": cp[4],
                        "gasp": bool(cp[5] & _GASP)}
            self._cp_seq = cp_seq
        self.boot = boot + 1
        self._boot_seq = boot_seq
        self.ep = ep
        ob.loaded()
        seq = self._write_boot()
        return {"session": opened, "checkpoint": self._cp, "boot": self.boot, "bad": log.bad, "lost": log.lost,
                "records": records, "top_tx": top_tx, "meter": meter, "last_end": last_end, "seq": seq, "ep": ep}

    def set_epoch(self, ep):
        """The data epoch of this life (app.py): a new BOOT record names it if the last one did not,
        so a boot that finds state.json lost keeps the epoch (firmware/app.py storage_troubles)."""
        if ep != self.ep:
            self.ep = ep
            self._write_boot()

    def _write_boot(self):
        seq = self.log.next_seq()
        body = struct.pack("<I", self.boot) if self.ep is None else struct.pack("<II", self.boot, self.ep)
        if self.log.append(BOOT, seq, body) is not None:
            self._boot_seq = seq
        return seq

    def session_started(self, rec):
        """Record a new session; `rec` (the `started` record, with tx_id and msg_id) is also queued."""
        self._ready()
        _tx_of(rec)
        if self._open is not None:
            raise ValueError("journal: session %d is still open" % _tx_of(self._open))
        plan = self._plan("started", rec, b"")
        seq = self.log.next_seq()
        self._open, self._start_seq = rec, seq
        self._cp = self._cp_seq = self._base = None
        return self._emit(START, seq, b"", "started", plan, 1) is not None

    def checkpoint_due(self, energy_wh, now_s):
        """Since the last checkpoint: every_wh more energy (but not within min_s), or every_s seconds.

        now_s: seconds on a clock of the caller's (the controller's: since boot, a small int), not
        the records' time. min_s caps the rate whatever the power, so a session's flash writes stay
        in budget; a clock step in either direction counts as time passed.
        """
        if self._open is None:
            return False
        if self._base is None:
            self._base = (energy_wh, now_s)  # the first call after a start or checkpoint: the reference
            return False
        wh, t0 = self._base
        dt = abs(now_s - t0)
        return dt >= self.every_s or (dt >= self.min_s and energy_wh - wh >= self.every_wh)

    def checkpoint(self, tx_id, energy_wh, t, seq=0, rem=0, rec=None, gasp=False):
        """Record how far the open session got (rem: the register's sub-Wh counts); `rec` (an
        `updated` record) is queued with it. gasp: written as the supply failed, with the register
        read just now (recovery then bounds what is missing by the board's hold-up time)."""
        self._ready()
        self._check_open(tx_id)
        if not isinstance(rem, int) or isinstance(rem, bool) or not 0 <= rem <= 0xFFFF:
            raise ValueError("journal: rem must be an integer 0..65535, got %r" % (rem,))
        data = struct.pack("<IIIIH", tx_id, _u32("energy_wh", energy_wh), _u32("t", t), _u32("seq", seq), rem)
        if gasp:
            data += struct.pack("<B", _GASP)
        plan = self._plan("updated", rec, data)
        self._cp = {"tx_id": tx_id, "energy_wh": energy_wh, "t": t, "seq": seq, "rem": rem, "gasp": bool(gasp)}
        self._base = None   # checkpoint_due() counts again from its next call
        n = self.log.next_seq()
        if self._emit(CHECKPOINT, n, data, "updated", plan, 0) is None:
            return False  # the previous checkpoint stays the one a reboot finds
        self._cp_seq = n
        return True

    def session_ended(self, tx_id, rec=None):
        """Close the open session; `rec` (the `ended` record) is queued in the same record."""
        self._ready()
        self._check_open(tx_id)
        data = struct.pack("<I", tx_id)
        plan = self._plan("ended", rec, data)
        self._open = None
        self._start_seq = -1
        self._cp = self._cp_seq = self._base = None
        return self._emit(END, self.log.next_seq(), data, "ended", plan, 1) is not None

    @property
    def session(self):
        """The open session's `started` record, or None."""
        return self._open

    def scrub(self):
        """Rewrite the log without the records no longer needed (see RecordLog.scrub); False if a write failed."""
        return self.log.scrub()

    # -- record log client ------------------------------------------------------------------
    def live(self, rtype, seq):
        """Compaction: KEEP the open session's START, its latest CHECKPOINT and the latest BOOT."""
        base = rtype & TYPE
        if ((base == START and seq == self._start_seq) or (base == CHECKPOINT and seq == self._cp_seq)
                or (base == BOOT and seq == self._boot_seq)):
            return KEEP
        return 0

    def moved(self, seg, moves):
        """Copies of session records need no bookkeeping: the next boot scan finds them."""

    def shed(self, tier):
        """Session records are never dropped to make room."""
        return False

    # -- records with messages --------------------------------------------------------------
    def _plan(self, kind, rec, data):
        """Serialize rec as a message section into the log's record stream, checked before anything
        changes: (msg_id, payload length, section end, stream); None without rec."""
        if rec is None:
            return None
        mid = rec.get("msg_id") if isinstance(rec, dict) else None
        if not isinstance(mid, str) or not mid:
            raise ValueError("journal: the %s record needs a msg_id string" % kind)
        k, i, t = kind.encode(), mid.encode(), _TOPIC.encode()
        if len(i) > 255 or "\n" in mid:
            raise ValueError("outbox: kind, msg_id and topic must be <= 255 bytes, msg_id without newline")
        b = self.log.begin()
        h = b.tell()
        b.write(struct.pack("<BBBH", len(k), len(i), len(t), 0))
        b.write(k)
        b.write(i)
        b.write(t)
        p0 = b.tell()
        plain = dump(rec, b)   # packed JSON: the common keys as one or two bytes each
        end = b.tell()
        lp = end - p0
        top = self.log.max_record
        if end - h + len(data) > top or plain > top:
            raise ValueError("journal: the %s record (%d bytes) exceeds max_record"
                             % (kind, max(plain, end - h + len(data))))
        b.seek(h + 3)
        b.write(struct.pack("<H", lp))
        return mid, lp, end, b

    def _emit(self, base, seq, data, kind, plan, tier):
        """Append one record, carrying the planned message when the outbox takes it."""
        ob, log = self.outbox, self.log
        queued = plan is not None and ob.admit(plan[0], kind, plan[1])
        if plan is not None and (queued or base == START):  # a start keeps its state either way
            rtype = base | (HAS_MSG if queued else HAS_MSG | DONE)
            b = plan[3]
            b.seek(plan[2])   # the record so far: blank header, message section
        else:
            rtype = base
            b = log.begin()
        b.write(data)
        end = b.tell()
        loc = log.finish(rtype, seq, tier)
        if loc is None and base != CHECKPOINT and log.error and self.reserve is not None \
                and self.reserve.release():   # a session's start or end: the room kept for it
            b.seek(end)   # finish() left the stream at its header
            loc = log.finish(rtype, seq, tier)
        if queued:  # an end that found no room is written with its message once there is room
            ram = None
            if loc is None:   # flash refused it: the payload waits in RAM (rare: copy it out)
                b.seek(plan[2] - plan[1])
                ram = unpack(b.read(plan[1]))
            ob.queue(seq, kind, plan[0], _TOPIC, loc, plan[1], ram, (END, data[-4:]) if base == END else None)
        return loc

    def _ready(self):
        if not self.boot:
            raise ValueError("journal: call recover() once before writing")

    def _check_open(self, tx_id):
        if self._open is None or _tx_of(self._open) != tx_id:
            raise ValueError("journal: tx_id %r is not the open session" % (tx_id,))
