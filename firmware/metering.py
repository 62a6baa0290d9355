"""Sampling and billing energy from the ATM90E32: samples into the ring, energy into counters.

Billing energy comes only from the chip's clear-on-read energy registers, read often enough
that none can wrap, and every read is added: no count is ever dropped.

    m = Metering(meter, clock, phases=1, ring_samples=256)
    m.sample()          # 10 Hz, allocation-free
    m.read_energy()     # at least every m.energy_interval_ms
"""
from firmware.energy import EnergyCounter, max_read_interval_ms
from firmware.ring import SampleRing


class Metering:
    def __init__(self, meter, clock, phases, ring_samples, max_power_w):
        self.meter = meter
        self.clock = clock
        self.phases = phases
        self.ring = SampleRing(ring_samples)
        self.forward = EnergyCounter()
        self.reverse = EnergyCounter()
        self.energy_interval_ms = max_read_interval_ms(max_power_w)

    def sample(self):
        """Read U, I, P and status into the next ring row (no allocation)."""
        m = self.meter
        r = self.ring
        i = r.advance()
        r.t[i] = self.clock.ticks_ms()
        b = 3 * i
        for ph in range(self.phases):
            r.u[b + ph] = m.urms(ph)
            r.i[b + ph] = m.irms(ph)
            r.p[b + ph] = m.pmean(ph)
        r.status[2 * i] = m.status0()
        r.status[2 * i + 1] = m.status1()

    def read_energy(self):
        """Move what the chip counted since the last read into the counters."""
        self.forward.add(self.meter.forward_counts())
        self.reverse.add(self.meter.reverse_counts())

    def power_w(self):
        """Total active power of the newest sample."""
        r = self.ring
        if not r.count:
            return 0
        b = 3 * r.index(0)
        return r.p[b] + r.p[b + 1] + r.p[b + 2]
