"""Small building blocks of the loop: outbox bounds, periodic schedule, sample ring."""
from check import raises
from firmware.storage.outbox import Outbox
from firmware.metering.ring import SampleRing
from firmware.core.schedule import Every
from hal.sim.clock import VirtualClock


def test_outbox_drops_oldest_when_full_and_counts_it():
    ob = Outbox(3)
    for n in range(5):
        ob.put("t", str(n))  # kind "event": droppable, oldest first (test_outbox.py has the tiers)
    assert len(ob) == 3 and ob.dropped == 2 and ob.peek() == ("t", b"2")


def test_every_keeps_cadence_and_restarts_after_a_stall():
    clock = VirtualClock(ticks0=0x3FFFFF00)   # just before the ticks wrap
    e = Every(clock, 100)
    hits = 0
    for _ in range(1000):
        if e.due(clock.ticks_ms()):
            hits += 1
        clock.sleep_ms(10)
    assert hits == 100
    clock.sleep_ms(5000)
    assert e.due(clock.ticks_ms())
    assert not e.due(clock.ticks_ms())
    assert e.wait_ms(clock.ticks_ms()) == 100


def test_ring_overwrites_oldest_and_indexes_by_age():
    r = SampleRing(16)
    for n in range(20):
        i = r.advance()
        r.t[i] = n
    assert r.count == 16 and r.total == 20
    assert r.t[r.index(0)] == 19 and r.t[r.index(15)] == 4
    assert "ring_samples" in str(raises(ValueError, SampleRing, 8))
