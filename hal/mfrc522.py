"""MFRC522 driver: reads ISO/IEC 14443 A card UIDs with the NXP MFRC522 13.56 MHz reader IC.

Hardware: the common "RC522" module on SPI (mode 0, up to 10 MHz), chip-select active low,
optional NRSTPD reset pin. The driver only identifies cards (REQA/WUPA, anticollision and
SELECT over cascade levels 1-3, HLTA); it never authenticates or reads card memory.

    rfid = MFRC522(SPI(1, baudrate=1000000), Pin(15, Pin.OUT, value=1), gain=4); rfid.init()
    uid = rfid.select() if rfid.request(wakeup=True) is not None else None
"""
from micropython import const

# Registers (datasheet section 9). Page 0: command and status.
_COMMAND_REG = const(0x01)
# _COM_IEN_REG = const(0x02)
# _DIV_IEN_REG = const(0x03)
_COM_IRQ_REG = const(0x04)
# _DIV_IRQ_REG = const(0x05)
_ERROR_REG = const(0x06)
# _STATUS1_REG = const(0x07)
# _STATUS2_REG = const(0x08)
_FIFO_DATA_REG = const(0x09)
_FIFO_LEVEL_REG = const(0x0A)
# _WATER_LEVEL_REG = const(0x0B)
_CONTROL_REG = const(0x0C)
_BIT_FRAMING_REG = const(0x0D)
# _COLL_REG = const(0x0E)
# Page 1: communication.
_MODE_REG = const(0x11)
_TX_MODE_REG = const(0x12)
_RX_MODE_REG = const(0x13)
_TX_CONTROL_REG = const(0x14)
_TX_ASK_REG = const(0x15)
# _TX_SEL_REG = const(0x16)
# _RX_SEL_REG = const(0x17)
# _RX_THRESHOLD_REG = const(0x18)
# _DEMOD_REG = const(0x19)
# _MF_TX_REG = const(0x1C)
# _MF_RX_REG = const(0x1D)
# _SERIAL_SPEED_REG = const(0x1F)
# Page 2: configuration.
# _CRC_RESULT_REG_H = const(0x21)
# _CRC_RESULT_REG_L = const(0x22)
# _MOD_WIDTH_REG = const(0x24)
_RF_CFG_REG = const(0x26)
# _GS_N_REG = const(0x27)
# _CW_GS_P_REG = const(0x28)
# _MOD_GS_P_REG = const(0x29)
_T_MODE_REG = const(0x2A)
_T_PRESCALER_REG = const(0x2B)
_T_RELOAD_REG_H = const(0x2C)
_T_RELOAD_REG_L = const(0x2D)
# _T_COUNTER_VAL_REG_H = const(0x2E)
# _T_COUNTER_VAL_REG_L = const(0x2F)
# Page 3: test.
# _TEST_SEL1_REG = const(0x31) ... _AUTO_TEST_REG = const(0x36)
_VERSION_REG = const(0x37)

# CommandReg commands (bits 3:0) and bits.
_CMD_IDLE = const(0x00)
# _CMD_MEM = const(0x01)
# _CMD_GENERATE_RANDOM_ID = const(0x02)
# _CMD_CALC_CRC = const(0x03)  # CRC_A is computed in software: one SPI exchange less per frame
# _CMD_TRANSMIT = const(0x04)
# _CMD_RECEIVE = const(0x08)
_CMD_TRANSCEIVE = const(0x0C)
# _CMD_MF_AUTHENT = const(0x0E)
_CMD_SOFT_RESET = const(0x0F)
_POWER_DOWN = const(0x10)  # still 1 while the chip wakes up from a reset

# ComIrqReg bits; writing a bit with Set1 (bit 7) = 0 clears it.
_TIMER_IRQ = const(0x01)
_ERR_IRQ = const(0x02)
_IDLE_IRQ = const(0x10)
_RX_IRQ = const(0x20)
_CLEAR_IRQS = const(0x7F)
_DONE_IRQS = const(_RX_IRQ | _IDLE_IRQ | _ERR_IRQ | _TIMER_IRQ)  # the transceive is over

# ErrorReg bits.
_PROTOCOL_ERR = const(0x01)
_PARITY_ERR = const(0x02)
# _CRC_ERR = const(0x04)  # only with RxCRCEn, which stays off
_COLL_ERR = const(0x08)
_BUFFER_OVFL = const(0x10)
_TEMP_ERR = const(0x40)  # overheated: the chip switched its antenna drivers off
_WR_ERR = const(0x80)
_FRAME_ERRS = const(_PROTOCOL_ERR | _PARITY_ERR | _BUFFER_OVFL)  # a card answered badly
_CHIP_ERRS = const(_TEMP_ERR | _WR_ERR)  # the chip itself is in trouble

_FLUSH_BUFFER = const(0x80)  # FIFOLevelReg
_START_SEND = const(0x80)  # BitFramingReg; TxLastBits are bits 2:0
_RX_LAST_BITS = const(0x07)  # ControlReg
_FORCE_100_ASK = const(0x40)  # TxASKReg: ISO 14443 A needs 100 % ASK
_MODE = const(0x3D)  # ModeReg: TxWaitRF, MFIN active high, CRC preset 0x6363
_RX_NO_ERR = const(0x08)  # RxModeReg: ignore noise bursts under 4 bits instead of reporting them
_TX_RF_EN = const(0x03)  # TxControlReg: Tx1RFEn | Tx2RFEn
_RX_GAIN = const(0x70)  # RFCfgReg bits 6:4
GAIN_MAX = const(7)     # RxGain is 3 bits: 18 dB (0) .. 48 dB (7)

# Timer: 13.56 MHz / (2 * 169 + 1) = 40 kHz, 120 ticks = 3 ms from the end of our frame. A card
# answers after ~90 us, and ISO 14443-3 gives a card 1 ms to object to HLTA.
_T_AUTO = const(0x80)
_T_PRESCALER = const(169)
_T_RELOAD = const(119)

# Dead-chip bounds: a live chip ends a transceive within 3 ms (tens of polls).
_MAX_POLLS = const(1000)
_RESET_POLLS = const(500)
# VersionReg: 0x91/0x92 NXP v1.0/v2.0; 0x88 Fudan FM17522 clone and 0x12 counterfeit, as listed
# by the widely used Arduino MFRC522 library (miguelbalboa/rfid).
_VERSIONS = (0x91, 0x92, 0x88, 0x12)

# ISO/IEC 14443-3 type A.
_REQA = const(0x26)
_WUPA = const(0x52)
_HLTA = const(0x50)
_SEL_CL1 = const(0x93)  # 0x95, 0x97 for cascade levels 2 and 3
_NVB_ANTICOLL = const(0x20)
_NVB_SELECT = const(0x70)
_CASCADE_TAG = const(0x88)
_SAK_MORE = const(0x04)  # UID not complete: go on with the next cascade level
_MAX_ANSWER = const(5)  # UID CLn + BCC, the longest answer read here


class CardError(Exception):
    """A card answered, but not with a valid ISO 14443-3 frame (length, parity, BCC, CRC)."""


class CollisionError(CardError):
    """More than one card answered at once."""


def crc_a(buf, start=0, stop=None):
    """CRC_A (ISO/IEC 14443-3 annex B, preset 0x6363) of buf[start:stop]; sent low byte first."""
    crc = 0x6363
    for i in range(start, len(buf) if stop is None else stop):
        ch = (buf[i] ^ crc) & 0xFF
        ch = (ch ^ (ch << 4)) & 0xFF
        crc = (crc >> 8) ^ (ch << 8) ^ (ch << 3) ^ (ch >> 4)
    return crc


class MFRC522:
    """spi: a machine.SPI in mode 0; cs: output Pin, active low; rst: NRSTPD Pin or None;
    gain: receiver gain 0..7 (RFCfgReg RxGain: 18, 23, 18, 23, 33, 38, 43, 48 dB), None keeps the chip's."""

    def __init__(self, spi, cs, rst=None, gain=None):
        if gain is not None and (not isinstance(gain, int) or isinstance(gain, bool) or not 0 <= gain <= GAIN_MAX):
            raise ValueError("MFRC522 gain must be 0..%d, got %r" % (GAIN_MAX, gain))
        self._gain = gain
        self._spi = spi
        self._cs = cs
        self._rst = rst
        self.version = None
        cs(1)
        # Scratch buffers, made once: register access and transceive allocate nothing.
        self._reg = bytearray(2)
        self._out = bytearray(10)  # FIFO write address, then a frame of up to 9 bytes (SELECT)
        self._out[0] = (_FIFO_DATA_REG << 1) & 0x7E
        self._in = bytearray(_MAX_ANSWER + 1)  # MISO junk during the address byte, then data
        rd = ((_FIFO_DATA_REG << 1) & 0x7E) | 0x80
        fifo_rd = bytearray(_MAX_ANSWER + 1)  # k FIFO addresses then 0x00 is the tail of length k+1
        for i in range(_MAX_ANSWER):
            fifo_rd[i] = rd
        self._status_rd = bytearray(4)  # ErrorReg, FIFOLevelReg, ControlReg read in one exchange
        self._status_rd[0] = ((_ERROR_REG << 1) & 0x7E) | 0x80
        self._status_rd[1] = ((_FIFO_LEVEL_REG << 1) & 0x7E) | 0x80
        self._status_rd[2] = ((_CONTROL_REG << 1) & 0x7E) | 0x80
        self._status = bytearray(4)
        self._uid = bytearray(10)
        out, inp, frd = memoryview(self._out), memoryview(self._in), memoryview(fifo_rd)
        self._outv = tuple(out[:n] for n in range(len(self._out) + 1))
        self._inv = tuple(inp[:k + 1] for k in range(_MAX_ANSWER + 1))
        self._fifo_rdv = tuple(frd[_MAX_ANSWER - k:] for k in range(_MAX_ANSWER + 1))

    # --- SPI ------------------------------------------------------------------------------

    def _read(self, reg):
        b = self._reg
        b[0] = ((reg << 1) & 0x7E) | 0x80
        b[1] = 0
        self._cs(0)
        try:
            self._spi.write_readinto(b, b)
        finally:
            self._cs(1)
        return b[1]

    def _write(self, reg, value):
        b = self._reg
        b[0] = (reg << 1) & 0x7E
        b[1] = value
        self._cs(0)
        try:
            self._spi.write(b)
        finally:
            self._cs(1)

    def _exchange(self, wbuf, rbuf):
        self._cs(0)
        try:
            if rbuf is None:
                self._spi.write(wbuf)
            else:
                self._spi.write_readinto(wbuf, rbuf)
        finally:
            self._cs(1)

    # --- chip set-up ----------------------------------------------------------------------

    def init(self):
        """Reset, check VersionReg, set timer/ASK/CRC preset/gain and switch the field on."""
        gain = self._gain
        if self._rst is not None:
            self._rst(0)  # NRSTPD low: hard power-down; the rising edge resets the chip
            self._rst(1)
        else:
            self._write(_COMMAND_REG, _CMD_SOFT_RESET)
        v = 0
        for _ in range(_RESET_POLLS):  # wait for the oscillator: PowerDown reads 1 until ready
            v = self._read(_VERSION_REG)
            if v in _VERSIONS and not self._read(_COMMAND_REG) & _POWER_DOWN:
                break
        else:
            if v in _VERSIONS:
                raise OSError("MFRC522 stuck in reset (VersionReg 0x%02x)" % v)
            raise OSError("MFRC522 not responding (VersionReg 0x%02x)" % v)
        self._write(_T_MODE_REG, _T_AUTO)  # timer starts at the end of each frame we send
        self._write(_T_PRESCALER_REG, _T_PRESCALER)
        self._write(_T_RELOAD_REG_H, 0)
        self._write(_T_RELOAD_REG_L, _T_RELOAD)
        self._write(_TX_ASK_REG, _FORCE_100_ASK)
        self._write(_MODE_REG, _MODE)
        self._write(_TX_MODE_REG, 0)  # 106 kBd, no hardware CRC: CRC_A is added in software
        self._write(_RX_MODE_REG, _RX_NO_ERR)
        if gain is not None:
            rf = self._read(_RF_CFG_REG)
            self._write(_RF_CFG_REG, (rf & ~_RX_GAIN & 0xFF) | (gain << 4))
        if self._read(_T_PRESCALER_REG) != _T_PRESCALER:
            raise OSError("MFRC522 register write did not stick")
        self.antenna(True)
        self.version = v

    def antenna(self, on):
        """Switch the 13.56 MHz field; off then on power-cycles every card in it."""
        v = self._read(_TX_CONTROL_REG)
        self._write(_TX_CONTROL_REG, (v | _TX_RF_EN) if on else (v & ~_TX_RF_EN & 0xFF))

    # --- frames ---------------------------------------------------------------------------

    def _transceive(self, n, last_bits, expect):
        """Send _out[1:n+1]; False on a clean timeout, True once `expect` bytes are in _in[1:]."""
        self._write(_COMMAND_REG, _CMD_IDLE)  # stop whatever runs, so the FIFO is ours
        self._write(_COM_IRQ_REG, _CLEAR_IRQS)
        self._write(_FIFO_LEVEL_REG, _FLUSH_BUFFER)
        self._exchange(self._outv[n + 1], None)  # one burst into FIFODataReg
        self._write(_COMMAND_REG, _CMD_TRANSCEIVE)
        self._write(_BIT_FRAMING_REG, _START_SEND | last_bits)
        irq = 0
        for _ in range(_MAX_POLLS):  # the chip's timer ends the wait; the bound is for a dead chip
            irq = self._read(_COM_IRQ_REG)
            if irq & _DONE_IRQS:
                break
        else:
            raise OSError("MFRC522 transceive never finished (ComIrqReg 0x%02x)" % irq)
        self._write(_BIT_FRAMING_REG, 0)  # StartSend off, or the next Transceive starts too early
        st = self._status
        self._exchange(self._status_rd, st)
        err = st[1]
        if err & _CHIP_ERRS:
            raise OSError("MFRC522 fault (ErrorReg 0x%02x)" % err)
        if err & _COLL_ERR:
            raise CollisionError("more than one card answered")
        if not irq & _RX_IRQ:
            if err or irq & _ERR_IRQ:
                raise CardError("bad frame (ErrorReg 0x%02x)" % err)
            return False
        if err & _FRAME_ERRS:
            raise CardError("bad frame (ErrorReg 0x%02x)" % err)
        level = st[2] & 0x7F
        bits = st[3] & _RX_LAST_BITS
        if level != expect or bits:
            raise CardError("answer of %d bytes + %d bits, expected %d bytes"
                            % (level, bits, expect))
        if expect:
            self._exchange(self._fifo_rdv[expect], self._inv[expect])
        return True

    def request(self, wakeup=False):
        """REQA (idle cards) or WUPA (idle and halted cards); the ATQA as int, None if silent."""
        self._out[1] = _WUPA if wakeup else _REQA
        if not self._transceive(1, 7, 2):  # a 7-bit short frame
            return None
        return self._in[1] | (self._in[2] << 8)  # ATQA is sent low byte first

    def select(self):
        """Anticollision + SELECT over cascade levels 1-3; the 4, 7 or 10-byte UID, or None."""
        out, inp, uid = self._out, self._in, self._uid
        n = 0
        for level in range(3):
            out[1] = _SEL_CL1 + 2 * level
            out[2] = _NVB_ANTICOLL
            if not self._transceive(2, 0, 5):
                return None
            if inp[1] ^ inp[2] ^ inp[3] ^ inp[4] != inp[5]:
                raise CardError("UID check byte (BCC) mismatch")
            out[2] = _NVB_SELECT
            for i in range(1, 6):
                out[i + 2] = inp[i]
            crc = crc_a(out, 1, 8)
            out[8] = crc & 0xFF
            out[9] = crc >> 8
            if not self._transceive(9, 0, 3):
                return None
            if crc_a(inp, 1, 2) != inp[2] | (inp[3] << 8):
                raise CardError("SAK CRC_A mismatch")
            if inp[1] & _SAK_MORE:
                if out[3] != _CASCADE_TAG:
                    raise CardError("SAK asks for another level without a cascade tag")
                for i in range(4, 7):
                    uid[n] = out[i]
                    n += 1
            else:
                for i in range(3, 7):
                    uid[n] = out[i]
                    n += 1
                return bytes(uid[:n])
        raise CardError("UID longer than three cascade levels")

    def halt(self):
        """HLTA: the selected card sleeps until a WUPA or a field reset; silence is success.
        Cards left READY (a collision, an error) take it as unexpected and drop back to IDLE/HALT."""
        out = self._out
        out[1] = _HLTA
        out[2] = 0
        crc = crc_a(out, 1, 3)
        out[3] = crc & 0xFF
        out[4] = crc >> 8
        if self._transceive(4, 0, 0):
            raise CardError("a card answered HLTA")
