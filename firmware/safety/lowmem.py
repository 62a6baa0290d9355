"""Running short of heap is not an outage. A MemoryError outside the safety path defers only its
task: the cheapest queued messages go, a `low_memory` line is logged and, at most once a minute,
a notice goes upstream. One in the safety path opens the contactor and raises the `memory` fault,
which suspends the session (no offer) until a collection leaves room again.

    low = LowMemory(clock, log, outbox, contactor, reactions, faults, notice)
    try: sync.tick()
    except MemoryError: low.deferred("sync")
"""
import gc

from micropython import const

_RESUME_BYTES = const(8192)   # a block this big after a collection: room for a session's end record
_NOTICE_MS = const(60000)     # at most one low-memory notice upstream a minute


def memory_allows():
    """A collection leaves a block the size of a session's end record (on an ESP32 asking for it
    also grows the heap if it can): charging suspended for memory may go on."""
    gc.collect()
    try:
        bytearray(_RESUME_BYTES)
    except MemoryError:
        return False
    return True


class LowMemory:
    def __init__(self, clock, log, outbox, contactor, reactions, faults, notice):
        self.clock = clock
        self.log = log
        self.outbox = outbox
        self.contactor = contactor
        self.reactions = reactions
        self.faults = faults
        self.notice = notice        # notice(**fields): a `fault` notice upstream
        self.n = 0                  # MemoryErrors the loop survived since boot (mod 2^30)
        self.tripped = False        # the safety path ran out of heap and its fault is not raised yet
        self._task = None           # the last task deferred, not yet told upstream
        self._told = None           # ticks_ms of the last notice

    def deferred(self, task):
        """A MemoryError outside the safety path: the task's work waits for its next turn, the
        cheapest queued messages (meter values, `updated`, reports) go, the charge goes on."""
        self.n = (self.n + 1) & 0x3FFFFFFF
        self._task = task
        gc.collect()
        try:
            self.outbox.shed(0)
            self.log.event("low_memory", deferred=task, n=self.n)
        except MemoryError:
            pass   # the notice upstream still tells it

    def safety(self):
        """A MemoryError in the safety path: power off first, then the `memory` fault suspends the
        session (no offer, no new session) until a collection leaves room (memory_allows)."""
        self.contactor.open()   # before anything that allocates
        gc.collect()
        self.tripped = True     # no offer, no new session until the fault is raised
        self.n = (self.n + 1) & 0x3FFFFFFF
        try:
            self.reactions.trip("memory", "out of heap in the safety path")
            self.tripped = False
        except MemoryError:
            pass   # the next pass tries again

    def check(self, now):
        """Once a second: a suspension for memory ends when memory allows; deferred work is told
        upstream (a `low_memory` notice, at most one a minute)."""
        if "memory" in self.faults.active and memory_allows():
            self.faults.gone("memory")   # cleared after its backoff by the fault checks
        task = self._task
        if task is not None and (self._told is None or self.clock.ticks_diff(now, self._told) >= _NOTICE_MS):
            self._told = now
            self._task = None
            self.notice(info="low_memory", deferred=task, n=self.n)
