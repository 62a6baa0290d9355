"""FRAM driver: a few bytes that survive power cuts, written at bus speed, for the energy register.

Hardware: an I2C ferroelectric RAM (Fujitsu MB85RC64/MB85RC256, Infineon FM24CL64): 7-bit address
0x50-0x57, 2-byte memory address, byte-writable, no erase, ~10^12 write cycles, so it can be
written at every energy read where flash (littlefs, 100 k erases, 5-50 ms) cannot. `Record` keeps
four 30-bit ints in two alternating slots, each with a sequence number and a CRC-16: a write torn
by a power cut leaves the other copy whole, and read() returns the newest valid one.

    fram = FRAM(I2C(0, scl=Pin(22), sda=Pin(21), freq=400000), addr=0x50, size=32768)
    rec = Record(fram, 0); rec.write(wh, rem, tx_id, start_wh); rec.read()  # -> (4 ints) or None
"""
from micropython import const

_SLOT = const(20)        # seq u16, four u32 values, CRC-16 u16
_WORDS = const(4)
_SEQ_MASK = const(0xFFFF)
_VALUE_MAX = const(0x3FFFFFFF)   # values stay small ints on an ESP32


def crc16(buf, n):
    """CRC-16/CCITT-FALSE of buf[:n] (allocation-free)."""
    crc = 0xFFFF
    for i in range(n):
        crc ^= buf[i] << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


class FRAM:
    """i2c: a machine.I2C; addr: the chip's 7-bit address (A2..A0 pins); size: bytes (8-32 KB parts)."""

    def __init__(self, i2c, addr=0x50, size=32768):
        if not 0x50 <= addr <= 0x57:
            raise ValueError("FRAM address must be 0x50..0x57, got 0x%02x" % addr)
        if not 256 <= size <= 65536:
            raise ValueError("FRAM size must be 256..65536 bytes, got %d" % size)
        self._i2c = i2c
        self.addr = addr
        self.size = size

    def _range(self, mem, n):
        if mem < 0 or mem + n > self.size:
            raise ValueError("FRAM range 0x%04x+%d outside %d bytes" % (mem, n, self.size))

    def readinto(self, mem, buf):
        """Fill buf from memory address mem."""
        self._range(mem, len(buf))
        try:
            self._i2c.readfrom_mem_into(self.addr, mem, buf, addrsize=16)
        except OSError:
            raise OSError("FRAM not responding at 0x%02x" % self.addr)

    def write(self, mem, buf):
        """Write buf at memory address mem: done when the bus transfer ends (no write cycle)."""
        self._range(mem, len(buf))
        try:
            self._i2c.writeto_mem(self.addr, mem, buf, addrsize=16)
        except OSError:
            raise OSError("FRAM not responding at 0x%02x" % self.addr)


class Record:
    """Four ints 0..2**30-1 at `offset` (uses 40 bytes): two slots written in turn, the newest valid wins."""

    def __init__(self, fram, offset=0):
        if offset < 0 or offset + 2 * _SLOT > fram.size:
            raise ValueError("FRAM record at 0x%04x does not fit %d bytes" % (offset, fram.size))
        self._fram = fram
        self._offset = offset
        self._buf = bytearray(_SLOT)   # made once: write() allocates nothing
        self._seq = -1                 # last sequence written or read; -1: not read yet

    def read(self):
        """The newest valid copy as a tuple of four ints, or None (blank or both damaged)."""
        best = None
        best_seq = 0
        b = self._buf
        for slot in range(2):
            self._fram.readinto(self._offset + slot * _SLOT, b)
            if crc16(b, _SLOT - 2) != (b[_SLOT - 2] << 8) | b[_SLOT - 1]:
                continue
            seq = (b[0] << 8) | b[1]
            if best is None or (seq - best_seq) & _SEQ_MASK < 0x8000:
                best_seq = seq
                best = tuple((b[2 + 4 * i] << 24) | (b[3 + 4 * i] << 16) | (b[4 + 4 * i] << 8) | b[5 + 4 * i]
                             for i in range(_WORDS))
        self._seq = best_seq if best is not None else -1
        return best

    def write(self, a, b, c, d):
        """Store four ints in the older slot (allocation-free; OSError from a silent chip)."""
        if self._seq < 0:
            self.read()   # continue the sequence: never overwrite the newest copy
        seq = (self._seq + 1) & _SEQ_MASK
        buf = self._buf
        buf[0] = seq >> 8
        buf[1] = seq & 0xFF
        self._put(2, a)
        self._put(6, b)
        self._put(10, c)
        self._put(14, d)
        crc = crc16(buf, _SLOT - 2)
        buf[_SLOT - 2] = crc >> 8
        buf[_SLOT - 1] = crc & 0xFF
        self._fram.write(self._offset + (seq & 1) * _SLOT, buf)
        self._seq = seq

    def _put(self, i, v):
        if v < 0 or v > _VALUE_MAX:
            raise ValueError("FRAM record values must be 0..2**30-1")
        buf = self._buf
        buf[i] = v >> 24
        buf[i + 1] = (v >> 16) & 0xFF
        buf[i + 2] = (v >> 8) & 0xFF
        buf[i + 3] = v & 0xFF
