"""MFRC522 driver on the simulated chip: the same SPI bytes a real RC522 module answers."""
import micropython

from check import raises
from hal.mfrc522 import MFRC522, CardError, CollisionError, crc_a
from hal.sim import machine
from hal.sim.mfrc522 import SimCard, SimMFRC522

UID4 = b"\x3a\x4f\x12\x9c"
UID7 = b"\x04\x1a\x2b\x3c\x4d\x5e\x6f"
UID10 = b"\x04\x11\x22\x33\x44\x55\x66\x77\x88\x99"


def _rig(version=0x92, gain=None):
    machine.reset()
    chip = SimMFRC522(version=version)
    machine.bus(1).attach(chip, cs=15)
    spi = machine.SPI(1)
    cs = machine.Pin(15, machine.Pin.OUT, value=1)
    return chip, MFRC522(spi, cs, gain=gain)


def _ready(*cards):
    chip, rfid = _rig()
    rfid.init()
    for c in cards:
        chip.place(c)
    return chip, rfid


def test_crc_a_matches_the_iso_14443_3_examples():
    assert crc_a(b"\x00\x00") == 0x1EA0  # annex B: sent as A0 1E
    assert crc_a(b"\x12\x34") == 0xCF26  # sent as 26 CF
    assert crc_a(b"\x50\x00") == 0xCD57  # HLTA 50 00 57 CD
    assert crc_a(b"123456789") == 0xBF05  # CRC-16/ISO-IEC-14443-3-A check value
    assert crc_a(b"\xff\x08\xff", 1, 2) == crc_a(b"\x08") == 0xDDB6  # a slice without copying


def test_spi_protocol_read_burst_names_next_register():
    _, rfid = _rig()
    spi, cs = rfid._spi, rfid._cs
    rx = bytearray(3)
    cs(0)
    spi.write_readinto(b"\xee\x82\x00", rx)  # read VersionReg, then CommandReg, then stop
    cs(1)
    assert bytes(rx) == b"\x00\x92\x20"


def test_init_checks_version_and_sets_up_timer_ask_crc_and_field():
    chip, rfid = _rig()
    assert not chip.field
    rfid.init()
    assert rfid.version == 0x92
    assert chip.soft_resets == 1
    assert chip.field and chip.peek(0x14) & 0x03 == 0x03
    assert chip.peek(0x15) == 0x40  # 100 % ASK
    assert chip.peek(0x11) & 0x03 == 0x01  # CRC preset 0x6363
    assert chip.peek(0x2A) & 0x80  # TAuto: the timer starts after each frame
    prescaler = ((chip.peek(0x2A) & 0x0F) << 8) | chip.peek(0x2B)
    reload = (chip.peek(0x2C) << 8) | chip.peek(0x2D)
    timeout_us = (2 * prescaler + 1) * (reload + 1) / 13.56
    assert 1000 <= timeout_us <= 10000, timeout_us  # a few ms, not 25
    assert chip.peek(0x26) == 0x48  # gain left at its reset value


def test_gain_sets_rfcfg_bits_6_4_and_is_range_checked():
    chip, rfid = _rig(gain=7)
    rfid.init()
    assert chip.peek(0x26) == 0x78
    chip, rfid = _rig(gain=0)
    rfid.init()
    assert chip.peek(0x26) == 0x08  # reserved bits kept
    spi, cs = machine.SPI(1), machine.Pin(15, machine.Pin.OUT, value=1)
    raises(ValueError, MFRC522, spi, cs, gain=8)
    raises(ValueError, MFRC522, spi, cs, gain=-1)
    raises(ValueError, MFRC522, spi, cs, gain=True)


def test_silent_chip_is_an_oserror_naming_the_version_register():
    chip, rfid = _rig()
    chip.fault = "silent"
    e = raises(OSError, rfid.init)
    assert "not responding (VersionReg 0x00)" in str(e)


def test_empty_bus_reads_ff_and_is_an_oserror():
    machine.reset()
    rfid = MFRC522(machine.SPI(1), machine.Pin(15, machine.Pin.OUT, value=1))
    e = raises(OSError, rfid.init)
    assert "VersionReg 0xff" in str(e)


def test_clone_versions_are_accepted_unknown_ones_are_not():
    for v in (0x91, 0x88, 0x12):
        _, rfid = _rig(version=v)
        rfid.init()
        assert rfid.version == v
    _, rfid = _rig(version=0x37)
    raises(OSError, rfid.init)


def test_hard_reset_through_the_rst_pin():
    machine.reset()
    chip = SimMFRC522(rst=4)
    machine.bus(1).attach(chip, cs=15)
    rst = machine.Pin(4, machine.Pin.OUT, value=0)  # held in power-down
    rfid = MFRC522(machine.SPI(1), machine.Pin(15, machine.Pin.OUT, value=1), rst=rst)
    rfid.init()
    assert chip.hard_resets == 1 and chip.soft_resets == 0
    assert rfid.version == 0x92 and chip.field


def test_no_card_is_a_clean_timeout():
    _, rfid = _ready()
    assert rfid.request() is None
    assert rfid.request(wakeup=True) is None
    assert rfid.select() is None


def test_4_7_and_10_byte_uids_read_back_exactly():
    for uid, atqa in ((UID4, 0x0004), (UID7, 0x0044), (UID10, 0x0084)):
        card = SimCard(uid)
        _, rfid = _ready(card)
        assert rfid.request() == atqa
        got = rfid.select()
        assert got == uid, (got, uid)
        assert isinstance(got, bytes)
        assert card.state == "ACTIVE"


def test_selected_card_ignores_the_next_reqa_ping_pong():
    card = SimCard(UID4)
    _, rfid = _ready(card)
    assert rfid.request() == 0x0004
    assert rfid.select() == UID4
    assert rfid.request() is None  # ACTIVE card: REQA is unexpected, it drops to IDLE silently
    assert card.state == "IDLE"
    assert rfid.request() == 0x0004  # ...and answers the one after: present looks absent 1 in 2


def test_wupa_select_halt_sees_a_held_card_every_time():
    card = SimCard(UID7)
    _, rfid = _ready(card)
    for _ in range(5):
        assert rfid.request(wakeup=True) == 0x0044
        assert rfid.select() == UID7
        rfid.halt()
        assert card.state == "HALT"
    assert rfid.request() is None  # a halted card ignores REQA...
    assert card.state == "HALT"  # ...and stays halted


def test_field_cycle_wakes_halted_cards_as_idle():
    card = SimCard(UID4)
    chip, rfid = _ready(card)
    rfid.request(wakeup=True)
    rfid.select()
    rfid.halt()
    rfid.antenna(False)
    assert not chip.field and card.state == "OFF"
    assert rfid.request(wakeup=True) is None  # no field, no card
    rfid.antenna(True)
    assert card.state == "IDLE"
    assert rfid.request() == 0x0004  # plain REQA works again


def test_two_cards_with_different_atqa_collide_on_request():
    _, rfid = _ready(SimCard(UID4), SimCard(UID7))
    e = raises(CollisionError, rfid.request, True)
    assert isinstance(e, CardError)


def test_two_cards_with_equal_atqa_collide_on_anticollision():
    chip, rfid = _ready(SimCard(b"\x01\x22\x33\x44"), SimCard(b"\x03\x22\x33\x44"))
    assert rfid.request() == 0x0004  # same ATQA: no collision yet
    raises(CollisionError, rfid.select)
    assert chip.peek(0x0E) & 0x3F == 2  # CollReg: first collision at bit 2 of the UID


def test_crc_error_on_sak_is_a_card_error_then_reads_recover():
    card = SimCard(UID4)
    chip, rfid = _ready(card)
    chip.crc_errors = 1
    assert rfid.request(wakeup=True) == 0x0004
    e = raises(CardError, rfid.select)
    assert not isinstance(e, CollisionError)
    assert chip.crc_errors == 0
    assert rfid.request(wakeup=True) is None  # the card took the SELECT: ACTIVE, drops on WUPA
    assert rfid.request(wakeup=True) == 0x0004
    assert rfid.select() == UID4


def test_garbage_answers_are_card_errors():
    chip, rfid = _ready(SimCard(UID7))
    chip.fault = "garbage"
    assert rfid.request(wakeup=True) == 0x0044  # something is there
    e = raises(CardError, rfid.select)
    assert "BCC" in str(e)


class _ShortCard(SimCard):
    """A card whose UID frame loses its last byte on the way."""

    def receive(self, frame, nbits):
        a = SimCard.receive(self, frame, nbits)
        return a[:4] if a is not None and len(a) == 5 else a


def test_truncated_answer_is_a_card_error():
    _, rfid = _ready(_ShortCard(UID4))
    assert rfid.request() == 0x0004
    e = raises(CardError, rfid.select)
    assert "4 bytes" in str(e)


def test_chip_dying_mid_operation_is_an_oserror_not_a_hang():
    chip, rfid = _ready(SimCard(UID4))
    chip.fault = "silent"
    raises(OSError, rfid.request, True)


def test_timer_not_started_means_a_dead_wait_caught_by_the_poll_bound():
    chip, rfid = _ready()
    rfid._write(0x2A, 0x00)  # TAuto off: with no card the chip would wait forever
    e = raises(OSError, rfid.request)
    assert "never finished" in str(e)


def test_sim_calccrc_agrees_with_the_driver_crc():
    chip, rfid = _ready()
    rfid._write(0x0A, 0x80)  # flush FIFO
    for b in b"\x93\x70\x3a\x4f\x12\x9c\xfb":
        rfid._write(0x09, b)
    rfid._write(0x01, 0x03)  # CalcCRC
    assert rfid._read(0x05) & 0x04  # CRCIRq
    got = (rfid._read(0x21) << 8) | rfid._read(0x22)
    assert got == crc_a(b"\x93\x70\x3a\x4f\x12\x9c\xfb")


def test_polling_an_empty_field_allocates_nothing():
    _, rfid = _ready()
    rfid.request(wakeup=True)
    micropython.heap_lock()  # on MicroPython any allocation now raises MemoryError
    try:
        atqa = rfid.request(wakeup=True)
    finally:
        micropython.heap_unlock()
    assert atqa is None


def test_sim_cards_ignore_select_and_hlta_with_a_bad_crc():
    card = SimCard(UID4)
    card.power(True)
    cl1 = card.levels[0]
    select = bytearray(b"\x93\x70" + cl1 + b"\x00\x00")
    c = crc_a(select, 0, 7)
    select[7], select[8] = c & 0xFF, c >> 8
    for bad in (True, False):
        card.power(False)
        card.power(True)
        assert card.receive(b"\x52", 7) == card.atqa and card.state == "READY"
        frame = bytes(select[:8]) + bytes((select[8] ^ 0xFF,)) if bad else bytes(select)
        sak = card.receive(frame, 72)
        if bad:
            assert sak is None and card.state == "IDLE"
    assert sak == b"\x08\xb6\xdd" and card.state == "ACTIVE"
    assert card.receive(b"\x50\x00\x57\xcc", 32) is None  # HLTA, CRC off by one bit
    assert card.state == "IDLE"  # not HALT: the bad frame only knocked it out of ACTIVE
    card.receive(b"\x26", 7)
    card.receive(bytes(select), 72)
    assert card.receive(b"\x50\x00\x57\xcd", 32) is None and card.state == "HALT"


def test_cards_left_ready_by_a_collision_are_silent_to_one_wupa_but_not_after_hlta():
    def collided():
        a, b = SimCard(b"\x01\x22\x33\x44"), SimCard(b"\x03\x22\x33\x44")
        chip, rfid = _ready(a, b)
        assert rfid.request(wakeup=True) == 0x0004
        raises(CollisionError, rfid.select)
        assert a.state == b.state == "READY"
        chip.place(SimCard(UID7))  # a third card arrives
        return chip, rfid, a, b

    _, rfid, a, b = collided()
    assert rfid.request(wakeup=True) == 0x0044  # only the newcomer answers: the trap
    assert a.state == b.state == "IDLE"
    _, rfid, a, b = collided()
    rfid.halt()  # unexpected for READY cards: back to IDLE, silently
    assert a.state == b.state == "IDLE"
    raises(CollisionError, rfid.request, True)  # one WUPA now wakes all three
