"""The MQTT link is a state machine the loop ticks: it never waits on its socket, never calls the
application back, keeps every read and write within a budget, and ends what the broker leaves
unanswered at a deadline (fake network: tests/unit/fakenet.py, virtual time: hal/sim/clock.py)."""
import errno
import json

from fakenet import FakeBroker, FakeNet
from fakes import ListLog
from firmware.link.mqtt import DOWN, UP, Link
from firmware.link.sync import Sync
from firmware.storage.outbox import Outbox
from hal.sim.clock import VirtualClock
from simharness import Harness

from check import raises

PREFIX = "cp/v1/cp-1/"
TOPICS = [PREFIX + "cmd/+", PREFIX + "auth/resp", PREFIX + "ack"]


def _link(timeout_ms=2000, keepalive_s=60):
    clock = VirtualClock(start_utc=1772438100)
    broker = FakeBroker(clock)
    link = Link("cp-1", "broker.test", 1883, clock, keepalive_s, timeout_ms, net=FakeNet(broker))
    got = []
    link.start(PREFIX + "status", '{"state": "offline"}', TOPICS, lambda t, m: got.append((t, m)), 8192)
    return link, broker, clock, got


def _ready(link, clock, ticks=200, step_ms=10):
    news = []
    for _ in range(ticks):
        n = link.tick()
        if n:
            news.append(n)
        if link.ready:
            return news
        clock.sleep_ms(step_ms)
    raise AssertionError("not ready after %d ticks: %s" % (ticks, news))


def _ticks(link, clock, n, step_ms=10):
    news = []
    for _ in range(n):
        r = link.tick()
        if r:
            news.append(r)
        clock.sleep_ms(step_ms)
    return news


def test_connect_sequence_survives_partial_reads_and_writes():
    link, broker, clock, _ = _link()
    broker.connect_polls = 3      # the TCP connect takes a few ticks
    broker.max_write = 3          # the socket takes 3 bytes per write
    broker.max_read = 1           # and gives one byte per read
    news = _ready(link, clock)
    assert news == [UP] and broker.resolved == 1 and broker.conns == 1
    assert broker.kinds() == [0x10, 0x80, 0x80, 0x80]   # CONNECT, then one SUBSCRIBE per topic
    body = broker.packets[0][1]
    assert body[:7] == b"\x00\x04MQTT\x04" and body[7] & 0x2E == 0x2E   # clean session, Will: QoS 1, retained
    assert body[8:10] == b"\x00\x3c"                                    # keepalive 60 s
    assert (PREFIX + "status").encode() in body and b'{"state": "offline"}' in body
    subs = [b[4:-1].decode() for k, b in broker.packets if k == 0x80]
    assert subs == TOPICS and all(b[-1] == 1 for k, b in broker.packets if k == 0x80)


def test_every_tick_returns_at_once_however_slow_the_broker():
    link, broker, clock, _ = _link()
    broker.mode = "silent"
    t0 = clock.ms
    for _ in range(150):
        link.tick()        # a waiting link would have to move the (virtual) clock: it never does
    assert clock.ms == t0 and not link.ready


def test_a_broker_that_accepts_tcp_and_never_answers_ends_the_attempt_at_the_deadline():
    link, broker, clock, _ = _link(timeout_ms=2000)
    broker.mode = "silent"
    assert link.tick() is None               # TCP connect started
    assert _ticks(link, clock, 199) == []    # CONNECT sent, 1990 ms without a CONNACK
    assert broker.kinds() == [0x10]
    assert _ticks(link, clock, 2) == [DOWN]
    assert str(errno.ETIMEDOUT) in link.error and 1000 <= link.retry_ms <= 1250
    before = broker.conns
    _ticks(link, clock, link.retry_ms // 10 - 2)
    assert broker.conns == before            # nothing until the backoff is over
    _ticks(link, clock, 5)
    assert broker.conns == before + 1 and broker.resolved == 1   # DNS once


def test_a_connect_refused_by_the_broker_is_a_failed_attempt():
    link, broker, clock, _ = _link()
    broker.connack_rc = 5   # not authorized
    news = _ticks(link, clock, 5)
    assert news == [DOWN] and "code 5" in link.error and not link.ready


def test_offline_broker_backs_off_exponentially_with_jitter():
    clock = VirtualClock(start_utc=1772438100)
    broker = FakeBroker(clock)
    broker.mode = "down"
    link = Link("cp-1", "broker.test", 1883, clock, 60, 2000, net=FakeNet(broker))
    ob = Outbox(8, clock=clock)
    s = Sync(link, clock, ListLog(), ob, PREFIX)
    ob.put("session", '{"n": 0}', "3-0", "started")
    attempts = []
    for _ in range(200):
        before = len([e for e in s.log.events if e.get("state") == "unreachable"])
        s.tick()
        if len([e for e in s.log.events if e.get("state") == "unreachable"]) > before:
            attempts.append(clock.ms)
        clock.sleep_ms(500)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(gaps) >= 5, gaps
    for gap, base in zip(gaps, (1000, 2000, 4000, 8000, 16000)):
        assert base <= gap <= base * 5 // 4 + 500, gaps    # backoff plus up to a quarter of jitter
    assert len(ob) == 1
    broker.mode = "up"
    for _ in range(130):
        s.tick()
        clock.sleep_ms(500)
    sent = [json.loads(bytes(p))["n"] for t, p, _, _ in broker.published if t.endswith("/session")]
    assert sent[:1] == [0] and set(sent) == {0}   # re-sent until acknowledged


def test_publish_never_waits_for_a_puback_and_pubacks_are_read_when_they_come():
    link, broker, clock, _ = _link(timeout_ms=2000)
    _ready(link, clock)
    broker.puback = False
    t0 = clock.ms
    assert link.publish(PREFIX + "session", b'{"n": 1}', False, 1) is True
    assert link.publish(PREFIX + "session", b'{"n": 2}', False, 1) is True
    assert clock.ms == t0                             # handed over, nothing waited
    assert link.tick() is None and [p[1] for p in broker.published] == [b'{"n": 1}', b'{"n": 2}']
    assert all(p[2] == 1 and p[3] is False for p in broker.published)
    # the PUBACKs come late, one tick after another: the link goes on meanwhile
    pids = [b[2 + len(PREFIX + "session"):4 + len(PREFIX + "session")] for k, b in broker.packets if k == 0x30]
    assert pids[0] != pids[1]
    _ticks(link, clock, 100)
    for pid in pids:
        broker.raw(b"\x40\x02" + pid)
    _ticks(link, clock, 150)
    assert link.ready                                  # answered within the deadline: still up


def test_a_broker_gone_mute_under_an_open_connection_is_seen_at_the_deadline():
    link, broker, clock, _ = _link(timeout_ms=2000)
    _ready(link, clock)
    broker.mode = "silent"
    assert link.publish(PREFIX + "status", b'{"state": "online"}', True, 1)
    news = _ticks(link, clock, 190)
    assert news == [] and link.ready
    news = _ticks(link, clock, 20)
    assert news == [DOWN] and str(errno.ETIMEDOUT) in link.error


def test_keepalive_pings_and_reads_the_answer():
    link, broker, clock, _ = _link(keepalive_s=20)
    _ready(link, clock)
    _ticks(link, clock, 12, step_ms=1000)   # past half the keepalive
    assert broker.kinds().count(0xC0) == 1 and link.ready
    _ticks(link, clock, 30, step_ms=1000)
    assert broker.kinds().count(0xC0) >= 3 and link.ready
    broker.mode = "silent"
    news = _ticks(link, clock, 13, step_ms=1000)
    assert news[:1] == [DOWN] and str(errno.ETIMEDOUT) in link.error


def test_an_oversized_message_is_drained_in_small_reads_and_refused():
    link, broker, clock, got = _link()
    _ready(link, clock)
    broker.send(PREFIX + "cmd/list_update", b"x" * 20000, qos=1, pid=7)
    broker.send(PREFIX + "cmd/purge", b'{"id": "p-1"}', qos=1, pid=8)
    reads = []
    for _ in range(40):
        before = broker.pending()
        link.tick()
        reads.append(before - broker.pending())
        clock.sleep_ms(10)
    assert got == [((PREFIX + "cmd/list_update").encode(), None),
                   ((PREFIX + "cmd/purge").encode(), bytearray(b'{"id": "p-1"}'))]
    assert max(reads) <= 2048 and sum(reads) > 20000   # never more than the per-tick budget at once
    assert max(broker.asked) <= 2048 and len([n for n in broker.asked if n <= 256]) >= 20000 // 256
    acks = [b for k, b in broker.packets if k == 0x40]
    assert acks == [b"\x00\x07", b"\x00\x08"]        # both acknowledged: the refused one is not redelivered
    assert link.ready


def test_inbound_is_bounded_per_tick_in_messages_and_bytes():
    link, broker, clock, got = _link()
    _ready(link, clock)
    for i in range(20):
        broker.send(PREFIX + "cmd/remote_stop", ('{"id": "s-%d"}' % i).encode())
    link.tick()
    assert len(got) == 4
    link.tick()
    assert len(got) == 8
    del got[:]
    for i in range(3):
        broker.send(PREFIX + "cmd/tariff", b"t" * 1500)
    _ticks(link, clock, 20)   # the 12 small ones left, then the large ones
    left = broker.pending()
    assert left == 0 and len(got) == 15
    for _ in range(3):
        broker.send(PREFIX + "cmd/tariff", b"t" * 1500)
    before = broker.pending()
    link.tick()
    assert before - broker.pending() == 2048   # the byte budget of one tick


def test_a_full_out_buffer_refuses_publishes_until_it_drains():
    link, broker, clock, _ = _link()
    _ready(link, clock)
    broker.window = 0          # the network takes nothing more
    n = 0
    while link.publish(PREFIX + "meter", b"m" * 200, False, 0):
        n += 1
        if n > 50:
            break
    assert 3 <= n <= 5, n      # bounded: a 1 KB ring
    assert link.publish(PREFIX + "session", b"s" * 3000, False, 0)       # one record is held, not copied
    assert not link.publish(PREFIX + "session", b"t" * 3000, False, 0)   # ... one at a time
    assert not link.drained()
    broker.window = None
    link.tick()
    link.tick()
    assert link.drained() and link.publish(PREFIX + "meter", b"m" * 200, False, 0)
    assert len([p for p in broker.published if p[0].endswith("meter")]) == n
    assert [bytes(p[1]) for p in broker.published if p[0].endswith("session")] == [b"s" * 3000]


def test_a_held_record_goes_out_whole_in_its_place_between_small_packets():
    """A record is sent from its own bytes after what was queued before it and before what came
    after, over a socket that takes a few bytes at a time; the ring is never the record's size."""
    link, broker, clock, _ = _link(timeout_ms=60000)
    _ready(link, clock)
    broker.max_write = 97
    big = "".join("%04d," % i for i in range(800)).encode()   # 4000 bytes: four times the ring
    assert link.publish(PREFIX + "status", b'{"a": 1}', True, 1)
    assert link.publish(PREFIX + "session", big, False, 1)
    assert link.publish(PREFIX + "meter", b'{"b": 2}', False, 1)
    _ticks(link, clock, 40)
    assert link.drained() and link.ready
    assert [(p[0][len(PREFIX):], bytes(p[1])) for p in broker.published] == [
        ("status", b'{"a": 1}'), ("session", big), ("meter", b'{"b": 2}')]


def test_a_record_in_a_reused_buffer_goes_out_as_it_was_when_handed_over():
    """An unsealed payload may be a view of the outbox's read buffer, reused by the next read."""
    link, broker, clock, _ = _link()
    _ready(link, clock)
    buf = bytearray(b"r" * 3000)
    assert link.publish(PREFIX + "session", memoryview(buf), False, 1)
    buf[:] = b"x" * 3000   # the next read
    _ticks(link, clock, 5)
    assert [bytes(p[1]) for p in broker.published] == [b"r" * 3000]


def test_the_outbox_waits_at_a_full_out_buffer_and_publish_now_says_so():
    clock = VirtualClock(start_utc=1772438100)
    broker = FakeBroker(clock)
    link = Link("cp-1", "broker.test", 1883, clock, 60, 2000, net=FakeNet(broker))
    ob = Outbox(16, clock=clock)
    s = Sync(link, clock, ListLog(), ob, PREFIX)
    for _ in range(20):
        s.tick()
        clock.sleep_ms(10)
    assert s.connected
    broker.window = 0
    for i in range(8):
        ob.put("session", json.dumps({"n": i, "pad": "p" * 1500}), "9-%d" % i, "started")
    s.tick()
    while s.publish_now("cmd_ack", '{"id": "c-0"}', 1):
        pass
    t0 = clock.ms
    assert s.publish_now("cmd_ack", '{"id": "c-1"}', 1) is False   # not handed over, and did not wait
    assert clock.ms == t0
    assert s.connected
    handed = s.published
    assert handed < 8
    broker.window = None
    for _ in range(20):
        s.tick()
        clock.sleep_ms(10)
    sent = [json.loads(bytes(p))["n"] for t, p, _, _ in broker.published if t.endswith("/session")]
    assert sent == list(range(8)) and s.published == 8   # the rest followed, in order


def test_messages_are_only_queued_for_the_controller():
    link, broker, clock, _ = _link()
    ob = Outbox(8, clock=clock)
    s = Sync(link, clock, ListLog(), ob, PREFIX)
    for _ in range(20):
        s.tick()
        clock.sleep_ms(10)
    for i in range(12):
        broker.send(PREFIX + "cmd/remote_stop", ('{"id": "s-%d"}' % i).encode(), qos=1, pid=i + 1)
    for _ in range(5):
        s.tick()
    assert [m for _, m in s.inbox] == [('{"id": "s-%d"}' % i).encode() for i in range(8)]
    refused = [e for e in s.log.events if e.get("result") == "refused"]
    assert len(refused) == 4 and all(e["reason"] == "inbox full" for e in refused)


class _Spy:
    """Wraps the link: records whether a link call is running."""

    def __init__(self, link):
        self.link = link
        self.inside = 0

    def wrap(self, name):
        fn = getattr(self.link, name)

        def call(*args):
            self.inside += 1
            try:
                return fn(*args)
            finally:
                self.inside -= 1
        setattr(self.link, name, call)


def _harness_with_link(broker, events, end_ms, timeout_ms=500):
    def make(clock):
        broker.clock = clock
        return Link("cp-test", "broker.test", 1883, clock, 60, timeout_ms, net=FakeNet(broker))
    return Harness({"alice": "04A1B2C3"}, ["alice"], events, end_ms, make_link=make)


def test_nothing_reenters_the_controller_from_the_link():
    broker = FakeBroker()
    broker.connect_polls = 5
    broker.max_read = 1
    broker.max_write = 7
    h = _harness_with_link(broker, [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                    {"t": 3000, "ev_current_a": 16}, {"t": 30000, "tap": "alice"}], 40000)
    spy = _Spy(h.link)
    for name in ("tick", "publish"):
        spy.wrap(name)
    calls = []
    ctl = h.ctl
    for owner, name in ((ctl, "idle"), (ctl, "step"), (ctl, "auth_answer"), (ctl, "remote_stop"),
                        (ctl, "shutdown"), (ctl.outbox, "ack")):   # what the loop, commands and acks reach
        fn = getattr(owner, name)

        def rec(*args, _fn=fn, _name=name):
            calls.append((_name, spy.inside))
            return _fn(*args)
        setattr(owner, name, rec)
    h.run(until_ms=5000)   # connected by now (through the slow start above)
    for i in range(6):
        broker.send("cp/v1/cp-test/cmd/remote_stop", h.sealed("cmd/remote_stop", {"id": "r-%d" % i}), qos=1,
                    pid=i + 1)
    h.run()
    assert [n for n, _ in calls].count("idle") > 100
    assert [c for c in calls if c[1]] == []                      # none while the link was working
    # and there is no hook to hand the link a controller's method any more
    raises(TypeError, Link, "cp-test", "broker.test", 1883, h.clock, idle=ctl.idle)
    assert [n for n, _ in calls].count("remote_stop") == 6   # the commands were handled, by the loop
    assert any(t.endswith("/session") for t, _, _, _ in broker.published)


def _on_time(h):
    return h.ctl.metering.max_gap_ms <= h.settings.sample_ms + h.settings.pilot_poll_ms


def test_the_loop_keeps_its_sample_period_while_the_broker_trickles():
    broker = FakeBroker()
    broker.max_read = 1
    broker.max_write = 2
    broker.trickle_ms = 30     # one byte every 30 ms: a CONNACK takes 120 ms, a command seconds
    broker.us_per_byte = 20    # and each byte costs the device CPU time (a tick's 2 KB: 41 ms)
    h = _harness_with_link(broker, [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                    {"t": 3000, "ev_current_a": 16}, {"t": 50000, "tap": "alice"}], 60000,
                           timeout_ms=5000)
    h.run(until_ms=5000)
    for i in range(4):
        broker.send("cp/v1/cp-test/cmd/report_problem", json.dumps({"id": "t-%d" % i, "text": "x" * 50}).encode())
    h.run()
    assert [e["state"] for e in h.events("mqtt")][:1] == ["connected"]
    assert h.ctl.metering.ring.total >= 590              # 60 s at 10 Hz: every sample taken
    assert _on_time(h), h.ctl.metering.max_gap_ms


def test_the_loop_keeps_its_sample_period_while_commands_flood_in():
    broker = FakeBroker()
    broker.us_per_byte = 20    # 2 KB (a tick's budget) costs 41 ms; the whole flood would cost 1.5 s
    h = _harness_with_link(broker, [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                    {"t": 3000, "ev_current_a": 16}], 30000)
    h.run(until_ms=5000)
    for i in range(400):
        broker.send("cp/v1/cp-test/cmd/clear_fault", json.dumps({"id": "f-%d" % i, "pad": "p" * 100}).encode(),
                    qos=1, pid=i + 1)
    h.run()
    assert len(h.events("command")) >= 100              # they were taken, a budget per pass
    assert len(h.sync.inbox) <= 8
    assert h.ctl.metering.ring.total >= 290
    assert _on_time(h), h.ctl.metering.max_gap_ms


def test_packet_ids_wrap_after_65535_and_never_use_0():
    link, broker, clock, _ = _link()
    _ready(link, clock)       # the 3 SUBSCRIBEs took ids 1..3
    broker.puback = False     # the fake broker need not answer 65 000 publishes
    topic = PREFIX + "m"
    at = 2 + len(topic)
    pids = []

    def sent():
        link.tick()
        pids.extend(b[at] << 8 | b[at + 1] for k, b in broker.packets if k == 0x30)
        del broker.packets[:]
        del broker.published[:]
    for i in range(65540):
        if not link.publish(topic, b"", False, 1):
            sent()
            assert link.publish(topic, b"", False, 1), i
    while not link.drained():
        sent()
    sent()
    assert len(pids) == 65540 and 0 not in pids
    assert pids[65529:65535] == [65533, 65534, 65535, 1, 2, 3]   # umqtt.simple alone would send 65536
    assert link.ready


def test_a_qos1_command_after_a_quiet_spell_is_acknowledged_and_the_link_stays_up():
    link, broker, clock, got = _link(timeout_ms=2000)
    _ready(link, clock)
    _ticks(link, clock, 30, step_ms=100)    # 3 s with nothing to send or read (keepalive 60 s)
    broker.send(PREFIX + "cmd/clear_fault", b'{"id": "tech-1"}', qos=1, pid=9)
    assert _ticks(link, clock, 3) == [] and link.ready
    assert got == [((PREFIX + "cmd/clear_fault").encode(), bytearray(b'{"id": "tech-1"}'))]
    assert [b for k, b in broker.packets if k == 0x40] == [b"\x00\x09"]
