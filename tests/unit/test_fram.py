"""FRAM driver and its two-copy record over the simulated I2C chip: the bytes a real MB85RC sees."""
import os

import micropython

from check import raises
from hal.fram import FRAM, Record, crc16
from hal.sim import machine
from hal.sim.fram import SimFRAM

TMP = "/tmp" if "tmp" in os.listdir("/") else "."


def _rig(size=32768, path=None, addr=0x50):
    machine.reset()
    chip = SimFRAM(size, path=path)
    machine.i2c_bus(0).attach(chip, addr=addr)
    i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=400000)
    return chip, FRAM(i2c, addr=addr, size=size)


def test_crc16_ccitt_false_check_value():
    assert crc16(b"123456789", 9) == 0x29B1


def test_bytes_written_at_a_two_byte_address_read_back():
    chip, fram = _rig()
    fram.write(0x1234, b"\x01\x02\x03")
    assert chip.peek(0x1234, 3) == b"\x01\x02\x03"
    buf = bytearray(3)
    fram.readinto(0x1234, buf)
    assert buf == b"\x01\x02\x03"
    fram.write(0x7FFF, b"\xAA")   # the last byte of a 32 KB part
    fram.readinto(0x7FFE, bytearray(2))
    raises(ValueError, fram.write, 0x7FFF, b"\x01\x02")   # past the end


def test_silent_or_absent_chip_is_an_oserror_naming_the_address():
    chip, fram = _rig()
    chip.silent = True
    e = raises(OSError, fram.readinto, 0, bytearray(2))
    assert "0x50" in str(e)
    raises(OSError, fram.write, 0, b"\x00")
    _, fram = _rig(addr=0x50)
    other = FRAM(machine.I2C(0), addr=0x51)   # nothing at 0x51
    raises(OSError, other.readinto, 0, bytearray(1))
    assert machine.I2C(0).scan() == [0x50]


def test_bad_configuration_is_a_valueerror():
    raises(ValueError, FRAM, machine.I2C(0), addr=0x40)
    raises(ValueError, FRAM, machine.I2C(0), size=100)


def test_record_blank_then_newest_of_two_copies():
    chip, fram = _rig()
    rec = Record(fram, 0x100)
    assert rec.read() is None   # blank chip: no valid copy
    rec.write(1200, 17, 7, 1100)
    assert rec.read() == (1200, 17, 7, 1100)
    rec.write(1201, 3, 7, 1100)
    rec.write(0x3FFFFFFF, 319, 0, 0)
    assert Record(fram, 0x100).read() == (0x3FFFFFFF, 319, 0, 0)   # a new reader: same answer
    raises(ValueError, rec.write, 1 << 30, 0, 0, 0)
    raises(ValueError, rec.write, -1, 0, 0, 0)


def test_torn_write_leaves_the_previous_copy():
    chip, fram = _rig()
    rec = Record(fram, 0)
    rec.write(500, 10, 3, 400)
    rec.write(501, 11, 3, 400)
    chip.tear_after = 9   # the supply goes halfway through the next write
    rec.write(502, 12, 3, 400)
    chip.tear_after = None
    again = Record(fram, 0)
    assert again.read() == (501, 11, 3, 400)
    again.write(503, 0, 3, 400)   # overwrites the torn slot, not the good one
    assert Record(fram, 0).read() == (503, 0, 3, 400)


def test_sequence_survives_its_16_bit_wrap():
    chip, fram = _rig()
    rec = Record(fram, 0)
    for i in range(3):
        rec.write(i, 0, 0, 0)
    for i in range(0x10000 - 3 + 5):   # past the wrap of the slot sequence
        rec.write(100 + i % 7, 0, 0, 0)
    last = 100 + (0x10000 - 3 + 4) % 7
    assert Record(fram, 0).read() == (last, 0, 0, 0)


def test_contents_outlive_the_process_in_a_file():
    path = TMP + "/test_fram_%d.bin" % os.getpid() if hasattr(os, "getpid") else TMP + "/test_fram.bin"
    try:
        os.remove(path)
    except OSError:
        pass
    try:
        _, fram = _rig(size=8192, path=path)
        Record(fram, 0).write(4242, 1, 9, 4000)
        _, fram = _rig(size=8192, path=path)   # a new process: the chip from its file
        assert Record(fram, 0).read() == (4242, 1, 9, 4000)
    finally:
        os.remove(path)


def test_record_write_allocates_nothing():
    chip, fram = _rig()
    rec = Record(fram, 0)
    rec.write(1, 2, 3, 4)   # warm-up: the sequence is known now
    micropython.heap_lock()
    try:
        for i in range(20):
            rec.write(1000 + i, i, 3, 4)
    finally:
        micropython.heap_unlock()
    assert Record(fram, 0).read() == (1019, 19, 3, 4)
