"""Once running, the periodic work allocates nothing: on an ESP32 (32 bits, ~110 KB of heap) every
allocation in a path that runs each step or second is garbage the collector must chase, and any
Unix time (>= 2^30) is a heap object. Proven under micropython.heap_lock() (MemoryError on any
allocation) on the MicroPython interpreters; on CPython the same calls run unlocked.
"""
import gc

from check import heap_lock, heap_unlock
from simharness import locked_passes, steady_charging
from firmware.charging.limits import Limits
from firmware.core.clock import BASE
from firmware.safety.faults import Faults
from hal.sim.clock import VirtualClock


START = 1772438100   # 2026-03-02T07:55:00Z: Unix seconds above 2^30


def test_a_loop_pass_in_steady_charging_allocates_nothing():
    # between the session's start and its first checkpoint (250 Wh at 3.7 kW: about 4 min), before
    # the next clock-aligned meter value (900 s slots: at 300 s) nothing is due to be sent or written;
    # every pass samples, reads energy, ticks the periods, asks the limits (two profiles), checks
    # faults, status and button, and looks whether a checkpoint, a meter value or the sync is due
    h = steady_charging(START)
    ctl = h.ctl
    assert ctl.connector == "Charging" and ctl.session is not None
    events = len(h.log.events)
    passes = locked_passes(h, 150000, heap_lock, heap_unlock)
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


def test_limits_with_schedules_allocate_nothing_per_step():
    lim = Limits(32, base=BASE)   # as the firmware's (from_settings): asked with clock.seconds()
    lim.set_profile("station_max", {"stack_level": 1, "periods": [[0, 16], [6 * 3600, 10]],
                                    "start_schedule": START - 3600, "recurrency": "Daily",
                                    "valid_from": START - 86400, "valid_to": START + 7 * 86400})
    lim.set_profile("station_max", {"periods": [[0, 24]], "start_schedule": START - 600, "duration": 7200})
    lim.set_profile("station_max", {"stack_level": 2, "periods": [[0, 16], [START + 5 * 3600, 6]]})   # absolute
    lim.set_profile("tx_default", {"periods": [[0, 12], [1800, 20]]})
    clock = VirtualClock(START)
    started = clock.seconds() - 600   # a session running for 10 min
    got = [None] * 4
    i = 0
    heap_lock()
    try:
        while i < 4:   # as every control step asks, an hour apart
            got[i] = lim.offer_a(clock.seconds(), started, 32, 40)
            clock.sleep_ms(3600 * 1000)
            i += 1
    finally:
        heap_unlock()
    assert got == [12, 16, 16, 16] and lim.reason == "schedule"
    assert lim.offer_a(clock.seconds() + 3600, None) == 6   # the absolute schedule's second period


def test_the_idle_update_stand_in_and_the_console_look_allocate_nothing_per_pass():
    """What the loop and its stop condition ask every pass while no update runs and nobody types."""
    from firmware import app
    from firmware.link.otacore import Idle
    from hal.sim.world import Typed

    up = Idle(())
    port = Typed()
    clock = VirtualClock(START)
    saved = dict(app.current)
    app.current.clear()
    app.current["console"] = None
    got = [None] * 50
    i = 0
    gc.collect()
    heap_lock()
    try:
        while i < 50:
            up.tick(True)
            got[i] = up.ready_to_switch() or not up.confirm() or up.working or app.console_step(port, clock)
            i += 1
    finally:
        heap_unlock()
        app.current.clear()
        app.current.update(saved)
    assert got == [None] * 50   # nothing to switch, confirmed, no work, the console not loaded
