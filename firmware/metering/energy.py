"""Billing energy as an exact integer: whole Wh plus a remainder in meter counts.

The ATM90E32's energy registers are read (and cleared) every few seconds; every count read is
added here and none is ever rounded away. Wh and the remainder are kept apart so the value stays
a small int on an ESP32 (below 2**30, i.e. up to ~1.07 TWh) instead of a heap-allocated big int.
Forward and reverse energy are two instances.

    forward = EnergyCounter(); forward.add(meter.forward_counts())
    every_ms = max_read_interval_ms(22000)   # read the registers at least this often
"""
_REGISTER_MAX = 65535  # a 16-bit energy register wraps past this


class EnergyCounter:
    def __init__(self, counts_per_wh=320):
        """counts_per_wh: meter counts in one Wh (hal.atm90e32.COUNTS_PER_WH)."""
        if not isinstance(counts_per_wh, int) or counts_per_wh < 1:
            raise ValueError("counts_per_wh must be a positive integer")
        self.counts_per_wh = counts_per_wh
        self.wh = 0    # whole Wh so far
        self.rem = 0   # counts not yet making a whole Wh, 0 <= rem < counts_per_wh

    def add(self, counts):
        """Add counts read from the chip (allocation-free)."""
        if counts < 0:
            raise ValueError("energy counts cannot be negative")
        r = self.rem + counts
        cpw = self.counts_per_wh
        if r >= cpw:
            n = r // cpw
            self.wh += n
            r -= n * cpw
        self.rem = r

    def restore(self, wh, rem):
        """Continue from a persisted (wh, rem) pair, e.g. after a reboot."""
        if not isinstance(wh, int) or not isinstance(rem, int) or wh < 0 \
                or not 0 <= rem < self.counts_per_wh:
            raise ValueError("energy state must be wh >= 0 and 0 <= rem < %d" % self.counts_per_wh)
        self.wh = wh
        self.rem = rem

    def total_counts(self):
        """Everything as one count total, for exact comparisons (may be a big int: not hot)."""
        return self.wh * self.counts_per_wh + self.rem

    def snapshot(self):
        """(wh, rem) now, to measure a session with wh_since()."""
        return (self.wh, self.rem)

    def wh_since(self, snap):
        """Whole Wh added since snapshot `snap`, exact to the count (rounded down)."""
        wh, rem = snap
        return self.wh - wh - (1 if self.rem < rem else 0)


def max_read_interval_ms(max_power_w, counts_per_wh=320, safety=4):
    """How often (ms) energy registers must be read so none wraps at max_power_w, with margin.

    A register holds 65535 counts (204.8 Wh at 320 counts/Wh). Pass the most power that can
    flow through one phase's register; the whole charger's power is a safe upper bound. The
    result is that time divided by `safety` (22 kW -> 8378 ms).
    """
    if not isinstance(max_power_w, int) or max_power_w <= 0:
        raise ValueError("max_power_w must be a positive integer")
    if safety < 1:
        raise ValueError("safety must be >= 1")
    mwh = _REGISTER_MAX * 1000 // counts_per_wh   # a full register, in mWh (204796)
    return max(1, mwh * 3600 // (max_power_w * safety))  # mWh * 3600 / W = ms; < 2**30
