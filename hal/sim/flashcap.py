"""A data directory with a capacity: the simulator's full flash (chaos runs, tools/chaos.py).

Mounted over the host folder that holds the firmware's data, it passes everything through,
except that once the files in it hold `cap` bytes, opening a file for writing and making a
directory fail with ENOSPC, as littlefs refuses new blocks on a full partition; reading, renaming
and removing (which frees room, as the event log's rotation does) still work. A file opened
before the cap was reached may grow past it by what is written through it (one record).

    os.mount(CappedDir("/run/data", 40000), "/run/data")    # MicroPython (a VFS written in Python)
"""
import os

from micropython import const

_ENOSPC = const(28)
_DIR = const(0x4000)


class CappedDir:
    def __init__(self, root, cap):
        self.root = root
        self.cap = cap
        self._fs = os.VfsPosix()   # whole host paths: a VfsPosix with a root renames wrongly (1.2x)

    def used(self, path=""):
        """Bytes the files under path (relative to the root) hold."""
        n = 0
        for e in self._fs.ilistdir(self.root + path):
            p = path + "/" + e[0]
            n += self.used(p) if e[1] & _DIR else self._fs.stat(self.root + p)[6]
        return n

    def _room(self):
        if self.used() >= self.cap:
            raise OSError(_ENOSPC)

    def _host(self, path):
        return self.root if path == "/" else self.root + path

    # -- the VFS interface (MicroPython calls these with paths relative to the mount point) -----------
    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        if "w" in mode or "a" in mode or "+" in mode:
            self._room()
        return self._fs.open(self._host(path), mode)

    def mkdir(self, path):
        self._room()
        self._fs.mkdir(self._host(path))

    def ilistdir(self, path):
        return self._fs.ilistdir(self._host(path))

    def stat(self, path):
        return self._fs.stat(self._host(path))

    def remove(self, path):
        self._fs.remove(self._host(path))

    def rmdir(self, path):
        self._fs.rmdir(self._host(path))

    def rename(self, old, new):
        self._fs.rename(self._host(old), self._host(new))
