"""Firmware bundle: a streamable archive of files, written by tools/bundle.py, read by the charger.

Layout (integers big-endian), parsed incrementally as the bytes arrive, whatever the chunking:

    header   b"CPFW"  format (u8, = 1)  file count (u16)
    file     name length (u8)  name (ASCII)  data length (u32)  data        ... `count` times

Names are safe relative paths (`firmware/app.py`): no absolute path, no `..`, `.` or empty
part, only `A-Z a-z 0-9 _ - .` and `/`, first part among `roots`; count and total size are capped.

    r = Reader(sink, max_total=1 << 20); r.feed(chunk); ...; r.finish()   # sink.begin/write/end
    blob = pack([("firmware/version.py", b'VERSION = "1.4.0"\\n')])          # tools/bundle.py
"""
from micropython import const

MAGIC = b"CPFW"
FORMAT = 1
MAX_FILES = 256
MAX_NAME = 96
ROOTS = ("firmware", "hal")
_HEADER = const(7)
_DATA = const(0)       # phases: inside a file's data, or filling the field buffer
_FIELD = const(1)
_DONE = const(2)
_F_HEADER = const(0)   # which field the buffer fills
_F_NAME_LEN = const(1)
_F_NAME = const(2)
_F_SIZE = const(3)
_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."


def check_name(name, roots=ROOTS):
    """The name as given if it is a safe relative path under one of roots, else ValueError."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise ValueError("bundle: file name must be 1..%d characters" % MAX_NAME)
    for c in name:
        if c != "/" and c not in _SAFE:
            raise ValueError("bundle: file name %r has a character outside A-Z a-z 0-9 _ - . /" % name)
    parts = name.split("/")
    for p in parts:
        if p in ("", ".", ".."):
            raise ValueError("bundle: file name %r is not a plain relative path" % name)
    if roots is not None and (len(parts) < 2 or parts[0] not in roots):
        raise ValueError("bundle: file name %r is not under %s/" % (name, "/, ".join(roots)))
    return name


def pack(files, roots=ROOTS):
    """The bundle bytes for [(name, data)], checked against the same rules the reader applies."""
    if len(files) > MAX_FILES:
        raise ValueError("bundle: at most %d files (got %d)" % (MAX_FILES, len(files)))
    out = [MAGIC, bytes((FORMAT, len(files) >> 8, len(files) & 255))]
    for name, data in files:
        check_name(name, roots)
        n = len(data)
        out.append(bytes((len(name),)) + name.encode())
        out.append(bytes((n >> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255)))
        out.append(bytes(data))
    return b"".join(out)


class Reader:
    """Parses a bundle fed in chunks of any size and hands each file's data to `sink` as it comes:
    `sink.begin(name, size)`, `sink.write(memoryview)` (any number of times), `sink.end()`."""

    def __init__(self, sink, max_total, max_files=MAX_FILES, roots=ROOTS):
        self.sink = sink
        self.max_total = max_total
        self.max_files = max_files
        self.roots = roots
        self.files = 0          # files declared by the header
        self.done = 0           # files complete
        self.total = 0          # data bytes declared so far
        self.name = None        # the file being read
        self._buf = bytearray(max(_HEADER, MAX_NAME))
        self._have = 0
        self._need = _HEADER
        self._field = _F_HEADER
        self._phase = _FIELD
        self._left = 0          # data bytes of the current file still to come

    def feed(self, chunk):
        """Consume one chunk (bytes, bytearray or memoryview); ValueError on a malformed bundle."""
        mv = memoryview(chunk)
        i = 0
        n = len(mv)
        while i < n:
            if self._phase == _DATA:
                k = min(self._left, n - i)
                self.sink.write(mv[i:i + k])
                i += k
                self._left -= k
                if not self._left:
                    self._end_file()
            elif self._phase == _FIELD:
                k = min(self._need - self._have, n - i)
                self._buf[self._have:self._have + k] = mv[i:i + k]
                self._have += k
                i += k
                if self._have == self._need:
                    self._have = 0
                    self._field_done()
            else:
                raise ValueError("bundle: data after the last file")

    def finish(self):
        """The bundle ended: ValueError unless every declared file was complete."""
        if self._phase != _DONE:
            raise ValueError("bundle: truncated (%d of %d files complete)" % (self.done, self.files))

    def _expect(self, field, n):
        self._field = field
        self._need = n

    def _field_done(self):
        b = self._buf
        f = self._field
        if f == _F_HEADER:
            if bytes(b[:4]) != MAGIC:
                raise ValueError("bundle: not a firmware bundle (bad magic)")
            if b[4] != FORMAT:
                raise ValueError("bundle: format %d is not supported (this firmware reads %d)" % (b[4], FORMAT))
            self.files = (b[5] << 8) | b[6]
            if not 0 < self.files <= self.max_files:
                raise ValueError("bundle: must hold 1..%d files (declares %d)" % (self.max_files, self.files))
            self._expect(_F_NAME_LEN, 1)
        elif f == _F_NAME_LEN:
            if not 0 < b[0] <= MAX_NAME:
                raise ValueError("bundle: file name must be 1..%d characters" % MAX_NAME)
            self._expect(_F_NAME, b[0])
        elif f == _F_NAME:
            try:
                name = bytes(b[:self._need]).decode()
            except UnicodeError:
                raise ValueError("bundle: file name is not ASCII")
            self.name = check_name(name, self.roots)
            self._expect(_F_SIZE, 4)
        else:
            size = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
            self.total += size
            if self.total > self.max_total:
                raise ValueError("bundle: files exceed %d bytes in total" % self.max_total)
            self.sink.begin(self.name, size)
            self._left = size
            self._phase = _DATA
            if not size:
                self._end_file()

    def _end_file(self):
        self.sink.end()
        self.done += 1
        self.name = None
        if self.done == self.files:
            self._phase = _DONE
        else:
            self._phase = _FIELD
            self._expect(_F_NAME_LEN, 1)
