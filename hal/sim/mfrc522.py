"""Simulated MFRC522 reader IC and ISO/IEC 14443 A cards, answering the real SPI bytes.

The driver in hal/mfrc522.py runs unchanged on top: it writes registers, fills the FIFO and
starts Transceive; this chip hands the frame to the cards in its field and leaves their answer,
a collision or a timeout where the real chip would. Virtual time does not move inside a driver
call: an answer is in the FIFO at once, silence is an expired timer at once.

    chip = SimMFRC522(); machine.bus(1).attach(chip, cs=15)
    chip.place(SimCard(b"\\x04\\x1a\\x2b\\x3c\\x4d\\x5e\\x6f"))   # a 7-byte UID on the reader

Modelled: SPI protocol (address byte, read bursts where each MOSI byte names the next register,
write bursts to one register), register file with reset values, 64-byte FIFO (FlushBuffer,
BufferOvfl), ComIrqReg/DivIrqReg with Set1/Set2, ErrorReg, CollReg, ControlReg RxLastBits,
BitFramingReg StartSend/TxLastBits, the timer as "TAuto set -> TimerIRq when nobody answers",
commands Idle, Transceive, CalcCRC and SoftReset, hard reset through NRSTPD (`rst` pin number),
the field (TxControlReg bits 1:0) powering the cards.
Not modelled: Mem, GenerateRandomID, Transmit, Receive, MFAuthent (accepted, do nothing);
hardware CRC (TxCRCEn/RxCRCEn), RxAlign, bit-oriented anticollision (NVB other than 0x20/0x70),
MIFARE memory commands, soft power-down, the IRQ pin.

Fault injection:
    chip.crc_errors = n     the next n SAK answers (the answers carrying CRC_A) arrive corrupted
    chip.fault = "silent"   chip dead: MISO reads 0x00, writes are lost
    chip.fault = "garbage"  the ATQA arrives intact, the UID frame with a wrong BCC, a SAK
                            without its CRC_A: a card is there but never reads cleanly
"""
from hal.sim import machine

# Register addresses (same map as the driver's).
_COMMAND = 0x01
_COM_IEN = 0x02
_DIV_IEN = 0x03
_COM_IRQ = 0x04
_DIV_IRQ = 0x05
_ERROR = 0x06
_STATUS1 = 0x07
_STATUS2 = 0x08
_FIFO_DATA = 0x09
_FIFO_LEVEL = 0x0A
_WATER_LEVEL = 0x0B
_CONTROL = 0x0C
_BIT_FRAMING = 0x0D
_COLL = 0x0E
_MODE = 0x11
_TX_MODE = 0x12
_RX_MODE = 0x13
_TX_CONTROL = 0x14
_CRC_RESULT_H = 0x21
_CRC_RESULT_L = 0x22
_T_MODE = 0x2A
_VERSION = 0x37

# Reset values of the registers that are not 0x00 (datasheet register descriptions).
_RESET_VALUES = (
    (0x01, 0x20), (0x02, 0x80), (0x04, 0x14), (0x07, 0x21), (0x0B, 0x08), (0x0C, 0x10),
    (0x0E, 0xA0), (0x11, 0x3F), (0x14, 0x80), (0x16, 0x10), (0x17, 0x84), (0x18, 0x84),
    (0x19, 0x4D), (0x1C, 0x62), (0x1F, 0xEB), (0x21, 0xFF), (0x22, 0xFF), (0x24, 0x26),
    (0x26, 0x48), (0x27, 0x88), (0x28, 0x20), (0x29, 0x20), (0x33, 0x80), (0x36, 0x40),
)

_CMD_IDLE = 0x00
_CMD_CALC_CRC = 0x03
_CMD_NO_CHANGE = 0x07
_CMD_TRANSCEIVE = 0x0C
_CMD_SOFT_RESET = 0x0F

_TIMER_IRQ = 0x01
_ERR_IRQ = 0x02
_RX_IRQ = 0x20
_TX_IRQ = 0x40
_CRC_IRQ = 0x04
_COLL_ERR = 0x08
_BUFFER_OVFL = 0x10
_RX_ERRS = 0x0F  # CollErr, CRCErr, ParityErr, ProtocolErr: cleared when a frame is sent
_CRC_PRESETS = (0x0000, 0x6363, 0xA671, 0xFFFF)  # ModeReg CRCPreset

_FIFO_SIZE = 64
_NO_SPI, _ADDRESS, _READING, _WRITING = 0, 1, 2, 3

_REQA = 0x26
_WUPA = 0x52
_HLTA = 0x50
_CASCADE_TAG = 0x88


def _crc_a(data, crc=0x6363):
    """CRC_A bit by bit (reflected polynomial 0x8408): independent of the driver's byte method."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def _crc_ok(frame):
    c = _crc_a(frame[:-2])
    return frame[-2] == c & 0xFF and frame[-1] == c >> 8


class SimCard:
    """An ISO/IEC 14443 A card: UID, ATQA, SAK and the IDLE/READY/ACTIVE/HALT state machine."""

    def __init__(self, uid, sak=0x08):
        uid = bytes(uid)
        if len(uid) not in (4, 7, 10):
            raise ValueError("UID must be 4, 7 or 10 bytes")
        if len(uid) == 4 and uid[0] == _CASCADE_TAG:
            raise ValueError("a single-size UID cannot start with the cascade tag 0x88")
        if sak & 0x04:
            raise ValueError("the final SAK cannot carry the cascade bit 0x04")
        self.uid = uid
        self.sak = sak
        size = (len(uid) - 4) // 3  # 0, 1, 2: single, double, triple
        self.atqa = bytes(((size << 6) | 0x04, 0x00))  # bits 7:6 UID size, bit 2 anticollision
        ct = bytes((_CASCADE_TAG,))
        if size == 0:
            parts = (uid,)
        elif size == 1:
            parts = (ct + uid[:3], uid[3:])
        else:
            parts = (ct + uid[:3], ct + uid[3:6], uid[6:])
        self.levels = tuple(p + bytes((p[0] ^ p[1] ^ p[2] ^ p[3],)) for p in parts)  # CLn + BCC
        self.state = "OFF"
        self.level = 0  # cascade level being resolved in READY
        self.halted = False  # woken from HALT: a failure sends it back to HALT, not IDLE

    def power(self, on):
        """Field on: a card that had no power starts IDLE. Field off: it forgets everything."""
        if not on:
            self.state = "OFF"
            self.halted = False
        elif self.state == "OFF":
            self.state = "IDLE"

    def _drop(self):
        self.state = "HALT" if self.halted else "IDLE"
        return None

    def receive(self, frame, nbits):
        """One frame from the reader (bytes, length in bits): the answer bytes, or None."""
        s = self.state
        if s == "OFF":
            return None
        if nbits == 7:
            cmd = frame[0]
            if s == "IDLE" and cmd in (_REQA, _WUPA) or s == "HALT" and cmd == _WUPA:
                self.halted = s == "HALT"
                self.state = "READY"
                self.level = 0
                return self.atqa
            if s in ("READY", "ACTIVE"):
                return self._drop()  # a selected card ignores REQA: the presence "ping-pong"
            return None
        if s == "READY":
            sel = 0x93 + 2 * self.level
            cl = self.levels[self.level]
            if nbits == 16 and frame[0] == sel and frame[1] == 0x20:
                return cl  # ANTICOLLISION: this level's UID part and BCC
            if nbits == 72 and frame[0] == sel and frame[1] == 0x70 and _crc_ok(frame) \
                    and frame[2:7] == cl:
                if self.level == len(self.levels) - 1:
                    self.state = "ACTIVE"
                    sak = self.sak
                else:
                    self.level += 1
                    sak = 0x04  # UID not complete
                c = _crc_a(bytes((sak,)))
                return bytes((sak, c & 0xFF, c >> 8))
            return self._drop()  # other card selected, bad CRC, or anything unexpected
        if s == "ACTIVE":
            if nbits == 32 and frame[0] == _HLTA and frame[1] == 0 and _crc_ok(frame):
                self.state = "HALT"
                return None
            return self._drop()  # anything but a valid HLTA: IDLE (or HALT) without answering
        return None  # IDLE and HALT ignore everything but REQA/WUPA


class SimMFRC522:
    """The reader chip on a simulated SPI bus; `cards` are the cards in its field."""

    spi_modes = (0,)

    def __init__(self, version=0x92, rst=None):
        self.version = version
        self.cards = []
        self.fault = None
        self.crc_errors = 0
        self.soft_resets = 0
        self.hard_resets = 0
        self._regs = bytearray(64)
        self._fifo = bytearray(_FIFO_SIZE)
        self._powered = True
        self._phase = _NO_SPI
        self._reg = 0
        self.field = False
        self._reset()
        if rst is not None:
            n = machine.net(rst)
            n.listeners.append(self._nrstpd)
            if n.level == 0:
                self._nrstpd(0)

    # --- world side -----------------------------------------------------------------------

    def place(self, card):
        """A card enters the field (it gets power if the field is on)."""
        if card not in self.cards:
            self.cards.append(card)
        card.power(self.field)

    def remove(self, card):
        """A card leaves the field and loses power."""
        if card in self.cards:
            self.cards.remove(card)
        card.power(False)

    def peek(self, reg):
        """A register's stored value, without the side effects of a read (for tests)."""
        return self._regs[reg]

    # --- power, reset, field --------------------------------------------------------------

    def _nrstpd(self, level):
        if level:
            self._powered = True
            self.hard_resets += 1
            self._reset()
        else:
            self._powered = False
            self._set_field(False)

    def _reset(self):
        r = self._regs
        for i in range(64):
            r[i] = 0
        for reg, v in _RESET_VALUES:
            r[reg] = v
        self._fn = 0  # FIFO byte count
        self._fr = 0  # FIFO read position
        self._command = _CMD_IDLE
        self._crc = 0
        self._crc_ready = True
        self._rx_last_bits = 0
        self._set_field(False)

    def _set_field(self, on):
        if on != self.field:
            self.field = on
            for c in self.cards:
                c.power(on)

    # --- SPI ------------------------------------------------------------------------------

    def select(self):
        self._phase = _ADDRESS

    def deselect(self):
        self._phase = _NO_SPI

    def byte(self, w):
        if self.fault == "silent" or not self._powered:
            return 0x00
        p = self._phase
        if p == _ADDRESS:
            self._reg = (w >> 1) & 0x3F
            self._phase = _READING if w & 0x80 else _WRITING
            return 0x00
        if p == _WRITING:
            self._write(self._reg, w)
            return 0x00
        if p == _READING:
            r = self._read(self._reg)
            if w & 0x80:
                self._reg = (w >> 1) & 0x3F  # each MOSI byte names the next register to read
            else:
                self._phase = _NO_SPI  # 0x00 ends the read burst
            return r
        return 0x00

    # --- FIFO -----------------------------------------------------------------------------

    def _push(self, v):
        if self._fn >= _FIFO_SIZE:
            self._regs[_ERROR] |= _BUFFER_OVFL
            self._regs[_COM_IRQ] |= _ERR_IRQ
            return
        self._fifo[(self._fr + self._fn) % _FIFO_SIZE] = v
        self._fn += 1
        if self._command == _CMD_CALC_CRC:
            self._calc_crc()

    def _pop(self):
        if not self._fn:
            return 0x00
        v = self._fifo[self._fr]
        self._fr = (self._fr + 1) % _FIFO_SIZE
        self._fn -= 1
        return v

    def _drain(self):
        out = bytearray(self._fn)
        for i in range(len(out)):
            out[i] = self._pop()
        return out

    def _flush(self):
        self._fn = 0
        self._fr = 0
        self._regs[_ERROR] &= ~_BUFFER_OVFL & 0xFF

    # --- registers ------------------------------------------------------------------------

    def _read(self, reg):
        r = self._regs
        if reg == _FIFO_DATA:
            return self._pop()
        if reg == _FIFO_LEVEL:
            return self._fn
        if reg == _COM_IRQ or reg == _DIV_IRQ:
            return r[reg] & 0x7F  # Set1/Set2 are write-only
        if reg == _STATUS1:
            wl = r[_WATER_LEVEL]
            v = 0x01 if self._fn <= wl else 0  # LoAlert
            if _FIFO_SIZE - self._fn <= wl:
                v |= 0x02  # HiAlert
            if r[_COM_IRQ] & r[_COM_IEN] & 0x7F or r[_DIV_IRQ] & r[_DIV_IEN] & 0x14:
                v |= 0x10  # IRq
            if self._crc_ready:
                v |= 0x20
                if self._crc == 0:
                    v |= 0x40  # CRCOk
            return v
        if reg == _STATUS2:
            modem = 0
            if self._command == _CMD_TRANSCEIVE:
                modem = 0x05 if r[_COM_IRQ] & _TIMER_IRQ else 0x01  # waiting for data / StartSend
            return (r[_STATUS2] & 0xC0) | modem
        if reg == _CONTROL:
            return 0x10 | self._rx_last_bits
        if reg == _VERSION:
            return self.version
        return r[reg]

    def _write(self, reg, v):
        r = self._regs
        if reg == _COMMAND:
            self._command_write(v)
        elif reg == _COM_IRQ or reg == _DIV_IRQ:
            if v & 0x80:
                r[reg] |= v & 0x7F
            else:
                r[reg] &= ~v & 0x7F
        elif reg == _FIFO_DATA:
            self._push(v)
        elif reg == _FIFO_LEVEL:
            if v & 0x80:
                self._flush()
        elif reg == _BIT_FRAMING:
            r[reg] = v
            if v & 0x80 and self._command == _CMD_TRANSCEIVE:
                self._transceive()
        elif reg == _COLL:
            r[reg] = (r[reg] & 0x7F) | (v & 0x80)  # only ValuesAfterColl is writable
        elif reg == _TX_CONTROL:
            r[reg] = v
            self._set_field(bool(v & 0x03))
        elif reg in (_ERROR, _STATUS1, _CONTROL, _CRC_RESULT_H, _CRC_RESULT_L, _VERSION):
            pass  # read-only (ControlReg's TStopNow/TStartNow: timer not modelled)
        else:
            r[reg] = v

    def _command_write(self, v):
        r = self._regs
        cmd = v & 0x0F
        if cmd == _CMD_NO_CHANGE:
            r[_COMMAND] = (v & 0x30) | self._command
            return
        if cmd == _CMD_SOFT_RESET:
            self.soft_resets += 1
            self._reset()
            return
        self._command = cmd
        r[_COMMAND] = (v & 0x30) | cmd
        if cmd == _CMD_TRANSCEIVE and r[_BIT_FRAMING] & 0x80:
            self._transceive()  # StartSend left set: a real chip would send at once too
        elif cmd == _CMD_CALC_CRC:
            self._crc = _CRC_PRESETS[r[_MODE] & 0x03]
            self._crc_ready = False
            self._calc_crc()

    def _calc_crc(self):
        """CalcCRC eats the FIFO (and any byte written later) until another command is given."""
        self._crc = _crc_a(self._drain(), self._crc)
        self._crc_ready = True
        self._regs[_CRC_RESULT_H] = self._crc >> 8
        self._regs[_CRC_RESULT_L] = self._crc & 0xFF
        self._regs[_DIV_IRQ] |= _CRC_IRQ

    # --- the RF side ----------------------------------------------------------------------

    def _transceive(self):
        r = self._regs
        r[_ERROR] &= ~_RX_ERRS & 0xFF
        r[_COLL] = (r[_COLL] & 0x80) | 0x20  # CollPosNotValid until a collision is seen
        self._rx_last_bits = 0
        tx_bits = r[_BIT_FRAMING] & 0x07
        answers = None
        if self._fn and self.field and self.cards:
            frame = self._drain()
            nbits = (len(frame) - 1) * 8 + (tx_bits or 8)
            if tx_bits:
                frame[-1] &= (1 << tx_bits) - 1  # bits past TxLastBits are never sent
            frame = bytes(frame)
            answers = []
            for card in self.cards:
                a = card.receive(frame, nbits)
                if a is not None:
                    answers.append(self._damage(frame, nbits, a))
        else:
            self._flush()
        r[_COM_IRQ] |= _TX_IRQ
        if not answers:
            if r[_T_MODE] & 0x80:
                r[_COM_IRQ] |= _TIMER_IRQ  # TAuto: the timer ran out; without it, wait forever
            return
        data, pos = _merge(answers, r[_COLL] & 0x80)
        for b in data:
            self._push(b)
        if pos:
            r[_ERROR] |= _COLL_ERR
            r[_COLL] = (r[_COLL] & 0x80) | ((pos & 0x1F) if pos <= 32 else 0x20)
        if r[_ERROR]:
            r[_COM_IRQ] |= _ERR_IRQ
        r[_COM_IRQ] |= _RX_IRQ

    def _damage(self, frame, nbits, answer):
        """Fault injection on one card's answer, as the reader receives it."""
        select = nbits == 72 and frame[1] == 0x70
        if self.fault == "garbage":
            if nbits == 16 and frame[1] == 0x20:
                return answer[:4] + bytes((answer[4] ^ 0x01,))  # wrong BCC
            if select:
                return answer[:1]  # SAK without its CRC_A
        if select and self.crc_errors > 0:
            self.crc_errors -= 1
            return answer[:2] + bytes((answer[2] ^ 0x5A,))
        return answer


def _merge(answers, values_after_coll):
    """What the reader hears from several cards at once: the data and the 1-based position of
    the first bit that differs (0 if none). Bits after a collision read 0, or the OR of the
    answers when CollReg ValuesAfterColl is set."""
    if len(answers) == 1:
        return answers[0], 0
    n = max(len(a) for a in answers)
    out = bytearray(n)
    pos = 0
    for i in range(n):
        both = 0xFF
        either = 0
        for a in answers:
            if i < len(a):  # a card whose answer ended no longer modulates: no collision there
                both &= a[i]
                either |= a[i]
        diff = both ^ either
        if pos == 0 and diff:
            low = diff & -diff
            bit = 0
            while low > 1:
                low >>= 1
                bit += 1
            pos = i * 8 + bit + 1
            keep = (1 << bit) - 1
            out[i] = either if values_after_coll else either & keep
        elif pos:
            out[i] = either if values_after_coll else 0
        else:
            out[i] = either
    return out, pos
