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


def _life(ep, n, first_tx=1):
    """n ended records of one data epoch, signed from a fresh chain (as after state and journal were lost)."""
    chain = Chain(KEY)
    return [chain.sign({"msg_id": "%d-1" % (first_tx + i), "event": "ended", "tx_id": first_tx + i, "ep": ep,
                        "energy_wh": 500 + i}) for i in range(n)]


def test_a_new_epoch_starts_a_new_chain_and_an_old_epochs_replay_is_still_a_fork(tmp_path):
    old, new = _life(100, 3), _life(250, 2)
    rc, out = _verify(tmp_path, old + new, "--count", "2")
    # on main: "forked chain: chain_n 0 also on line 1" and chain_n 1 too
    assert rc == 0 and out == ["note: 2 data epochs (100, 250): the device was re-initialised 1 times, each "
                               "epoch's chain checked on its own", "ok: 5 records, chain intact"]
    replay = Chain(KEY, old[0]["chain_prev"], 1).sign({"msg_id": "9-1", "tx_id": 9, "ep": 100})   # old epoch, n 1
    rc, out = _verify(tmp_path, old + new + [replay])
    assert rc == 1 and any(line.startswith("epoch 100: line 6: forked chain: chain_n 1 also on line 2")
                           for line in out), out
    forged = dict(new[1], ep=100)   # moved to the old epoch: the signature covers ep
    rc, out = _verify(tmp_path, old + [new[0], forged])
    assert rc == 1 and any("epoch 100: line 5: forged" in line for line in out), out


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
