"""Safety checks: over-current, implausible samples, welded / stuck contactor, grid quality,
temperature and the RCD self-test, each turned into the right fault at the right moment."""
from configs import board as hw
from firmware.metering.ring import SampleRing
from firmware.safety.checks import Safety
from firmware.safety.faults import Faults
from hal.sim.clock import VirtualClock


class Contactor:
    def __init__(self):
        self.commanded = False
        self.cycles = 0
        self.aux = None

    def feedback(self):
        return self.aux


class Board:
    def __init__(self, rcd=False):
        self.contactor = Contactor()
        self.has_rcd = rcd
        self.tripped = False
        self.test_input = []
        self.follows_test = True   # a working RCD trips while its test input is driven

    def rcd_tripped(self):
        return self.tripped

    def rcd_test(self, on):
        self.test_input.append(on)
        if self.follows_test:
            self.tripped = on


class Metering:
    """What the sampler leaves for the checks: the latest sample and its counters."""

    def __init__(self):
        self.phases = 1
        self.ring = SampleRing(16)
        self.i_max_ma = 0
        self.u_min_cv = self.u_max_cv = 23000
        self.status0 = self.status1 = 0
        self.over_current = self.under_voltage = self.over_voltage = 0
        self.limit_ma = 0

    def sample(self, u_cv=23000, i_ma=0):
        i = self.ring.advance()
        self.ring.u[3 * i] = u_cv
        self.ring.i[3 * i] = i_ma
        self.u_min_cv = self.u_max_cv = u_cv
        self.i_max_ma = i_ma


def _safety(rcd=False):
    clock = VirtualClock()
    board, m = Board(rcd), Metering()
    faults = Faults(clock)
    s = Safety(hw(), board, m, faults, clock)
    clock.sleep_ms(1000)   # the meter's readings settled
    return s, board, m, faults, clock


def _kinds(new):
    return [f.kind for f in new]


def test_overcurrent_needs_a_second_of_samples_over_the_limit_with_margin_or_the_chips_flag():
    s, _, m, faults, _ = _safety()
    assert s.fast(16000) == () and m.limit_ma == 17600   # 10 % margin over the offer
    m.over_current = 9
    assert s.fast(16000) == ()
    m.over_current = 10
    new = s.fast(16000)
    assert _kinds(new) == ["overcurrent"] and new[0].emergency and s.fast(16000) == ()   # once
    s2, _, m2, _, _ = _safety()
    m2.over_current, m2.status0 = 1, 0x8000   # phase A over-current flag of the ATM90E32
    assert _kinds(s2.fast(16000)) == ["overcurrent"]


def test_an_implausible_sample_is_a_meter_error():
    s, _, m, _, _ = _safety()
    m.u_max_cv = 0xFFFF
    try:
        s.fast(16000)
        raise AssertionError("a stuck bus must not pass as a sample")
    except OSError as e:
        assert "implausible" in str(e)


def test_current_through_an_open_contactor_is_a_welded_contactor_after_it_settled():
    s, board, m, faults, clock = _safety()
    k = board.contactor
    k.commanded, k.cycles = True, 1
    assert s.check(True, None, None) == ()
    k.commanded = False
    m.sample(i_ma=16000)
    assert s.check(True, None, None) == ()   # the poles take time to open
    clock.sleep_ms(1000)
    new = s.check(True, None, None)
    assert _kinds(new) == ["welded"] and new[0].latched and new[0].code == "PowerSwitchFailure"


def test_an_aux_contact_open_while_energised_is_stuck_open():
    s, board, _, faults, clock = _safety()
    k = board.contactor
    k.commanded, k.cycles, k.aux = True, 1, False
    s.check(True, None, None)
    clock.sleep_ms(1000)
    assert _kinds(s.check(True, None, None)) == ["stuck_open"]
    k.aux = True
    s.check(True, None, None)
    assert not faults.active["stuck_open"].present


def test_grid_faults_wait_for_the_meter_to_settle_and_for_their_duration():
    clock = VirtualClock()
    board, m = Board(), Metering()
    faults = Faults(clock)
    s = Safety(hw(), board, m, faults, clock)
    m.sample(u_cv=26000)
    m.over_voltage = 20
    assert s.check(False, None, None) == ()   # just started: readings mean nothing yet
    clock.sleep_ms(1000)
    new = s.check(False, None, None)
    assert _kinds(new) == ["overvoltage"] and not new[0].emergency and new[0].stop_reason == "PowerQuality"
    m.over_voltage = 0
    m.sample(u_cv=5000)   # below 40 % of nominal: a lost phase, after 2 s of checks
    for _ in range(19):
        assert s.check(False, None, None) == ()
    assert _kinds(s.check(False, None, None)) == ["phase_loss"]


def test_frequency_and_temperature():
    s, _, m, faults, _ = _safety()
    m.sample()
    for _ in range(19):
        assert s.check(False, None, 4700) == ()
    assert _kinds(s.check(False, None, 4700)) == ["frequency"]
    assert s.check(False, None, 0) == ()   # no voltage, no frequency: nothing to judge
    assert _kinds(s.check(False, 85, 5000)) == ["overtemp"]
    s.check(False, 66, 5000)
    assert faults.active["overtemp"].present   # 66 °C: not below t1 - hysteresis (65 °C) yet
    s.check(False, 64, 5000)
    assert not faults.active["overtemp"].present and not faults.active["frequency"].present


def test_rcd_self_test_at_boot_passes_when_the_module_trips_and_releases():
    s, board, _, faults, clock = _safety(rcd=True)
    assert s.check(False, None, None) == () and board.test_input == [True]
    assert s.rcd() == ()   # tripped by its own test: no fault
    s.check(False, None, None)
    assert board.test_input == [True, False]
    s.check(False, None, None)
    assert s.last_selftest == "passed" and not faults.active


def test_rcd_self_test_fails_when_the_module_does_not_trip_and_never_runs_during_a_session():
    s, board, _, faults, clock = _safety(rcd=True)
    s.check(True, None, None)
    assert board.test_input == []   # a session runs: later
    board.follows_test = False
    s.check(False, None, None)
    clock.sleep_ms(300)
    new = s.check(False, None, None)
    assert _kinds(new) == ["rcd_selftest"] and s.last_selftest == "failed" and board.test_input == [True, False]
    board.tripped = True
    assert _kinds(s.rcd()) == ["rcd"]
