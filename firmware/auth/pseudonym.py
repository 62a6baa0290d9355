"""Card pseudonyms: the raw UID stays in RAM; everything stored or sent uses HMAC(site key, UID).

A 4-byte UID has only 2**32 values, so a plain hash would be reversed by brute force; the
site key (a secret per site, rotatable by version) prevents that.

    token = pseudonym(site_key, uid)     # 32 hex chars (128 bits)
"""
import binascii

from firmware.core.hmacsha256 import hmac_sha256

TOKEN_BYTES = 16  # 128 bits of the HMAC: collisions are out of reach for any fleet


def pseudonym(key, uid):
    return binascii.hexlify(hmac_sha256(key, uid)[:TOKEN_BYTES]).decode()


def parse_key(text, name="site_key"):
    """A site key from its hex form; at least 16 bytes, or a ValueError naming the setting."""
    try:
        key = binascii.unhexlify(text)
    except (ValueError, TypeError):
        raise ValueError("%s must be hex" % name)
    if len(key) < 16:
        raise ValueError("%s must be at least 16 bytes (32 hex digits)" % name)
    return key
