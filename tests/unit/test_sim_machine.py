"""The simulated machine routes SPI bytes to the chip whose chip-select is low."""
from hal.sim import machine


class _Echo:
    """A chip that answers each byte with the previous one it heard, plus one."""

    spi_modes = (0,)

    def __init__(self):
        self.last = 0
        self.selects = 0

    def select(self):
        self.selects += 1
        self.last = 0

    def deselect(self):
        pass

    def byte(self, w):
        r = self.last
        self.last = (w + 1) & 0xFF
        return r


def test_bytes_go_to_the_selected_chip_only():
    machine.reset()
    a, b = _Echo(), _Echo()
    machine.bus(1).attach(a, cs=5)
    machine.bus(1).attach(b, cs=6)
    spi = machine.SPI(1)
    cs_a = machine.Pin(5, machine.Pin.OUT, value=1)
    machine.Pin(6, machine.Pin.OUT, value=1)
    rx = bytearray(3)
    cs_a(0)
    spi.write_readinto(b"\x01\x02\x03", rx)
    cs_a(1)
    assert bytes(rx) == b"\x00\x02\x03"
    assert a.selects == 1 and b.selects == 0


def test_no_chip_or_two_chips_selected_reads_floating_bus():
    machine.reset()
    machine.bus(1).attach(_Echo(), cs=5)
    machine.bus(1).attach(_Echo(), cs=6)
    spi = machine.SPI(1)
    rx = bytearray(2)
    spi.write_readinto(b"\x10\x20", rx)
    assert bytes(rx) == b"\xff\xff"
    machine.Pin(5, machine.Pin.OUT, value=0)
    machine.Pin(6, machine.Pin.OUT, value=0)
    spi.write_readinto(b"\x10\x20", rx)
    assert bytes(rx) == b"\xff\xff"


def test_wrong_spi_mode_is_not_understood():
    machine.reset()
    machine.bus(2).attach(_Echo(), cs=7)
    spi = machine.SPI(2, polarity=1, phase=1)
    machine.Pin(7, machine.Pin.OUT, value=0)
    assert spi.read(2, 0x00) == bytearray(b"\xff\xff")


def test_input_pin_follows_its_source():
    machine.reset()
    state = [0]
    machine.net(27).source = lambda: state[0]
    aux = machine.Pin(27, machine.Pin.IN)
    assert aux.value() == 0
    state[0] = 1
    assert aux() == 1
