"""The USB console's input, read without waiting: what a technician types while the charger runs.

The UART driver keeps Ctrl-C for itself (KeyboardInterrupt, the explicit stop); every other byte
waits here until the loop asks for it.

    console = Console(); b = console.read_byte()   # an int, or None when nothing was typed
    console.waiting()                              # a byte is there (the loop loads the console then)
"""
import select
import sys


class Console:
    def __init__(self, stream=None):
        stream = stream or sys.stdin
        self._stream = getattr(stream, "buffer", stream)   # bytes, not text
        self._poll = select.poll()
        self._poll.register(stream, select.POLLIN)
        # MicroPython's ipoll reuses its result: asking every 100 ms allocates nothing
        self._ready = getattr(self._poll, "ipoll", self._poll.poll)

    def waiting(self):
        """Something to read: typed bytes, or the end of a terminal that is gone (never blocks)."""
        for _ in self._ready(0):
            return True
        return False

    def read_byte(self):
        """One byte typed, or None when none waits or the console is closed (never blocks)."""
        for _ in self._ready(0):
            b = self._stream.read(1)
            return b[0] if b else None
        return None
