"""tools/verify.py finds every kind of tampering in a stream of signed records, and passes a clean one."""
import json
import os
import subprocess
import sys

import pytest

from firmware.billing.signing import Chain
from scenario import ROOT

KEY = bytes(range(40, 72))


def _records(n=6):
    chain = Chain(KEY)
    out = []
    for i in range(n):
        out.append(chain.sign({"msg_id": "%d-1" % (i + 1), "event": "ended", "tx_id": i + 1, "energy_wh": 1000 + i,
                               "cost": {"currency": "EUR", "total_incl_vat_minor": 300 + i},
                               "token": "ab" * 16, "note": "naïve \"quoted\""}))
    return out


def _verify(tmp_path, recs, *extra, key=KEY):
    path = tmp_path / "records.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in recs), encoding="utf-8")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "verify.py"), str(path), "--key", key.hex()]
                       + list(extra), capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout.splitlines()


def test_a_clean_stream_passes(tmp_path):
    rc, out = _verify(tmp_path, _records())
    assert rc == 0 and out == ["ok: 6 records, chain intact"]


def test_redelivered_duplicates_are_not_problems(tmp_path):
    recs = _records()
    rc, out = _verify(tmp_path, recs[:3] + [recs[2]] + recs[3:])
    assert rc == 0, out


def test_forged_record_is_reported(tmp_path):
    recs = _records()
    fake = dict(recs[2])
    fake["energy_wh"] = 1
    fake["sig"] = "00" * 32                                  # made up without the key
    rc, out = _verify(tmp_path, recs[:3] + [fake] + recs[3:])
    assert rc == 1 and out == ["line 4: forged: signature does not verify and chain_n 2 belongs to the "
                               "verified record on line 3"]
    odd = dict(recs[5], chain_n=6, sig="é" * 64)
    rc, out = _verify(tmp_path, recs + [odd])
    assert rc == 1 and out == ["line 7: forged or altered: signature does not verify (chain_n 6)"]
    unsigned = {"event": "ended", "tx_id": 99}
    rc, out = _verify(tmp_path, recs + [unsigned])
    assert rc == 1 and out == ["line 7: forged: unsigned (no sig, chain_n and chain_prev)"]


def test_altered_record_is_reported(tmp_path):
    recs = _records()
    recs[1]["cost"]["total_incl_vat_minor"] = 1                # someone lowered the bill
    rc, out = _verify(tmp_path, recs)
    assert rc == 1 and out == ["line 2: altered: chain_n 1 does not match its signature; chain_n 2 (line 3) "
                               "was chained to different content"]


def test_missing_records_are_reported(tmp_path):
    recs = _records()
    rc, out = _verify(tmp_path, recs[:2] + recs[4:])
    assert rc == 1 and out == ["missing: chain_n 2..3 before line 3"]
    rc, out = _verify(tmp_path, recs[1:])
    assert rc == 1 and out == ["missing: chain_n 0 before line 1"]
    rc, out = _verify(tmp_path, recs[1:], "--partial")
    assert rc == 0, out
    rc, out = _verify(tmp_path, recs[:4], "--count", "6")      # the device says it signed 6
    assert rc == 1 and out == ["missing: chain_n 4..5 at the end of the stream"]


def test_reordered_records_are_reported(tmp_path):
    recs = _records()
    rc, out = _verify(tmp_path, [recs[0], recs[2], recs[1]] + recs[3:])
    assert rc == 1 and out == ["line 3: reordered: chain_n 1 comes after chain_n 2 (line 2)"]


def test_a_rolled_back_chain_shows_as_a_fork(tmp_path):
    recs = _records(3)
    again = Chain(KEY, recs[1]["chain_prev"], 1).sign({"tx_id": 50})   # state restored from an old backup
    rc, out = _verify(tmp_path, recs + [again])
    assert rc == 1 and out[0].startswith("line 4: forked chain: chain_n 1 also on line 2")


def test_the_wrong_key_fails_everything(tmp_path):
    rc, out = _verify(tmp_path, _records(2), key=bytes(32))
    assert rc == 1 and len(out) == 2 and all("signature does not verify" in line for line in out)


@pytest.mark.parametrize("args", [[], ["--key", "zz"], ["--key", "00"]])
def test_usage_errors_exit_2(tmp_path, args):
    path = tmp_path / "r.jsonl"
    path.write_text("")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "verify.py"), str(path)] + args,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr
