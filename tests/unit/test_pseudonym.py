"""HMAC-SHA256 against RFC 4231 vectors, and the pseudonym rules."""
import binascii

from check import raises
from firmware.core.hmacsha256 import hmac_sha256
from firmware.auth.pseudonym import parse_key, pseudonym


def _hex(b):
    return binascii.hexlify(b).decode()


def test_rfc4231_case_1():
    tag = hmac_sha256(b"\x0b" * 20, b"Hi There")
    assert _hex(tag) == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"


def test_rfc4231_case_2_short_key():
    tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert _hex(tag) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_rfc4231_case_6_key_longer_than_block():
    tag = hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert _hex(tag) == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_pseudonym_is_128_bit_hex_and_depends_on_key():
    uid = b"\xde\xad\xbe\xef"
    a = pseudonym(b"k" * 16, uid)
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != pseudonym(b"j" * 16, uid)
    assert a == pseudonym(b"k" * 16, bytes(uid))
    assert "deadbeef" not in a


def test_parse_key_rejects_short_or_non_hex():
    assert parse_key("00" * 16) == bytes(16)
    assert "site_key" in str(raises(ValueError, parse_key, "00" * 8))
    assert "hex" in str(raises(ValueError, parse_key, "zz" * 16))
