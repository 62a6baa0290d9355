"""Simulated `machine`: pins, SPI buses routed by chip-select, I2C buses routed by address, PWM
outputs and ADC inputs.

The board builder uses this module in place of `machine` when a board config says
"platform": "sim". Simulated chips attach to its buses and answer byte for byte; the
simulated world drives its input pins and watches its outputs, finds the PWM the firmware
built on a pin (`pwm_on`) and supplies what an ADC pin reads (`adc_source`).

    bus = machine.bus(1); bus.attach(SimATM90E32(line), cs=5)
    spi = machine.SPI(1, polarity=1, phase=1); cs = machine.Pin(5, machine.Pin.OUT, value=1)
    machine.adc_source(36, cp.read_u16); machine.pwm_on(25).duty_u16()
    machine.i2c_bus(0).attach(SimFRAM(), addr=0x50); i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
"""


class _Net:
    """One pin number: its level, who drives it from outside, who listens to its edges."""

    def __init__(self):
        self.level = 1
        self.source = None
        self.listeners = []

    def read(self):
        if self.source is not None:
            return 1 if self.source() else 0
        return self.level

    def drive(self, v):
        v = 1 if v else 0
        if v != self.level:
            self.level = v
            for f in self.listeners:
                f(v)


_nets = {}
_buses = {}
_i2c_buses = {}
_pwms = {}          # pin number -> the active PWM on it
_adc_sources = {}   # pin number -> function returning the 16-bit code the ADC reads


def net(pin_id):
    """The net behind a pin number, created on first use (the world and the firmware share it)."""
    n = _nets.get(pin_id)
    if n is None:
        n = _nets[pin_id] = _Net()
    return n


def bus(bus_id):
    """The simulated SPI bus with this id, where chips are attached."""
    b = _buses.get(bus_id)
    if b is None:
        b = _buses[bus_id] = _Bus()
    return b


def i2c_bus(bus_id):
    """The simulated I2C bus with this id, where chips are attached by address."""
    b = _i2c_buses.get(bus_id)
    if b is None:
        b = _i2c_buses[bus_id] = _I2CBus()
    return b


def pwm_on(pin_id):
    """The active (not deinit'ed) PWM on this pin number, or None."""
    return _pwms.get(pin_id)


def adc_source(pin_id, fn):
    """Make an ADC on this pin number read fn() (a 0..65535 code); None disconnects it."""
    if fn is None:
        _adc_sources.pop(pin_id, None)
    else:
        _adc_sources[pin_id] = fn


PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
SOFT_RESET = 5
_cause = [PWRON_RESET]
_watchdogs = []
_clock = [None]


def use_clock(clock):
    """The world's virtual clock, which the simulated watchdog counts in."""
    _clock[0] = clock


def reset_cause():
    return _cause[0]


def set_reset_cause(cause):
    """The simulator restarts the firmware after a power cut or a watchdog reset."""
    _cause[0] = cause


class WDT:
    """The hardware watchdog: the world checks, in virtual time, that it is fed in time."""

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.fed_at = _clock[0].ms   # starting it counts as a feed
        _watchdogs.append(self)

    def feed(self):
        self.fed_at = _clock[0].ms


def starved(now_ms):
    """A watchdog that was not fed for longer than its timeout, or None (the world asks)."""
    for w in _watchdogs:
        if now_ms - w.fed_at > w.timeout:
            return w
    return None


def reset():
    """Forget every pin, bus, PWM and ADC source: a new simulated board."""
    _nets.clear()
    _buses.clear()
    _i2c_buses.clear()
    del _watchdogs[:]
    _pwms.clear()
    _adc_sources.clear()


def _pin_id(dest):
    """A Pin object or a pin number, as the ports' PWM and ADC constructors accept."""
    return dest.id if isinstance(dest, Pin) else dest


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self._net = net(id)
        self._mode = mode
        if pull == Pin.PULL_DOWN and self._net.source is None:
            self._net.level = 0
        if value is not None:
            self._net.drive(value)

    def init(self, mode=-1, pull=-1, value=None):
        self.__init__(self.id, mode, pull, value)

    def value(self, v=None):
        if v is None:
            return self._net.read()
        self._net.drive(v)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self._net.drive(1)

    def off(self):
        self._net.drive(0)


class _Bus:
    """Wires shared by several chips; the one whose chip-select is low hears the bytes."""

    def __init__(self):
        self.devices = []

    def attach(self, device, cs):
        """Connect a simulated chip whose chip-select is pin `cs` (active low)."""
        n = net(cs)
        self.devices.append((n, device))

        def edge(level):
            if level:
                device.deselect()
            else:
                device.select()

        n.listeners.append(edge)

    def exchange(self, mode, wbuf, rbuf, n, fill):
        sel = None
        count = 0
        for cs, dev in self.devices:
            if cs.level == 0:
                sel = dev
                count += 1
        for i in range(n):
            w = wbuf[i] if wbuf is not None else fill
            if count != 1 or mode not in sel.spi_modes:
                r = 0xFF  # floating or contended MISO, or a chip that cannot decode this clock
            else:
                r = sel.byte(w)
            if rbuf is not None:
                rbuf[i] = r


class SPI:
    MSB = 0
    LSB = 1

    def __init__(self, id, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        self._bus = bus(id)
        self.init(baudrate, polarity=polarity, phase=phase)

    def init(self, baudrate=1000000, *, polarity=0, phase=0, **kw):
        self.baudrate = baudrate
        self._mode = (polarity << 1) | phase

    def deinit(self):
        pass

    def write(self, buf):
        self._bus.exchange(self._mode, buf, None, len(buf), 0)

    def read(self, nbytes, write=0):
        buf = bytearray(nbytes)
        self._bus.exchange(self._mode, None, buf, nbytes, write)
        return buf

    def readinto(self, buf, write=0):
        self._bus.exchange(self._mode, None, buf, len(buf), write)

    def write_readinto(self, wbuf, rbuf):
        self._bus.exchange(self._mode, wbuf, rbuf, len(wbuf), 0)


class _I2CBus:
    """Chips on one I2C bus. A chip answers start(read) -> ACK bool, write(byte) -> ACK bool,
    read() -> byte, stop(); a transfer to an address nobody acknowledges is OSError ENODEV."""

    def __init__(self):
        self.devices = {}

    def attach(self, device, addr):
        self.devices[addr] = device

    def _start(self, addr, read):
        dev = self.devices.get(addr)
        if dev is None or not dev.start(read):
            raise OSError(19)   # ENODEV, as the ports report a missing ACK on the address
        return dev


class I2C:
    """machine.I2C's memory and plain transfers (addrsize 8 or 16), byte by byte to the chips."""

    def __init__(self, id, *, scl=None, sda=None, freq=400000, timeout=50000):
        self._bus = i2c_bus(id)
        self.freq = freq

    def scan(self):
        found = []
        for a in sorted(self._bus.devices):
            d = self._bus.devices[a]
            if d.start(False):
                found.append(a)
            d.stop()
        return found

    def _send(self, addr, mem, addrsize, buf, read_after):
        dev = self._bus._start(addr, False)
        try:   # index loops only: the driver's allocation-free tests run through here
            shift = addrsize - 8 if mem is not None else -8
            while shift >= 0:
                if not dev.write((mem >> shift) & 0xFF):
                    raise OSError(5)   # EIO: NACK on data
                shift -= 8
            if buf is not None:
                for i in range(len(buf)):
                    if not dev.write(buf[i]):
                        raise OSError(5)
            if read_after is not None:   # repeated start, then read
                if not dev.start(True):
                    raise OSError(19)
                for i in range(len(read_after)):
                    read_after[i] = dev.read()
        finally:
            dev.stop()

    def writeto(self, addr, buf, stop=True):
        self._send(addr, None, 8, buf, None)
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        dev = self._bus._start(addr, True)
        try:
            for i in range(len(buf)):
                buf[i] = dev.read()
        finally:
            dev.stop()

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self._send(addr, memaddr, addrsize, buf, None)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        self._send(addr, memaddr, addrsize, None, buf)

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf, addrsize=addrsize)
        return bytes(buf)


class PWM:
    """A PWM output like the ESP32 port's: `duty_u16` 0..65535, where 65535 is constantly high."""

    def __init__(self, dest, *, freq=None, duty_u16=None, invert=False):
        self.id = _pin_id(dest)
        self._freq = 5000 if freq is None else freq
        self._duty = 32768 if duty_u16 is None else duty_u16
        self._invert = invert
        _pwms[self.id] = self

    def init(self, *, freq=None, duty_u16=None, invert=None):
        if freq is not None:
            self._freq = freq
        if duty_u16 is not None:
            self._duty = duty_u16
        if invert is not None:
            self._invert = invert
        _pwms[self.id] = self

    def deinit(self):
        if _pwms.get(self.id) is self:
            del _pwms[self.id]

    def freq(self, value=None):
        if value is None:
            return self._freq
        self._freq = value
        return None

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        if not 0 <= value <= 65535:
            raise ValueError("duty_u16 must be 0..65535")
        self._duty = value
        return None

    def high(self, phase_u16):
        """The pin level at this point of the period (0..65535): what the world's circuit sees."""
        d = self._duty
        level = d == 65535 or phase_u16 < d
        return level != self._invert


class ADC:
    """An ADC input like the ESP32 port's; what it reads comes from `adc_source(pin, fn)`."""

    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, dest, *, atten=None):
        self.id = _pin_id(dest)
        self._atten = ADC.ATTN_0DB if atten is None else atten

    def init(self, *, atten=None):
        if atten is not None:
            self._atten = atten

    def atten(self, value=None):
        if value is None:
            return self._atten
        self._atten = value
        return None

    def read_u16(self):
        """The source's code, or 0 for a pin nothing is connected to."""
        fn = _adc_sources.get(self.id)
        return 0 if fn is None else fn()
