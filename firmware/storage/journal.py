"""Crash-safe journal: session checkpoints and outbox messages as CRC-checked records in bounded files.

Records are appended to numbered segment files in one directory; a header (magic, type, length,
sequence, CRC-32) makes each record whole or ignored, so a torn tail, a bit flip or a garbage
file costs only the records it touches. At most `segments` files of at most `seg_bytes` bytes
exist: when a new segment would use the last one, the live records of the oldest are copied into
it and the oldest is deleted. Records stream through a 128-byte buffer. See docs/journal.md.

    j = Journal("data/journal"); ob = Outbox(64, j, clock); boot = j.recover()
    j.session_started(rec); j.checkpoint(tx, wh, t, seq); j.session_ended(tx, ended_rec)
"""
import binascii
import io
import json
import os
import struct

from micropython import const

from firmware.storage.jsonpack import dump, unpack, unpack_tail

# record types (the low 6 bits of the type byte)
BOOT = const(1)        # body: u32 boot count
START = const(2)       # body: message section whose payload is the `started` record (the state)
CHECKPOINT = const(3)  # body: [message section] u32 tx_id, u32 energy_wh, u32 t, u32 seq, u16 rem
END = const(4)         # body: [message section] u32 tx_id
MESSAGE = const(5)     # body: message section (an outbox message)
ACK = const(6)         # body: msg_ids no longer pending, joined by "\n"
HAS_MSG = const(0x80)  # the body starts with a message section
DONE = const(0x40)     # ... which was no longer pending when the record was copied

_TYPE = const(0x3F)
_M0 = const(0xA5)      # magic: two bytes that never start UTF-8 text
_M1 = const(0xC3)
_MAGIC = b"\xa5\xc3"
_CP_BODY = const(18)   # a checkpoint's fields after its message section
_HDR = const(13)       # magic(2) type(1) body length(2) sequence(4) CRC-32 of header[0:9] + body(4)
_CRC_AT = const(9)
_CHUNK = const(128)
_EIO = const(5)
_ENOSPC = const(28)
_KEEP_PROBLEMS = const(8)
_TOPIC = "session"
COMPACT = (",", ":")   # JSON separators of every queued message: flash bytes are the budget


def message_section(kind, msg_id, topic, payload):
    """The bytes of one outbox message inside a record body."""
    k, i, t = kind.encode(), msg_id.encode(), topic.encode()
    if len(k) > 255 or len(i) > 255 or len(t) > 255 or "\n" in msg_id:
        raise ValueError("outbox: kind, msg_id and topic must be <= 255 bytes, msg_id without newline")
    return struct.pack("<BBBH", len(k), len(i), len(t), len(payload)) + k + i + t + payload


def read_message(body):
    """(kind, msg_id, plain JSON payload, end offset) of the message section a record body starts
    with (for readers: tech, tools)."""
    lk, li, lt, lp = struct.unpack_from("<BBBH", body, 0)
    p = 5 + lk + li + lt
    return str(body[5:5 + lk], "utf-8"), str(body[5 + lk:5 + lk + li], "utf-8"), unpack(body[p:p + lp]), p + lp


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


def _at(f, pos, n):
    """n bytes of f at pos (ValueError if the file ends first)."""
    f.seek(pos)
    b = f.read(n)
    if len(b) != n:
        raise ValueError("short read")
    return b


def _msg_at(f, pos, end):
    """(kind, msg_id, topic, payload position, payload length) of the message section at pos."""
    lk, li, lt, lp = struct.unpack("<BBBH", _at(f, pos, 5))
    s = _at(f, pos + 5, lk + li + lt)
    p = pos + 5 + lk + li + lt
    if p + lp > end:
        raise ValueError("message section overflows its record")
    return str(s[:lk], "utf-8"), str(s[lk:lk + li], "utf-8"), str(s[lk + li:], "utf-8"), p, lp


def _out(f, data):
    if f.write(data) != len(data):
        raise OSError(_ENOSPC)


def _stream(n):
    """A reusable in-RAM stream: reserved once on MicroPython (n bytes), grown on demand on CPython."""
    try:
        return io.BytesIO(n)
    except TypeError:
        return io.BytesIO()


_BLANK = bytes(_HDR)


class Journal:
    def __init__(self, path, seg_bytes=4096, segments=8, every_wh=250, every_s=300, min_s=150,
                 max_record=None, opener=open):
        if segments < 2:
            raise ValueError("journal: segments must be >= 2 (one is the compaction spare)")
        if not 256 <= seg_bytes <= 65536:
            raise ValueError("journal: seg_bytes must be 256..65536")
        top = min(seg_bytes - _HDR, 65535)
        if max_record is None:
            max_record = top
        if not 64 <= max_record <= top:
            raise ValueError("journal: max_record must be 64..%d" % top)
        if every_wh < 1 or not 1 <= min_s <= every_s:
            raise ValueError("journal: need every_wh >= 1 and 1 <= min_s <= every_s")
        self.path = path
        self.seg_bytes = seg_bytes
        self.segments = segments
        self.every_wh = every_wh
        self.every_s = every_s
        self.min_s = min_s
        self.max_record = max_record
        self._open_file = opener  # injectable so tests can make writes fail like a full flash
        self.outbox = None        # set by Outbox(..., journal): messages share this log
        self._buf = bytearray(_CHUNK)
        self._mv = memoryview(self._buf)
        # Records are built in `_rec` and payloads read back into `_pub`, both reserved at boot:
        # a long-running heap fragments, and a record or payload of a few KB must never need a
        # fresh contiguous block of that size (json.dump streams into the reserved buffer).
        self._rec = _stream(_HDR + self.max_record + 16)
        self._pub = bytearray(self.max_record)
        self._pubmv = memoryview(self._pub)
        self.full = False   # the last write failed (no space, or live records fill every segment)
        self.error = 0      # errno of the last failed write, 0 after a good one
        self.written = 0    # bytes appended since boot, compaction copies included
        self.bad = 0        # runs of bad bytes skipped by the last scan
        self.problems = []  # (segment, offset) of the first few of them
        self.boot = 0
        self._segs = None   # segment numbers, oldest first; None until recover()

    # -- session API ------------------------------------------------------------------------
    def recover(self):
        """Scan once at boot: rebuild the open session, the counters and the outbox; count this boot."""
        try:
            os.mkdir(self.path)  # its parent (the data directory) exists
        except OSError:
            pass
        ob = self.outbox
        if ob is not None:
            ob._clear()
        self._segs = self._list()
        self._settle()
        self.bad = 0
        self.problems = []
        self._head_size = 0
        self._head_bad = False
        seq_max = -1
        records = 0
        opened = None
        start_seq = cp_seq = boot_seq = -1
        cp = None
        boot = 0
        for n in self._segs:
            for f, off, rtype, seq, blen in self._walk(n):
                a = off + _HDR
                end = a + blen
                base = rtype & _TYPE
                try:
                    msg = None
                    if rtype & HAS_MSG:
                        kind, mid, topic, p, lp = _msg_at(f, a, end)
                        a = p + lp
                        if not rtype & DONE:
                            msg = (kind, mid, topic, lp)
                    if base == START:
                        if not rtype & HAS_MSG:
                            raise ValueError("start without state")
                        state = json.loads(unpack(_at(f, p, lp)))
                        _tx_of(state)
                        opened, start_seq = state, seq
                    elif base == CHECKPOINT:
                        if a + _CP_BODY > end:
                            raise ValueError("short checkpoint")
                        if seq > cp_seq:
                            cp, cp_seq = (n, off), seq
                    elif base == END:
                        if opened is not None and struct.unpack("<I", _at(f, a, 4))[0] == _tx_of(opened):
                            opened, start_seq = None, -1
                    elif base == BOOT:
                        if seq > boot_seq:
                            boot, boot_seq = struct.unpack("<I", _at(f, a, 4))[0], seq
                    elif base == ACK:
                        if ob is not None:
                            ob._acked(str(_at(f, a, end - a), "utf-8").split("\n"))
                    elif base != MESSAGE:
                        raise ValueError("unknown type")
                except (ValueError, KeyError, TypeError, IndexError):
                    self._note_bad(n, off)  # CRC-valid yet not understood: skip it, keep going
                    continue
                if msg is not None and ob is not None:
                    ob._found(seq, msg[0], msg[1], msg[2], n, off, msg[3])
                records += 1
                if seq > seq_max:
                    seq_max = seq
            if n == self._segs[-1]:
                self._head_size = self._size
                self._head_bad = self._end != self._size  # never append after a torn tail
        self._seq = seq_max + 1
        self._open = opened
        self._start_seq = start_seq
        self._cp = self._cp_seq = None
        if opened is not None and cp is not None:
            self._cp = self._checkpoint_at(cp[0], cp[1])
            if self._cp is not None and self._cp["tx_id"] == _tx_of(opened):
                self._cp_seq = cp_seq
            else:
                self._cp = None
        self._base = None
        self.boot = boot + 1
        self._boot_seq = boot_seq
        if ob is not None:
            ob._loaded()
        seq = self._next()
        if self._append(BOOT, seq, struct.pack("<I", self.boot), -1) is not None:
            self._boot_seq = seq
        return {"session": opened, "checkpoint": self._cp, "boot": self.boot, "bad": self.bad,
                "records": records}

    def session_started(self, rec):
        """Record a new session; `rec` (the `started` record, with tx_id and msg_id) is also queued."""
        self._ready()
        _tx_of(rec)
        if self._open is not None:
            raise ValueError("journal: session %d is still open" % _tx_of(self._open))
        plan = self._plan("started", rec, b"")
        seq = self._next()
        self._open, self._start_seq = rec, seq
        self._cp = self._cp_seq = self._base = None
        return self._emit(START, seq, b"", "started", plan, 1) is not None

    def checkpoint_due(self, energy_wh, t):
        """Since the last checkpoint: every_wh more energy (but not within min_s), or every_s seconds.

        min_s caps the rate whatever the power, so a session's flash writes stay in budget;
        a clock step in either direction counts as time passed.
        """
        if self._open is None:
            return False
        if self._base is None:
            self._base = (energy_wh, t)  # the first call of a session sets the reference
            return False
        wh, t0 = self._base
        dt = abs(t - t0)
        return dt >= self.every_s or (dt >= self.min_s and energy_wh - wh >= self.every_wh)

    def checkpoint(self, tx_id, energy_wh, t, seq=0, rem=0, rec=None):
        """Record how far the open session got (rem: the register's sub-Wh counts); `rec` (an
        `updated` record) is queued with it."""
        self._ready()
        self._check_open(tx_id)
        if not isinstance(rem, int) or isinstance(rem, bool) or not 0 <= rem <= 0xFFFF:
            raise ValueError("journal: rem must be an integer 0..65535, got %r" % (rem,))
        data = struct.pack("<IIIIH", tx_id, _u32("energy_wh", energy_wh), _u32("t", t), _u32("seq", seq), rem)
        plan = self._plan("updated", rec, data)
        self._cp = {"tx_id": tx_id, "energy_wh": energy_wh, "t": t, "seq": seq, "rem": rem}
        self._base = (energy_wh, t)
        n = self._next()
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
        return self._emit(END, self._next(), data, "ended", plan, 1) is not None

    @property
    def session(self):
        """The open session's `started` record, or None."""
        return self._open

    def scrub(self):
        """Copy every live record into fresh segments and delete all older ones, so records no longer
        needed (an anonymized message's original) leave the flash now; False if a write failed."""
        self._ready()
        for _ in range(len(self._segs)):
            if not self._settle():
                return False
            self._segs.append(self._segs[-1] + 1 if self._segs else 0)
            self._head_size = 0
            self._head_bad = False
            if not self._compact():
                return False
        return True

    def scan(self):
        """Every good record in log order as (type, seq, body bytes); bad runs are counted in .bad."""
        self.bad = 0
        self.problems = []
        for n in self._list():
            for f, off, rtype, seq, blen in self._walk(n):
                yield rtype, seq, _at(f, off + _HDR, blen)

    def stats(self):
        names = [self._name(n) for n in self._list()]
        return {"segments": len(names), "bytes": sum(os.stat(p)[6] for p in names), "written": self.written,
                "bad": self.bad, "full": self.full}

    # -- records with messages --------------------------------------------------------------
    def _plan(self, kind, rec, data):
        """Serialize rec as a message section into the record stream (header left blank), checked
        before anything changes: (msg_id, payload length, section end); None without rec."""
        if rec is None:
            return None
        mid = rec.get("msg_id") if isinstance(rec, dict) else None
        if not isinstance(mid, str) or not mid:
            raise ValueError("journal: the %s record needs a msg_id string" % kind)
        k, i, t = kind.encode(), mid.encode(), _TOPIC.encode()
        if len(i) > 255 or "\n" in mid:
            raise ValueError("outbox: kind, msg_id and topic must be <= 255 bytes, msg_id without newline")
        b = self._rec
        b.seek(0)
        b.write(_BLANK)
        b.write(struct.pack("<BBBH", len(k), len(i), len(t), 0))
        b.write(k)
        b.write(i)
        b.write(t)
        p0 = b.tell()
        plain = dump(rec, b)   # packed JSON: the common keys as one or two bytes each
        end = b.tell()
        lp = end - p0
        if end - _HDR + len(data) > self.max_record or plain > self.max_record:
            raise ValueError("journal: the %s record (%d bytes) exceeds max_record"
                             % (kind, max(plain, end - _HDR + len(data))))
        b.seek(_HDR + 3)
        b.write(struct.pack("<H", lp))
        return mid, lp, end

    def _emit(self, base, seq, data, kind, plan, tier):
        """Append one record, carrying the planned message when the outbox takes it."""
        ob = self.outbox
        queued = plan is not None and ob is not None and ob._admit(plan[0], kind, plan[1])
        b = self._rec
        if plan is not None and (queued or base == START):  # a start keeps its state either way
            rtype = base | (HAS_MSG if queued else HAS_MSG | DONE)
            b.seek(plan[2])   # the record so far: blank header, message section
        else:
            rtype = base
            b.seek(0)
            b.write(_BLANK)
        b.write(data)
        loc = self._append_built(rtype, seq, tier)
        if queued:  # an end that found no room is written with its message once there is room
            ram = None
            if loc is None:   # flash refused it: the payload waits in RAM (rare: copy it out)
                b.seek(plan[2] - plan[1])
                ram = unpack(b.read(plan[1]))
            ob._add(seq, kind, plan[0], _TOPIC, loc, plan[1], ram, (END, data[-4:]) if base == END else None)
        return loc

    def _next(self):
        self._seq += 1
        return self._seq - 1

    def _append(self, rtype, seq, body, tier):
        """Write one small record; under pressure let the outbox shed up to `tier`; (segment, offset) or None."""
        self._ready()
        if len(body) > self.max_record:
            raise ValueError("journal: record of %d bytes exceeds max_record %d" % (len(body), self.max_record))
        b = self._rec
        b.seek(0)
        b.write(_BLANK)
        b.write(body)
        return self._append_built(rtype, seq, tier)

    def _append_built(self, rtype, seq, tier):
        """Finish the record in the stream (its header and CRC) and write it out."""
        self._ready()
        b = self._rec
        n = b.tell() - _HDR
        if n > self.max_record:
            raise ValueError("journal: record of %d bytes exceeds max_record %d" % (n, self.max_record))
        buf, mv = self._buf, self._mv
        struct.pack_into("<BBBHI", buf, 0, _M0, _M1, rtype, n, seq)
        c = binascii.crc32(mv[:_CRC_AT])
        for chunk in self._chunks(b, _HDR, n):
            c = binascii.crc32(chunk, c)
        struct.pack_into("<BBBHII", buf, 0, _M0, _M1, rtype, n, seq, c)
        b.seek(0)
        b.write(mv[:_HDR])
        while True:
            loc = self._put(_HDR + n)
            if loc is not None or self.outbox is None or not self.outbox._shed(tier):
                return loc

    def _load(self, n, off):
        """The payload of the message record at (n, off), checked again, as a view of the reserved
        payload buffer (valid until the next _load); None if it went bad."""
        try:
            f = self._open_file(self._name(n), "rb")
        except OSError:
            return None
        try:
            r = self._read(f, off, f.seek(0, 2))
            if r is not None and r[0] & HAS_MSG:
                p, lp = _msg_at(f, off + _HDR, off + _HDR + r[2])[3:]
                f.seek(p)
                top = len(self._pub)
                if lp <= top and f.readinto(self._pubmv[top - lp:]) == lp:
                    return self._pubmv[:unpack_tail(self._pub, lp)]
        except (OSError, ValueError):
            pass
        finally:
            f.close()
        self._note_bad(n, off)
        return None

    # -- segments ---------------------------------------------------------------------------
    def _ready(self):
        if self._segs is None:
            raise ValueError("journal: call recover() once before writing")

    def _name(self, n):
        return "%s/%08d.log" % (self.path, n)

    def _list(self):
        segs = []
        for name in os.listdir(self.path):
            if name.endswith(".log") and name[:-4].isdigit():
                segs.append(int(name[:-4]))
        segs.sort()
        return segs

    def _put(self, size):
        """Append the record in the stream (size bytes) to the head segment, rotating as needed."""
        for _ in range(self.segments):
            if self._segs and not self._head_bad and self._head_size + size <= self.seg_bytes:
                head = self._segs[-1]
                off = self._head_size
                try:
                    f = self._open_file(self._name(head), "ab")
                    try:
                        for chunk in self._chunks(self._rec, 0, size):
                            _out(f, chunk)
                    finally:
                        f.close()  # littlefs commits here
                except OSError as e:
                    self._failed(e)
                    return None
                self._head_size += size
                self.written += size
                self.full = False
                self.error = 0
                return head, off
            if not self._rotate():
                return None
        self.full = True  # live records fill every segment
        return None

    def _failed(self, e):
        self._head_bad = True  # a torn record may sit at the tail: the next write starts a segment
        self.error = e.args[0] if e.args else -1
        self.full = True

    def _rotate(self):
        """Start a fresh segment; if that uses the spare, move the oldest one's live records into it."""
        if not self._settle():
            self.full = True
            return False
        self._segs.append(self._segs[-1] + 1 if self._segs else 0)
        self._head_size = 0
        self._head_bad = False
        if len(self._segs) == self.segments:
            return self._compact()
        return True

    def _compact(self):
        old, head = self._segs[0], self._segs[-1]
        live_msgs = self.outbox._persisted() if self.outbox is not None else ()
        moved = []
        out = None
        records = self._walk(old)
        try:
            for f, off, rtype, seq, blen in records:
                t = self._keep(rtype, seq, live_msgs)
                if t is None:
                    continue
                if out is None:
                    out = self._open_file(self._name(head), "ab")
                self._copy(f, off + _HDR, blen, t, seq, out)
                if t & HAS_MSG and not t & DONE:
                    moved.append((seq, self._head_size))
                self._head_size += _HDR + blen
                self.written += _HDR + blen
            if out is not None:
                g, out = out, None
                g.close()
        except OSError as e:
            records.close()  # closes the oldest segment's file
            if out is not None:
                try:
                    out.close()
                except OSError:
                    pass
            self._failed(e)
            self._drop(head)  # it held only copies: the oldest segment is still whole
            return False
        if moved:
            self.outbox._moved(head, moved)
        self._drop(old)
        return True

    def _copy(self, f, pos, blen, rtype, seq, out):
        """Write the body at pos again under a new header (type flags may change, seq stays)."""
        head = struct.pack("<BBBHI", _M0, _M1, rtype, blen, seq)
        c = binascii.crc32(head)
        for chunk in self._chunks(f, pos, blen):
            c = binascii.crc32(chunk, c)
        _out(out, head + struct.pack("<I", c))
        for chunk in self._chunks(f, pos, blen):
            _out(out, chunk)

    def _keep(self, rtype, seq, live_msgs):
        """The type to copy a record with, or None if nothing in it is needed any more."""
        base = rtype & _TYPE
        state = ((base == START and seq == self._start_seq) or (base == CHECKPOINT and seq == self._cp_seq)
                 or (base == BOOT and seq == self._boot_seq))
        msg = rtype & HAS_MSG and not rtype & DONE and seq in live_msgs
        if state:
            return rtype | DONE if rtype & HAS_MSG and not msg else rtype
        return MESSAGE | HAS_MSG if msg else None

    def _drop(self, n):
        """Delete segment n (a never-created one counts as deleted); False if it stays."""
        name = self._name(n)
        try:
            os.remove(name)
        except OSError:
            try:
                os.stat(name)
                return False
            except OSError:
                pass
        self._segs.remove(n)
        return True

    def _settle(self):
        """After an interrupted compaction (no spare left): drop the copy if it holds only copies, else
        the oldest segment, whose live records it then already holds."""
        while len(self._segs) >= self.segments:
            old, head = self._segs[0], self._segs[-1]
            seqs = set(r[3] for r in self._walk(old))
            pure = True
            for r in self._walk(head):
                if r[3] not in seqs:
                    pure = False
            if not self._drop(head if pure else old):
                return False
            if pure:
                self._head_bad = True  # the previous segment's tail is not known here: start a new one
        return True

    # -- reading ----------------------------------------------------------------------------
    def _walk(self, n):
        """Good records of segment n as (file, offset, type, seq, body length); counts bad runs."""
        self._end = self._size = 0
        try:
            f = self._open_file(self._name(n), "rb")
        except OSError:
            return
        size = self._size = f.seek(0, 2)  # cheaper than os.stat on littlefs
        off = 0
        in_bad = False
        try:
            while off < size:
                r = self._read(f, off, size)
                if r is None:
                    if not in_bad:
                        self._note_bad(n, off)
                        in_bad = True
                    off = self._resync(f, off + 1, size)
                    continue
                in_bad = False
                yield f, off, r[0], r[1], r[2]
                off += _HDR + r[2]
                self._end = off
        finally:
            f.close()

    def _read(self, f, off, size):
        """(type, seq, body length) of a whole, CRC-valid record at off, else None; streams the body."""
        if off + _HDR > size:
            return None
        mv = self._mv
        try:
            f.seek(off)
            if f.readinto(mv[:_HDR]) != _HDR:
                return None
            m0, m1, rtype, blen, seq, crc = struct.unpack_from("<BBBHII", self._buf, 0)
            if m0 != _M0 or m1 != _M1 or blen > self.max_record or off + _HDR + blen > size:
                return None
            c = binascii.crc32(mv[:_CRC_AT])
            for chunk in self._chunks(f, off + _HDR, blen):
                c = binascii.crc32(chunk, c)
        except OSError:
            return None
        return (rtype, seq, blen) if c == crc else None

    def _chunks(self, f, pos, n):
        """n bytes of f from pos, as views of the scratch buffer."""
        f.seek(pos)
        mv = self._mv
        while n:
            got = f.readinto(mv[:min(n, _CHUNK)])
            if not got:
                raise OSError(_EIO)  # the file is shorter than it was a moment ago
            yield mv[:got]
            n -= got

    def _resync(self, f, pos, size):
        """Offset of the next magic at or after pos (size if none): where a good record may start."""
        buf = self._buf
        while pos < size - 1:
            f.seek(pos)
            got = f.readinto(self._mv)
            if got < 2:
                break
            i = buf.find(_MAGIC, 0, got)
            if i >= 0:
                return pos + i
            pos += got - 1  # the last byte may be the first half of a magic
        return size

    def _note_bad(self, n, off):
        self.bad += 1
        if len(self.problems) < _KEEP_PROBLEMS:
            self.problems.append((n, off))

    def _checkpoint_at(self, n, off):
        """The checkpoint record at (n, off) as a dict, or None if it cannot be read back."""
        try:
            f = self._open_file(self._name(n), "rb")
        except OSError:
            return None
        try:
            r = self._read(f, off, f.seek(0, 2))
            if r is None:
                return None
            end = off + _HDR + r[2]
            a = off + _HDR
            if r[0] & HAS_MSG:
                p, lp = _msg_at(f, a, end)[3:]
                a = p + lp
            tx, wh, t, seq, rem = struct.unpack("<IIIIH", _at(f, a, _CP_BODY))
            return {"tx_id": tx, "energy_wh": wh, "t": t, "seq": seq, "rem": rem}
        except (OSError, ValueError, TypeError):
            return None
        finally:
            f.close()

    def _check_open(self, tx_id):
        if self._open is None or _tx_of(self._open) != tx_id:
            raise ValueError("journal: tx_id %r is not the open session" % (tx_id,))
