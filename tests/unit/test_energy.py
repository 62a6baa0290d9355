"""EnergyCounter keeps every count; max_read_interval_ms keeps the chip's registers from wrapping."""
import sys

from check import raises
from firmware.metering.energy import EnergyCounter, max_read_interval_ms


def test_counts_become_whole_wh_and_an_exact_remainder():
    c = EnergyCounter()
    c.add(319)
    assert (c.wh, c.rem) == (0, 319)
    c.add(1)
    assert (c.wh, c.rem) == (1, 0)
    c.add(65535)
    assert (c.wh, c.rem) == (205, 255)
    assert c.total_counts() == 320 + 65535
    c.add(0)
    assert c.total_counts() == 320 + 65535


def test_count_by_count_equals_one_sum():
    a, b = EnergyCounter(), EnergyCounter()
    n = 0
    for k in range(1, 400):
        a.add(k)
        n += k
    b.add(n)
    assert (a.wh, a.rem) == (b.wh, b.rem) == (n // 320, n % 320)


def test_a_lifetime_stays_a_small_int():
    c = EnergyCounter()
    c.restore(10 ** 9, 319)  # a billion Wh
    c.add(1)
    assert c.wh == 10 ** 9 + 1 and c.rem == 0
    assert c.wh < (1 << 30) and c.rem < 320  # below the ESP32's small-int limit
    assert c.total_counts() == (10 ** 9 + 1) * 320


def test_negative_counts_and_bad_state_are_refused():
    c = EnergyCounter()
    raises(ValueError, c.add, -1)
    raises(ValueError, c.restore, 5, 320)
    raises(ValueError, c.restore, -1, 0)
    raises(ValueError, EnergyCounter, 0)
    assert (c.wh, c.rem) == (0, 0)


def test_wh_since_a_snapshot_is_exact():
    c = EnergyCounter()
    c.add(300)              # 0 Wh + 300 counts
    snap = c.snapshot()
    c.add(330)              # 630 counts: 1 Wh + 310
    assert c.wh - snap[0] == 1 and c.wh_since(snap) == 1  # 330 counts = 1.03 Wh
    c.add(309)              # 639 counts since: 1.997 Wh
    assert c.wh_since(snap) == 1
    c.add(1)
    assert c.wh_since(snap) == 2


def test_other_meter_constants():
    c = EnergyCounter(counts_per_wh=100)
    c.add(250)
    assert (c.wh, c.rem) == (2, 50)


def test_read_interval_keeps_the_registers_from_wrapping():
    assert max_read_interval_ms(22000) == 8378          # 204.8 Wh / 22 kW / 4
    assert max_read_interval_ms(22000, safety=1) == 33512  # the wrap itself: ~33 s
    assert max_read_interval_ms(7360) == 25042
    for p in (1, 230, 3680, 7360, 11040, 22080, 44000, 100000):
        ms = max_read_interval_ms(p)
        counts = p * ms * 320 // 3600000    # what one register gathers in that time
        assert counts <= 65535 // 4 + 1, (p, ms, counts)
        assert ms < (1 << 30)
    raises(ValueError, max_read_interval_ms, 0)
    raises(ValueError, max_read_interval_ms, 22000.0)


def test_add_allocates_nothing():
    c = EnergyCounter()
    c.restore(123456, 10)
    if sys.implementation.name != "micropython":
        c.add(70000)
        assert (c.wh, c.rem) == (123456 + 218, 250)
        return
    import gc
    import micropython
    gc.collect()
    micropython.heap_lock()
    try:
        c.add(70000)
        c.add(3)
    finally:
        micropython.heap_unlock()
    assert (c.wh, c.rem) == (123456 + 218, 253)
