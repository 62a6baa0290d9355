"""Fixed-size ring of timestamped meter samples, allocated once at boot.

Columns are typed arrays (26 bytes a sample for three phases): the sampling path writes into
them in place and never allocates.

    ring = SampleRing(256)
    i = ring.advance(); ring.t[i] = now; ring.u[3 * i] = 23012   # centivolts, phase A
"""
from array import array


class SampleRing:
    def __init__(self, capacity):
        if not 16 <= capacity <= 4096:
            raise ValueError("sampling.ring_samples must be 16..4096 (got %r)" % (capacity,))
        self.capacity = capacity
        self.t = array("i", bytes(4 * capacity))           # ticks_ms of the sample
        self.u = array("H", bytes(2 * 3 * capacity))       # Urms A/B/C, 0.01 V
        self.i = array("H", bytes(2 * 3 * capacity))       # Irms A/B/C, mA
        self.p = array("h", bytes(2 * 3 * capacity))       # Pmean A/B/C, W
        self.status = array("H", bytes(2 * 2 * capacity))  # EMMState0, EMMState1
        self.head = 0      # index of the next row to write
        self.count = 0     # rows written so far, saturating at capacity
        self.total = 0     # rows written since boot (small int: 10 Hz for 3 years)

    def advance(self):
        """Claim the next row (overwriting the oldest) and return its index."""
        i = self.head
        self.head = i + 1 if i + 1 < self.capacity else 0
        if self.count < self.capacity:
            self.count += 1
        self.total += 1
        return i

    def index(self, age):
        """Row index of the sample `age` rows back (0 = newest); age < count."""
        i = self.head - 1 - age
        return i + self.capacity if i < 0 else i
