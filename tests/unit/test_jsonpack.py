"""Packed JSON: what the journal writes for session records, and what it reads back."""
import hashlib
import io
import json

from check import raises
from firmware.storage.jsonpack import dump, unpack, unpack_tail, words

# A shape like a real `ended` record: cost breakdown, OCPI charging periods, power profile.
ENDED = {
    "msg_id": "7-2", "tx_id": 7, "seq": 2, "event": "ended", "ts": "2026-03-02T08:00:02Z",
    "token": "d3734443035327e080f88a02d9d0a247", "key": 1, "auth": "local_list", "offline": True,
    "started_at": "2026-03-02T07:00:35Z", "ended_at": "2026-03-02T08:00:02Z", "stop_reason": "Local",
    "meter_start_wh": 0, "meter_stop_wh": 7292, "energy_wh": 7292, "integral_wh": 7290,
    "energy_mismatch": False, "tariff_id": "flat", "parking_s": 1,
    "cost": {"currency": "EUR", "price_limit": None, "total_excl_vat_minor": 219, "total_incl_vat_minor": 261,
             "energy": {"excl_vat_minor": 219, "incl_vat_minor": 261},
             "time": {"excl_vat_minor": 0, "incl_vat_minor": 0}},
    "charging_periods": [
        {"start_date_time": "2026-03-02T07:00:35Z", "tariff_id": "flat",
         "dimensions": [{"type": "ENERGY", "volume": "0.124"}, {"type": "TIME", "volume": "0.016667"},
                        {"type": "PARKING_TIME", "volume": "0.000278"}, {"type": "MAX_CURRENT", "volume": "32.000"},
                        {"type": "MAX_POWER", "volume": "7.360"}]}],
    "profile": {"bucket_s": 300, "peak_w": 7360, "max_w": [7360, 7301], "mean_w": [7350, 7290],
                "min_w": [7300, 7280], "max_ma": [32000, 31800]},
}


def packed(obj):
    """(packed bytes, the length dump() said they unpack to)."""
    out = io.BytesIO()
    n = dump(obj, out)
    return out.getvalue(), n


def test_a_session_record_comes_back_equal_and_packs_to_about_half():
    p, n = packed(ENDED)
    plain = unpack(p)
    assert json.loads(plain) == ENDED and len(plain) == n
    assert n == len(json.dumps(ENDED, separators=(",", ":")))   # as long as compact JSON
    assert len(p) < n * 55 // 100


def test_strings_that_look_like_words_or_need_escapes_survive():
    rec = {"volume": "volume", "type": '"type":', "x": "a\"b\\c\n\x01\x1f", "é": "ü€", "null": None,
           "v": [True, False, None, "ENERGY", "ENERGY_X", 0, -5, []], "e": {}, "tariff_id": "null"}
    p, n = packed(rec)
    assert json.loads(unpack(p)) == rec and len(unpack(p)) == n


def test_plain_json_is_packed_json_without_a_code():
    plain = b'{"tx_id":7,"event":"ended","ts":null}'
    assert unpack(plain) == plain
    assert unpack(b"") == b""


def test_unpack_tail_works_in_place_and_refuses_what_does_not_fit():
    p, n = packed(ENDED)
    buf = bytearray(n)          # exactly the unpacked size: enough
    buf[n - len(p):] = p
    assert unpack_tail(buf, len(p)) == n and json.loads(bytes(buf)) == ENDED
    small = bytearray(n - 1)
    small[len(small) - len(p):] = p
    assert "does not fit" in str(raises(ValueError, unpack_tail, small, len(p)))


def test_bad_codes_are_a_value_error():
    for bad in (b'{"a":\x00}', b'{"a":1}\x1f', b'{\x1f\xff1}'):
        buf = bytearray(64)
        buf[64 - len(bad):] = bad
        raises(ValueError, unpack_tail, buf, len(bad))


def test_keys_must_be_strings_and_depth_is_bounded():
    raises(ValueError, dump, {1: "x"}, io.BytesIO())
    deep = []
    for _ in range(40):
        deep = [deep]
    raises(ValueError, dump, deep, io.BytesIO())


def test_the_words_records_on_flash_were_written_with_never_change():
    # Pending records outlive a firmware update: the table may only grow at its end. These 83
    # words are the first release's; changing or reordering one would garble records on flash.
    table = words()
    first = hashlib.sha256(b"\n".join(table[:83])).digest()
    assert "".join("%02x" % b for b in first) == "4d8b0c983517abd663cb317c207b9657c41a119f8437a90b64fcb02088d1e9a2"
    assert len(table) <= 30 + 256 and len(set(table)) == len(table)
    for w in table:   # each a key with its colon, or a whole JSON value (never a number: they vary)
        assert w.endswith(b'":') or json.loads(w) in (None, True, False) or isinstance(json.loads(w), str), w
