"""Fault policies: retry with backoff, latch after too many trips, persistence, blocking."""
from firmware.safety.faults import POLICIES, Faults
from hal.sim.clock import VirtualClock


def test_every_policy_names_an_ocpp_code_and_a_2_0_1_stop_reason():
    codes = {"OverCurrentFailure", "GroundFailure", "OverVoltage", "UnderVoltage", "OtherError",
             "PowerMeterFailure", "PowerSwitchFailure", "HighTemperature", "EVCommunicationError",
             "InternalError", "ReaderFailure"}
    reasons = {"OvercurrentFault", "GroundFault", "PowerQuality", "Other", None}
    for kind, (code, reason, emergency, retry_s, max_retries) in POLICIES.items():
        assert code in codes and reason in reasons, kind
        assert isinstance(emergency, bool) and retry_s >= 0


def test_a_fault_is_new_once_and_clears_after_its_backoff():
    clock = VirtualClock()
    f = Faults(clock)
    first = f.trip("overvoltage", "265 V")
    assert first is not None and first.code == "OverVoltage" and not first.emergency
    assert f.trip("overvoltage", "266 V") is None
    assert f.blocking() is first
    clock.sleep_ms(120000)
    assert f.clearable() == ()            # the condition still holds
    f.gone("overvoltage")
    assert f.clearable() == (first,)
    f.clear("overvoltage")
    assert f.blocking() is None


def test_backoff_doubles_with_each_trip():
    clock = VirtualClock()
    f = Faults(clock)
    waits = []
    for _ in range(3):
        f.trip("overcurrent", "x")
        f.gone("overcurrent")
        t0 = clock.ms
        while not f.clearable():
            clock.sleep_ms(1000)
        waits.append((clock.ms - t0) // 1000)
        f.clear("overcurrent")
    assert waits == [60, 120, 240]


def test_too_many_trips_latch_until_a_technician_clears():
    clock = VirtualClock()
    f = Faults(clock)
    for _ in range(4):                    # overcurrent: 3 retries, the 4th trip latches
        fault = f.trip("overcurrent", "x")
        f.gone("overcurrent")
        clock.sleep_ms(10 ** 7)
        for c in f.clearable():
            f.clear(c.kind)
    assert fault.latched and f.latched == ["overcurrent"]
    assert f.clearable() == () and f.blocking() is fault
    assert f.clear_latched() == ["overcurrent"]
    assert f.blocking() is None and f.trips["overcurrent"] == 0


def test_welded_contactor_latches_at_once_and_latches_survive_a_reboot():
    clock = VirtualClock()
    f = Faults(clock)
    w = f.trip("welded", "12 A with the contactor open")
    assert w.latched and w.emergency and w.code == "PowerSwitchFailure"
    saved = f.persist()
    f2 = Faults(clock, saved)
    again = f2.trip("welded", "still")
    assert again.latched and f2.trips["welded"] == 2


def test_reader_failure_does_not_block_charging():
    f = Faults(VirtualClock())
    r = f.trip("reader", "VersionReg 0x00")
    assert r.code == "ReaderFailure" and f.blocking() is None


def test_memory_suspends_charging_without_a_stop_reason_and_never_latches():
    clock = VirtualClock()
    f = Faults(clock)
    assert f.trip("reader", "no answer") is not None and f.blocking() is None   # no emergency: charging goes on
    for _ in range(8):
        m = f.trip("memory", "out of heap in the safety path")
        assert m.stop_reason is None and m.emergency and not m.latched
        assert f.blocking() is m   # no offer, no new session while it lasts
        f.gone("memory")
        while not f.clearable():
            clock.sleep_ms(1000)
        f.clear("memory")
    assert f.blocking() is None and f.latched == []
