"""Sampling and billing energy from the ATM90E32: samples into the ring, energy into counters.

Billing energy comes only from the chip's clear-on-read energy registers, read often enough
that none can wrap, and every read is added: no count is ever dropped. Each sample also
integrates ∫P·dt (a cross-check of billing energy), feeds the session's power profile and
runs the per-sample threshold checks, all without allocating.

    m = Metering(meter, clock, phases=1, ring_samples=256, max_power_w=7360)
    m.sample()          # 10 Hz, allocation-free
    m.read_energy()     # at least every m.energy_interval_ms
    m.keep_in(board.fram)   # optional: the register in FRAM at every read, for power cuts

With an FRAM (hal/fram.py) every energy read also writes (Wh, remainder, open session's tx_id,
its start Wh) there: a power cut loses at most what the chip counted since the last read, instead
of everything since the last journal checkpoint (docs/journal.md).
"""
from micropython import const

from firmware.metering.energy import EnergyCounter, max_read_interval_ms
from firmware.metering.profile import Profile
from firmware.metering.ring import SampleRing
from hal.fram import Record

_WMS_PER_WH = const(3600000)   # W·ms in one Wh
_MAX_GAP_MS = const(2000)      # a longer gap between samples is not integrated (loop stalled)
_FRAM_AT = const(0)            # the register's record in the FRAM


class Metering:
    def __init__(self, meter, clock, phases, ring_samples, max_power_w, profile_bucket_s=300):
        self.meter = meter
        self.clock = clock
        self.phases = phases
        self.ring = SampleRing(ring_samples)
        self.forward = EnergyCounter()
        self.reverse = EnergyCounter()
        # at least every second: energy caps and session records follow closely (wraps need far less)
        self.energy_interval_ms = min(max_read_interval_ms(max_power_w), 1000)
        self.profile = Profile(clock, profile_bucket_s, 48)
        self.in_session = False
        self.nv = None         # hal.fram.Record written at every energy read, or None (no FRAM)
        self.nv_error = None   # why the FRAM stopped being written (it is then left alone)
        self.nv_boot = None    # the FRAM record found at boot: (wh, rem, tx_id, start_wh) or None
        self._nv_tx = 0        # the open session's tx_id (0: none) and its start Wh, kept with the register
        self._nv_start = 0
        # ∫P·dt: whole Wh plus W·ms remainder (kept below 2**30 on the ESP32)
        self.integral_wh = 0
        self._wms = 0
        self._t_prev = clock.ticks_ms()
        self.max_gap_ms = 0   # longest time between two samples since boot
        # latest sample, for the controller's decisions
        self.p_w = 0
        self.i_max_ma = 0
        self.i_sum_ma = 0
        self.u_min_cv = 0
        self.u_max_cv = 0
        self.status0 = 0
        self.status1 = 0
        # per-sample checks: consecutive samples beyond each limit
        self.limit_ma = 0x3FFFFFFF
        self.u_low_cv = 0
        self.u_high_cv = 0x3FFFFFFF
        self.over_current = 0
        self.under_voltage = 0
        self.over_voltage = 0

    def sample(self):
        """Read U, I, P and status into the next ring row and check limits (no allocation)."""
        m = self.meter
        r = self.ring
        c = self.clock
        i = r.advance()
        t = c.ticks_ms()
        r.t[i] = t
        b = 3 * i
        p_tot = 0
        i_max = 0
        i_sum = 0
        u_min = 0xFFFF
        u_max = 0
        for ph in range(self.phases):
            u = m.urms(ph)
            a = m.irms(ph)
            p = m.pmean(ph)
            r.u[b + ph] = u
            r.i[b + ph] = a
            r.p[b + ph] = p
            p_tot += p
            i_sum += a
            if a > i_max:
                i_max = a
            if u < u_min:
                u_min = u
            if u > u_max:
                u_max = u
        s0 = m.status0()
        s1 = m.status1()
        r.status[2 * i] = s0
        r.status[2 * i + 1] = s1
        self.p_w = p_tot
        self.i_max_ma = i_max
        self.i_sum_ma = i_sum
        self.u_min_cv = u_min
        self.u_max_cv = u_max
        self.status0 = s0
        self.status1 = s1

        dt = c.ticks_diff(t, self._t_prev)
        self._t_prev = t
        if dt > self.max_gap_ms and r.total > 1:
            self.max_gap_ms = dt
        if 0 < dt <= _MAX_GAP_MS and p_tot > 0:
            w = self._wms + p_tot * dt
            if w >= _WMS_PER_WH:
                n = w // _WMS_PER_WH
                self.integral_wh += n
                w -= n * _WMS_PER_WH
            self._wms = w

        self.over_current = self.over_current + 1 if i_max > self.limit_ma else 0
        self.under_voltage = self.under_voltage + 1 if u_min < self.u_low_cv else 0
        self.over_voltage = self.over_voltage + 1 if u_max > self.u_high_cv else 0
        if self.in_session:
            self.profile.add(p_tot, i_max)

    def restart(self):
        """The meter (re)started: the next sample starts a new interval (no gap, no integral)."""
        self._t_prev = self.clock.ticks_ms()

    def read_energy(self):
        """Move what the chip counted since the last read into the counters (and the FRAM)."""
        self.forward.add(self.meter.forward_counts())
        self.reverse.add(self.meter.reverse_counts())
        self._keep()

    def keep_in(self, fram):
        """From now on write the billing register to this FRAM at every energy read; the register
        continues from the record found there if it is ahead. Returns that record (or None)."""
        nv = Record(fram, _FRAM_AT)
        try:
            last = nv.read()
        except OSError as e:
            self.nv_error = str(e)
            return None
        self.nv = nv
        self.nv_boot = last
        if last is not None:
            self.restore(last[0], last[1])
        return last

    def fram_session(self, tx_id):
        """(wh, rem) the FRAM held at boot for the open session tx_id, or None if it holds none."""
        b = self.nv_boot
        return (b[0], b[1]) if b is not None and b[2] == tx_id else None

    def _keep(self):
        nv = self.nv
        if nv is None:
            return
        f = self.forward
        try:
            nv.write(f.wh, f.rem, self._nv_tx, self._nv_start)
        except (OSError, ValueError) as e:   # a dead chip (or a register past 2**30 Wh): flash only
            self.nv = None
            self.nv_error = str(e)

    def register_wh(self):
        """The billing register: whole Wh imported over the charger's life."""
        return self.forward.wh

    def export_wh(self):
        """Whole Wh exported (reverse flow), for the technician's meter check."""
        return self.reverse.wh

    def register(self):
        """(whole Wh, sub-Wh counts) of the billing register, to persist."""
        return self.forward.wh, self.forward.rem

    def restore(self, wh, rem):
        """Continue the billing register from a persisted (wh, rem) if it is ahead (never back)."""
        if (wh, rem) > (self.forward.wh, self.forward.rem):
            self.forward.restore(wh, rem)

    def latest(self):
        """The last sample's (U cV, I mA) per phase, as lists (for reports, not the hot path)."""
        b = 3 * self.ring.index(0)
        r = self.ring
        return list(r.u[b:b + 3]), list(r.i[b:b + 3])

    def forensics(self, n):
        """The last n samples, oldest first, frozen: [ms before the newest, U cV, I mA, P W per phase…]."""
        r = self.ring
        n = min(r.count, n)
        t0 = r.t[r.index(0)] if n else 0
        out = []
        for age in range(n - 1, -1, -1):
            i = r.index(age)
            b = 3 * i
            out.append([self.clock.ticks_diff(r.t[i], t0)] + list(r.u[b:b + 3]) + list(r.i[b:b + 3])
                       + list(r.p[b:b + 3]))
        return out

    def start_session(self, tx_id=0):
        """Reset the profile and return the integral mark the session's cross-check starts from."""
        self.profile.reset()
        self.in_session = True
        self._nv_tx = tx_id
        self._nv_start = self.forward.wh
        self._keep()
        return self.integral_wh

    def end_session(self):
        self.in_session = False
        self._nv_tx = 0
        self._nv_start = 0
        self._keep()   # the FRAM no longer names an open session
