"""The outbox keeps messages in order until the backend acknowledges them, retries with backoff,
survives reboots, and under pressure drops intermediate values, never `started` or `ended`."""
import json
import os

from check import raises
from firmware.storage.outbox import Outbox
from hal.sim.clock import VirtualClock
from test_journal import FullFlash, each_fs, files, plain_dir, restore, rmtree, wire


def _ram(n=8, **kw):
    clock = VirtualClock(ticks0=0x3FFFF000)  # the ticks wrap during the tests
    return Outbox(n, None, clock, **kw), clock


def _on(path, clock, n=32, **kw):
    j, ob = wire(path, clock, n, **kw)
    j.recover()
    return j, ob


def test_messages_go_out_in_order_and_leave_only_when_acknowledged():
    ob, clock = _ram()
    for n in range(3):
        ob.put("session", json.dumps({"n": n, "offline": True}), "1-%d" % n, "updated")
    now = clock.ticks_ms()
    got = []
    while True:
        m = ob.next_due(now)
        if m is None:
            break
        got.append(m[2])
        ob.sent(m[2], now)  # a broker PUBACK does not remove it
    assert got == ["1-0", "1-1", "1-2"] and len(ob) == 3
    assert json.loads(ob.next_due(now + 10 ** 6)[1]) == {"n": 0, "offline": True}
    assert ob.ack(["1-1"]) == 1 and ob.pending() == ["1-0", "1-2"]
    assert ob.ack(["nope", "1-1"]) == 0 and ob.pending() == ["1-0", "1-2"]  # unknown ids: no-op
    assert ob.ack(("1-0", "1-2")) == 2 and len(ob) == 0 and ob.next_due(now) is None


def test_retries_back_off_from_5_s_doubling_to_5_min_with_jitter():
    ob, clock = _ram(rand=lambda n: 0)
    ob.put("session", "{}", "a", "ended")
    gaps = []
    last = clock.ticks_ms()
    for _ in range(9):
        m = None
        while m is None:
            clock.sleep_ms(100)
            m = ob.next_due(clock.ticks_ms())
        now = clock.ticks_ms()
        gaps.append(clock.ticks_diff(now, last) // 1000)
        last = now
        ob.sent("a", now)
    assert gaps == [0, 5, 10, 20, 40, 80, 160, 300, 300]
    spread = []
    for top in (0, 1 << 30):
        ob2, clock2 = _ram(rand=lambda n: min(top, n - 1))
        ob2.put("t", "{}", "b")
        now = clock2.ticks_ms()
        ob2.sent("b", now)
        ob2.sent("b", now)  # second try: 10 s plus up to a quarter of it
        t = 0
        while ob2.next_due(clock2.ticks_add(now, t)) is None:
            t += 50
        spread.append(t)
    assert spread == [10000, 12500]


def test_the_queue_survives_a_reboot_in_order_without_acknowledged_messages():
    def run(path):
        clock = VirtualClock()
        j, ob = _on(path, clock)
        for n in range(6):
            ob.put("session", '{"n": %d}' % n, "m-%d" % n, "meter" if n % 2 else "fault")
        ob.ack(["m-1", "m-4"])
        j2, ob2 = _on(path, clock)
        assert ob2.pending() == ["m-0", "m-2", "m-3", "m-5"] and ob2.bytes == 4 * 8
        got = []
        now = clock.ticks_ms()
        while True:
            m = ob2.next_due(now)
            if m is None:
                break
            got.append((m[0], bytes(m[1]), m[2]))   # the payload is a view, valid until the next call
            ob2.sent(m[2], now)
        assert got == [("session", b'{"n": %d}' % n, "m-%d" % n) for n in (0, 2, 3, 5)]
    each_fs(run)


def test_caps_drop_updates_first_then_other_kinds_never_started_or_ended():
    ob, clock = _ram(4)
    ob.put("session", "s", "1-0", "started")
    ob.put("session", "u1", "1-1", "updated")
    ob.put("fault", "f", "f-1", "fault")
    ob.put("session", "u2", "1-2", "updated")
    assert ob.put("session", "e", "1-3", "ended") is False  # RAM-only outbox: not on flash
    assert ob.pending() == ["1-0", "f-1", "1-2", "1-3"] and ob.dropped == 1   # oldest update went
    ob.put("session", "u3", "1-4", "updated")
    assert ob.pending() == ["1-0", "f-1", "1-3", "1-4"]
    ob.put("meter", "m", "m-1", "meter")                     # only updates/meter are dropped for it
    assert ob.pending() == ["1-0", "f-1", "1-3", "m-1"]
    ob.put("fault", "f2", "f-2", "fault")                    # a fault may push out cheaper kinds
    ob.put("fault", "f3", "f-3", "fault")                    # ... then the oldest fault
    assert ob.pending() == ["1-0", "1-3", "f-2", "f-3"] and ob.dropped == 5
    for n in range(4):                                       # started/ended go in over the caps
        ob.put("session", "s", "%d-0" % (n + 2), "started")
    assert ob.pending() == ["1-0", "1-3", "2-0", "3-0", "4-0", "5-0"] and ob.full
    assert ob.put("session", "u", "5-1", "updated") is False and "5-1" not in ob.pending()
    ob2, _ = _ram(8, max_bytes=10)
    ob2.put("meter", "123456", "a", "meter")
    ob2.put("meter", "123456", "b", "meter")                 # the byte cap counts too
    assert ob2.pending() == ["b"] and ob2.bytes == 6


def test_journal_pressure_sheds_updates_and_keeps_what_cannot_be_stored_in_ram():
    d = plain_dir()
    try:
        flash = FullFlash(10 ** 6)
        clock = VirtualClock()
        j, ob = wire(d + "/j", clock, 64, opener=flash)
        j.recover()
        for n in range(5):
            assert ob.put("session", "u" * 50, "u-%d" % n, "updated")
        flash.room = 0
        assert ob.put("session", "s" * 50, "2-0", "started") is False
        assert ob.pending() == ["2-0"] and ob.dropped == 5 and ob.ram_only == 1 and j.full
        assert ob.put("meter", "m", "m-1", "meter") is False and ob.ram_only == 2  # bounded by the caps
        flash.room = 10 ** 6
        assert ob.ack(["unknown"]) == 0 and ob.ram_only == 0  # any ack retries the flash
        j2, ob2 = wire(d + "/j", clock, 64)
        j2.recover()
        assert ob2.pending() == ["2-0", "m-1"] and ob2.next_due(0)[1] == b"s" * 50
    finally:
        rmtree(d)


def test_acknowledged_messages_stay_gone_after_a_reboot_and_compaction_keeps_the_order():
    def run(path):
        clock = VirtualClock()
        j, ob = _on(path, clock, 64, seg_bytes=512, segments=3, max_bytes=512)
        for n in range(60):
            ob.put("fault", '{"n": %d}' % n, "f-%d" % n, "fault")
            if n % 3 != 2:
                ob.ack(["f-%d" % n])  # every third message stays pending through many compactions
        assert j.log.written > 6 * 512
        j2, ob2 = _on(path, clock, 64, seg_bytes=512, segments=3, max_bytes=512)
        assert ob2.pending() == ["f-%d" % n for n in range(2, 60, 3)]
        assert ob2.next_due(0)[1] == b'{"n": 2}'
    each_fs(run)


def test_a_message_whose_record_went_bad_is_skipped_and_counted():
    def run(path):
        clock = VirtualClock()
        j, ob = _on(path, clock)
        ob.put("fault", '{"a": 1}', "a", "fault")
        ob.put("fault", '{"b": 2}', "b", "fault")
        name = [n for n in os.listdir(path) if n.endswith(".log")][0]
        saved = files(path)
        data = bytearray(saved[name])
        data[data.find(b'{"a": 1}') + 2] ^= 0x20  # flip a bit inside payload a on flash
        saved[name] = bytes(data)
        restore(path, saved)
        assert ob.next_due(0)[2] == "b" and ob.corrupt == 1 and ob.pending() == ["b"]
    each_fs(run)


def test_bad_input_is_refused_with_the_field_named():
    ob, clock = _ram()
    assert "msg_ids" in str(raises(ValueError, ob.ack, "1-0"))
    assert "msg_ids" in str(raises(ValueError, ob.ack, [1]))
    assert "payload" in str(raises(ValueError, ob.put, "t", 5))
    assert "msg_id" in str(raises(ValueError, ob.put, "t", "x", 7))
    no_clock = Outbox(4)
    no_clock.put("t", "x")
    assert "clock" in str(raises(ValueError, no_clock.next_due, 0))
    d = plain_dir()
    try:
        j, ob = _on(d + "/j", clock)
        assert "max_record" in str(raises(ValueError, ob.put, "t", "x" * 5000, "big"))
        assert "msg_id" in str(raises(ValueError, ob.put, "t", "x", "a\nb"))
        assert "max_bytes" in str(raises(ValueError, Outbox, 8, j.log, clock, 10 ** 6))
        assert len(ob) == 0
    finally:
        rmtree(d)


def test_peek_and_pop_serve_a_sync_without_backend_acks():
    d = plain_dir()
    try:
        j, ob = _on(d + "/j", VirtualClock())
        ob.put("session", "one")
        ob.put("session", "two")
        assert ob.peek() == ("session", b"one")
        ob.pop()
        assert ob.peek() == ("session", b"two") and len(ob) == 1
        j2, ob2 = _on(d + "/j", VirtualClock())
        assert ob2.peek() == ("session", b"two")
    finally:
        rmtree(d)


def test_problem_reports_have_their_own_quota_and_never_evict_a_fault_or_a_session():
    ob, clock = _ram(64)
    ob.put("fault", '{"code": "GroundFailure"}', "f-1", "fault")
    ob.put("session", '{"event": "ended"}', "1-e", "ended")
    for n in range(20):
        ob.put("meter", '{"n": %d}' % n, "m-%d" % n, "meter")
    for n in range(100):                       # the backend is away; the app asks again and again
        ob.put("feedback", '{"text": "broken %d"}' % n, "fb-%d" % n, "feedback")
    ids = ob.pending()
    assert "f-1" in ids and "1-e" in ids       # evicted f-1 on main
    assert ["m-%d" % n for n in range(20)] == [i for i in ids if i.startswith("m-")]   # meter values stay too
    fb = [i for i in ids if i.startswith("fb-")]
    assert ob.low_max == 8 and fb == ["fb-%d" % n for n in range(92, 100)]   # the newest reports, within quota
    for n in range(62):                        # under pressure reports go with the meter values, first
        ob.put("fault", '{"n": %d}' % n, "f-x%d" % n, "fault")
    ids = ob.pending()
    assert "f-1" in ids and "1-e" in ids and not [i for i in ids if i.startswith("fb-")]
