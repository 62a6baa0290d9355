"""Once running, the periodic work allocates nothing: on an ESP32 (32 bits, ~110 KB of heap) every
allocation in a path that runs each step or second is garbage the collector must chase, and any
Unix time (>= 2^30) is a heap object. Proven under micropython.heap_lock() (MemoryError on any
allocation) on the MicroPython interpreters; on CPython the same calls run unlocked.
"""
import gc

from simharness import Harness
from firmware.safety.faults import Faults
from hal.sim.clock import VirtualClock

try:
    from micropython import heap_lock, heap_unlock
except ImportError:  # CPython: no heap lock, the same calls run unlocked
    def heap_lock():
        pass

    def heap_unlock():
        pass

START = 1772438100   # 2026-03-02T07:55:00Z: Unix seconds above 2^30


def _charging(device=None):
    h = Harness({"alice": "04A1B2C3D4E5F6"}, ["alice"],
                [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16}],
                3600000, start_utc=START, device=dict({"meter_values_s": 3600}, **(device or {})))
    lim = h.ctl.limits   # a backend's schedules: station-wide from an absolute start, per session
    lim.set_profile("station_max", {"periods": [[0, 20], [3600, 10]], "start_schedule": START,
                                    "valid_to": START + 86400})
    lim.set_profile("tx_default", {"periods": [[0, 32], [7200, 16]]})
    h.run(until_ms=30000)
    return h


def _locked_passes(h, until_ms, pass_ms=50):
    """Loop passes (Controller.step) every pass_ms, each under the heap lock; the simulated world
    plays its physics (floats) between them, outside it."""
    ctl, clock = h.ctl, h.clock
    passes = 0
    gc.collect()
    while clock.ms < until_ms:
        h.world.meter.flush()   # the simulated chip integrates the line lazily, in floats
        heap_lock()
        try:
            ctl.step()
        finally:
            heap_unlock()
        passes += 1
        clock.sleep_ms(pass_ms)
    return passes


def test_a_loop_pass_in_steady_charging_allocates_nothing():
    # between the session's start and its first checkpoint (250 Wh at 3.7 kW: about 4 min), before
    # the next clock-aligned meter value (900 s slots: at 300 s) nothing is due to be sent or written;
    # every pass samples, reads energy, ticks the periods, asks the limits (two profiles), checks
    # faults, status and button, and looks whether a checkpoint, a meter value or the sync is due
    h = _charging()
    ctl = h.ctl
    assert ctl.connector == "Charging" and ctl.session is not None
    events = len(h.log.events)
    passes = _locked_passes(h, 150000)
    assert passes == 2400 and ctl.connector == "Charging"
    assert ctl.ev.offered_a == 20 and ctl.limits.reason == "schedule"
    assert len(h.log.events) == events      # nothing happened that a line would tell
    s = ctl.session
    assert s.periods.charging_s >= 145 and ctl.metering.register_wh() > 0


def test_a_fault_waiting_out_its_backoff_allocates_nothing():
    clock = VirtualClock(START)
    faults = Faults(clock)
    faults.trip("overvoltage", "253.10 V > 253 V")
    faults.gone("overvoltage")          # the condition cleared: retried after 60 s
    faults.trip("reader", "no answer")  # still present
    clock.sleep_ms(1000)
    got = [None] * 50
    i = 0
    gc.collect()
    heap_lock()
    try:
        while i < 50:   # each control step asks both
            got[i] = len(faults.clearable())
            faults.blocking()
            clock.sleep_ms(1000)
            i += 1
    finally:
        heap_unlock()
    assert got == [0] * 50 and faults.blocking().kind == "overvoltage"
    clock.sleep_ms(10000)
    assert [f.kind for f in faults.clearable()] == ["overvoltage"]
