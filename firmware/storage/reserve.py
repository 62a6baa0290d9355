"""Flash kept back for what money needs: a file of a few blocks that a session's journal records and
state.json take when the flash is full, so a power cut then neither loses a bill held only in RAM
nor lets the next boot reuse its tx id. Droppable writes never get it; it comes back once there is room.

    reserve = Reserve("data/reserve"); reserve.ensure()   # at boot; Health retries it (storage/health.py)
    ...a session record or state.json refused with ENOSPC: if reserve.release(): write again
"""
import os

from micropython import const

SIZE = const(8192)        # two littlefs blocks: about ten sessions' START and END records and state saves
_CHUNK = const(512)
_RETRY_S = const(60)      # while it is gone, try to make it again once a minute
_ENOSPC = const(28)


class Reserve:
    def __init__(self, path, size=SIZE):
        self.path = path
        self.size = size
        self.held = False      # the file is on flash, whole
        self.released = 0      # times a full flash took it
        self.error = 0         # ENOSPC while it is not held (reported like a writer's: storage/health.py)
        self._wait = 0

    def ensure(self):
        """Make the file if it is not there (a partial one is removed: it would only take room); True if held."""
        if self.held:
            return True
        try:
            size = os.stat(self.path)[6]
        except OSError:
            size = -1
        if size == self.size:
            self.held = True
        elif size >= 0:
            self._remove()   # a half-made one (a cut while making it)
        if not self.held and self._room():
            zeros = bytes(_CHUNK)   # made here, not at import: the heap holds it only while writing
            try:
                with open(self.path, "wb") as f:
                    for _ in range(self.size // _CHUNK):
                        f.write(zeros)
                self.held = True
            except OSError:
                self._remove()
        self.error = 0 if self.held else _ENOSPC
        return self.held

    def retry(self):
        """Called every second while it is not held: make it again when there is room, once a minute."""
        self._wait -= 1
        if self._wait <= 0:
            self._wait = _RETRY_S
            self.ensure()

    def release(self):
        """A money write found the flash full: free the room for it; False if there was none to give."""
        if not self.held:
            return False
        self.held = False
        self.released += 1
        self.error = _ENOSPC
        self._wait = _RETRY_S
        return self._remove()

    def _room(self):
        """Twice its size free, where the file system says (it must not take the last free blocks)."""
        try:
            st = os.statvfs(self.path.rsplit("/", 1)[0] or "/")
        except (OSError, AttributeError):
            return True   # no statvfs here: try, and remove what a full flash leaves half made
        if st[4] >= 0x80000000:   # littlefs counts below zero (as unsigned) when it is over-full
            return False
        return st[0] * st[4] >= 2 * self.size

    def _remove(self):
        try:
            os.remove(self.path)
            return True
        except OSError:
            return False
