"""Technician commands typed at the USB console while the charger runs, e.g. over
`mpremote connect PORT resume repl`: read-only helpers only, so looking never stops a session.
Ctrl-C stays the explicit stop (docs/technician.md).

    console = Console(port, clock); ... console.tick()   # in the loop: never waits, one line at most
"""
from micropython import const

_MAX = const(40)         # bytes of one command line; a longer line is refused whole
_EVERY_MS = const(100)   # how often the port is looked at
_PER_TICK = const(48)    # bytes taken per look, so a flood cannot hold the loop
_MAX_N = const(100)      # the largest count `log N` / `sessions N` takes
HELP = "console: status | log [N] | sessions [N] | faults | help   (Ctrl-C stops the charger)"


class Console:
    def __init__(self, port, clock, out=print):
        self.port = port
        self.clock = clock
        self.out = out
        self._line = bytearray(_MAX)
        self._n = 0
        self._over = False
        self._next = clock.ticks_ms()

    def tick(self):
        """Takes what was typed; runs a command once its line ends. Returns None (the loop's stop test)."""
        now = self.clock.ticks_ms()
        if self.port is None or self.clock.ticks_diff(now, self._next) < 0:
            return None
        self._next = self.clock.ticks_add(now, _EVERY_MS)
        for _ in range(_PER_TICK):
            b = self.port.read_byte()
            if b is None:
                return None
            if b == 10 or b == 13:
                if self._over:
                    self.out("console: a line over %d characters, ignored" % _MAX)
                elif self._n:
                    self._run(bytes(self._line[:self._n]))
                    self._n = 0
                    return None   # one command per look
                self._n, self._over = 0, False
            elif self._n < _MAX:
                self._line[self._n] = b
                self._n += 1
            else:
                self._over = True
        return None

    def _run(self, line):
        """One command: its helper's output, or why it was refused; nothing it does can stop the loop."""
        try:
            words = line.decode().split()
        except UnicodeError:
            words = ["?"]
        if not words:
            return
        name, args = words[0], words[1:]
        self.out("> " + " ".join(words))
        try:
            if name == "help":
                self.out(HELP)
                return
            if name not in ("status", "log", "sessions", "faults"):
                self.out("console: unknown command %r; %s" % (name, HELP[9:]))
                return
            n = None
            if args:
                if name not in ("log", "sessions") or len(args) > 1 or not args[0].isdigit() \
                        or not 0 < int(args[0]) <= _MAX_N:
                    self.out("console: %s takes %s" % (name, "one count, 1..%d" % _MAX_N
                                                       if name in ("log", "sessions") else "no argument"))
                    return
                n = int(args[0])
            from firmware.ops import tech   # loaded on first use: RAM only for a technician

            if name == "status":
                tech.status()
            elif name == "faults":
                tech.faults()
            elif name == "log":
                tech.log(n or 20)
            else:
                tech.sessions(n or 5)
        except Exception as e:   # noqa: BLE001 - a helper's failure is reported, charging goes on
            self.out("console: %s failed: %s: %s" % (name, type(e).__name__, e))
