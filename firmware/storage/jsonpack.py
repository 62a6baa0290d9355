"""Packed JSON: a session record's JSON with its common keys and words as one or two control bytes.

Flash writes are the journal's budget, and most of an `ended` record is the same keys every time
("incl_vat_minor":, "volume":, ...). JSON text never holds a raw byte below 0x20 (those are
escaped inside strings), so bytes 0x01-0x1E stand for words 0..29 of the table below and 0x1F n
for word 30 + n. Plain JSON is packed JSON without a code, so a record written unpacked reads
back unchanged. Packed records outlive firmware updates: the table only ever grows at its end
(a test pins its start).

    n = dump({"tx_id": 7, "event": "ended"}, stream)     # n: bytes once unpacked
    unpack(b'{\\x107,\\x11"ended"}') == b'{"tx_id":7,"event":"ended"}'
"""
import array
import json

from micropython import const

_ESC = const(0x1F)
_ONE = const(30)       # codes 0x01-0x1E: one byte
_DEPTH = const(16)
_NL = const(10)

# One bytes object, each word followed by a newline (one heap object, not one per word).
_TABLE = (
    b'\n'
    # 0x01-0x1E: the words that save the most in a typical session's records
    b'"volume":\n"type":\n"incl_vat_minor":\n"excl_vat_minor":\n"tariff_id":\n"start_date_time":\n'
    b'"meter_start_wh":\n"offline":\n"dimensions":\n"MAX_CURRENT"\n"PARKING_TIME"\n"msg_id":\n'
    b'"energy_wh":\n"MAX_POWER"\n"token":\n"tx_id":\n"event":\n"local_list"\n'
    b'"total_incl_vat_minor":\n"total_excl_vat_minor":\n"key":\n"seq":\n"ENERGY"\n"ts":\n"auth":\n'
    b'true\nnull\nfalse\n"TIME"\n"charging_periods":\n'
    # 0x1F n
    b'"meter_stop_wh":\n"energy_mismatch":\n"stop_reason":\n"price_limit":\n"started_at":\n'
    b'"start_utc":\n"integral_wh":\n"ended_at":\n"currency":\n"parking_s":\n"parking":\n'
    b'"bucket_s":\n"max_wh":\n"energy":\n"profile":\n"group":\n"fixed":\n"time":\n"cost":\n'
    b'"peak_w":\n"mean_w":\n"max_w":\n"min_w":\n"max_ma":\n"uncertain_wh":\n"recovered_wh":\n'
    b'"boot":\n"uptime_s":\n"started_uptime_s":\n"chain_n":\n"chain_prev":\n"sig":\n"started"\n'
    b'"updated"\n"ended"\n"Local"\n"Remote"\n"EVDisconnected"\n"PowerLoss"\n"EnergyLimitReached"\n'
    b'"Other"\n"cache"\n"online"\n"remote"\n"EUR"\n"CURRENT"\n"POWER"\n"MIN_CURRENT"\n"MIN_POWER"\n'
    b'"ENERGY_EXPORT"\n"ENERGY_IMPORT"\n"RESERVATION_TIME"\n"STATE_OF_CHARGE"\n'
)
_AT = array.array("H", (i + 1 for i in range(len(_TABLE)) if _TABLE[i] == _NL))  # word starts, then the end
_WORDS = memoryview(_TABLE)
_LONGEST = max(_AT[i + 1] - _AT[i] - 1 for i in range(len(_AT) - 1))


def words():
    """The table, word by word (for tests and tools)."""
    return [_TABLE[_AT[i]:_AT[i + 1] - 1] for i in range(len(_AT) - 1)]


def _code(text):
    """The code of a JSON fragment in the table, or None."""
    p = _TABLE.find(b"\n" + text + b"\n")
    if p < 0:
        return None
    i = _TABLE.count(b"\n", 0, p)
    return bytes((i + 1,)) if i < _ONE else bytes((_ESC, i - _ONE))


def dump(obj, out):
    """Write obj as packed JSON into the byte stream out; returns its length once unpacked."""
    return _value(obj, out.write, 0)


def _value(v, w, depth):
    if depth > _DEPTH:
        raise ValueError("jsonpack: record nested too deeply")
    if isinstance(v, dict):
        w(b"{")
        n = 2 + (len(v) - 1 if v else 0)
        first = True
        for k in v:
            if not isinstance(k, str):
                raise ValueError("jsonpack: keys must be strings, got %r" % (k,))
            if not first:
                w(b",")
            first = False
            s = json.dumps(k).encode() + b":"
            c = _code(s)
            w(s if c is None else c)
            n += len(s) + _value(v[k], w, depth + 1)
        w(b"}")
        return n
    if isinstance(v, (list, tuple)):
        w(b"[")
        n = 2 + (len(v) - 1 if v else 0)
        for i, x in enumerate(v):
            if i:
                w(b",")
            n += _value(x, w, depth + 1)
        w(b"]")
        return n
    s = json.dumps(v).encode()
    c = None if isinstance(v, int) and not isinstance(v, bool) else _code(s)   # no number is a word
    w(s if c is None else c)
    return len(s)


def unpack_tail(buf, n):
    """Unpack the last n bytes of bytearray buf into its start, in place; returns the unpacked
    length. ValueError if the record does not fit or holds a code that means nothing."""
    size = len(buf)
    r = size - n
    o = 0
    last = len(_AT) - 2
    while r < size:
        c = buf[r]
        r += 1
        if c >= 0x20:
            if o >= r:
                raise ValueError("jsonpack: the record does not fit %d bytes" % size)
            buf[o] = c
            o += 1
            continue
        if c == _ESC:
            if r >= size:
                raise ValueError("jsonpack: the record ends inside a code")
            i = buf[r] + _ONE
            r += 1
        else:
            i = c - 1
        if not 0 <= i <= last:
            raise ValueError("jsonpack: no word %d" % i)
        a = _AT[i]
        e = o + _AT[i + 1] - 1 - a
        if e > r:   # the next unread byte would be overwritten
            raise ValueError("jsonpack: the record does not fit %d bytes" % size)
        buf[o:e] = _WORDS[a:_AT[i + 1] - 1]
        o = e
    return o


def unpack(data):
    """Packed JSON bytes -> plain JSON bytes (a new object: for readers off the sampling path)."""
    n = len(data)
    size = n + _LONGEST * sum(1 for c in data if c < 0x20)   # no code unpacks to more
    buf = bytearray(size)
    buf[size - n:] = data
    return bytes(buf[:unpack_tail(buf, n)])
