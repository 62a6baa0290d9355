"""Simulated I2C FRAM (Fujitsu MB85RC64/256 behaviour) whose contents can outlive the process.

It answers the byte-level I2C transfers of hal/sim/machine.py as the chip does: after its
address, two bytes set the memory address, further written bytes are stored at once (no write
cycle, no page limit, the address wraps at the end), a read continues from the address. With
`path` the image is a file (the run's state directory under tools/sim.py): each transfer's bytes
reach the file before the transfer ends, so a power cut (the runner killing the process) keeps
every completed write, as the ferroelectric cells do.

    fram = SimFRAM(32768, path="run/fram.bin"); machine.i2c_bus(0).attach(fram, addr=0x50)

Fault injection:
    fram.silent = True      no ACK: the driver sees OSError
    fram.tear_after = n     only the next n data bytes are stored (a cut in the middle of a write)
"""


_PAGE = 64   # the image is kept in pages of this many bytes, only those ever written (a new part reads 0)


class SimFRAM:
    def __init__(self, size=32768, path=None):
        self.size = size
        self._pages = {}         # page number -> bytearray(_PAGE): a 32 KB part costs the heap what it holds
        self.silent = False
        self.tear_after = None
        self.writes = 0          # data bytes stored since creation (wear is no concern for FRAM)
        self._file = None
        if path is not None:
            try:
                f = open(path, "r+b")
                buf = bytearray(_PAGE)
                for n in range(size // _PAGE):
                    if not f.readinto(buf):
                        break
                    if any(buf):
                        self._pages[n] = bytearray(buf)
            except OSError:
                f = open(path, "w+b")
            self._file = f
        self._ptr = 0
        self._addr_bytes = 0     # memory-address bytes received in this transfer (2 before data)
        self._lo = self._hi = 0  # bytes changed in this transfer, written to the file at stop()

    def peek(self, addr, n):
        """The n bytes stored from addr (tests look at the cells as the chip holds them)."""
        return bytes(self._byte(a) for a in range(addr, addr + n))

    def _byte(self, p):
        page = self._pages.get(p // _PAGE)
        return page[p % _PAGE] if page is not None else 0

    # --- I2C (hal/sim/machine.py _I2CBus) -------------------------------------------------

    def start(self, read):
        if self.silent:
            return False
        if not read:
            self._addr_bytes = 0
        return True

    def write(self, b):
        if self._addr_bytes < 2:
            self._ptr = ((self._ptr << 8) | b) & 0xFFFF if self._addr_bytes else b
            self._addr_bytes += 1
            if self._addr_bytes == 2:
                self._ptr %= self.size
                self._lo = self._hi = self._ptr
            return True
        if self.tear_after is not None:
            if self.tear_after <= 0:
                return True   # the supply is gone: the byte never reaches the cells
            self.tear_after -= 1
        p = self._ptr
        page = self._pages.get(p // _PAGE)
        if page is None:
            page = self._pages[p // _PAGE] = bytearray(_PAGE)
        page[p % _PAGE] = b
        self.writes += 1
        self._ptr = (p + 1) % self.size
        if self._hi == p:
            self._hi = p + 1
        else:   # wrapped past the end: write the whole image at stop()
            self._lo, self._hi = 0, self.size
        return True

    def read(self):
        p = self._ptr
        self._ptr = (p + 1) % self.size
        return self._byte(p)

    def stop(self):
        f = self._file
        if f is not None and self._hi > self._lo:
            f.seek(self._lo)
            f.write(self.peek(self._lo, self._hi - self._lo))
            f.flush()
        self._lo = self._hi = 0
