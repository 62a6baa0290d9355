"""Tamper-evident session records: HMAC-SHA256 signatures chained record to record.

Each signed record carries `chain_n` (0, 1, 2 … on this device), `chain_prev` (SHA-256 hex
of the previous signed record, 64 zeros for the first) and `sig` (HMAC-SHA256 under the
device key over the canonical bytes of the record without `sig`). Editing, forging, dropping
or reordering a record then shows (tools/verify.py). This is tamper EVIDENCE for the
operator's own books, not a legal-for-trade (Eichrecht / PTB) signature: the key is a shared
secret in the charger's flash and the meter is not a certified measuring instrument.

    chain = Chain(key, state.get("prev", GENESIS), state.get("n", 0))
    rec = chain.sign(rec); state["prev"], state["n"] = chain.prev_hash, chain.n   # persist
"""
import binascii
import io
import hashlib

from firmware.core.hmacsha256 import hmac_sha256

GENESIS = "0" * 64
FIELDS = ("chain_n", "chain_prev", "sig")
_HEX = "0123456789abcdef"


def _string(s, out):
    out.write('"')
    start = 0
    for i, c in enumerate(s):
        if c == '"' or c == "\\" or c < " ":
            out.write(s[start:i])
            if c == '"' or c == "\\":
                out.write("\\" + c)
            else:
                o = ord(c)
                out.write("\\u00" + _HEX[o >> 4] + _HEX[o & 15])
            start = i + 1
    out.write(s[start:])
    out.write('"')


def _value(v, out, depth):
    if depth > 16:
        raise ValueError("record nested too deeply to sign")
    if v is None:
        out.write("null")
    elif v is True:
        out.write("true")
    elif v is False:
        out.write("false")
    elif isinstance(v, int):
        out.write(str(v))
    elif isinstance(v, str):
        _string(v, out)
    elif isinstance(v, (list, tuple)):
        out.write("[")
        for i, x in enumerate(v):
            if i:
                out.write(",")
            _value(x, out, depth + 1)
        out.write("]")
    elif isinstance(v, dict):
        out.write("{")
        for i, k in enumerate(sorted(v)):
            if not isinstance(k, str):
                raise ValueError("record keys must be strings to sign (got %r)" % (k,))
            if i:
                out.write(",")
            _string(k, out)
            out.write(":")
            _value(v[k], out, depth + 1)
        out.write("}")
    else:
        raise ValueError("cannot sign a %s (only int, str, bool, null, list, dict): %r"
                         % (type(v).__name__, v))


def canonical(obj):
    """The record's canonical bytes: sorted keys, no spaces, UTF-8; identical on every interpreter.
    Written into one stream, so a large record leaves no pile of fragments behind (small heaps)."""
    out = io.StringIO()
    _value(obj, out, 0)
    return out.getvalue().encode()


def _hex(b):
    return binascii.hexlify(b).decode()


def record_hash(rec):
    """SHA-256 hex of a signed record (sig included): what the next record's chain_prev holds."""
    return _hex(hashlib.sha256(canonical(rec)).digest())


def signature(key, rec):
    """HMAC-SHA256 hex over the record without its `sig` field."""
    body = {}
    for k in rec:
        if k != "sig":
            body[k] = rec[k]
    return _hex(hmac_sha256(key, canonical(body)))


class Chain:
    def __init__(self, key, prev_hash=GENESIS, n=0):
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("signing key must be at least 16 bytes")
        if not isinstance(prev_hash, str) or len(prev_hash) != 64:
            raise ValueError("chain prev_hash must be 64 hex digits")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("chain n must be an int >= 0")
        self.key = bytes(key)
        self.prev_hash = prev_hash
        self.n = n

    def sign(self, rec):
        """A copy of rec with chain_n, chain_prev and sig; advances the chain (persist prev_hash, n)."""
        for f in FIELDS:
            if f in rec:
                raise ValueError("record already has %s: sign a record once" % f)
        out = dict(rec)
        out["chain_n"] = self.n
        out["chain_prev"] = self.prev_hash
        out["sig"] = signature(self.key, out)
        self.prev_hash = record_hash(out)
        self.n += 1
        return out
