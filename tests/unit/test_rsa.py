"""The update signature check (firmware/core/rsa.py): a signature made by OpenSSL verifies, and every
bit flip, wrong key, wrong length or near-miss encoding is refused. Test keys: tests/unit/testkeys.py."""
import binascii
import hashlib

from check import raises
from firmware.core.rsa import encode, parse_public_key, verify
from testkeys import KAT_MESSAGE, KAT_SIG_A, KEY_A, KEY_B, KEY_C, sign

_SHA256_INFO = binascii.unhexlify("3031300d060960864801650304020105000420")
_SHA1_INFO = binascii.unhexlify("3021300906052b0e03021a05000414")


def _digest(m):
    return hashlib.sha256(m).digest()


def _flip(b, bit):
    out = bytearray(b)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def test_a_signature_by_openssl_verifies_and_ours_is_identical():
    sig = binascii.unhexlify(KAT_SIG_A)
    assert verify(KEY_A.public, _digest(KAT_MESSAGE), sig)
    assert sign(KEY_A, KAT_MESSAGE) == sig          # PKCS#1 v1.5 is deterministic: same encoding as OpenSSL


def test_rsa_3072_verifies_too():
    sig = sign(KEY_C, b"manifest")
    assert len(sig) == 384 and verify(KEY_C.public, _digest(b"manifest"), sig)
    assert not verify(KEY_C.public, _digest(b"manifest!"), sig)


def test_one_flipped_bit_anywhere_is_refused():
    msg = b"cp-update/2\nid=u-1\nversion=2.0.0"
    sig = sign(KEY_A, msg)
    assert verify(KEY_A.public, _digest(msg), sig)
    for bit in range(len(sig) * 8):
        assert not verify(KEY_A.public, _digest(msg), _flip(sig, bit)), bit
    for bit in range(len(msg) * 8):
        assert not verify(KEY_A.public, _digest(_flip(msg, bit)), sig), bit


def test_another_key_is_refused():
    sig = sign(KEY_B, b"manifest")
    assert verify(KEY_B.public, _digest(b"manifest"), sig)
    assert not verify(KEY_A.public, _digest(b"manifest"), sig)
    assert not verify(KEY_C.public, _digest(b"manifest"), sign(KEY_A, b"manifest"))   # wrong size too


def test_length_and_range_are_exact():
    d = _digest(b"m")
    sig = sign(KEY_A, b"m")
    n = KEY_A.n
    for bad in (sig[1:], b"\x00" + sig, sig + b"\x00", b"", b"\x00" * 256, b"\x00" * 255 + b"\x01",
                n.to_bytes(256, "big"), (n - 1).to_bytes(256, "big")):
        assert not verify(KEY_A.public, d, bad)
    # s + n opens to the same message but is not the signature representative: refused as out of range
    big = int.from_bytes(sig, "big") + n
    if big < 1 << 2048:
        assert not verify(KEY_A.public, d, big.to_bytes(256, "big"))


def test_near_miss_encodings_are_refused():
    """Each of these opens (s^e mod n) to exactly the bytes shown: only the one true encoding passes."""
    k = KEY_A.k
    d = _digest(b"m")
    good = encode(d, k)
    assert verify(KEY_A.public, d, KEY_A.sign_em(good))
    pad = k - 3 - len(_SHA256_INFO) - 32
    bad = [
        b"\x00\x02" + good[2:],                                               # block type 2 (encryption)
        b"\x00\x00" + good[2:],                                               # block type 0
        b"\x01" + good[1:],                                                   # no leading zero
        good[:10] + b"\xfe" + good[11:],                                      # one padding byte not FF
        b"\x00\x01" + b"\xff" * pad + b"\x01" + good[3 + pad:],               # separator not 00
        # Bleichenbacher 2006: short padding, the hash earlier, garbage after it
        b"\x00\x01" + b"\xff" * 8 + b"\x00" + _SHA256_INFO + d + b"\x5a" * (pad - 8),
        # DigestInfo without the NULL parameters (RFC 8017 allows refusing it; we do)
        b"\x00\x01" + b"\xff" * (pad + 2) + b"\x00" + binascii.unhexlify("302f300b0609608648016503040201")
        + b"\x04\x20" + d,
        # SHA-1 DigestInfo and hash: another algorithm
        b"\x00\x01" + b"\xff" * (k - 3 - len(_SHA1_INFO) - 20) + b"\x00" + _SHA1_INFO + hashlib.sha1(b"m").digest()
        if hasattr(hashlib, "sha1") else b"\x00" * k,
        good[:-1] + bytes((good[-1] ^ 1,)),                                   # the hash of something else
    ]
    for i, em in enumerate(bad):
        assert len(em) == k, (i, len(em))
        assert not verify(KEY_A.public, d, KEY_A.sign_em(em)), i


def test_parse_public_key():
    key = parse_public_key(KEY_A.hex)
    assert (key.n, key.k) == (KEY_A.n, 256)
    assert parse_public_key("  " + KEY_C.hex.upper() + "\n").k == 384
    even = KEY_A.hex[:-1] + "0"
    cases = [(None, "string of hex"), (KEY_A.hex[:-2], "512 or 768 hex digits (got 510)"),
             (KEY_A.hex + "00", "(got 514)"), ("zz" + KEY_A.hex[2:], "hex digits only"),
             ("00" + KEY_A.hex[2:], "top bit"), (even, "odd"), ("ab" * 512, "(got 1024)")]
    for text, words in cases:
        assert words in str(raises(ValueError, parse_public_key, text)), (text, words)
    assert "SHA-256" in str(raises(ValueError, encode, b"x" * 20, 256))
