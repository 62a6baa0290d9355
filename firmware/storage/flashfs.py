"""A flash chip in RAM: a block device for littlefs (os.VfsLfs2) in tests and the simulator.

Like NOR flash it erases to 0xFF, and it counts erases and programmed bytes, so a test can see
what a workload costs the flash; `cut_after` simulates a power cut in the middle of a write.

    dev = RamFlash(4096, 64); mount(dev, "/flash", fresh=True)     # MicroPython only
    ...; dev.erases, dev.programmed; os.umount("/flash")
"""
import os

from micropython import const

_EIO = const(5)


class RamFlash:
    def __init__(self, block_size=4096, blocks=64, image=None):
        self.block_size = block_size
        self.blocks = blocks
        size = block_size * blocks
        if image is not None and len(image) != size:
            raise ValueError("flashfs: image must be block_size * blocks bytes")
        self.data = bytearray(image) if image is not None else bytearray(b"\xff" * size)
        self.erases = 0
        self.programmed = 0
        self.cut_after = None  # program operations left before a simulated power cut
        self.image = None      # the flash contents at the moment of the cut

    def readblocks(self, block, buf, off=0):
        a = block * self.block_size + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, block, buf, off=None):
        if self.cut_after is not None:
            if self.cut_after <= 0:
                if self.image is None:
                    self.image = bytes(self.data)  # what a reboot would find
                return -_EIO  # littlefs sees an I/O error, as from a chip losing power
            self.cut_after -= 1
        if off is None:  # the simple interface writes whole, implicitly erased blocks
            self.ioctl(6, block)
            off = 0
        a = block * self.block_size + off
        self.data[a:a + len(buf)] = buf
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.block_size
        if op == 6:
            a = arg * self.block_size
            self.data[a:a + self.block_size] = b"\xff" * self.block_size
            self.erases += 1
        return 0


def mount(dev, path, fresh=False):
    """Mount dev as littlefs v2 at path (formatting it first if fresh)."""
    if fresh:
        os.VfsLfs2.mkfs(dev)
    os.mount(os.VfsLfs2(dev), path)
