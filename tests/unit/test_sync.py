"""The sync delivers the outbox in order, keeps it while offline and backs off between retries."""
import json

from fakes import FakeLink, ListLog
from firmware.outbox import Outbox
from firmware.sync import Sync
from hal.sim.clock import VirtualClock

PREFIX = "cp/v1/cp-1/"


def _sync(link):
    clock = VirtualClock(start_utc=1772438100)
    ob = Outbox(8)
    return Sync(link, clock, ListLog(), ob, PREFIX), clock, ob


def test_connects_with_retained_offline_will_then_announces_online():
    link = FakeLink()
    s, clock, ob = _sync(link)
    s.set_connector("Available")
    s.tick()
    assert link.will[0] == PREFIX + "status" and json.loads(link.will[1]) == {"state": "offline"}
    topic, payload, retain, qos = link.published[0]
    assert topic == PREFIX + "status" and retain is True
    assert json.loads(payload)["state"] == "online" and json.loads(payload)["connector"] == "Available"


def test_outbox_is_delivered_in_order_and_only_removed_after_publish():
    link = FakeLink()
    s, clock, ob = _sync(link)
    for n in range(6):
        ob.put("session", '{"n": %d}' % n)
    link.fail_publish_after = 3   # status + 2 records, then the connection drops
    s.tick()
    assert [p[1] for p in link.published[1:]] == ['{"n": 0}', '{"n": 1}']
    assert len(ob) == 4 and not link.connected
    link.fail_publish_after = None
    clock.sleep_ms(1000)
    s.tick()
    s.tick()
    sessions = [json.loads(p[1])["n"] for p in link.published if p[0] == PREFIX + "session"]
    assert sessions == [0, 1, 2, 3, 4, 5] and len(ob) == 0
    assert all(p[2] is False and p[3] == 1 for p in link.published if p[0].endswith("session"))


def test_offline_broker_keeps_records_and_backs_off_exponentially():
    link = FakeLink()
    link.up = False
    s, clock, ob = _sync(link)
    ob.put("session", "{}")
    attempts = []
    for _ in range(70):                      # 70 virtual seconds
        before = len([e for e in s.log.events if e.get("state") == "unreachable"])
        s.tick()
        if len([e for e in s.log.events if e.get("state") == "unreachable"]) > before:
            attempts.append(clock.ms // 1000)
        clock.sleep_ms(1000)
    assert attempts[:5] == [0, 1, 3, 7, 15]   # 1 s, 2 s, 4 s, 8 s apart
    assert len(ob) == 1
    link.up = True
    for _ in range(64):
        s.tick()
        clock.sleep_ms(1000)
    assert len(ob) == 0


def test_status_is_republished_when_the_connector_changes():
    link = FakeLink()
    s, clock, ob = _sync(link)
    s.set_connector("Available")
    s.tick()
    s.tick()
    s.set_connector("Charging")
    s.tick()
    states = [json.loads(p[1])["connector"] for p in link.published if p[0].endswith("status")]
    assert states == ["Available", "Charging"]
