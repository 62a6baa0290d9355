"""The simulated EV follows the pilot's offer as IEC 61851-1 asks, and the simulated PWM/ADC
let the world see what the firmware drives and feed what it reads."""
from check import raises
from firmware.charging.pilot import MAX_DA, MIN_DA, OFF, PilotMonitor, connector_status, current_for_duty, \
    duty_for_current
from hal.pilot import Pilot
from hal.sim import machine
from hal.sim.clock import VirtualClock
from hal.sim.cp import SimCP
from hal.sim.ev import SimEV, amps_for_duty, milliamps_for_duty

CAL = [[4000, -12000], [60000, 12000]]


def _ev(**kw):
    ev = SimEV(**kw)
    ev.plugged = True
    return ev


def test_unplugged_ev_is_state_a_and_draws_nothing():
    ev = SimEV(wants_a=16)
    assert ev.draw_a(0, 16, True) == 0 and ev.state == "A"


def test_requests_only_with_an_offer_of_six_amps():
    ev = _ev(wants_a=16)
    assert ev.draw_a(0, 0, True) == 0 and ev.state == "B"
    assert ev.draw_a(10, 5.9, True) == 0 and ev.state == "B"
    assert ev.draw_a(20, 6.0, True) == 6.0 and ev.state == "C"
    assert ev.draw_a(30, 32, True) == 16 and ev.state == "C"     # no more than it wants


def test_ventilation_asks_in_state_d():
    ev = _ev(wants_a=10, ventilation=True)
    assert ev.draw_a(0, 16, True) == 10 and ev.state == "D"


def test_follows_a_lower_offer_within_its_delay_and_a_higher_one_at_once():
    ev = _ev(wants_a=32, follow_delay_ms=2000)
    assert ev.draw_a(0, 32, True) == 32
    assert ev.draw_a(1000, 16, True) == 32                        # still the old current
    assert ev.due_ms() == 3000
    assert ev.draw_a(2999, 16, True) == 32
    assert ev.draw_a(3000, 16, True) == 16 and ev.due_ms() is None
    assert ev.draw_a(3100, 20, True) == 20                        # increase: at once


def test_offer_gone_stops_it_after_the_delay_then_state_b():
    ev = _ev(wants_a=16, follow_delay_ms=1500)
    ev.draw_a(0, 16, True)
    assert ev.draw_a(100, 0, True) == 16 and ev.state == "C"
    assert ev.draw_a(1600, 0, True) == 0 and ev.state == "B"
    assert ev.draw_a(1700, 16, True) == 16 and ev.state == "C"    # offered again: asks again


def test_a_full_battery_stops_at_once():
    ev = _ev(wants_a=16)
    ev.draw_a(0, 16, True)
    ev.wants_a = 0
    assert ev.draw_a(10, 16, True) == 0 and ev.state == "B"


def test_open_contactor_carries_no_current_but_the_ev_keeps_asking():
    ev = _ev(wants_a=16)
    assert ev.draw_a(0, 16, False) == 0 and ev.state == "C"
    assert ev.draw_a(10, 16, True) == 16


def test_fault_flags_and_limits():
    ev = _ev(wants_a=16)
    ev.state_e = True
    assert ev.draw_a(0, 16, True) == 16 and ev.state == "E"      # the firmware must open
    assert raises(ValueError, SimEV, follow_delay_ms=5001)
    assert raises(ValueError, SimEV, phases=4)


# -- simulated PWM and ADC -----------------------------------------------------------------------
def test_pwm_registry_and_adc_sources():
    machine.reset()
    assert machine.pwm_on(25) is None
    pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=100)
    assert machine.pwm_on(25) is pwm and pwm.freq() == 1000 and pwm.duty_u16() == 100
    pwm.duty_u16(30000)
    pwm.freq(2000)
    assert (pwm.freq(), pwm.duty_u16()) == (2000, 30000)
    assert raises(ValueError, pwm.duty_u16, 65536)
    assert [pwm.high(0), pwm.high(29999), pwm.high(30000)] == [True, True, False]
    pwm.deinit()
    assert machine.pwm_on(25) is None
    adc = machine.ADC(36, atten=machine.ADC.ATTN_11DB)
    assert adc.read_u16() == 0 and adc.atten() == machine.ADC.ATTN_11DB
    adc.atten(machine.ADC.ATTN_6DB)
    assert adc.atten() == machine.ADC.ATTN_6DB
    level = [1234]
    machine.adc_source(36, lambda: level[0])
    assert adc.read_u16() == 1234
    level[0] = 4321
    assert adc.read_u16() == 4321
    machine.PWM(machine.Pin(26), duty_u16=65535)
    machine.reset()
    assert adc.read_u16() == 0 and machine.pwm_on(26) is None


def test_full_and_zero_duty_are_constant_levels():
    machine.reset()
    pwm = machine.PWM(4, freq=1000, duty_u16=65535)
    assert all(pwm.high(p) for p in range(0, 65536, 997))
    pwm.duty_u16(0)
    assert not any(pwm.high(p) for p in range(0, 65536, 997))


def test_the_evs_duty_table_follows_iec_61851_1():
    # written from the standard, apart from the firmware's table (firmware/charging/pilot.py)
    assert milliamps_for_duty(50) == 0        # 5 %: digital communication only
    assert milliamps_for_duty(79) == 0        # under 8 %: no charging allowed
    assert milliamps_for_duty(80) == 6000     # 8-10 %: 6 A
    assert milliamps_for_duty(99) == 6000
    assert milliamps_for_duty(100) == 6000    # 10 %: 10 x 0.6 A
    assert milliamps_for_duty(500) == 30000   # 50 %: 30 A
    assert milliamps_for_duty(850) == 51000   # 85 %: 51 A
    assert milliamps_for_duty(851) == 52750   # 85.1 %: (85.1 - 64) x 2.5 A
    assert milliamps_for_duty(900) == 65000
    assert milliamps_for_duty(960) == 80000   # 96 %: 80 A
    assert milliamps_for_duty(970) == 80000   # 96-97 %: 80 A
    assert milliamps_for_duty(971) == 0       # over 97 %: no charging allowed
    assert milliamps_for_duty(1000) == 0      # 100 %: none
    assert amps_for_duty(266) == 16.0 and amps_for_duty(851) == 52.8   # read to the nearest 0.1 A


def test_the_firmwares_and_the_evs_duty_tables_agree():
    # every duty the firmware can drive, the band edges included: an error in one table shows
    for permille in range(0, OFF + 1):
        ma = milliamps_for_duty(permille)
        da = current_for_duty(permille)
        assert abs(ma - da * 100) <= 50, (permille, ma, da)   # the firmware rounds to 0.1 A
        assert amps_for_duty(permille) * 10 == da, (permille, amps_for_duty(permille), da)
    for da in range(MIN_DA, MAX_DA + 1):   # each offer the firmware makes is read as at most itself
        assert milliamps_for_duty(duty_for_current(da)) <= da * 100, da
    assert milliamps_for_duty(duty_for_current(MIN_DA - 1)) == 0


def test_sim_cp_decodes_the_offer_like_an_ev():
    machine.reset()
    ev = SimEV()
    cp = SimCP(ev, 25, CAL)
    assert cp.offered_a() == 0                                    # no PWM built yet
    pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=65535)
    pilot = Pilot(pwm, machine.ADC(36), CAL)
    for amps in (6, 10, 16, 32, 63, 80):
        pilot.offer(duty_for_current(amps * 10))
        assert cp.offered_a() == amps, amps
    pilot.off()
    assert cp.offered_a() == 0


def test_charging_round_trip_in_virtual_time():
    """Pilot, monitor and EV together: plug, offer, charge, lower the offer, stop."""
    machine.reset()
    clock = VirtualClock()
    ev = SimEV(wants_a=32, follow_delay_ms=2000)
    cp = SimCP(ev, 25, CAL)
    machine.adc_source(36, cp.read_u16)
    pilot = Pilot(machine.PWM(machine.Pin(25), freq=1000, duty_u16=65535),
                  machine.ADC(machine.Pin(36), atten=machine.ADC.ATTN_11DB), CAL)
    mon = PilotMonitor(clock, debounce_ms=20)
    drawn = [0]

    def run(ms, closed):
        for _ in range(ms // 10):
            drawn[0] = ev.draw_a(clock.ms, cp.offered_a(), closed)
            pilot.read()
            mon.update(pilot.high_mv, pilot.low_mv, pilot.oscillating)
            clock.sleep_ms(10)

    run(100, False)
    assert mon.state == "A"
    ev.plugged = True
    run(100, False)
    assert mon.state == "B" and connector_status(mon.state, False, False, False, False) == "Preparing"
    pilot.offer(duty_for_current(320))
    run(100, False)
    assert mon.state == "C" and drawn[0] == 0
    run(100, True)
    assert drawn[0] == 32 and connector_status(mon.state, True, True, True, False) == "Charging"
    pilot.offer(duty_for_current(100))
    run(1900, True)
    assert drawn[0] == 32                                         # within its 2 s
    run(200, True)
    assert drawn[0] == 10
    pilot.off()
    run(2100, True)
    assert drawn[0] == 0 and mon.state == "B"
    assert connector_status(mon.state, True, False, True, False) == "SuspendedEVSE"   # the EVSE withdrew
    assert connector_status(mon.state, True, True, True, False) == "SuspendedEV"      # the EV stopped
