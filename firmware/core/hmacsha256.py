"""HMAC-SHA256 (RFC 2104) over `hashlib.sha256`: MicroPython ships no `hmac` module.

    tag = hmac_sha256(key, b"message")          # 32 bytes
"""
import hashlib

_BLOCK = 64


def hmac_sha256(key, msg):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()
