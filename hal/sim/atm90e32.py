"""Simulated ATM90E32AS: answers the real chip's 32-bit SPI frames from a simulated line.

It attaches to a `hal.sim.machine` bus, so the real driver (hal/atm90e32.py) runs on top of it
unchanged. The world owns `line` (per-phase `volts`, `amps`, `pf`, plus `hz`, `temp_c`) and calls
`integrate(dt_ms)` as virtual time passes; the chip counts energy exactly (integer sub-counts),
refreshes its measurement registers every `refresh_ms`, and raises status bits from thresholds.

    chip = SimATM90E32(line); machine.bus(2).attach(chip, cs=5)
    line.amps[0] = 16.0; chip.integrate(100); chip.counts_made()

Model (where the datasheet was not confirmed, the choice is the simulator's):
- Frame: bytes 0-1 address (bit 15 = read), 2-3 data; MISO is 0 in bytes 0-1 and the register
  in bytes 2-3. A write takes effect at the 4th byte. SPI modes 0 and 3 (both sample on the
  rising clock edge; open drivers use mode 3 on the ESP32 and mode 0 on AVR).
- LastSPIData (0x78) holds the last value read or written. SoftReset (0x70 <- 0x789A) restores
  the power-on values below, clears the energy registers and keeps the chip deaf (MISO 0, writes
  ignored) for 5 ms of integrate() time. Registers 0x00-0x6F are write-protected unless
  CfgRegAccEn (0x7F) holds 0x55AA: writes are then ignored.
- Front end: the RMS registers read `true * gain / cal`, so a board whose gains equal `ucal`/
  `ical` (default 0x8000 each, i.e. gain 0x8000 = 1.0) reads true values; an offset adds
  offset / 512 LSB (the scale of the open drivers' offset calibration). PGA is taken as already
  compensated by the gains. Power = U * I * PF with both gains; offsets do not touch power.
- Pmean registers hold round(W * lsb_per_w) as int32 (high word 0xB0-0xB3, low 0xC0-0xC3);
  PFmean is round(PF * 1000) (0 without current); Freq is round(hz * 100) (0 without voltage);
  Temp is round(temp_c). Between refreshes a read returns the held value.
- Energy: per phase, forward (0x81-0x83) and reverse (0x85-0x87) 16-bit registers count
  power x time at 2 * PLconst sub-units of 25 uJ per count (0.003125 Wh at PLconst 0x0861C468),
  wrap at 16 bits, clear on read. The totals 0x80/0x84 integrate the signed phase sum apart.
- Status (updated on every integrate): levels are compared at `rms * sqrt(2) / 2` before the
  gain, the form of the open drivers' SagTh formula: over-current above OIth, over-voltage above
  OVth, sag below SagTh, phase loss below PhaseLossTh, frequency above FreqHiTh / below FreqLoTh
  (only with some voltage present). Phase-sequence bits and EMMIntState are not modelled (0).
  With MeterEn 0 the chip measures and counts nothing.
- Faults: `fault = "silent"` (MISO 0x00), `"stuck_ffff"` (MISO 0xFF), `"brownout"` (at the next
  access or integrate the chip resets itself and keeps answering). `tear_next = True`: right
  after the next Pmean high-word read the registers refresh. `stuck[addr] = v`: that register
  always reads v (a damaged or foreign chip). `noise_lsb`: seeded noise on Urms/Irms only.
"""
import math

from micropython import const

_METER_EN = const(0x00)
_SAG_PEAK_DET_CFG = const(0x05)
_OV_TH = const(0x06)
_SAG_TH = const(0x08)
_PHASE_LOSS_TH = const(0x09)
_OI_TH = const(0x0B)
_FREQ_LO_TH = const(0x0C)
_FREQ_HI_TH = const(0x0D)
_PL_CONST_H = const(0x31)
_PL_CONST_L = const(0x32)
_MMODE0 = const(0x33)
_MMODE1 = const(0x34)
_UGAIN_A = const(0x61)
_SOFT_RESET = const(0x70)
_EMM_STATE0 = const(0x71)
_EMM_STATE1 = const(0x72)
_LAST_SPI_DATA = const(0x78)
_CFG_REG_ACC_EN = const(0x7F)
_AP_ENERGY_T = const(0x80)
_AN_ENERGY_T = const(0x84)
_PMEAN_T = const(0xB0)
_PF_MEAN_T = const(0xBC)
_PMEAN_T_LSB = const(0xC0)
_URMS_A = const(0xD9)
_IRMS_A = const(0xDD)
_FREQ = const(0xF8)
_TEMP = const(0xFC)

_UNLOCK_KEY = const(0x55AA)
_RESET_BUSY_MS = const(5)
_HALF_SQRT2 = math.sqrt(2) / 2

# Power-on values (sim's choice where unconfirmed). Gains 0x8000 read true values by default.
_DEFAULTS = {
    _METER_EN: 0,
    _SAG_PEAK_DET_CFG: 0x143F,
    _OV_TH: 0xC000,
    _SAG_TH: 0x1000,
    _PHASE_LOSS_TH: 0x0400,
    _OI_TH: 0xC000,
    _FREQ_LO_TH: 4700,
    _FREQ_HI_TH: 5300,
    _PL_CONST_H: 0x0861,
    _PL_CONST_L: 0xC468,
    _MMODE0: 0x0087,
    _MMODE1: 0x0000,
    0x61: 0x8000, 0x62: 0x8000, 0x63: 0, 0x64: 0,
    0x65: 0x8000, 0x66: 0x8000, 0x67: 0, 0x68: 0,
    0x69: 0x8000, 0x6A: 0x8000, 0x6B: 0, 0x6C: 0,
    _CFG_REG_ACC_EN: 0,
}


def _rnd(x):
    """Round half away from zero, the same on CPython and MicroPython."""
    return int(x + 0.5) if x >= 0 else -int(0.5 - x)


def _s16(v):
    return v - 0x10000 if v & 0x8000 else v


def _u16(v):
    return v & 0xFFFF


class SimATM90E32:
    spi_modes = (0, 3)

    def __init__(self, line, lsb_per_w=3125, refresh_ms=100, noise_lsb=0, seed=1,
                 ucal=(0x8000, 0x8000, 0x8000), ical=(0x8000, 0x8000, 0x8000)):
        self._lazy = 0  # virtual ms not yet integrated (see advance)
        self.line = line
        self.lsb_per_w = lsb_per_w
        self.refresh_ms = refresh_ms
        self.noise_lsb = noise_lsb
        self._rng = seed or 1
        self.ucal = ucal
        self.ical = ical
        self.fault = None
        self.tear_next = False
        self.stuck = {}
        self.ms = 0                  # virtual time seen through integrate()
        self.made_fwd = [0, 0, 0]    # counts ever put into the forward registers, per phase
        self.made_rev = [0, 0, 0]
        self.resets = 0
        self._frame = bytearray(4)
        self._n = 0
        self._out = 0
        self._power_on()

    # -- state -----------------------------------------------------------------------------
    def _power_on(self):
        """Configuration to power-on values, metering off, accumulators and readings cleared."""
        self._regs = dict(_DEFAULTS)
        self._m = [0] * 128          # 0x80-0xFF: energy and measurement registers
        self._acc_fwd = [0, 0, 0, 0]  # sub-count remainders: phases A, B, C, total
        self._acc_rev = [0, 0, 0, 0]
        self._s0 = 0
        self._s1 = 0
        self._last = 0
        self._busy = 0
        self._next_refresh = self.ms + self.refresh_ms

    def brownout(self):
        """The chip's supply dipped: it resets itself and keeps answering."""
        self.resets += 1
        self._power_on()

    def _take_fault(self):
        if self.fault == "brownout":
            self.fault = None
            self.brownout()

    def peek(self, addr):
        """A register's content without the side effects of an SPI read (for tests)."""
        self.flush()
        if addr >= 0x80:
            return self._m[addr - 0x80]
        if addr == _EMM_STATE0:
            return self._s0
        if addr == _EMM_STATE1:
            return self._s1
        if addr == _LAST_SPI_DATA:
            return self._last
        return self._regs.get(addr, 0)

    def counts_made(self, reverse=False):
        """All counts the per-phase registers ever received: the exact simulated energy."""
        self.flush()
        m = self.made_rev if reverse else self.made_fwd
        return m[0] + m[1] + m[2]

    # -- SPI -------------------------------------------------------------------------------
    def select(self):
        self.flush()
        self._n = 0
        self._take_fault()

    def deselect(self):
        self._n = 0

    def byte(self, w):
        n = self._n
        self._n = n + 1
        f = self.fault
        if f == "stuck_ffff":
            return 0xFF
        if f == "silent" or self._busy > 0 or n > 3:
            return 0
        fr = self._frame
        fr[n] = w
        if n == 1:
            if fr[0] & 0x80:
                self._out = self._read(((fr[0] & 3) << 8) | w)
            return 0
        if n == 2:
            return self._out >> 8 if fr[0] & 0x80 else 0
        if n == 3:
            if fr[0] & 0x80:
                return self._out & 0xFF
            self._write(((fr[0] & 3) << 8) | fr[1], (fr[2] << 8) | w)
        return 0

    def _read(self, addr):
        if addr == _LAST_SPI_DATA:
            return self._last
        if addr in self.stuck:
            v = self.stuck[addr]
        elif addr >= 0x80:
            i = addr - 0x80
            v = self._m[i]
            if addr < 0xB0:
                self._m[i] = 0  # energy registers clear on read
            elif addr < 0xB4 and self.tear_next:
                self.tear_next = False
                self.refresh()
        elif addr == _EMM_STATE0:
            v = self._s0
        elif addr == _EMM_STATE1:
            v = self._s1
        else:
            v = self._regs.get(addr, 0)
        self._last = v
        return v

    def _write(self, addr, v):
        self._last = v
        if addr == _SOFT_RESET:
            if v == 0x789A:
                self._power_on()
                self._busy = _RESET_BUSY_MS
            return
        if addr == _CFG_REG_ACC_EN:
            self._regs[addr] = v
        elif addr < 0x70 and self._regs[_CFG_REG_ACC_EN] == _UNLOCK_KEY:
            self._regs[addr] = v
        # locked configuration, status and measurement registers: the write is ignored

    # -- physics ---------------------------------------------------------------------------
    def _gain(self, reg, cal):
        return self._regs.get(reg, 0) / cal

    def _metering(self):
        return self._regs[_METER_EN] == 1

    def _power_mw(self, ph):
        """Active power of a phase as the chip computes it, in whole milliwatts."""
        ln = self.line
        base = _UGAIN_A + 4 * ph
        p = (ln.volts[ph] * self._gain(base, self.ucal[ph]) * ln.amps[ph]
             * self._gain(base + 1, self.ical[ph]) * ln.pf[ph])
        return _rnd(p * 1000)

    def advance(self, dt_ms):
        """Let dt_ms pass with the line unchanged; integrated at the next access (cheap to call)."""
        self._lazy += dt_ms

    def flush(self):
        """Integrate the time that passed; the world calls this before it changes the line."""
        if self._lazy:
            dt = self._lazy
            self._lazy = 0
            self.integrate(dt)

    def integrate(self, dt_ms):
        """Let dt_ms (an int) of virtual time pass: count energy, update status, refresh."""
        self._take_fault()
        if dt_ms <= 0:
            return
        self.ms += dt_ms
        if self._busy > 0:
            self._busy -= dt_ms
        if self._metering():
            unit = 2 * ((self._regs[_PL_CONST_H] << 16) | self._regs[_PL_CONST_L])
            total = 0
            for ph in range(3):
                p = self._power_mw(ph)
                total += p
                n = self._count(ph, p, dt_ms, unit)
                if n > 0:
                    self.made_fwd[ph] += n
                elif n < 0:
                    self.made_rev[ph] -= n
            self._count(3, total, dt_ms, unit)
        self._status()
        if self.ms >= self._next_refresh:
            self.refresh()
            self._next_refresh = self.ms - self.ms % self.refresh_ms + self.refresh_ms

    def _count(self, k, p_mw, dt_ms, unit):
        """Add p_mw over dt_ms to accumulator k (3 = totals); +n forward or -n reverse counts."""
        if unit <= 0 or p_mw == 0:
            return 0
        acc, reg = (self._acc_fwd, _AP_ENERGY_T) if p_mw > 0 else (self._acc_rev, _AN_ENERGY_T)
        acc[k] += abs(p_mw) * dt_ms * 25  # mW x ms = uJ; one count is 2 * PLconst x 25 uJ
        n = acc[k] // unit
        if n:
            acc[k] -= n * unit
            i = reg - 0x80 + (k + 1) % 4  # A, B, C at +1..+3, the total at +0
            self._m[i] = (self._m[i] + n) & 0xFFFF
        return n if p_mw > 0 else -n

    def _status(self):
        s0 = s1 = 0
        if self._metering():
            ln = self.line
            r = self._regs
            present = False
            for ph in range(3):
                # the chip's level before the gain: what the firmware's threshold words are made for
                u = ln.volts[ph] * 100 * 0x8000 / self.ucal[ph] * _HALF_SQRT2
                i = ln.amps[ph] * 1000 * 0x8000 / self.ical[ph] * _HALF_SQRT2
                present = present or ln.volts[ph] > 0
                if i > r[_OI_TH]:
                    s0 |= 0x8000 >> ph
                if u > r[_OV_TH]:
                    s0 |= 0x1000 >> ph
                if u < r[_SAG_TH]:
                    s1 |= 0x4000 >> ph
                if u < r[_PHASE_LOSS_TH]:
                    s1 |= 0x0400 >> ph
            if present:
                chz = ln.hz * 100
                if chz > r[_FREQ_HI_TH]:
                    s1 |= 0x8000
                if chz < r[_FREQ_LO_TH]:
                    s1 |= 0x0800
        self._s0 = s0
        self._s1 = s1

    def _noise(self):
        n = self.noise_lsb
        if not n:
            return 0
        x = self._rng  # xorshift32: the same sequence on both interpreters
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._rng = x
        return x % (2 * n + 1) - n

    def refresh(self):
        """Recompute the measurement registers from the line now (the chip's averaging window)."""
        m = self._m
        ln = self.line
        on = self._metering()
        r = self._regs
        p_sum = s_sum = 0.0
        for ph in range(3):
            base = _UGAIN_A + 4 * ph
            if not on:
                u = i = pw = pf = 0
            else:
                gu = self._gain(base, self.ucal[ph])
                gi = self._gain(base + 1, self.ical[ph])
                u_cv = ln.volts[ph] * 100 * gu + _s16(r.get(base + 2, 0)) / 512
                i_ma = ln.amps[ph] * 1000 * gi + _s16(r.get(base + 3, 0)) / 512
                u = min(max(_rnd(u_cv) + self._noise(), 0), 0xFFFF)
                i = min(max(_rnd(i_ma) + self._noise(), 0), 0xFFFF)
                s = ln.volts[ph] * gu * ln.amps[ph] * gi
                w = s * ln.pf[ph]
                p_sum += w
                s_sum += s
                pw = _rnd(w * self.lsb_per_w)
                pf = _rnd(ln.pf[ph] * 1000) if s > 0 else 0
            self._put_power(ph + 1, pw)
            m[_URMS_A - 0x80 + ph] = u
            m[_IRMS_A - 0x80 + ph] = i
            m[_PF_MEAN_T - 0x80 + 1 + ph] = _u16(pf)
        self._put_power(0, _rnd(p_sum * self.lsb_per_w))
        m[_PF_MEAN_T - 0x80] = _u16(_rnd(p_sum / s_sum * 1000)) if s_sum > 0 else 0
        present = on and (ln.volts[0] > 0 or ln.volts[1] > 0 or ln.volts[2] > 0)
        m[_FREQ - 0x80] = min(_rnd(ln.hz * 100), 0xFFFF) if present else 0
        m[_TEMP - 0x80] = _u16(_rnd(ln.temp_c))

    def _put_power(self, k, raw):
        """Store int32 raw power in the high/low words of Pmean k (0 = total, 1-3 = A-C)."""
        raw = min(max(raw, -0x80000000), 0x7FFFFFFF) & 0xFFFFFFFF
        self._m[_PMEAN_T - 0x80 + k] = raw >> 16
        self._m[_PMEAN_T_LSB - 0x80 + k] = raw & 0xFFFF
