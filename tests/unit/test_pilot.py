"""Control pilot: the IEC 61851-1 duty table, state bands, debounce, diode check, OCPP status,
and the pilot driver reading the simulated CP line."""
import sys

import micropython
from check import raises
from firmware.charging.pilot import (MAX_DA, MIN_DA, OFF, PilotMonitor, classify, connector_status,
                            current_for_duty, duty_for_current)
from hal.pilot import Pilot
from hal.sim import machine
from hal.sim.clock import VirtualClock
from hal.sim.cp import SimCP
from hal.sim.ev import SimEV

CAL = [[4000, -12000], [60000, 12000]]
PWM_PIN = 25
ADC_PIN = 36


# -- duty <-> current ------------------------------------------------------------------------------
def _exact_x10(permille):
    """Ten times the exact current of a duty in tenths of an ampere (integer, from the IEC formulas)."""
    return permille * 6 if permille <= 850 else (permille - 640) * 25


def test_below_six_amps_is_not_offered():
    assert duty_for_current(59) == OFF
    assert duty_for_current(0) == OFF
    assert duty_for_current(-10) == OFF
    assert duty_for_current(MIN_DA) == 100          # 10 % = 6 A
    assert current_for_duty(100) == MIN_DA


def test_eighty_five_and_ninety_six_percent_boundaries():
    assert duty_for_current(510) == 850             # 85 % x 0.6 = 51 A
    assert current_for_duty(850) == 510
    for da in (511, 520, 525, 527):                 # 51..52.7 A cannot be signalled: stay at 51 A
        assert duty_for_current(da) == 850
    assert duty_for_current(528) == 851             # 85.1 % -> (85.1 - 64) x 2.5 = 52.75 A
    assert current_for_duty(851) == 528             # nearest 0.1 A
    assert duty_for_current(MAX_DA) == 960          # 96 % = 80 A
    assert duty_for_current(1000) == 960            # clamped to the table's top
    assert current_for_duty(960) == MAX_DA
    assert current_for_duty(970) == MAX_DA          # 96-97 % = 80 A (J1772)
    assert current_for_duty(971) == 0


def test_decoding_edges():
    assert current_for_duty(50) == 0                # 5 %: digital communication, no PWM offer
    assert current_for_duty(79) == 0
    assert current_for_duty(80) == MIN_DA           # 8-10 %: 6 A
    assert current_for_duty(99) == MIN_DA
    assert current_for_duty(OFF) == 0
    assert current_for_duty(0) == 0


def test_offer_never_exceeds_the_limit_and_is_the_largest_that_fits():
    for da in range(MIN_DA, MAX_DA + 1):
        p = duty_for_current(da)
        assert _exact_x10(p) <= da * 10, da
        if p != 960 and not 510 < da < 528:
            assert _exact_x10(p + 1) > da * 10, da  # one permille more would exceed it


def test_round_trip_below_85_percent_and_rounding():
    for da in range(MIN_DA, 511):
        assert current_for_duty(duty_for_current(da)) == da, da
    assert duty_for_current(160) == 266             # 26.6 % is 15.96 A: read back as 16.0 A
    assert current_for_duty(266) == 160
    assert current_for_duty(267) == 160             # 16.02 A


# -- states ---------------------------------------------------------------------------------------
def test_classify_nominal_levels():
    got = [classify(mv, mv) for mv in (12000, 9000, 6000, 3000, 0, -12000)]
    assert got == ["A", "B", "C", "D", "E", "F"]


def test_classify_band_edges():
    assert [classify(10501, 0), classify(10500, 0)] == ["A", "B"]
    assert [classify(7501, 0), classify(7500, 0)] == ["B", "C"]
    assert [classify(4501, 0), classify(4500, 0)] == ["C", "D"]
    assert [classify(1501, 0), classify(1500, 0)] == ["D", "E"]
    assert [classify(-1500, -1500), classify(-10499, -10499), classify(-10501, -10501)] == ["E", "E", "F"]
    assert [classify(13500, 0), classify(13501, 0)] == ["A", "E"]   # over 13.5 V fits no state


def test_diode_check():
    assert classify(9000, -12000, True) == "B"
    assert classify(6000, -11000, True) == "C"
    assert classify(9000, -8800, True) == "E"       # bypassed diode: the EV loads the low phase
    assert classify(3000, -2400, True) == "E"
    assert classify(9000, -8800, False) == "B"      # no PWM running: no check
    assert classify(9000, 8500, True) == "B"        # the burst saw no low phase: cannot tell
    assert classify(12000, -8800, True) == "A"      # no EV: nothing to check


def _monitor(debounce_ms=20):
    clock = VirtualClock()
    return PilotMonitor(clock, debounce_ms=debounce_ms), clock


def _feed(mon, clock, high, low=-12000, pwm=True, n=1, every_ms=10):
    changes = 0
    for _ in range(n):
        if mon.update(high, low, pwm):
            changes += 1
        clock.sleep_ms(every_ms)
    return changes


def test_debounce_ignores_glitches():
    mon, clock = _monitor()
    assert mon.state is None
    assert _feed(mon, clock, 9000, n=3) == 1 and mon.state == "B"
    _feed(mon, clock, 6000)                          # one read at C
    _feed(mon, clock, 9000)
    _feed(mon, clock, 0, n=2)                        # two reads at E, 10 ms apart: < 20 ms
    assert _feed(mon, clock, 9000, n=5) == 0 and mon.state == "B"


def test_debounce_adopts_a_state_that_held():
    mon, clock = _monitor()
    _feed(mon, clock, 9000, n=3)
    t0 = clock.ticks_ms()
    assert _feed(mon, clock, 6000, n=2) == 0
    assert mon.update(6000, -12000, True)            # third read, 20 ms after the first
    assert (mon.state, mon.previous, mon.since) == ("C", "B", t0 + 20)
    assert not mon.update(6000, -12000, True)        # changed once only


def test_zero_debounce_follows_every_read():
    mon, clock = _monitor(0)
    assert mon.update(12000, 12000, False) and mon.state == "A"
    assert mon.update(9000, 9000, False) and mon.state == "B"
    assert raises(ValueError, PilotMonitor, clock, debounce_ms=-1)
    assert raises(ValueError, PilotMonitor, clock, debounce_ms="20")


def test_missing_diode_is_a_debounced_fault():
    mon, clock = _monitor()
    _feed(mon, clock, 9000, n=3)
    _feed(mon, clock, 9000, low=-8800)               # one bad read: ignored
    assert mon.state == "B" and not mon.diode_fault
    assert _feed(mon, clock, 9000, low=-8800, n=3) == 1
    assert mon.state == "E" and mon.diode_fault
    assert _feed(mon, clock, 0, low=0, n=3) == 1     # a real E (CP short) is not a diode fault
    assert mon.state == "E" and not mon.diode_fault


def test_connector_status():
    cs = connector_status
    assert cs(None, False, False, False, False) == "Unavailable"
    assert cs("A", False, False, False, False) == "Available"
    assert cs("A", False, False, False, True) == "Available"       # unplugged: finishing is over
    assert cs("B", False, False, False, False) == "Preparing"
    assert cs("C", False, False, False, False) == "Preparing"
    assert cs("B", True, True, False, False) == "SuspendedEV"
    assert cs("B", True, False, False, False) == "SuspendedEVSE"   # no offer: the EVSE holds back
    assert cs("C", True, True, True, False) == "Charging"
    assert cs("D", True, True, True, False) == "Charging"
    assert cs("C", True, False, False, False) == "SuspendedEVSE"   # e.g. a schedule's 0 A
    assert cs("C", True, True, False, False) == "SuspendedEVSE"    # contactor not (yet) closed
    assert cs("B", False, False, False, True) == "Finishing"
    assert cs("C", False, False, False, True) == "Finishing"
    for s in ("E", "F"):
        assert cs(s, True, True, True, False) == "Faulted"


# -- the pilot driver over the simulated CP line ------------------------------------------------
def _rig(cal=CAL, invert=False, noise_mv=0, samples=64):
    machine.reset()
    ev = SimEV()
    cp = SimCP(ev, PWM_PIN, cal, invert=invert, noise_mv=noise_mv)
    machine.adc_source(ADC_PIN, cp.read_u16)
    pwm = machine.PWM(machine.Pin(PWM_PIN), freq=1000, duty_u16=0)
    adc = machine.ADC(machine.Pin(ADC_PIN), atten=machine.ADC.ATTN_11DB)
    return Pilot(pwm, adc, cal, invert=invert, samples=samples), ev, pwm


def _levels(pilot, ev, state, permille, no_diode=False):
    ev.plugged = state != "A"
    ev.state = state
    ev.no_diode = no_diode
    if permille is None:
        pilot.error()
    else:
        pilot.offer(permille)
    pilot.read()
    return pilot.high_mv, pilot.low_mv


def _near(v, target, tol):
    return target - tol <= v <= target + tol


def test_driver_sets_the_pwm():
    pilot, _, pwm = _rig()
    assert pwm.duty_u16() == 65535 and pilot.duty == OFF and not pilot.oscillating  # boots at +12 V
    pilot.offer(100)
    assert pwm.duty_u16() == 6554 and pilot.oscillating
    pilot.error()
    assert pwm.duty_u16() == 0 and not pilot.oscillating
    pilot.off()
    assert pwm.duty_u16() == 65535
    for bad in (0, 1001, "500", 26.7):
        assert raises(ValueError, pilot.offer, bad)
    assert pwm.duty_u16() == 65535                   # a refused duty changes nothing


def test_read_gives_both_levels_in_each_state():
    pilot, ev, _ = _rig()
    for state, high in (("A", 12000), ("B", 9000), ("C", 6000), ("D", 3000)):
        for duty in (50, 100, 267, 850, 960):
            hi, lo = _levels(pilot, ev, state, duty)
            assert _near(hi, high, 100), (state, duty, hi)
            assert _near(lo, -12000, 20), (state, duty, lo)
            assert classify(hi, lo, pilot.oscillating) == state
        hi, lo = _levels(pilot, ev, state, OFF)     # constant +12 V: one level
        assert hi == lo and classify(hi, lo, False) == state


def test_read_error_short_and_missing_diode():
    pilot, ev, _ = _rig()
    hi, lo = _levels(pilot, ev, "A", None)           # the charger's own state F
    assert _near(hi, -12000, 20) and _near(lo, -12000, 20) and classify(hi, lo) == "F"
    hi, lo = _levels(pilot, ev, "E", 267)
    assert _near(hi, 0, 20) and _near(lo, 0, 20) and classify(hi, lo, True) == "E"
    for state in ("B", "C", "D"):
        hi, lo = _levels(pilot, ev, state, 267, no_diode=True)
        assert -10500 < lo < 0 and classify(hi, lo, True) == "E", (state, hi, lo)


def test_read_through_an_inverting_front_end_and_falling_calibration():
    pilot, ev, pwm = _rig(cal=[[60000, -12000], [4000, 12000]], invert=True)
    assert pwm.duty_u16() == 0                       # OFF = constant +12 V on the CP
    hi, lo = _levels(pilot, ev, "C", 267)
    assert _near(hi, 6000, 100) and _near(lo, -12000, 20)


def test_read_averages_adc_noise():
    pilot, ev, _ = _rig(noise_mv=150)
    hi, lo = _levels(pilot, ev, "B", 500)
    assert _near(hi, 9000, 150) and _near(lo, -12000, 150)
    assert classify(hi, lo, True) == "B"


def test_bad_calibration_is_refused():
    pwm = machine.PWM(machine.Pin(PWM_PIN), freq=1000)
    adc = machine.ADC(machine.Pin(ADC_PIN))
    for cal in ([[4000, -12000]], [[4000, -12000], [4000, 12000]], [[4000, 1], [60000, 1]],
                [[4000, -12000], [70000, 12000]], [[4000, -12000], [60000, 12.5]], "4000"):
        e = raises(ValueError, Pilot, pwm, adc, cal)
        assert "pilot.cal" in str(e)
    assert "pilot.samples" in str(raises(ValueError, Pilot, pwm, adc, CAL, samples=4))


def test_read_and_monitor_allocate_nothing():
    pilot, ev, _ = _rig()
    ev.plugged = True
    ev.state = "C"
    pilot.offer(267)
    buf = pilot._buf
    clock = VirtualClock()
    mon = PilotMonitor(clock, debounce_ms=0)
    out = [0, 0, 0]
    if sys.implementation.name != "micropython":
        # no heap lock on CPython: the same calls, and the burst reuses its one buffer
        pilot.read()
        mon.update(pilot.high_mv, pilot.low_mv, pilot.oscillating)
        assert pilot._buf is buf and len(buf) == 64 and min(buf) < 10000 < max(buf)
        assert mon.state == "C" and _near(pilot.high_mv, 6000, 100)
        return
    import gc
    gc.collect()
    micropython.heap_lock()  # on MicroPython any allocation now raises MemoryError
    try:
        for _ in range(3):
            pilot.read()
            if mon.update(pilot.high_mv, pilot.low_mv, pilot.oscillating):
                out[0] += 1
        out[1] = pilot.high_mv
        out[2] = pilot.low_mv
    finally:
        micropython.heap_unlock()
    assert out[0] == 1 and mon.state == "C"
    assert _near(out[1], 6000, 100) and _near(out[2], -12000, 20)
