"""Builds the charger's hardware from a board config: buses, chips, pins.

The same code builds a real ESP32 board (with `machine`) or the simulated one (with
`hal.sim.machine`); drivers receive ready buses and pins and never see the difference.
Optional parts: "pilot" (IEC 61851-1 control pilot), "plug" (proximity contact), "button"
(the driver's "report a problem"), "buzzer", "rcd" (residual-current module: trip output, test
input), "watchdog" (machine.WDT).

    board = Board(load("board.json"), machine, sleep_ms=clock.sleep_ms)
    board.meter.urms(0); board.contactor.close(); board.pilot.offer(266)
"""
from firmware.core.config import setting
from hal.atm90e32 import ATM90E32
from hal.contactor import Contactor
from hal.led import Led
from hal.mfrc522 import MFRC522
from hal.pilot import Pilot

EV_SENSES = ("pilot", "pin", "current")


def _spi(machine, cfg, name):
    key = "spi." + name + "."
    return machine.SPI(setting(cfg, key + "id", int, lo=0, hi=3),
                       baudrate=setting(cfg, key + "baudrate", int, 1000000, lo=100000, hi=10000000),
                       polarity=setting(cfg, key + "polarity", int, choices=(0, 1)),
                       phase=setting(cfg, key + "phase", int, choices=(0, 1)),
                       sck=machine.Pin(setting(cfg, key + "sck", int)),
                       mosi=machine.Pin(setting(cfg, key + "mosi", int)),
                       miso=machine.Pin(setting(cfg, key + "miso", int)))


def _gpio(cfg, key, default=None):
    return setting(cfg, key, int, default, lo=0, hi=48)


def _out(machine, cfg, key, value):
    return machine.Pin(_gpio(cfg, key), machine.Pin.OUT, value=value)


class Board:
    def __init__(self, cfg, machine, sleep_ms):
        Pin = machine.Pin
        self.meter = ATM90E32(_spi(machine, cfg, "meter"), _out(machine, cfg, "meter.cs", 1),
                              sleep_ms=sleep_ms)
        rst = _gpio(cfg, "reader.rst")
        self.rfid = MFRC522(_spi(machine, cfg, "reader"), _out(machine, cfg, "reader.cs", 1),
                            rst=None if rst is None else Pin(rst, Pin.OUT, value=1))
        aux = _gpio(cfg, "contactor.aux")
        self.contactor = Contactor(_out(machine, cfg, "contactor.coil", 0),
                                   None if aux is None else Pin(aux, Pin.IN),
                                   setting(cfg, "contactor.aux_closed", int, 1, choices=(0, 1)))
        self.led = Led(_out(machine, cfg, "led.pin", 0), setting(cfg, "led.active", int, 1, choices=(0, 1)))
        self.buzzer = None
        if "buzzer" in cfg:
            self.buzzer = Led(_out(machine, cfg, "buzzer.pin", 0),
                              setting(cfg, "buzzer.active", int, 1, choices=(0, 1)))
        self.ev_sense = setting(cfg, "ev_sense", str, choices=EV_SENSES)
        self.pilot = None
        if self.ev_sense == "pilot":
            invert = setting(cfg, "pilot.invert", int, 0, choices=(0, 1))
            self.pilot = Pilot(
                machine.PWM(Pin(_gpio(cfg, "pilot.pwm"), Pin.OUT), freq=1000, duty_u16=0 if invert else 65535),
                machine.ADC(Pin(_gpio(cfg, "pilot.adc")), atten=machine.ADC.ATTN_11DB),
                setting(cfg, "pilot.cal", list), invert=invert,
                samples=setting(cfg, "pilot.samples", int, 64, lo=8, hi=512))
        self.plug = None
        if self.ev_sense == "pin":
            self.plug = Pin(_gpio(cfg, "plug.pin"), Pin.IN)
            self.plug_active = setting(cfg, "plug.active", int, 1, choices=(0, 1))
        self.has_rcd = "rcd" in cfg   # residual-current module: trip output and test input
        if self.has_rcd:
            self._rcd_trip = Pin(_gpio(cfg, "rcd.trip"), Pin.IN)
            self._rcd_active = setting(cfg, "rcd.active", int, 1, choices=(0, 1))
            self._rcd_test = Pin(_gpio(cfg, "rcd.test"), Pin.OUT, value=1 - self._rcd_active)
        self.wdt = None
        if "watchdog" in cfg:
            self.wdt = machine.WDT(timeout=setting(cfg, "watchdog.timeout_ms", int, lo=1000, hi=60000))
        self.reset_cause = machine.reset_cause() if hasattr(machine, "reset_cause") else None
        self.button = None
        if "button" in cfg:
            self.button = Pin(_gpio(cfg, "button.pin"), Pin.IN, Pin.PULL_UP)
            self.button_active = setting(cfg, "button.active", int, 0, choices=(0, 1))

    def rcd_tripped(self):
        return self.has_rcd and self._rcd_trip() == self._rcd_active

    def rcd_test(self, on):
        self._rcd_test(self._rcd_active if on else 1 - self._rcd_active)

    def button_pressed(self):
        return self.button is not None and self.button() == self.button_active
