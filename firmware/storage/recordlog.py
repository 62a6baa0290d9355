"""Record log: CRC-checked records in a few bounded segment files, the store under the journal and the outbox.

Records are appended to numbered segment files in one directory; a header (magic, type, length,
sequence, CRC-32) makes each record whole or ignored, so a torn tail, a bit flip or a garbage
file costs only the records it touches. At most `segments` files of at most `seg_bytes` bytes
exist: when a new segment would use the last one, the live records of the oldest are copied into
it and the oldest is deleted. Records stream through a 128-byte buffer. See docs/journal.md.

    log = RecordLog("data/journal"); log.attach(journal, outbox); log.open()
    for rtype, seq, body, loc in log.records(): ...      # once, at boot, then append:
    loc = log.append(MESSAGE | HAS_MSG, log.next_seq(), body)   # (segment, offset), or None if refused

API: open() then records() once at boot (rebuilds the sequence and the head segment); next_seq();
append(rtype, seq, body, tier), or begin() -> stream, write the body, finish(rtype, seq, tier);
message(seg, off) -> a stored message's plain JSON payload; scrub(); damaged(loc); scan() for
readers. `full`/`error` say whether the last write failed (nothing raises for a full flash),
`written` counts bytes appended, `bad`/`problems` the damaged runs of the last records() pass.

A type byte is the client's type (low 6 bits) plus HAS_MSG (the body starts with a message
section) and DONE (that message was no longer pending when the record was copied). Clients
(attach) answer three calls: live(rtype, seq) -> KEEP | KEEP_MESSAGE bits (what compaction must
copy), moved(seg, [(seq, offset)]) (where the copies of pending messages went) and shed(tier) ->
True if it dropped something so a refused write may be tried again.
"""
import binascii
import io
import os
import struct

from micropython import const

from firmware.storage.jsonpack import unpack, unpack_tail

MESSAGE = const(5)     # a record that is only a message section (what a copy keeps of a spent record)
HAS_MSG = const(0x80)  # the body starts with a message section
DONE = const(0x40)     # ... which was no longer pending when the record was copied
TYPE = const(0x3F)
KEEP = const(1)          # live(): the record's own data is still needed
KEEP_MESSAGE = const(2)  # live(): its message section is still pending
HEADER = const(13)     # magic(2) type(1) body length(2) sequence(4) CRC-32 of header[0:9] + body(4)
# what a CRC-valid record that does not say what its type says raises when decoded (CPython's struct
# has its own error)
UNREADABLE = (ValueError, KeyError, TypeError, IndexError) + ((struct.error,) if hasattr(struct, "error") else ())

_M0 = const(0xA5)      # magic: two bytes that never start UTF-8 text
_M1 = const(0xC3)
_MAGIC = b"\xa5\xc3"
_CRC_AT = const(9)
_CHUNK = const(128)
_EIO = const(5)
_ENOSPC = const(28)
_KEEP_PROBLEMS = const(8)
_BLANK = bytes(HEADER)


def message_section(kind, msg_id, topic, payload):
    """The bytes of one outbox message inside a record body."""
    k, i, t = kind.encode(), msg_id.encode(), topic.encode()
    if len(k) > 255 or len(i) > 255 or len(t) > 255 or "\n" in msg_id:
        raise ValueError("outbox: kind, msg_id and topic must be <= 255 bytes, msg_id without newline")
    return struct.pack("<BBBH", len(k), len(i), len(t), len(payload)) + k + i + t + payload


def message_at(body):
    """(kind, msg_id, topic, payload start, payload end) of the message section a record body starts with."""
    lk, li, lt, lp = struct.unpack_from("<BBBH", body, 0)
    p = 5 + lk + li + lt
    if p + lp > len(body):
        raise ValueError("message section overflows its record")
    return (str(body[5:5 + lk], "utf-8"), str(body[5 + lk:5 + lk + li], "utf-8"), str(body[5 + lk + li:p], "utf-8"),
            p, p + lp)


def read_message(body):
    """(kind, msg_id, plain JSON payload, end offset) of the message section a record body starts
    with (for readers: tech, tools)."""
    kind, mid, _, p, e = message_at(body)
    return kind, mid, unpack(body[p:e]), e


def _at(f, pos, n):
    """n bytes of f at pos (ValueError if the file ends first)."""
    f.seek(pos)
    b = f.read(n)
    if len(b) != n:
        raise ValueError("short read")
    return b


def _msg_at(f, pos, end):
    """(payload position, payload length) of the message section at pos of an open file."""
    lk, li, lt, lp = struct.unpack("<BBBH", _at(f, pos, 5))
    p = pos + 5 + lk + li + lt
    if p + lp > end:
        raise ValueError("message section overflows its record")
    return p, lp


def _out(f, data):
    if f.write(data) != len(data):
        raise OSError(_ENOSPC)


def _stream(n):
    """A reusable in-RAM stream: reserved once on MicroPython (n bytes), grown on demand on CPython."""
    try:
        return io.BytesIO(n)
    except TypeError:
        return io.BytesIO()


class RecordLog:
    def __init__(self, path, seg_bytes=4096, segments=8, max_record=None, opener=open):
        if segments < 2:
            raise ValueError("journal: segments must be >= 2 (one is the compaction spare)")
        if not 256 <= seg_bytes <= 65536:
            raise ValueError("journal: seg_bytes must be 256..65536")
        top = min(seg_bytes - HEADER, 65535)
        if max_record is None:
            max_record = top
        if not 64 <= max_record <= top:
            raise ValueError("journal: max_record must be 64..%d" % top)
        self.path = path
        self.seg_bytes = seg_bytes
        self.segments = segments
        self.max_record = max_record
        self.clients = ()
        self._open_file = opener  # injectable so tests can make writes fail like a full flash
        self._buf = bytearray(_CHUNK)
        self._mv = memoryview(self._buf)
        # Records are built in `_rec` and bodies and payloads read back into `_pub`, both reserved at
        # boot: a long-running heap fragments, and a record or payload of a few KB must never need a
        # fresh contiguous block of that size (json.dump streams into the reserved buffer).
        self._rec = _stream(HEADER + self.max_record + 16)
        self._pub = bytearray(self.max_record)
        self._pubmv = memoryview(self._pub)
        self.full = False   # the last write failed (no space, or live records fill every segment)
        self.error = 0      # errno of the last failed write, 0 after a good one
        self.written = 0    # bytes appended since boot, compaction copies included
        self.bad = 0        # runs of bad bytes skipped by the last records() pass
        self.lost = 0       # records lost in them (a damaged header each; at least one a run) and not understood
        self.problems = []  # (segment, offset) of the first few of them
        self.trouble = None  # why open() found no usable directory (reported at boot), else None
        self._segs = None   # segment numbers, oldest first; None until open()
        self._seq = 0
        self._head_size = 0
        self._head_bad = False

    def attach(self, *clients):
        """The clients compaction asks what is live and a refused write asks to shed (wired in app.py)."""
        self.clients = clients

    # -- boot -------------------------------------------------------------------------------
    def open(self):
        """Once at boot: make the directory, settle an interrupted compaction; records() follows."""
        self.trouble = None
        try:
            os.mkdir(self.path)  # its parent (the data directory) exists
        except OSError:
            pass
        try:
            self._segs = self._list()
        except OSError as e:   # a file in its place, or no room to make the directory: run without
            self.trouble = "cannot list %s (errno %s)" % (self.path, e.args[0] if e.args else "?")
            try:
                if not os.stat(self.path)[0] & 0x4000:
                    os.rename(self.path, self.path + ".bad")   # keep it for a human, make the directory
                    self.trouble += ": a file, kept as %s.bad" % self.path
                    os.mkdir(self.path)
                    self._segs = self._list()
            except OSError:
                pass
            if self._segs is None:
                self._segs = []
        self._settle()
        self._seq = 0
        self._head_size = 0
        self._head_bad = False

    def records(self):
        """Every good record in log order as (type, seq, body, (segment, offset)); the body is a view of
        the reserved payload buffer, valid until the next record. After open(), this pass also finds
        the next sequence number and where appends go. Bad runs are counted in .bad."""
        self.bad = 0
        self.lost = 0
        self.problems = []
        segs = self._segs if self._segs is not None else self._list()
        live = segs is self._segs
        for n in segs:
            for _, off, rtype, seq, blen in self._walk(n, True):
                if live and seq >= self._seq:
                    self._seq = seq + 1
                yield rtype, seq, self._pubmv[:blen], (n, off)
            if live and n == segs[-1]:
                self._head_size = self._size
                self._head_bad = self._end != self._size  # never append after a torn tail

    def scan(self):
        """Every good record in log order as (type, seq, body bytes), for readers (tech, tools)."""
        for rtype, seq, body, _ in self.records():
            yield rtype, seq, bytes(body)

    def damaged(self, loc):
        """Count a CRC-valid record at loc (segment, offset) that its client could not understand."""
        self._note_bad(loc[0], loc[1])
        self.lost += 1

    # -- writing ----------------------------------------------------------------------------
    def peek_seq(self):
        """The sequence number the next record will get (state.json keeps it: see app.storage_troubles)."""
        return self._seq

    def next_seq(self):
        """The next sequence number: a record's place in the log's order, kept by its copies."""
        self._ready()
        self._seq += 1
        return self._seq - 1

    def append(self, rtype, seq, body, tier=-1):
        """Write one small record; under pressure let clients shed up to `tier`; (segment, offset) or None."""
        self._ready()
        if len(body) > self.max_record:
            raise ValueError("journal: record of %d bytes exceeds max_record %d" % (len(body), self.max_record))
        self.begin().write(body)
        return self.finish(rtype, seq, tier)

    def begin(self):
        """The reserved record stream, past a blank header: write the body into it, then finish()."""
        self._ready()
        b = self._rec
        b.seek(0)
        b.write(_BLANK)
        return b

    def finish(self, rtype, seq, tier=-1):
        """Write the record begun in the stream (up to its position) with its header and CRC, like append()."""
        b = self._rec
        n = b.tell() - HEADER
        if n > self.max_record:
            raise ValueError("journal: record of %d bytes exceeds max_record %d" % (n, self.max_record))
        buf, mv = self._buf, self._mv
        struct.pack_into("<BBBHI", buf, 0, _M0, _M1, rtype, n, seq)
        c = binascii.crc32(mv[:_CRC_AT])
        for chunk in self._chunks(b, HEADER, n):
            c = binascii.crc32(chunk, c)
        struct.pack_into("<BBBHII", buf, 0, _M0, _M1, rtype, n, seq, c)
        b.seek(0)
        b.write(mv[:HEADER])
        while True:
            loc = self._put(HEADER + n)
            if loc is not None or not self._shed(tier):
                return loc

    def message(self, n, off):
        """The payload of the message record at (n, off), checked again, as plain JSON in a view of the
        reserved payload buffer (valid until the next call); None if it went bad (counted)."""
        try:
            f = self._open_file(self._name(n), "rb")
        except OSError:
            return None
        try:
            r = self._read(f, off, f.seek(0, 2))
            if r is not None and r[0] & HAS_MSG:
                p, lp = _msg_at(f, off + HEADER, off + HEADER + r[2])
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

    def stats(self):
        names = [self._name(n) for n in self._list()]
        return {"segments": len(names), "bytes": sum(os.stat(p)[6] for p in names), "written": self.written,
                "bad": self.bad, "full": self.full}

    # -- segments ---------------------------------------------------------------------------
    def _ready(self):
        if self._segs is None:
            raise ValueError("journal: call recover() once before writing")

    def _shed(self, tier):
        for c in self.clients:
            if c.shed(tier):
                return True
        return False

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
        if not self._segs:
            try:
                os.mkdir(self.path)   # boot found no room for it: make it once there is
            except OSError:
                pass
        self._segs.append(self._segs[-1] + 1 if self._segs else 0)
        self._head_size = 0
        self._head_bad = False
        if len(self._segs) == self.segments:
            return self._compact()
        return True

    def _compact(self):
        old, head = self._segs[0], self._segs[-1]
        moved = []
        out = None
        records = self._walk(old)
        try:
            for f, off, rtype, seq, blen in records:
                t = self._keep(rtype, seq)
                if t is None:
                    continue
                if out is None:
                    out = self._open_file(self._name(head), "ab")
                self._copy(f, off + HEADER, blen, t, seq, out)
                if t & HAS_MSG and not t & DONE:
                    moved.append((seq, self._head_size))
                self._head_size += HEADER + blen
                self.written += HEADER + blen
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
            for c in self.clients:
                c.moved(head, moved)
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

    def _keep(self, rtype, seq):
        """The type to copy a record with (what its clients still need of it), or None."""
        need = 0
        for c in self.clients:
            need |= c.live(rtype, seq)
        if need & KEEP:
            return rtype | DONE if rtype & HAS_MSG and not need & KEEP_MESSAGE else rtype
        return MESSAGE | HAS_MSG if need & KEEP_MESSAGE else None

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
    def _walk(self, n, whole=False):
        """Good records of segment n as (file, offset, type, seq, body length), the body read into
        the payload buffer if `whole`; counts bad runs."""
        self._end = self._size = 0
        try:
            f = self._open_file(self._name(n), "rb")
        except OSError:
            return
        size = self._size = f.seek(0, 2)  # cheaper than os.stat on littlefs
        off = 0
        in_bad = False
        heads = 0   # record headers (magic) in the current bad run: each is a record lost
        try:
            while off < size:
                self._buf[0] = 0   # no header read (a short tail) is no magic
                r = self._read(f, off, size, whole)
                if r is None:
                    if not in_bad:
                        self._note_bad(n, off)
                        in_bad = True
                        heads = 0
                    if self._buf[0] == _M0 and self._buf[1] == _M1:
                        heads += 1
                    off = self._resync(f, off + 1, size)
                    continue
                if in_bad:
                    self.lost += heads or 1   # a run without a header still held at least one record
                in_bad = False
                yield f, off, r[0], r[1], r[2]
                off += HEADER + r[2]
                self._end = off
            if in_bad:
                self.lost += heads or 1
        finally:
            f.close()

    def _read(self, f, off, size, whole=False):
        """(type, seq, body length) of a whole, CRC-valid record at off, else None; the body streams
        through the scratch buffer, or lands in the payload buffer if `whole`."""
        if off + HEADER > size:
            return None
        mv = self._mv
        try:
            f.seek(off)
            if f.readinto(mv[:HEADER]) != HEADER:
                return None
            m0, m1, rtype, blen, seq, crc = struct.unpack_from("<BBBHII", self._buf, 0)
            if m0 != _M0 or m1 != _M1 or blen > self.max_record or off + HEADER + blen > size:
                return None
            c = binascii.crc32(mv[:_CRC_AT])
            if whole:
                body = self._pubmv[:blen]
                if blen and f.readinto(body) != blen:
                    return None
                c = binascii.crc32(body, c)
            else:
                for chunk in self._chunks(f, off + HEADER, blen):
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
