"""Driver for the ATM90E32AS poly-phase energy-meter IC on SPI (mode 3, 32-bit frames).

Readings come back as small integers in the chip's own units (centivolts, milliamps, watts,
thousandths, centi-hertz, degrees Celsius) and allocate nothing, so they can run at 10 Hz on an
ESP32 under `micropython.heap_lock()`. Billing energy comes from the clear-on-read per-phase
energy registers (320 counts per Wh), which the caller must read often enough that none wraps
(see firmware/metering/energy.py `max_read_interval_ms`).

    meter = ATM90E32(spi, cs, phases=3, ugain=(34000,) * 3, igain=(35000,) * 3)   # spi: polarity=1, phase=1
    meter.init(); volts_x100 = meter.urms(0); counts = meter.forward_counts()

Keyword arguments (calibration and thresholds, checked when the driver is made; integers only):
    phases          1 or 3. A 1-phase board uses phase A only: readings of B and C are not
                    taken, their energy registers are never read or billed, and their fault
                    bits are masked by `faults()`.
    line_hz         50 or 60: MMode0 bit 12.
    pga             1, 2 or 4: current-channel PGA, MMode1 0x00 / 0x15 / 0x2A.
    ugain, igain    3 ints 1..65535 each (required): UgainA/B/C, IgainA/B/C.
    uoffset, ioffset  3 ints -32768..32767 each: RMS offset registers.
    lsb_per_w       Pmean LSBs per watt, 4..4194304 (3125 = 0.00032 W per LSB as open drivers
                    use; a datasheet table implies 65536: cross-check P = U*I*PF).
    ov_cv, sag_cv, loss_cv  over-voltage / sag / phase-loss thresholds in centivolts RMS, the
                    unit of the Urms registers (None: 115 %, 80 % and 40 % of 230 V).
    oi_ma           over-current threshold in milliamps RMS, the Irms unit.
    freq_lo_chz, freq_hi_chz  frequency thresholds in centi-hertz, the unit of Freq and of
                    FreqLoTh/FreqHiTh (None: line_hz*100 - 300 and + 300).
    sag_peak_cfg    raw SagPeakDetCfg (0x143F, the value common open drivers write).
The chip compares voltages and currents with its thresholds at peak level before the RMS
gain, so the driver writes `rms * sqrt(2) / 2 / (gain / 32768)` (the formula used by open
drivers for SagTh), computed with phase A's gain for all three phases.

One count of the energy registers is 0.01 of a CF pulse; with PLconst 0x0861C468 =
450e9 / 3200 the meter constant is 3200 pulses per kWh, so 1 count = 0.003125 Wh.
"""
import time

from micropython import const

COUNTS_PER_WH = const(320)  # 3200 imp/kWh (PLconst 0x0861C468) x 100 counts per CF pulse / 1000

# -- register map (addresses are 10 bits); unused ones kept as comments --------------------------
_METER_EN = const(0x00)
# _CHANNEL_MAP_I = const(0x01)     _CHANNEL_MAP_U = const(0x02)
_SAG_PEAK_DET_CFG = const(0x05)
_OV_TH = const(0x06)
# _ZX_CONFIG = const(0x07)
_SAG_TH = const(0x08)
_PHASE_LOSS_TH = const(0x09)
# _IN_WARN_TH = const(0x0A)        neutral-current warning threshold
_OI_TH = const(0x0B)
_FREQ_LO_TH = const(0x0C)
_FREQ_HI_TH = const(0x0D)
# _PM_PWR_CTRL = const(0x0E)      _IRQ0_MERGE_CFG = const(0x0F)
# 0x10-0x2F: detection mode, DC offsets, temperature/non-linearity compensation
_PL_CONST_H = const(0x31)
_PL_CONST_L = const(0x32)
_MMODE0 = const(0x33)
_MMODE1 = const(0x34)
# _P_START_TH = const(0x35)  _Q_START_TH = const(0x36)  _S_START_TH = const(0x37)
# _P_PHASE_TH = const(0x38)  _Q_PHASE_TH = const(0x39)  _S_PHASE_TH = const(0x3A)
# 0x41-0x4C: PoffsetX/QoffsetX/PQGainX/PhiX power calibration; 0x51-0x56 fundamental
_UGAIN_A = const(0x61)  # then IgainA 0x62, UoffsetA 0x63, IoffsetA 0x64; B at +4, C at +8
_SOFT_RESET = const(0x70)
_EMM_STATE0 = const(0x71)
_EMM_STATE1 = const(0x72)
# _EMM_INT_STATE0 = const(0x73)  _EMM_INT_STATE1 = const(0x74)  latched change flags
# _EMM_INT_EN0 = const(0x75)     _EMM_INT_EN1 = const(0x76)
_LAST_SPI_DATA = const(0x78)
# _CRC_ERR_STATUS = const(0x79)  _CRC_DIGEST = const(0x7A)
_CFG_REG_ACC_EN = const(0x7F)
# _AP_ENERGY_T = const(0x80)      the total register is reported not to match: not billed
_AP_ENERGY_A = const(0x81)  # B 0x82, C 0x83: forward active energy, clear on read
# _AN_ENERGY_T = const(0x84)
_AN_ENERGY_A = const(0x85)  # B 0x86, C 0x87: reverse active energy, clear on read
# 0x88-0x8F reactive, 0x90-0x93 apparent, 0xA0-0xAF fundamental/harmonic energy
_PMEAN_T = const(0xB0)
_PMEAN_A = const(0xB1)  # B 0xB2, C 0xB3: high words
# _QMEAN_T = const(0xB4) .. 0xB7   _SMEAN_T = const(0xB8) .. 0xBB
_PF_MEAN_A = const(0xBD)  # PFmeanT 0xBC, B 0xBE, C 0xBF
_PMEAN_T_LSB = const(0xC0)
_PMEAN_A_LSB = const(0xC1)  # B 0xC2, C 0xC3: low words
# 0xC4-0xCB Qmean/Smean low words, 0xD0-0xD7 fundamental/harmonic power
_URMS_A = const(0xD9)  # B 0xDA, C 0xDB
# _IRMS_N = const(0xDC)
_IRMS_A = const(0xDD)  # B 0xDE, C 0xDF
# 0xE9-0xEF Urms/Irms low words, 0xF1-0xF7 peaks
_FREQ = const(0xF8)
# _PANGLE_A = const(0xF9) .. 0xFB
_TEMP = const(0xFC)
# _UANGLE_A = const(0xFD) .. 0xFF

_SOFT_RESET_KEY = const(0x789A)
_UNLOCK_KEY = const(0x55AA)
_PL_CONST = (0x0861, 0xC468)  # 140625000 = 450e9 / 3200 imp/kWh
_MMODE0_3P4W = const(0x0087)  # 3-phase 4-wire, all phases summed into the totals
_MMODE0_60HZ = const(0x1000)
_PGA = {1: 0x00, 2: 0x15, 4: 0x2A}
_RESET_WAIT_MS = const(6)  # the chip needs >= 5 ms after SoftReset
_TEAR_TRIES = const(4)
_PEAK_PER_RMS = const(23170)  # sqrt(2) * 16384: rms * sqrt(2) / 2 * 32768 / gain
_NOMINAL_CV = const(23000)    # the thresholds' defaults: a 230 V grid

# -- status bits -----------------------------------------------------------------------------
# EMMState0 (0x71)
OVERCURRENT_A = const(0x8000)
OVERCURRENT_B = const(0x4000)
OVERCURRENT_C = const(0x2000)
OVERVOLTAGE_A = const(0x1000)
OVERVOLTAGE_B = const(0x0800)
OVERVOLTAGE_C = const(0x0400)
SEQ_VOLTAGE = const(0x0200)
SEQ_CURRENT = const(0x0100)
# EMMState1 (0x72)
FREQ_HIGH = const(0x8000)
SAG_A = const(0x4000)
SAG_B = const(0x2000)
SAG_C = const(0x1000)
FREQ_LOW = const(0x0800)
PHASE_LOSS_A = const(0x0400)
PHASE_LOSS_B = const(0x0200)
PHASE_LOSS_C = const(0x0100)

# (EMMState 0 or 1, bit, phase 0-2 / 3 for phase sequence / -1 for the whole chip, name)
_FAULTS = (
    (0, OVERCURRENT_A, 0, "overcurrent_A"), (0, OVERCURRENT_B, 1, "overcurrent_B"),
    (0, OVERCURRENT_C, 2, "overcurrent_C"), (0, OVERVOLTAGE_A, 0, "overvoltage_A"),
    (0, OVERVOLTAGE_B, 1, "overvoltage_B"), (0, OVERVOLTAGE_C, 2, "overvoltage_C"),
    (0, SEQ_VOLTAGE, 3, "phase_seq_voltage"), (0, SEQ_CURRENT, 3, "phase_seq_current"),
    (1, SAG_A, 0, "sag_A"), (1, SAG_B, 1, "sag_B"), (1, SAG_C, 2, "sag_C"),
    (1, PHASE_LOSS_A, 0, "phase_loss_A"), (1, PHASE_LOSS_B, 1, "phase_loss_B"),
    (1, PHASE_LOSS_C, 2, "phase_loss_C"),
    (1, FREQ_HIGH, -1, "freq_high"), (1, FREQ_LOW, -1, "freq_low"),
)


def faults(s0, s1, phases=3):
    """Names of the fault bits set in EMMState0/1, ignoring phases a 1-phase board lacks."""
    out = []
    for reg, bit, ph, name in _FAULTS:
        if phases == 1 and ph > 0:  # no B, no C, and no phase sequence with one phase
            continue
        if (s1 if reg else s0) & bit:
            out.append(name)
    return out


class MeterFault(Exception):
    """Grid conditions the chip flagged (over-voltage, sag, ...); `names` lists them."""

    def __init__(self, names):
        super().__init__("ATM90E32 faults: " + ", ".join(names))
        self.names = names


def _default_sleep_ms(ms):
    """CPython's time has no sleep_ms (the firmware passes its clock's anyway)."""
    time.sleep(ms / 1000)


def _choice(name, v, choices):
    if not isinstance(v, int) or isinstance(v, bool) or v not in choices:
        raise ValueError("ATM90E32 %s must be one of %s (got %r)" % (name, choices, v))
    return v


def _int(name, v, lo, hi):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise ValueError("ATM90E32 %s must be an integer %d..%d (got %r)" % (name, lo, hi, v))
    return v


def _triple(name, v, lo, hi):
    """3 ints in lo..hi (one per phase A, B, C)."""
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError("ATM90E32 %s must be 3 integers (phases A, B, C), got %r" % (name, v))
    for x in v:
        _int(name, x, lo, hi)
    return v


def _threshold(name, rms, gain):
    """An RMS threshold (register units) as the peak-level word the chip compares."""
    raw = _int(name, rms, 1, 65535) * _PEAK_PER_RMS // gain
    if raw > 0xFFFF:
        raise ValueError("ATM90E32 %s is too high for the configured gain" % name)
    return raw


class ATM90E32:
    def __init__(self, spi, cs, phases=3, line_hz=50, pga=1, ugain=None, igain=None, uoffset=(0, 0, 0),
                 ioffset=(0, 0, 0), lsb_per_w=3125, ov_cv=None, sag_cv=None, loss_cv=None, oi_ma=40000,
                 freq_lo_chz=None, freq_hi_chz=None, sag_peak_cfg=0x143F, sleep_ms=None):
        phases = _choice("phases", phases, (1, 3))
        hz = _choice("line_hz", line_hz, (50, 60))
        pga = _choice("pga", pga, (1, 2, 4))
        ugain = _triple("ugain", ugain, 1, 0xFFFF)
        igain = _triple("igain", igain, 1, 0xFFFF)
        uoffset = _triple("uoffset", uoffset, -0x8000, 0x7FFF)
        ioffset = _triple("ioffset", ioffset, -0x8000, 0x7FFF)
        f_lo = _int("freq_lo_chz", hz * 100 - 300 if freq_lo_chz is None else freq_lo_chz, 1000, 10000)
        f_hi = _int("freq_hi_chz", hz * 100 + 300 if freq_hi_chz is None else freq_hi_chz, 1000, 10000)
        if f_lo >= f_hi:
            raise ValueError("ATM90E32 freq_lo_chz must be below freq_hi_chz")
        cal = [
            (_METER_EN, 1),
            (_PL_CONST_H, _PL_CONST[0]), (_PL_CONST_L, _PL_CONST[1]),
            (_MMODE0, _MMODE0_3P4W | (_MMODE0_60HZ if hz == 60 else 0)),
            (_MMODE1, _PGA[pga]),
            (_SAG_PEAK_DET_CFG, _int("sag_peak_cfg", sag_peak_cfg, 0, 0xFFFF)),
            (_OV_TH, _threshold("ov_cv", _NOMINAL_CV * 115 // 100 if ov_cv is None else ov_cv, ugain[0])),
            (_SAG_TH, _threshold("sag_cv", _NOMINAL_CV * 80 // 100 if sag_cv is None else sag_cv, ugain[0])),
            (_PHASE_LOSS_TH, _threshold("loss_cv", _NOMINAL_CV * 40 // 100 if loss_cv is None else loss_cv,
                                        ugain[0])),
            (_OI_TH, _threshold("oi_ma", oi_ma, igain[0])),
            (_FREQ_LO_TH, f_lo), (_FREQ_HI_TH, f_hi),
        ]
        for ph in range(3):
            base = _UGAIN_A + 4 * ph
            cal.append((base, ugain[ph]))
            cal.append((base + 1, igain[ph]))
            cal.append((base + 2, uoffset[ph] & 0xFFFF))
            cal.append((base + 3, ioffset[ph] & 0xFFFF))
        self._spi = spi
        self._cs = cs
        self._sleep_ms = sleep_ms or getattr(time, "sleep_ms", _default_sleep_ms)
        self._tx = bytearray(4)
        self._rx = bytearray(4)
        self._cal = tuple(cal)  # (register, value) pairs written by init, read back by verify()
        self.phases = phases
        self.lsb_per_w = _int("lsb_per_w", lsb_per_w, 4, 1 << 22)
        self.peak_counts = 0    # fullest energy register ever read: how close reads came to a wrap
        self._held = [0, 0]     # forward, reverse counts taken from the chip before init's soft reset
        cs(1)                   # deselected between frames

    # -- bus -------------------------------------------------------------------------------
    def _xfer(self):
        cs = self._cs
        cs(0)
        try:
            self._spi.write_readinto(self._tx, self._rx)
        finally:
            cs(1)

    def _read(self, addr):
        tx = self._tx
        tx[0] = 0x80 | ((addr >> 8) & 3)
        tx[1] = addr & 0xFF
        tx[2] = 0
        tx[3] = 0
        self._xfer()
        rx = self._rx
        return (rx[2] << 8) | rx[3]

    def _write(self, addr, value):
        tx = self._tx
        tx[0] = (addr >> 8) & 3
        tx[1] = addr & 0xFF
        tx[2] = (value >> 8) & 0xFF
        tx[3] = value & 0xFF
        self._xfer()

    def _not_responding(self):
        return OSError("ATM90E32 not responding (LastSPIData 0x%04x)" % self._read(_LAST_SPI_DATA))

    # -- set-up ----------------------------------------------------------------------------
    def init(self):
        """Reset the chip, write the configuration and calibration, lock it, then verify."""
        self._take_held()
        self._write(_SOFT_RESET, _SOFT_RESET_KEY)
        self._sleep_ms(_RESET_WAIT_MS)
        self._write(_CFG_REG_ACC_EN, _UNLOCK_KEY)
        echo = self._read(_LAST_SPI_DATA)
        if echo != _UNLOCK_KEY:
            if echo in (0, 0xFFFF):
                raise OSError("ATM90E32 not responding (LastSPIData 0x%04x)" % echo)
            raise OSError("ATM90E32 bad echo (LastSPIData 0x%04x, wrote 0x%04x)" % (echo, _UNLOCK_KEY))
        for addr, value in self._cal:
            self._write(addr, value)
        self._write(_CFG_REG_ACC_EN, 0)  # lock the configuration again
        self.verify()

    def _take_held(self):
        """A chip that kept its supply while the MCU restarted (watchdog, crash, brown-out of the
        ESP32 alone) still holds energy nobody read: take it before the soft reset clears it."""
        if self._read(_METER_EN) != 1:   # 0 after the chip's own power-on; 0xFFFF or 0 on a dead bus
            return
        try:
            self._held[0] += self._energy(_AP_ENERGY_A)
            self._held[1] += self._energy(_AN_ENERGY_A)
        except OSError:
            pass   # it stopped metering while we read: the counts are garbage, init reports the chip

    def verify(self):
        """Read every configuration register back; a difference means the chip is not ours."""
        for addr, value in self._cal:
            got = self._read(addr)
            if got != value:
                raise OSError("ATM90E32 calibration mismatch: reg 0x%02x wrote 0x%04x read 0x%04x"
                              % (addr, value, got))

    def check(self):
        """Periodic health check: the chip still answers and is still metering."""
        self._alive(self._read(_METER_EN))

    def _alive(self, meter_en):
        if meter_en == 1:
            return
        if meter_en == 0 and self._read(_PL_CONST_H) != 0:
            # it answers (PLconstH is never 0 after a reset) but lost its configuration
            raise OSError("ATM90E32 lost MeterEn (brown-out?)")
        raise self._not_responding()

    # -- readings (allocation-free; ph is 0, 1, 2 for A, B, C) -------------------------------
    def urms(self, ph):
        """RMS voltage of a phase in centivolts."""
        if ph < 0 or ph > 2:
            raise ValueError("phase")
        return self._read(_URMS_A + ph)

    def irms(self, ph):
        """RMS current of a phase in milliamps (the register saturates at 65535)."""
        if ph < 0 or ph > 2:
            raise ValueError("phase")
        return self._read(_IRMS_A + ph)

    def pmean(self, ph):
        """Mean active power of a phase in watts, negative when exporting."""
        if ph < 0 or ph > 2:
            raise ValueError("phase")
        return self._power(_PMEAN_A + ph, _PMEAN_A_LSB + ph)

    def pmean_total(self):
        """Mean active power of all phases in watts (PmeanT; same scale assumed as per phase)."""
        return self._power(_PMEAN_T, _PMEAN_T_LSB)

    def pf(self, ph):
        """Power factor of a phase in thousandths, signed like the power."""
        if ph < 0 or ph > 2:
            raise ValueError("phase")
        v = self._read(_PF_MEAN_A + ph)
        return v - 0x10000 if v & 0x8000 else v

    def freq(self):
        """Line frequency in centi-hertz."""
        return self._read(_FREQ)

    def temp(self):
        """Chip temperature in degrees Celsius."""
        v = self._read(_TEMP)
        return v - 0x10000 if v & 0x8000 else v

    def status0(self):
        """EMMState0: over-current, over-voltage and phase-sequence bits."""
        return self._read(_EMM_STATE0)

    def status1(self):
        """EMMState1: frequency, sag and phase-loss bits."""
        return self._read(_EMM_STATE1)

    def faults(self):
        """Names of the current fault bits for the phases in use (allocates: off the hot path)."""
        return faults(self.status0(), self.status1(), self.phases)

    def check_faults(self):
        """Raise MeterFault if the chip flags any grid fault on the phases in use."""
        names = self.faults()
        if names:
            raise MeterFault(names)

    def _power(self, hi_reg, lo_reg):
        # The words are separate reads and the chip may refresh between them: read high, low,
        # high again until both high words agree, so the low word belongs to the same value.
        hi = self._read(hi_reg)
        for _ in range(_TEAR_TRIES):
            lo = self._read(lo_reg)
            again = self._read(hi_reg)
            if again == hi:
                return self._watts(hi, lo)
            hi = again
        raise OSError("ATM90E32 Pmean never stable")

    def _watts(self, hi, lo):
        # int32 (hi:lo) // lsb_per_w, rounded toward zero, without building the 32-bit value:
        # on an ESP32 an int of 2**30 or more is a heap-allocated big int. Long division of the
        # magnitude, 16 bits then two bytes, keeps every intermediate below lsb * 256 <= 2**30.
        if hi & 0x8000:
            if lo:
                mh = 0xFFFF - hi
                ml = 0x10000 - lo
            else:
                mh = 0x10000 - hi
                ml = 0
        else:
            mh = hi
            ml = lo
        d = self.lsb_per_w
        q1 = mh // d
        r = mh - q1 * d
        t = (r << 8) | (ml >> 8)
        q2 = t // d
        r = t - q2 * d
        q3 = ((r << 8) | (ml & 0xFF)) // d
        w = (q1 << 16) + (q2 << 8) + q3
        return -w if hi & 0x8000 else w

    # -- energy ----------------------------------------------------------------------------
    def forward_counts(self):
        """Forward active energy counted since the last call, in counts (COUNTS_PER_WH per Wh)."""
        return self._energy(_AP_ENERGY_A) + self._held_take(0)

    def reverse_counts(self):
        """Reverse active energy counted since the last call, in counts."""
        return self._energy(_AN_ENERGY_A) + self._held_take(1)

    def _held_take(self, i):
        n = self._held[i]
        self._held[i] = 0
        return n

    def _energy(self, first):
        # Sum of the per-phase registers in use (each clears on read); then MeterEn must still
        # read 1, or the counts are garbage from a dead bus or the chip reset since the last read.
        n = 0
        for ph in range(self.phases):
            c = self._read(first + ph)
            if c > self.peak_counts:
                self.peak_counts = c
            n += c
        self._alive(self._read(_METER_EN))
        return n
