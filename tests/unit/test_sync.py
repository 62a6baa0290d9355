"""The sync delivers the persistent outbox in order, removes only what the backend acknowledged,
re-sends the rest, and keeps the messages while the link is down (the link's own tests: test_mqtt)."""
import json

from fakes import FakeLink, ListLog
from firmware.storage.outbox import Outbox
from firmware.link.sync import Sync, parse_ack
from hal.sim.clock import VirtualClock

from check import raises

PREFIX = "cp/v1/cp-1/"


def _sync(link):
    clock = VirtualClock(start_utc=1772438100)
    ob = Outbox(8, clock=clock)
    return Sync(link, clock, ListLog(), ob, PREFIX), clock, ob


def _sent(link):
    return [json.loads(p)["n"] for t, p, _, _ in link.published if t.endswith("/session")]


def test_connects_with_retained_offline_will_then_announces_online_and_subscribes():
    link = FakeLink()
    s, clock, ob = _sync(link)
    s.set_connector("Available")
    s.tick()
    assert link.will[0] == PREFIX + "status" and json.loads(link.will[1]) == {"state": "offline"}
    topic, payload, retain, qos = link.published[0]
    assert topic == PREFIX + "status" and retain is True
    assert json.loads(payload)["state"] == "online" and json.loads(payload)["connector"] == "Available"
    assert link.subscribed == [PREFIX + "cmd/+", PREFIX + "auth/resp", PREFIX + "ack"]


def test_messages_go_in_order_and_stay_until_the_backend_acknowledges():
    link = FakeLink()
    s, clock, ob = _sync(link)
    for n in range(3):
        ob.put("session", '{"n": %d}' % n, "1-%d" % n, "started")
    s.tick()
    assert _sent(link) == [0, 1, 2] and len(ob) == 3          # PUBACK is not enough
    ob.ack(parse_ack({"msg_ids": ["1-0", "1-2"]}))
    assert len(ob) == 1
    clock.sleep_ms(4000)
    s.tick()
    assert _sent(link) == [0, 1, 2]                          # not due again yet
    clock.sleep_ms(3000)
    s.tick()
    assert _sent(link) == [0, 1, 2, 1]                       # the unacknowledged one, re-sent
    assert all(p[2] is False and p[3] == 1 for p in link.published if p[0].endswith("session"))


def test_a_dropped_connection_keeps_the_messages_for_later():
    link = FakeLink()
    s, clock, ob = _sync(link)
    for n in range(4):
        ob.put("session", '{"n": %d}' % n, "2-%d" % n, "started")
    link.fail_publish_after = 2   # status + one record, then the connection drops
    s.tick()
    assert _sent(link) == [0] and not link.connected and len(ob) == 4
    link.fail_publish_after = None
    clock.sleep_ms(2000)
    s.tick()
    s.tick()
    assert sorted(set(_sent(link))) == [0, 1, 2, 3]


def test_the_links_news_are_logged_and_messages_wait_while_it_is_down():
    # the backoff itself is the link's: test_mqtt.test_offline_broker_backs_off_exponentially_with_jitter
    link = FakeLink()
    link.up = False
    s, clock, ob = _sync(link)
    ob.put("session", '{"n": 0}', "3-0", "started")
    for _ in range(5):
        s.tick()
        clock.sleep_ms(500)
    down = [e for e in s.log.events if e["ev"] == "mqtt"]
    assert down == [{"ev": "mqtt", "state": "unreachable", "error": link.error, "retry_s": 1, "queued": 1}]
    assert not s.connected and s.publish_now("meter", "{}") is False and link.published == []
    link.up = True
    s.tick()
    assert s.log.events[-1] == {"ev": "mqtt", "state": "connected", "queued": 1}
    assert _sent(link) == [0]


def test_status_is_republished_when_the_connector_changes():
    link = FakeLink()
    s, clock, ob = _sync(link)
    s.set_connector("Available")
    s.tick()
    s.tick()
    s.set_connector("Faulted", "OverVoltage")
    s.tick()
    states = [json.loads(p[1]) for p in link.published if p[0].endswith("status")]
    assert [st["connector"] for st in states] == ["Available", "Faulted"]
    assert states[1]["error"] == "OverVoltage"


def test_the_status_names_what_the_charger_is_and_goes_out_again_when_asked():
    link = FakeLink()
    s, clock, ob = _sync(link)
    s.set_connector("Available")
    s.tick()
    s.set_identity({"firmware": "1.2.0", "vendor": "org.example"})
    s.tick()
    s.tick()
    s.republish()
    s.tick()
    states = [json.loads(p[1]) for p in link.published if p[0].endswith("status")]
    assert [st.get("firmware") for st in states] == [None, "1.2.0", "1.2.0"]
    assert states[2]["vendor"] == "org.example" and states[2]["connector"] == "Available"


def test_malformed_acks_are_refused():
    for bad in (None, [], {"msg_ids": "1-0"}, {"msg_ids": [1]}, {"msg_ids": ["x" * 65]}):
        raises(ValueError, parse_ack, bad)
    assert parse_ack({"msg_ids": []}) == []
