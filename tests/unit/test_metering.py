"""Metering over the simulated ATM90E32: billing energy, the ∫P·dt cross-check, profile, checks.

The per-sample path is run under micropython.heap_lock(): it must allocate nothing.
"""
import sys

import micropython

from firmware.metering.profile import Profile
from hal.sim.clock import VirtualClock
from rig import meter_rig as _rig

MICROPYTHON = sys.implementation.name == "micropython"


def _run(m, clock, seconds, energy_every_ms=1000):
    for n in range(seconds * 10):
        clock.sleep_ms(100)
        m.sample()
        if n % (energy_every_ms // 100) == 0:
            m.read_energy()


def test_billing_energy_and_integral_agree_with_v_i_t():
    m, line, chip, clock = _rig()
    line.amps = [16.0, 16.0, 16.0]
    _run(m, clock, 600)
    m.read_energy()
    expected = 3 * 230 * 16 * 600 / 3600   # 1840 Wh
    assert abs(m.forward.wh - expected) <= 1
    assert abs(m.integral_wh - expected) <= 0.01 * expected
    assert m.forward.total_counts() == chip.counts_made()   # not a count lost


def test_reverse_energy_is_kept_apart():
    m, line, chip, clock = _rig(phases=1)
    line.amps = [10.0, 0.0, 0.0]
    line.pf = [-1.0, 1.0, 1.0]
    _run(m, clock, 360)
    m.read_energy()
    assert m.forward.wh == 0 and abs(m.reverse.wh - 230) <= 1
    assert m.integral_wh == 0 and m.p_w < 0


def test_per_sample_checks_count_consecutive_samples_beyond_limits():
    m, line, chip, clock = _rig(phases=1)
    m.limit_ma = 20000
    m.u_low_cv, m.u_high_cv = 20700, 25300
    line.amps = [25.0, 0.0, 0.0]
    _run(m, clock, 1)
    assert m.over_current == 10 and m.i_max_ma == 25000
    line.amps = [10.0, 0.0, 0.0]
    line.volts = [260.0, 0.0, 0.0]
    _run(m, clock, 1)
    assert m.over_current == 0 and m.over_voltage >= 8 and m.under_voltage == 0


def test_sampling_path_allocates_nothing():
    m, line, chip, clock = _rig()
    line.amps = [16.0, 16.0, 16.0]
    m.in_session = True
    m.start_session()
    _run(m, clock, 2)            # warm up: everything the path needs exists now
    done = 0
    for _ in range(50):
        clock.sleep_ms(100)      # the simulated chip may allocate: outside the lock
        micropython.heap_lock()
        try:
            m.sample()
            m.sample()
            done += 2
        finally:
            micropython.heap_unlock()
    assert done == 100 and m.ring.total >= 120
    if MICROPYTHON:  # on CPython heap_lock is a stub: the counts above are what is checked
        assert m.profile.peak_w > 0


def test_profile_stays_bounded_for_long_sessions():
    clock = VirtualClock()
    prof = Profile(clock, bucket_s=60, buckets=8)
    for sec in range(3 * 3600):          # 3 h at 1 sample/s, power ramping up
        prof.add(sec, 1000 + sec % 7)
        clock.sleep_ms(1000)
    rec = prof.record()
    assert rec["bucket_s"] == 32 * 60 and len(rec["mean_w"]) <= 8
    assert rec["peak_w"] == 3 * 3600 - 1
    assert rec["min_w"][0] == 0 and rec["max_w"][0] == 32 * 60 - 1
    assert rec["mean_w"] == sorted(rec["mean_w"]) and rec["max_ma"][0] == 1006


# -- the register in FRAM at every energy read (power cuts: docs/journal.md) ----------------------
def _fram(size=8192):
    from hal.fram import FRAM
    from hal.sim import machine
    from hal.sim.fram import SimFRAM

    chip = SimFRAM(size)
    machine.i2c_bus(0).attach(chip, addr=0x50)
    return chip, FRAM(machine.I2C(0), addr=0x50, size=size)


def test_every_energy_read_lands_in_fram_and_a_reboot_continues_from_it():
    from hal.fram import Record

    m, line, chip, clock = _rig()
    fchip, fram = _fram()
    assert m.keep_in(fram) is None   # a blank chip: nothing to continue from
    m.start_session(7)
    start = m.forward.wh
    line.amps = [32.0, 32.0, 32.0]
    _run(m, clock, 120)              # two minutes at 22 kW: ~736 Wh, 120 reads
    assert Record(fram, 0).read() == (m.forward.wh, m.forward.rem, 7, start)
    cut = m.register()
    # the power goes: RAM is gone, the FRAM is not; a new boot's Metering continues from it
    m2, _, _, _ = _rig()
    assert m2.keep_in(fram) == (cut[0], cut[1], 7, start)
    assert m2.register() == cut
    assert m2.fram_session(7) == cut and m2.fram_session(8) is None
    m2.end_session()
    assert Record(fram, 0).read()[2] == 0 and m2.fram_session(7) == cut   # closed: no session named now


def test_a_register_never_goes_back_to_an_older_fram_record():
    m, line, chip, clock = _rig()
    _, fram = _fram()
    m.keep_in(fram)
    line.amps = [16.0, 16.0, 16.0]
    _run(m, clock, 60)
    m2, _, _, _ = _rig()
    m2.restore(m.forward.wh + 10, 0)   # flash knows more (e.g. a chip replaced): FRAM cannot lower it
    m2.keep_in(fram)
    assert m2.forward.wh == m.forward.wh + 10


def test_a_silent_fram_never_stops_billing():
    m, line, chip, clock = _rig()
    fchip, fram = _fram()
    m.keep_in(fram)
    fchip.silent = True
    line.amps = [16.0, 16.0, 16.0]
    _run(m, clock, 30)
    m.read_energy()
    assert m.nv is None and "not responding" in m.nv_error
    assert m.forward.total_counts() == chip.counts_made()   # every count still billed
    m2, _, _, _ = _rig()
    assert m2.keep_in(fram) is None and "0x50" in m2.nv_error


def test_energy_reads_with_fram_allocate_nothing():
    m, line, chip, clock = _rig()
    _, fram = _fram()
    m.keep_in(fram)
    m.start_session(3)
    line.amps = [16.0, 16.0, 16.0]
    _run(m, clock, 2)
    done = 0
    for _ in range(20):
        clock.sleep_ms(1000)   # the simulated chips may allocate: outside the lock
        micropython.heap_lock()
        try:
            m.sample()
            m.read_energy()
            done += 1
        finally:
            micropython.heap_unlock()
    assert done == 20 and m.nv is not None
