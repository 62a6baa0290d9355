"""Flash kept back for what money needs: a file of a few blocks that a session's journal records and
state.json take when the flash is full, so a power cut then neither loses a bill held only in RAM
nor lets the next boot reuse its tx id. Droppable writes never get it; it comes back once there is room.

    reserve = Reserve("data/reserve"); reserve.ensure()      # at boot; tick() every second after
    ...a session record or state.json refused with ENOSPC: if reserve.release(): write again
"""
import os

from micropython import const

SIZE = const(8192)        # two littlefs blocks: about ten sessions' START and END records and state saves
_CHUNK = const(512)
_RETRY_S = const(60)      # while it is gone, try to make it again once a minute
_ZEROS = bytes(_CHUNK)


class Reserve:
    def __init__(self, path, size=SIZE):
        self.path = path
        self.size = size
        self.held = False      # the file is on flash, whole
        self.released = 0      # times a full flash took it
        self._wait = 0

    def ensure(self):
        """Make the file if it is not there (a partial one is removed: it would only take room); True if held."""
        if self.held:
            return True
        try:
            if os.stat(self.path)[6] == self.size:
                self.held = True
                return True
        except OSError:
            pass
        try:
            with open(self.path, "wb") as f:
                for _ in range(self.size // _CHUNK):
                    f.write(_ZEROS)
            self.held = True
        except OSError:
            self._remove()
        return self.held

    def tick(self):
        """Once a second: after a release, make it again when the flash has room (once a minute)."""
        if self.held:
            return
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
        self._wait = _RETRY_S
        return self._remove()

    def _remove(self):
        try:
            os.remove(self.path)
            return True
        except OSError:
            return False
