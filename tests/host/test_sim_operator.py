"""The simulator rehearses an operator's work: an OCPI tariff priced in the site's zone, a tariff
pushed mid-run and answered, an update signed and bundled by tools/bundle.py, records signed so
tools/verify.py passes them, and the reference backend started beside the run (tools/sim.py
--backend), with a warning when records stay unacked. One rehearsal run serves most tests."""
import json
import os
import subprocess
import sys

import pytest

import sim
from downlink import derive
from scenario import ROOT, ScenarioError, normalise
from store import Store

DEVICE = "cp-rehearsal-01"
NIGHT = {"id": "night", "currency": "EUR", "elements": [
    {"price_components": [{"type": "ENERGY", "price": "0.20", "vat": "19", "step_size": 1}],
     "restrictions": {"start_time": "22:00", "end_time": "06:00"}},
    {"price_components": [{"type": "ENERGY", "price": "0.60", "vat": "19", "step_size": 1}]}]}
FLAT = {"id": "flat50", "currency": "EUR", "elements": [{"price_components": [
    {"type": "ENERGY", "price": "0.50", "vat": "19", "step_size": 1}]}]}
# 21:00 UTC is 22:00 in Berlin (CET): the night price, which UTC would not give until 22:00 UTC.
# The update comes last: the charger restarts into it, and the simulator stops there.
SCENARIO = {"start": "2026-03-02T21:00:00Z", "tz": "Europe/Berlin", "device_id": DEVICE,
            "cards": {"alice": "DEADBEEF"}, "allow": ["alice"], "tariff": NIGHT, "update_key": "update-key.json",
            "events": [{"t": 5, "plug": True}, {"t": 10, "tap": "alice"}, {"t": 12, "ev_current_a": 32},
                       {"t": 40, "tap": "alice"}, {"t": 46, "plug": False},
                       {"t": 50, "tariff": "flat50.json"},
                       {"t": 55, "plug": True}, {"t": 60, "tap": "alice"}, {"t": 90, "tap": "alice"},
                       {"t": 95, "plug": False},
                       {"t": 97, "update": {"command": "update.json", "bundle": "cp-1.4.0.bin"}}],
            "end": 120}


def _short(events, end):
    """The scenario's first `events`, without the update."""
    sc = dict(SCENARIO, events=SCENARIO["events"][:events], end=end)
    del sc["update_key"]
    return sc


def _write(tmp, scenario):
    (tmp / "flat50.json").write_text(json.dumps(FLAT))
    path = tmp / "scenario.json"
    path.write_text(json.dumps(scenario))
    return str(path)


def _bundle_tool(*args, cwd):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bundle.py")] + list(args), cwd=str(cwd),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _update_files(tmp):
    """The operator's key and a signed bundle, as docs/ota.md makes them (a small version: the
    download is what is rehearsed, not the new code)."""
    src = tmp / "src"
    for d in ("firmware", "hal"):
        (src / d).mkdir(parents=True)
        (src / d / "__init__.py").write_text("")
    (src / "firmware" / "app.py").write_text("def run(platform):\n    pass\n")
    (tmp / "update-key.json").write_text(_bundle_tool("keygen", "--out", str(tmp / "k.pem"), cwd=tmp))
    (tmp / "update.json").write_text(_bundle_tool("--version", "1.4.0", "--key", "k.pem", "--fleet", "--src", str(src),
                                                  "--url", "https://updates.example.org/cp-1.4.0.bin",
                                                  "--out", "cp-1.4.0.bin", cwd=tmp))


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rehearsal")
    _update_files(tmp)
    lines = []
    fleet = os.urandom(32)
    db = str(tmp / "backend.sqlite")
    run, counts = sim.rehearse(_write(tmp, SCENARIO), fleet_key=fleet, db=db, out=lines.append,
                               run_dir=str(tmp / "run"))
    st = Store(db)
    ended = [json.loads(r[0]) for r in st.query(
        "SELECT record FROM session_events WHERE device = ? AND event = 'ended' ORDER BY tx_id", (DEVICE,))]
    acks = [tuple(r) for r in st.query("SELECT cmd, status FROM cmd_acks WHERE device = ?", (DEVICE,))]
    st.close()
    return {"run": run, "lines": lines, "counts": counts, "ended": ended, "acks": acks, "fleet": fleet,
            "dir": tmp / "run"}


def test_the_rehearsal_ends_with_everything_acknowledged(rehearsal):
    lines = rehearsal["lines"]
    assert any("0 still queued" in line for line in lines), lines[-30:]
    assert not any(line.startswith("warning") for line in lines)
    assert rehearsal["counts"]["stored"] > 0 and rehearsal["counts"]["unauthenticated"] == 0


def test_the_scenarios_tariff_prices_in_the_sites_zone_and_the_pushed_one_follows(rehearsal):
    first, second = rehearsal["ended"]
    assert first["tariff_id"] == "night" and second["tariff_id"] == "flat50"
    for rec, cents_per_kwh in ((first, 20), (second, 50)):
        assert rec["energy_wh"] > 50    # the day price would cost 2 cents more
        assert abs(rec["cost"]["total_excl_vat_minor"] - rec["energy_wh"] * cents_per_kwh / 1000) <= 1, rec["cost"]
    assert ("tariff", "accepted") in rehearsal["acks"]
    assert any("cmd_ack tariff" in line and "accepted" in line for line in rehearsal["lines"])


def test_an_update_is_checked_downloaded_and_switched_to_after_the_session(rehearsal):
    run = rehearsal["run"]
    updates = [ev.get("status") or ev.get("action") for _, ev in run.events if ev["ev"] == "update"]
    assert updates[:1] == ["accepted"] and "verified" in updates and updates[-1] == "install", rehearsal["lines"][-20:]
    acks = [status for cmd, status in rehearsal["acks"] if cmd == "update"]
    assert "accepted" in acks and "progress" in acks, acks
    assert run.rc == 4 and any("the charger restarts" in line for line in rehearsal["lines"])


def _verify(path, key):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "verify.py"), str(path), "--key", key.hex()],
                          capture_output=True, text=True, timeout=60)


def test_the_records_verify_with_the_device_key_from_the_fleet_key(rehearsal, tmp_path):
    key = derive(rehearsal["fleet"], DEVICE)
    stored = tmp_path / "stored.jsonl"
    stored.write_text("".join(json.dumps(r) + "\n" for r in rehearsal["ended"]))
    r = _verify(stored, key)
    assert r.returncode == 0 and r.stdout.strip() == "ok: 2 records, chain intact", r.stdout
    held = tmp_path / "held.jsonl"                           # what the charger's journal holds
    held.write_text("".join(r + "\n" for r in sim.signed_records(str(rehearsal["dir"] / "data"))))
    r = _verify(held, key)
    assert r.returncode == 0 and r.stdout.strip() == "ok: 2 records, chain intact", r.stdout


def test_an_offline_run_signs_its_records_too(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sim.py"), _write(tmp_path, _short(5, 50)),
                        "--keep", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "1 session records in" in r.stdout, r.stdout + r.stderr
    key = bytes.fromhex(json.loads((tmp_path / "run" / "secrets.json").read_text())["device_key"])
    v = _verify(tmp_path / "run" / "records.jsonl", key)
    assert v.returncode == 0 and v.stdout.strip() == "ok: 1 records, chain intact", v.stdout + r.stdout


def test_a_broker_without_a_backend_is_warned_about(tmp_path):
    from broker import Broker

    lines = []
    with Broker() as b:
        run = sim.simulate(_write(tmp_path, _short(2, 14)), b, out=lines.append)   # the started record, never acked
    assert run.rc == 0
    warn = [line for line in lines if line.startswith("warning")]
    assert warn and "no backend acknowledged" in warn[0] and "--backend" in warn[0], lines[-5:]


def test_no_broker_at_the_address_is_a_clear_refusal(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sim.py"), _write(tmp_path, _short(5, 50)),
                        "--broker", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no MQTT broker answers at 127.0.0.1:1" in r.stderr and "Traceback" not in r.stderr


def test_update_events_need_the_key_a_valid_command_and_the_bundle(tmp_path):
    good_key = "c" + "0" * 510 + "1"     # 2048-bit, odd, top bit set: what parse_public_key accepts
    (tmp_path / "update.json").write_text(json.dumps({"id": "u-1", "url": "http://x/b", "version": "1.4.0",
                                                      "target": "*", "expires": "2026-12-13T08:00:00Z",
                                                      "rollback": False, "size": 10, "sha256": "ab" * 32,
                                                      "sig": "cd" * 256}))
    (tmp_path / "b.bin").write_bytes(b"0123456789")
    ev = {"command": "update.json", "bundle": "b.bin"}
    for over, words in [({}, ["events[0]", "update_key"]),
                        ({"update_key": "nokey.json"}, ["update_key", "nokey.json"]),
                        ({"update_key": "ab" * 10}, ["update_key"]),
                        ({"update_key": good_key, "ev": {"command": {"id": "u-1"}, "bundle": "b.bin"}},
                         ["events[0]", "command", "url"]),
                        ({"update_key": good_key, "ev": {"command": "update.json", "bundle": "missing.bin"}},
                         ["events[0]", "bundle", "missing.bin"]),
                        ({"update_key": good_key, "ev": "update.json"}, ["events[0]", "bundle"])]:
        sc = dict(_short(0, 10), events=[{"t": 5, "update": over.pop("ev", ev)}], **over)
        with pytest.raises(ScenarioError) as e:
            normalise(sc, bytes(32), base_dir=str(tmp_path))
        for w in words:
            assert w in str(e.value), (over, str(e.value))
    sc = dict(_short(0, 10), events=[{"t": 5, "update": ev}], update_key=good_key)
    world, device, _, _, _ = normalise(sc, bytes(32), base_dir=str(tmp_path))
    assert device["ota"] == {"public_key": good_key}
    assert world["events"][0]["update"]["bundle"] == str(tmp_path / "b.bin")
