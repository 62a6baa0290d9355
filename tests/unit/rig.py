"""A metering rig on the bench: real ATM90E32 driver, simulated chip, virtual clock.

Used by tests and benchmarks that exercise the sampling path without the whole charger.

    m, line, chip, clock = meter_rig(phases=3)
    line.amps = [16.0] * 3; clock.sleep_ms(100); m.sample()
"""
from firmware.metering.meter import Metering
from hal.atm90e32 import ATM90E32
from hal.sim import machine
from hal.sim.atm90e32 import SimATM90E32
from hal.sim.clock import VirtualClock
from hal.sim.world import Line


def meter_rig(phases=3, ring_samples=64, max_power_w=22000):
    machine.reset()
    line = Line([230.0, 230.0, 230.0], 50.0)
    chip = SimATM90E32(line)
    clock = VirtualClock(on_advance=lambda target: chip.integrate(target - clock.ms))
    machine.bus(2).attach(chip, cs=5)
    meter = ATM90E32(machine.SPI(2, polarity=1, phase=1), machine.Pin(5, machine.Pin.OUT, value=1),
                     phases=phases, ugain=(32768,) * 3, igain=(32768,) * 3, sleep_ms=clock.sleep_ms)
    meter.init()
    return Metering(meter, clock, phases, ring_samples, max_power_w), line, chip, clock
