"""Builds the charger's hardware from the parsed board settings: buses, chips, pins.

The same code builds a real ESP32 board (with `machine`) or the simulated one (with
`hal.sim.machine`); drivers receive ready buses and pins and never see the difference.
`hw` holds the board config's values as records, already checked at boot
(firmware/core/settings.py `board_settings`): this module reads no JSON and trusts no default.
Optional parts: "pilot" (IEC 61851-1 control pilot), "plug" (proximity contact), "button"
(the driver's "report a problem"), "buzzer", "rcd" (residual-current module: trip output, test
input), "watchdog" (machine.WDT), "fram" (I2C FRAM keeping the energy register), "power_good" (the
supply's power-good output and its hold-up time).

    board = Board(hw, machine, sleep_ms=clock.sleep_ms)
    board.meter.urms(0); board.contactor.close(); board.pilot.offer(266)
"""
from hal.atm90e32 import ATM90E32
from hal.contactor import Contactor
from hal.fram import FRAM
from hal.led import Led
from hal.mfrc522 import MFRC522
from hal.pilot import Pilot


def _spi(machine, bus):
    return machine.SPI(bus.id, baudrate=bus.baudrate, polarity=bus.polarity, phase=bus.phase,
                       sck=machine.Pin(bus.sck), mosi=machine.Pin(bus.mosi), miso=machine.Pin(bus.miso))


class Board:
    def __init__(self, hw, machine, sleep_ms, watchdog=True):
        Pin = machine.Pin
        m = hw.meter
        self.meter = ATM90E32(_spi(machine, hw.spi.meter), Pin(m.cs, Pin.OUT, value=1), phases=m.phases,
                              line_hz=m.line_hz, pga=m.pga, ugain=m.ugain, igain=m.igain, uoffset=m.uoffset,
                              ioffset=m.ioffset, lsb_per_w=m.pmean_lsb_per_w, ov_cv=m.ov_cv, sag_cv=m.sag_cv,
                              loss_cv=m.loss_cv, oi_ma=m.oi_ma, freq_lo_chz=m.freq_lo_chz,
                              freq_hi_chz=m.freq_hi_chz, sag_peak_cfg=m.sag_peak_cfg, sleep_ms=sleep_ms)
        r = hw.reader
        self.rfid = MFRC522(_spi(machine, hw.spi.reader), Pin(r.cs, Pin.OUT, value=1),
                            rst=None if r.rst is None else Pin(r.rst, Pin.OUT, value=1), gain=r.gain)
        k = hw.contactor
        self.contactor = Contactor(Pin(k.coil, Pin.OUT, value=0), None if k.aux is None else Pin(k.aux, Pin.IN),
                                   k.aux_closed)
        self.led = Led(Pin(hw.led.pin, Pin.OUT, value=0), hw.led.active)
        self.buzzer = None
        if hw.buzzer is not None:
            self.buzzer = Led(Pin(hw.buzzer.pin, Pin.OUT, value=0), hw.buzzer.active)
        self.ev_sense = hw.ev_sense
        self.pilot = None
        if self.ev_sense == "pilot":
            p = hw.pilot
            self.pilot = Pilot(machine.PWM(Pin(p.pwm, Pin.OUT), freq=1000, duty_u16=0 if p.invert else 65535),
                               machine.ADC(Pin(p.adc), atten=machine.ADC.ATTN_11DB), p.cal, invert=p.invert,
                               samples=p.samples)
        self.plug = None
        if self.ev_sense == "pin":
            self.plug = Pin(hw.plug.pin, Pin.IN)
            self.plug_active = hw.plug.active
        self.has_rcd = hw.rcd is not None   # residual-current module: trip output and test input
        if self.has_rcd:
            self._rcd_trip = Pin(hw.rcd.trip, Pin.IN)
            self._rcd_active = hw.rcd.active
            self._rcd_test = Pin(hw.rcd.test, Pin.OUT, value=1 - self._rcd_active)
        self.wdt = None
        if watchdog and hw.watchdog is not None:   # not for a technician's checks: it cannot be stopped
            self.wdt = machine.WDT(timeout=hw.watchdog.timeout_ms)
        self.reset_cause = machine.reset_cause() if hasattr(machine, "reset_cause") else None
        self.fram = None
        if hw.fram is not None:
            f = hw.fram
            self.fram = FRAM(machine.I2C(f.i2c, scl=Pin(f.scl), sda=Pin(f.sda), freq=f.freq), addr=f.addr,
                             size=f.size)
        self.power_good = None
        if hw.power_good is not None:
            self.power_good = Pin(hw.power_good.pin, Pin.IN)
            self._power_good_active = hw.power_good.active
            self.hold_up_ms = hw.power_good.hold_up_ms
        self.button = None
        if hw.button is not None:
            self.button = Pin(hw.button.pin, Pin.IN, Pin.PULL_UP)
            self.button_active = hw.button.active

    def rcd_tripped(self):
        return self.has_rcd and self._rcd_trip() == self._rcd_active

    def rcd_test(self, on):
        self._rcd_test(self._rcd_active if on else 1 - self._rcd_active)

    def supply_failing(self):
        """The supply's power-good output fell: the board runs on its hold-up capacitors now."""
        return self.power_good is not None and self.power_good() != self._power_good_active

    def button_pressed(self):
        return self.button is not None and self.button() == self.button_active
