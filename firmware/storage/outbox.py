"""Outbox: messages for the backend, kept in order on the record log until the backend acknowledges them.

A message leaves only when the backend's `ack` names its msg_id: a broker PUBACK says nothing
about the backend. Unacknowledged messages are offered again with exponential backoff and
jitter. Under pressure `updated`, `meter` and `feedback` messages go first, other kinds (`fault`)
next; `started` and `ended` are never dropped (if the flash cannot take them they wait in RAM: see
`ram_only`). Low-value kinds (`feedback`: 100 problem reports while the backend is away) also have
their own quota, max_msgs // 8: over it the oldest of them goes, so they never evict a session or
fault record, nor every meter value.

    ob = Outbox(64, log, clock)   # log: a RecordLog (wired with the journal: journal.py), None: RAM only
    m = ob.next_due(now)     # (topic, payload bytes, msg_id) or None; publish it, then ob.sent(m[2], now)
"""
import random

from micropython import const

from firmware.storage.recordlog import DONE, HAS_MSG, KEEP_MESSAGE, MESSAGE, TYPE, message_at, message_section

# an entry is a list (smaller than an object on MicroPython): these are its fields
_SEQ = const(0)    # order number: the log sequence of the record that first held it
_ID = const(1)
_KIND = const(2)
_TOPIC = const(3)
_SEG = const(4)    # segment holding the record, None while it is only in RAM
_OFF = const(5)
_SIZE = const(6)   # payload bytes
_RAM = const(7)    # the payload when it is not on flash
_TRIES = const(8)  # publications so far
_DUE = const(9)    # ticks_ms of the next try (when _TRIES > 0)
_REDO = const(10)  # (record type, data) to write it with once flash has room, if not a plain message
_MAX_SHIFT = const(16)
_ACK_BYTES = const(256)  # ACK records stay small: the boot scan reads each one whole
_NAMES = const(16)
ACK = const(6)           # record type: msg_ids no longer pending, joined by "\n"

_CHEAP = ("updated", "meter", "feedback")  # intermediate values and driver reports: dropped first
_LOW = ("feedback",)           # low value, any number of them on request: a quota of their own
_KEEP = ("started", "ended")   # never dropped


def tier(kind):
    """0: dropped first, 1: dropped when no tier 0 is left, 2: never dropped."""
    return 0 if kind in _CHEAP else 2 if kind in _KEEP else 1


def read_ack(body):
    """The msg_ids an ACK record's body names (for the boot scan and readers such as tech)."""
    return str(body, "utf-8").split("\n")


def _jitter(n):
    return random.getrandbits(24) % n


class Outbox:
    def __init__(self, max_msgs=64, log=None, clock=None, max_bytes=None, retry_ms=5000,
                 retry_max_ms=300000, rand=_jitter):
        if max_msgs < 1:
            raise ValueError("outbox: max_msgs must be >= 1")
        usable = 16384 if log is None else (log.segments - 1) * log.seg_bytes // 2
        if max_bytes is None:
            max_bytes = usable
        if not 1 <= max_bytes <= usable:
            raise ValueError("outbox: max_bytes must be 1..%d (half the journal's usable bytes)" % usable)
        if not 1 <= retry_ms <= retry_max_ms:
            raise ValueError("outbox: need 1 <= retry_ms <= retry_max_ms")
        self.max_msgs = max_msgs
        self.low_max = max(1, max_msgs // 8)   # quota of the _LOW kinds
        self.max_bytes = max_bytes
        self.log = log
        self.clock = clock
        self.retry_ms = retry_ms
        self.retry_max_ms = retry_max_ms
        self._rand = rand
        self.dropped = 0   # messages dropped under pressure
        self.corrupt = 0   # messages whose record went bad on flash before they were acknowledged
        self.bytes = 0     # payload bytes queued
        self.reset()
        self._n = 0        # order numbers when there is no log
        self._names = {}

    def __len__(self):
        return len(self._q)

    def put(self, topic, payload, msg_id=None, kind="event"):
        """Queue a message (a msg_id already queued is a no-op); True if it is on flash."""
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(payload, (bytes, bytearray)):
            raise ValueError("outbox: payload must be str or bytes")
        if not isinstance(topic, str) or not topic or not isinstance(kind, str):
            raise ValueError("outbox: topic and kind must be strings")
        if msg_id is not None and (not isinstance(msg_id, str) or not msg_id):
            raise ValueError("outbox: msg_id must be a non-empty string")
        old = self._ids.get(msg_id)
        if old is not None:
            return old[_SEG] is not None
        log = self.log
        if log is None:
            seq, self._n = self._n, self._n + 1
        else:
            seq = log.next_seq()
        mid = msg_id or "#%d" % seq
        body = None
        if log is not None:
            body = message_section(kind, mid, topic, payload)
            if len(body) > log.max_record:
                raise ValueError("outbox: message %s of %d bytes exceeds the journal's max_record" % (mid, len(body)))
        if not self.admit(mid, kind, len(payload)):
            return False
        loc = None if log is None else log.append(MESSAGE | HAS_MSG, seq, body, tier(kind))
        self.queue(seq, kind, mid, topic, loc, len(payload), payload)
        return loc is not None

    def next_due(self, now_ms):
        """The first message, in order, whose (re)send time has come: (topic, payload, msg_id), or None.
        A payload read back from flash is a view of a reused buffer: publish it before the next call."""
        q = self._q
        if not q:
            return None
        c = self._need_clock()
        if self._wake is not None and c.ticks_diff(now_ms, self._wake) < 0:
            return None
        wake = None
        i = 0
        while i < len(q):
            e = q[i]
            if e[_TRIES] == 0 or c.ticks_diff(now_ms, e[_DUE]) >= 0:
                p = self._payload(e)
                if p is not None:
                    return e[_TOPIC], p, e[_ID]
                continue  # it went bad and was removed: q[i] is the next one now
            if wake is None or c.ticks_diff(e[_DUE], wake) < 0:
                wake = e[_DUE]
            i += 1
        self._wake = wake  # nothing is due before this: skip the walk until then
        return None

    def sent(self, msg_id, now_ms):
        """Published (QoS 1 or not): try again after 5 s, 10 s, ... up to retry_max_ms, plus jitter."""
        e = self._ids.get(msg_id)
        if e is None:
            return
        e[_TRIES] += 1
        d = min(self.retry_ms << min(e[_TRIES] - 1, _MAX_SHIFT), self.retry_max_ms)
        e[_DUE] = self._need_clock().ticks_add(now_ms, d + self._rand(d // 4 + 1))
        self._wake = None

    def ack(self, msg_ids):
        """The backend has these: forget them (unknown ids are ignored); returns how many went."""
        if not isinstance(msg_ids, (list, tuple)) or not all(isinstance(i, str) for i in msg_ids):
            raise ValueError("outbox: msg_ids must be a list of strings")
        gone = self._gone
        n = 0
        for i in msg_ids:
            e = self._ids.get(i)
            if e is not None:
                self._remove(e)
                n += 1
                if e[_SEG] is not None:
                    gone.append(i)
        if self.log is not None:
            if gone:
                self._log_ack(gone)
                self._gone = []
            if self.ram_only:
                self._persist_ram()  # room may have come back
        return n

    def pending(self):
        """msg_ids still waiting for the backend, oldest first."""
        return [e[_ID] for e in self._q]

    def payload(self, msg_id):
        """The payload bytes of a waiting message (read back from flash), or None."""
        e = self._ids.get(msg_id)
        p = None if e is None else self._payload(e)
        return None if p is None else bytes(p)

    def replace(self, msg_id, payload):
        """Give a waiting message a new payload (same msg_id and place), e.g. to anonymize it; False
        if it is not waiting. The new payload is a new record and the old one is acknowledged, so a
        reboot does not bring it back and compaction does not copy it."""
        e = self._ids.get(msg_id)
        if e is None:
            return False
        if isinstance(payload, str):
            payload = payload.encode()
        log = self.log
        if log is not None and e[_SEG] is not None:
            self._log_ack([msg_id])   # written first: a boot scan then keeps only the new record
            seq = log.next_seq()
            loc = log.append(MESSAGE | HAS_MSG, seq, message_section(e[_KIND], msg_id, e[_TOPIC], payload))
            e[_SEQ] = seq
            e[_SEG], e[_OFF] = loc if loc is not None else (None, 0)
            e[_RAM] = None if loc is not None else bytes(payload)
        else:
            e[_RAM] = bytes(payload)  # RAM only: written (with its END record, if any) once flash has room
        self.bytes += len(payload) - e[_SIZE]
        e[_SIZE] = len(payload)
        self._wake = None
        return True

    @property
    def ram_only(self):
        """Messages that should be on flash but are only in RAM (a power cut loses them)."""
        if self.log is None:
            return 0
        return sum(1 for e in self._q if e[_SEG] is None)

    @property
    def full(self):
        """The next `started`/`ended` may not survive a power cut: a controller can refuse new sessions."""
        if self.ram_only or (self.log is not None and self.log.full):
            return True
        return sum(1 for e in self._q if tier(e[_KIND]) == 2) >= self.max_msgs

    def peek(self):
        """(topic, payload bytes) of the oldest message, for a sync that removes on publish."""
        while self._q:
            e = self._q[0]
            p = self._payload(e)
            if p is not None:
                return e[_TOPIC], bytes(p)
        return None

    def pop(self):
        """Remove the oldest message as if acknowledged."""
        if self._q:
            self.ack([self._q[0][_ID]])

    # -- queue ------------------------------------------------------------------------------
    def _need_clock(self):
        if self.clock is None:
            raise ValueError("outbox: next_due() and sent() need the clock")
        return self.clock

    def admit(self, mid, kind, size):
        """Make room under the caps for a new message; False if it must not be queued (the journal
        asks before it writes a session record that carries one)."""
        if mid in self._ids:
            return False
        if kind in _LOW:
            self._quota()
        t = tier(kind)
        while len(self._q) >= self.max_msgs or self.bytes + size > self.max_bytes:
            e = self._victim(min(t, 1))
            if e is None:
                if t < 2:
                    self.dropped += 1
                    return False
                break  # started/ended go in over the caps (see `full`)
            self._drop(e)
        return True

    def _quota(self):
        """Room for one more low-value message within its quota: the oldest of them goes."""
        n = 0
        oldest = None
        for e in self._q:
            if e[_KIND] in _LOW:
                n += 1
                if oldest is None:
                    oldest = e
        if n >= self.low_max:
            self._drop(oldest)

    def _victim(self, max_tier):
        """The oldest message of the lowest tier present, up to max_tier."""
        best = None
        best_t = max_tier + 1
        for e in self._q:
            t = tier(e[_KIND])
            if t < best_t:
                best, best_t = e, t
        return best

    def _name(self, s):
        """One shared string object per kind and topic name (RAM: they repeat in every entry)."""
        return self._names.setdefault(s, s) if len(self._names) < _NAMES else s

    def queue(self, seq, kind, mid, topic, loc, size, payload=None, redo=None):
        """Queue an admitted message: on flash at loc (segment, offset), or (loc None) kept in RAM as
        `payload`; `redo` (record type, data) rewrites it with its carrier record once flash has room."""
        on_flash = loc is not None
        e = [seq, mid, self._name(kind), self._name(topic), loc[0] if on_flash else None, loc[1] if on_flash else 0,
             size, None if on_flash else bytes(payload), 0, 0, None if on_flash else redo]
        self._q.append(e)
        self._ids[mid] = e
        self.bytes += size
        self._wake = None
        if mid in self._gone:
            self._gone.remove(mid)  # queued again: a pending ACK must not remove the new one

    def _remove(self, e):
        self._q.remove(e)
        del self._ids[e[_ID]]
        self.bytes -= e[_SIZE]
        self._wake = None

    def _drop(self, e):
        """Drop under pressure; remember it so a reboot does not bring it back."""
        self._remove(e)
        self.dropped += 1
        if e[_SEG] is not None and len(self._gone) < self.max_msgs:
            self._gone.append(e[_ID])

    def _payload(self, e):
        """The payload, read back from flash; a record gone bad removes its message (None)."""
        if e[_RAM] is not None:
            return e[_RAM]
        p = self.log.message(e[_SEG], e[_OFF])
        if p is None:
            self._remove(e)
            self.corrupt += 1
        return p

    def _log_ack(self, ids):
        """ACK records (small ones) so a reboot does not resend these."""
        log = self.log
        body = b""
        for i in ids:
            b = i.encode()
            if body and len(body) + 1 + len(b) > _ACK_BYTES:
                log.append(ACK, log.next_seq(), body)
                body = b""
            body = body + b"\n" + b if body else b
        log.append(ACK, log.next_seq(), body)

    def _persist_ram(self):
        """Write RAM-only messages in order, an `ended` one with the end of its session."""
        for e in self._q:
            if e[_SEG] is None:
                rtype, data = e[_REDO] or (MESSAGE, b"")
                body = message_section(e[_KIND], e[_ID], e[_TOPIC], e[_RAM]) + data
                loc = self.log.append(rtype | HAS_MSG, e[_SEQ], body)
                if loc is None:
                    return
                e[_SEG], e[_OFF] = loc
                e[_RAM] = e[_REDO] = None

    # -- boot scan (driven by the journal) ----------------------------------------------------
    def reset(self):
        """Forget the queue (before a boot scan rebuilds it)."""
        self._q = []      # entries, oldest first
        self._ids = {}    # msg_id -> entry
        self._gone = []   # dropped msg_ids still on flash: written with the next ACK record
        self.bytes = 0
        self._wake = None

    def load(self, rtype, seq, body, loc, carried=False):
        """Take the pending message or the ACK of one scanned record; False if the record is neither
        the outbox's own (MESSAGE, ACK) nor `carried` by one another client understood."""
        base = rtype & TYPE
        if base == ACK:
            for i in read_ack(body):
                e = self._ids.get(i)
                if e is not None:
                    self._remove(e)
            return True
        if base != MESSAGE and not carried:
            return False
        if rtype & HAS_MSG:
            kind, mid, topic, p, end = message_at(body)
            if not rtype & DONE and mid not in self._ids:  # file order; sorted by loaded()
                e = [seq, mid, self._name(kind), self._name(topic), loc[0], loc[1], end - p, None, 0, 0, None]
                self._q.append(e)
                self._ids[mid] = e
                self.bytes += end - p
        return True

    def loaded(self):
        """End of the boot scan: restore the order, then the caps."""
        self._q.sort(key=lambda e: e[_SEQ])
        while len(self._q) > self.max_msgs or self.bytes > self.max_bytes:
            e = self._victim(1)
            if e is None:
                break
            self._drop(e)

    # -- record log client -------------------------------------------------------------------
    def live(self, rtype, seq):
        """Compaction: KEEP_MESSAGE while the message a record carries is pending."""
        if rtype & HAS_MSG and not rtype & DONE:
            for e in self._q:
                if e[_SEQ] == seq and e[_SEG] is not None:
                    return KEEP_MESSAGE
        return 0

    def moved(self, seg, moves):
        """Compaction copied these records (seq, offset) into segment seg."""
        at = dict(moves)
        for e in self._q:
            off = at.get(e[_SEQ])
            if off is not None and e[_SEG] is not None:
                e[_SEG], e[_OFF] = seg, off

    def shed(self, max_tier):
        """The log refused a write: drop every message of the lowest droppable tier present; False if none."""
        e = self._victim(min(max_tier, 1))
        if e is None:
            return False
        t = tier(e[_KIND])
        for e in [e for e in self._q if tier(e[_KIND]) == t]:
            self._drop(e)
        return True
