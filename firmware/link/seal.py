"""Sealed messages between the backend and one charger: trust that does not depend on the broker.

Each payload is a JSON object whose last member is `"mac"`: HMAC-SHA256 under the charger's own
key over the direction, the device id, the topic suffix and the exact bytes of the object without
that member. A broker peer without the key can neither forge nor alter a message, nor move one
to another topic, device or direction. Keys are per device, derived by the operator from a fleet
secret (`derive`), so one charger's flash reveals only its own. Replays are refused by a counter
(`ctr`, strictly increasing per device) that the receiver remembers (`Counter`).

    payload = seal(key, B2D, "cp-0001", "cmd/tariff", b'{"id":"c1","ctr":7,...}')   # the backend
    body = unseal(key, B2D, "cp-0001", "cmd/tariff", payload)   # the charger; ValueError says why
"""
import binascii
import hashlib

from micropython import const

B2D = b"b2d"   # backend -> device: commands, acknowledgements, authorization answers
D2B = b"d2b"   # device -> backend: records
_HEAD = b',"mac":"'
_TAIL = const(74)   # len(',"mac":"') + 64 hex digits + len('"}')
_BLOCK = const(64)
_LABEL = b"cp-seal-v1\n"
CTR_MAX = const(0x3FFFFFFF)   # counters stay small ints on a 32-bit board


def _pads(key):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def mac(key, direction, device_id, suffix, body):
    """The 64 hex digits (bytes) of the MAC; body may be a memoryview (nothing is copied)."""
    ipad, opad = _pads(key)
    h = hashlib.sha256(ipad)
    for part in (_LABEL, direction, b"\n", device_id.encode(), b"\n", suffix.encode(), b"\n"):
        h.update(part)
    h.update(body)
    o = hashlib.sha256(opad)
    o.update(h.digest())
    return binascii.hexlify(o.digest())


def derive(fleet_secret, device_id):
    """A device's key from the operator's fleet secret (kept off the chargers)."""
    ipad, opad = _pads(fleet_secret)
    h = hashlib.sha256(ipad)
    h.update(b"cp-device-key-v1\n" + device_id.encode())
    o = hashlib.sha256(opad)
    o.update(h.digest())
    return o.digest()


def seal(key, direction, device_id, suffix, body):
    """body: the bytes of a non-empty JSON object; returns it with the `mac` member appended."""
    if len(body) < 3 or body[0:1] != b"{" or body[-1:] != b"}":
        raise ValueError("seal: a non-empty JSON object is needed")
    return body[:-1] + _HEAD + mac(key, direction, device_id, suffix, body) + b'"}'


def _same(a, b):
    """Compare in constant time: no early exit tells an attacker how much of a guess was right."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def unseal(key, direction, device_id, suffix, payload):
    """The object's bytes without `mac` if the MAC holds; ValueError with the reason if not."""
    n = len(payload)
    if n < _TAIL + 2 or payload[n - _TAIL:n - _TAIL + 8] != _HEAD or payload[n - 2:] != b'"}':
        raise ValueError("not sealed (no trailing \"mac\" member)")
    body = bytes(payload[:n - _TAIL]) + b"}"
    if not _same(mac(key, direction, device_id, suffix, body), payload[n - _TAIL + 8:n - 2]):
        raise ValueError("bad MAC (altered, forged, or for another device or topic)")
    return body


class Counter:
    """The highest counter accepted so far; a message must carry a higher one (no replays)."""

    def __init__(self, last=0):
        self.last = last

    def check(self, ctr):
        """ValueError unless ctr is a new, bounded integer; does not accept it yet (see `take`)."""
        if not isinstance(ctr, int) or isinstance(ctr, bool) or not 0 < ctr <= CTR_MAX:
            raise ValueError("ctr must be an integer 1..%d" % CTR_MAX)
        if ctr <= self.last:
            raise ValueError("replayed or out of order (ctr %d, last %d)" % (ctr, self.last))

    def take(self, ctr):
        self.check(ctr)
        self.last = ctr
