"""Builds the charger's hardware from a board config: buses, chips, pins.

The same code builds a real ESP32 board (with `machine`) or the simulated one (with
`hal.sim.machine`); drivers receive ready buses and pins and never see the difference.

    board = Board(load("board.json"), machine, sleep_ms=clock.sleep_ms)
    board.meter.urms(0); board.contactor.close(); board.plugged()
"""
from firmware.config import setting
from hal.atm90e32 import ATM90E32
from hal.contactor import Contactor
from hal.led import Led
from hal.mfrc522 import MFRC522


def _spi(machine, cfg, name):
    key = "spi." + name + "."
    return machine.SPI(setting(cfg, key + "id", int, lo=0, hi=3),
                       baudrate=setting(cfg, key + "baudrate", int, 1000000, lo=100000, hi=10000000),
                       polarity=setting(cfg, key + "polarity", int, choices=(0, 1)),
                       phase=setting(cfg, key + "phase", int, choices=(0, 1)),
                       sck=machine.Pin(setting(cfg, key + "sck", int)),
                       mosi=machine.Pin(setting(cfg, key + "mosi", int)),
                       miso=machine.Pin(setting(cfg, key + "miso", int)))


def _out(machine, cfg, key, value):
    return machine.Pin(setting(cfg, key, int, lo=0, hi=48), machine.Pin.OUT, value=value)


class Board:
    def __init__(self, cfg, machine, sleep_ms):
        Pin = machine.Pin
        self.meter = ATM90E32(_spi(machine, cfg, "meter"), _out(machine, cfg, "meter.cs", 1),
                              sleep_ms=sleep_ms)
        rst = setting(cfg, "reader.rst", int, None, lo=0, hi=48)
        self.rfid = MFRC522(_spi(machine, cfg, "reader"), _out(machine, cfg, "reader.cs", 1),
                            rst=None if rst is None else Pin(rst, Pin.OUT, value=1))
        aux = setting(cfg, "contactor.aux", int, None, lo=0, hi=48)
        self.contactor = Contactor(_out(machine, cfg, "contactor.coil", 0),
                                   None if aux is None else Pin(aux, Pin.IN),
                                   setting(cfg, "contactor.aux_closed", int, 1, choices=(0, 1)))
        self.led = Led(_out(machine, cfg, "led.pin", 0), setting(cfg, "led.active", int, 1, choices=(0, 1)))
        self._plug = Pin(setting(cfg, "plug.pin", int, lo=0, hi=48), Pin.IN)
        self._plug_active = setting(cfg, "plug.active", int, 1, choices=(0, 1))

    def plugged(self):
        """The plug-present input (proximity contact) says an EV cable is in."""
        return self._plug() == self._plug_active
