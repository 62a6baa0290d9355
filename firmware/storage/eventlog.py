"""The persistent event log: the `@ {json}` lines of firmware/core/log.py in a few bounded files.

`log.0` is the newest file, `log.1` the one before, and so on; a file never grows past
`file_bytes`: when the next lines would not fit, the oldest file is deleted, the others move
up one number and a fresh `log.0` starts, so the log never takes more than
`files * file_bytes` of flash. Lines wait in RAM and are appended in batches (`batch`
lines, `batch_ms` after the first waiting one, or at once for URGENT events), so flash sees
one small write per batch, never one per event. Plain text: `mpremote cat :data/log.0`.
Writes never raise: a full or failing flash costs log lines (counted in `dropped`), never the
charge.

    store = EventLog("data", clock); store.append('@ {"ev": "boot"}', urgent=True)
    store.tail(20)   # the newest 20 lines, files and RAM together
"""
import os

from micropython import const

# events worth the flash write at once: what a technician must find after a crash or reset
URGENT = ("boot", "fault", "fault_reset", "session_end", "recovered", "shutdown", "halt", "reset")
_NL = const(10)
_TAIL_MAX = const(500)


class EventLog:
    def __init__(self, folder, clock=None, file_bytes=8192, files=4, batch=16, batch_ms=300000,
                 line_max=None, opener=open):
        if not 1024 <= file_bytes <= 65536:
            raise ValueError("eventlog: file_bytes must be 1024..65536")
        if not 2 <= files <= 10:
            raise ValueError("eventlog: files must be 2..10")
        if not 1 <= batch <= 64 or batch_ms < 0:
            raise ValueError("eventlog: batch must be 1..64 lines, batch_ms >= 0")
        if line_max is None:
            line_max = min(512, file_bytes // 8)
        if not 64 <= line_max <= file_bytes // 8:
            raise ValueError("eventlog: line_max must be 64..file_bytes/8")
        self.folder = folder
        self._clock = clock
        self.file_bytes = file_bytes
        self.files = files
        self.batch = batch
        self.batch_ms = batch_ms
        self.line_max = line_max
        self._open_file = opener   # injectable so tests can make writes fail like a full flash
        self._pending = []         # encoded lines not yet on flash, oldest first
        self._since = 0            # ticks_ms of the oldest pending line
        self.written = 0           # bytes appended since boot
        self.writes = 0            # file appends since boot (flash wear)
        self.dropped = 0           # lines lost to write errors
        self.error = 0             # errno of the last failed write, 0 after a good one
        self._size = 0
        self._torn = False         # log.0 may end in half a line: start the next write on a new one
        try:
            f = opener(self.name(0), "rb")
            try:
                self._size = f.seek(0, 2)
                if self._size:
                    f.seek(self._size - 1)
                    self._torn = f.read(1)[0] != _NL
            finally:
                f.close()
        except OSError:
            pass   # no log yet

    def name(self, i):
        return "%s/log.%d" % (self.folder, i)

    def append(self, line, urgent=False):
        """Queue one line (cut to line_max characters, at most 512 and 1/8 of a file by default);
        written when a batch is due. Never raises."""
        if len(line) > self.line_max:
            line = line[:self.line_max - 3] + "..."
        c = self._clock
        if not self._pending and c is not None:
            self._since = c.ticks_ms()
        self._pending.append((line + "\n").encode())
        if urgent or len(self._pending) >= self.batch or \
                (c is not None and c.ticks_diff(c.ticks_ms(), self._since) >= self.batch_ms):
            self.flush()

    def flush(self):
        """Append the waiting lines to log.0, rotating when full; True if all of them are on flash."""
        lines = self._pending
        self._pending = []
        start = 0
        n = 0
        for i in range(len(lines)):
            b = lines[i]
            if self._size + n + len(b) + self._torn > self.file_bytes:
                done = self._write(lines, start, i)
                if done < i - start or not self._rotate():
                    self.dropped += len(lines) - start - done
                    return False
                start = i
                n = 0
            n += len(b)
        done = self._write(lines, start, len(lines))
        self.dropped += len(lines) - start - done
        return start + done == len(lines)

    def _write(self, lines, start, end):
        """Append lines[start:end] to log.0 in one open; how many of them were written whole."""
        if start == end:
            return 0
        done = 0
        try:
            f = self._open_file(self.name(0), "ab")
            try:
                if self._torn:
                    f.write(b"\n")
                    self._size += 1
                    self._torn = False
                for i in range(start, end):
                    b = lines[i]
                    self._torn = True          # until the whole line is written
                    self._size += len(b)       # counted first: a torn line still takes room
                    if f.write(b) != len(b):
                        raise OSError(28)      # ENOSPC
                    self.written += len(b)
                    self._torn = False
                    done += 1
            finally:
                f.close()   # littlefs commits here
        except OSError as e:
            self.error = e.args[0] if e.args else -1
            return done
        self.writes += 1
        self.error = 0
        return done

    def _rotate(self):
        """log.i -> log.i+1, the oldest deleted: a fresh log.0."""
        try:
            os.remove(self.name(self.files - 1))
        except OSError:
            pass
        for i in range(self.files - 2, -1, -1):
            try:
                os.rename(self.name(i), self.name(i + 1))
            except OSError:
                pass   # a number that does not exist yet
        try:
            os.stat(self.name(0))
        except OSError:
            self._size = 0
            self._torn = False
            return True
        self.error = -1
        return False   # log.0 could not move away: never grow it past file_bytes

    def tail(self, n=20):
        """The newest n lines (at most 500), oldest first: the files, then what waits in RAM."""
        n = max(0, min(n, _TAIL_MAX))
        out = []
        for i in range(self.files - 1, -1, -1):
            try:
                f = self._open_file(self.name(i), "rb")
            except OSError:
                continue
            try:
                while True:
                    raw = f.readline()
                    if not raw:
                        break
                    _keep(out, raw, n)
            except OSError:
                pass
            finally:
                f.close()
        for raw in self._pending:
            _keep(out, raw, n)
        return out


def _keep(out, raw, n):
    """Add one line (bytes) to the newest-n list out."""
    try:
        line = str(raw, "utf-8").rstrip("\r\n")
    except ValueError:   # half a character where a power cut tore a line
        return
    if not line:
        return
    out.append(line)
    if len(out) > n:
        out.pop(0)
