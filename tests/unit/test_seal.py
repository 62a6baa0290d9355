"""Sealed backend <-> charger messages: forged, altered, moved and replayed ones are refused."""
import json

from check import raises
from firmware.link.seal import B2D, CTR_MAX, D2B, Counter, derive, mac, seal, unseal

KEY = bytes(range(32))
BODY = b'{"id":"c1","ctr":5,"version":3}'


def test_a_sealed_message_opens_to_its_exact_body_and_stays_json():
    p = seal(KEY, B2D, "cp-1", "cmd/tariff", BODY)
    assert json.loads(p)["mac"] == mac(KEY, B2D, "cp-1", "cmd/tariff", BODY).decode()
    assert unseal(KEY, B2D, "cp-1", "cmd/tariff", p) == BODY


def test_every_altered_byte_is_refused():
    p = seal(KEY, B2D, "cp-1", "ack", BODY)
    for i in range(len(p)):
        b = bytearray(p)
        b[i] ^= 0x01
        raises(ValueError, unseal, KEY, B2D, "cp-1", "ack", bytes(b))


def test_another_key_device_topic_or_direction_is_refused():
    p = seal(KEY, B2D, "cp-1", "cmd/clear_fault", BODY)
    assert "bad MAC" in str(raises(ValueError, unseal, bytes(32), B2D, "cp-1", "cmd/clear_fault", p))
    raises(ValueError, unseal, KEY, B2D, "cp-2", "cmd/clear_fault", p)
    raises(ValueError, unseal, KEY, B2D, "cp-1", "cmd/remote_start", p)
    raises(ValueError, unseal, KEY, D2B, "cp-1", "cmd/clear_fault", p)


def test_unsealed_and_malformed_payloads_are_refused_with_a_reason():
    assert "not sealed" in str(raises(ValueError, unseal, KEY, B2D, "cp-1", "ack", BODY))
    raises(ValueError, unseal, KEY, B2D, "cp-1", "ack", b"")
    raises(ValueError, unseal, KEY, B2D, "cp-1", "ack", b'{"mac":"' + b"0" * 64 + b'"}')
    raises(ValueError, seal, KEY, B2D, "cp-1", "ack", b"{}")
    raises(ValueError, seal, KEY, B2D, "cp-1", "ack", b"[1]")


def test_device_keys_differ_per_device_and_per_fleet_secret():
    a, b = derive(b"fleet", "cp-1"), derive(b"fleet", "cp-2")
    assert len(a) == 32 and a != b and derive(b"fleet", "cp-1") == a and derive(b"other", "cp-1") != a


def test_counter_refuses_replays_and_unbounded_values():
    c = Counter(10)
    raises(ValueError, c.check, 10)
    raises(ValueError, c.check, 3)
    for bad in (True, "11", 11.0, None, 0, -1, CTR_MAX + 1):
        raises(ValueError, c.check, bad)
    c.check(11)
    assert c.last == 10   # check does not accept
    c.take(11)
    assert c.last == 11
    raises(ValueError, c.take, 11)
