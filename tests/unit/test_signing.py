"""Canonical bytes, HMAC signatures and the hash chain of session records."""
import hashlib

from check import raises
from firmware.core.hmacsha256 import hmac_sha256
from firmware.billing.signing import GENESIS, Chain, canonical, record_hash, signature

KEY = bytes(range(32))


def _hex(b):
    return "".join("%02x" % x for x in b)


def test_canonical_sorts_keys_and_has_no_spaces():
    rec = {"b": [1, True, None, "x"], "a": {"z": -5, "y": False}, "é": "ü\"\\\n\x01"}
    want = '{"a":{"y":false,"z":-5},"b":[1,true,null,"x"],"é":"ü\\"\\\\\\u000a\\u0001"}'
    assert canonical(rec) == want.encode("utf-8")


def test_canonical_refuses_what_could_differ_between_interpreters():
    raises(ValueError, canonical, {"price": 0.3})
    raises(ValueError, canonical, {1: "int key"})
    raises(ValueError, canonical, {"b": b"bytes"})
    deep = []
    for _ in range(40):
        deep = [deep]
    raises(ValueError, canonical, deep)


def test_sign_adds_chain_fields_and_a_verifiable_hmac():
    chain = Chain(KEY)
    rec = {"event": "ended", "tx_id": 7, "cost": {"total_incl_vat_minor": 444}}
    signed = chain.sign(rec)
    assert "sig" not in rec                               # the caller's record is not touched
    assert signed["chain_n"] == 0 and signed["chain_prev"] == GENESIS
    body = dict(signed)
    del body["sig"]
    assert signed["sig"] == _hex(hmac_sha256(KEY, canonical(body))) == signature(KEY, signed)
    assert chain.prev_hash == _hex(hashlib.sha256(canonical(signed)).digest()) == record_hash(signed)
    assert chain.n == 1


def test_records_chain_to_their_predecessor_and_state_resumes():
    chain = Chain(KEY)
    a = chain.sign({"tx_id": 1})
    b = chain.sign({"tx_id": 2})
    assert b["chain_prev"] == record_hash(a) and b["chain_n"] == 1
    resumed = Chain(KEY, chain.prev_hash, chain.n)         # after a reboot, from persisted state
    c = resumed.sign({"tx_id": 3})
    assert c["chain_prev"] == record_hash(b) and c["chain_n"] == 2


def test_any_change_breaks_the_signature():
    signed = Chain(KEY).sign({"tx_id": 1, "energy_wh": 3650})
    for field, value in (("energy_wh", 3651), ("tx_id", 2), ("chain_n", 5), ("extra", 1)):
        forged = dict(signed)
        forged[field] = value
        assert signature(KEY, forged) != signed["sig"], field
    assert signature(bytes(32), signed) != signed["sig"]


def test_bad_use_is_refused():
    raises(ValueError, Chain, b"short")
    raises(ValueError, Chain, KEY, "abc")
    raises(ValueError, Chain, KEY, GENESIS, -1)
    signed = Chain(KEY).sign({"tx_id": 1})
    raises(ValueError, Chain(KEY).sign, signed)           # signing twice
