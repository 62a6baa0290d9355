"""The event log: one line per notable event, printed for the technician, kept in RAM and on flash.

Lines are `@ {json}` so the simulator and tools can parse them; fields never hold a raw
card UID (only pseudonyms). With a `store` (firmware/storage/eventlog.py) each line is also kept in the
bounded log files of the data directory.

    log = Log(clock); log.event("tap", token="3f2a...", result="accepted")
"""
import json
import sys

from firmware.storage.eventlog import URGENT
from firmware.core.timefmt import iso


def print_exception(e):
    """The traceback on the console, on MicroPython and CPython alike."""
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:
        import traceback

        traceback.print_exception(e)


class Log:
    def __init__(self, clock, keep=16, out=print):
        self._clock = clock
        self._out = out
        self._keep = keep
        self.recent = []  # the last `keep` lines, newest last
        self.store = None  # the persistent copy (firmware/storage/eventlog.py), once the data directory is known

    def event(self, ev, **fields):
        fields["ev"] = ev
        fields["ts"] = iso(self._clock.time())
        line = "@ " + json.dumps(fields)
        self.recent.append(line)
        if len(self.recent) > self._keep:
            self.recent.pop(0)
        self._out(line)
        if self.store is not None:
            self.store.append(line, ev in URGENT)
