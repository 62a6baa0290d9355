"""Malformed scenarios are refused with an error naming the event and field, exit status 2."""
import json
import os
import re
import subprocess
import sys

import pytest

from scenario import ROOT, ScenarioError, load, normalise

KEY = bytes(range(32))


def _base(**over):
    sc = {"board": "sim", "start": "2026-03-02T07:55:00Z", "cards": {"alice": "04A1B2C3D4E5F6"},
          "allow": ["alice"], "events": [{"t": 10, "plug": True}, {"t": 15, "tap": "alice"}], "end": 100}
    sc.update(over)
    return sc


def test_a_good_scenario_normalises_times_cards_and_allowlist():
    world, device, secrets, board, names = normalise(_base(), KEY, "127.0.0.1:1883")
    assert world["events"] == [{"t": 10000, "plug": True}, {"t": 15000, "tap": ["04A1B2C3D4E5F6"]}]
    assert world["start_utc"] == 1772438100 and world["end_ms"] == 100000
    entries = device["local_list"]["entries"]
    assert len(entries) == 1 and "04A1B2C3D4E5F6" not in json.dumps(device).upper()
    assert device["mqtt"] == {"host": "127.0.0.1", "port": 1883}
    assert names[entries[0]["token"]] == "alice" and entries[0]["status"] == "Accepted"
    assert secrets == {"site_keys": {"1": KEY.hex()}, "site_key_current": 1}


def test_the_checkpoint_policy_goes_into_the_device_config():
    _, device, _, _, _ = normalise(_base(journal={"every_wh": 500, "min_s": 240}), KEY)
    assert device["journal"] == {"every_wh": 500, "min_s": 240}
    assert "journal" not in normalise(_base(), KEY)[1]


def test_allow_entries_carry_preferences():
    sc = _base(allow=[{"card": "alice", "max_current_a": 16, "max_kwh": "10", "group": "fleet"}, "DEADBEEF"])
    _, device, _, _, _ = normalise(sc, KEY)
    e = device["local_list"]["entries"]
    assert e[0]["max_current_a"] == 16 and e[0]["max_kwh"] == "10" and e[0]["group"] == "fleet"
    assert len(e) == 2
    with pytest.raises(ScenarioError) as err:
        normalise(_base(allow=[{"card": "alice", "colour": "red"}]), KEY)
    assert "allow[0]" in str(err.value) and "colour" in str(err.value)


@pytest.mark.parametrize("events, words", [
    ([{"t": 5, "tap": "carol"}], ["events[0]", "tap", "carol"]),
    ([{"t": 5, "plug": "yes"}], ["events[0]", "plug", "true or false"]),
    ([{"t": 500, "plug": True}], ["events[0].t", "end"]),
    ([{"t": 5, "ev_current_a": -3}], ["events[0]", "ev_current_a"]),
    ([{"t": 5, "fly": True}], ["events[0]", "unknown event", "fly"]),
    ([{"t": 5, "plug": True, "tap": "alice"}], ["events[0]", "exactly one"]),
    ([{"plug": True}], ["events[0].t"]),
])
def test_bad_events_name_the_event_and_field(events, words):
    with pytest.raises(ScenarioError) as e:
        normalise(_base(events=events), KEY)
    for w in words:
        assert w in str(e.value)


def test_bad_top_level_fields():
    for sc, word in [(_base(cards={"x": "123"}), "cards.x"), (_base(end=-1), "end"),
                     (_base(start="yesterday"), "start"), (_base(board="nope"), "board"),
                     (_base(price_per_kwh=0.3), "price_per_kwh"), (_base(colour=1), "colour"),
                     (_base(journal={"every_wh": "250"}), "journal"), (_base(journal={"often": 1}), "journal")]:
        with pytest.raises(ScenarioError) as e:
            normalise(sc, KEY)
        assert word in str(e.value)


def test_runner_exits_2_with_the_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_base(events=[{"t": 3, "tap": "carol"}])))
    r = subprocess.run([sys.executable, "tools/sim.py", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert "events[0]" in r.stderr and "carol" in r.stderr
    r = subprocess.run([sys.executable, "tools/sim.py", str(tmp_path / "missing.json")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "missing.json" in r.stderr


NIGHT = ('{"id": "night", "currency": "EUR", "elements": ['
         '{"price_components": [{"type": "ENERGY", "price": 0.20, "vat": 19, "step_size": 1}],'
         ' "restrictions": {"start_time": "22:00", "end_time": "06:00"}},'
         '{"price_components": [{"type": "ENERGY", "price": 0.4, "vat": 19, "step_size": 1}]}]}')


def _scenario_file(tmp_path, **over):
    text = json.dumps(_base(**over)).replace('"@NIGHT"', NIGHT)
    path = tmp_path / "sc.json"
    path.write_text(text)
    return path


def test_an_ocpi_tariff_inline_keeps_its_decimals_exact(tmp_path):
    path = _scenario_file(tmp_path, tariff="@NIGHT")
    _, device, _, _, _ = normalise(load(str(path)), KEY, base_dir=str(tmp_path))
    comps = [e["price_components"][0] for e in device["tariff"]["elements"]]
    assert [(c["price"], c["vat"]) for c in comps] == [("0.2", 19), ("0.4", 19)]
    assert device["tariff"]["elements"][0]["restrictions"]["start_time"] == "22:00"


def test_an_ocpi_tariff_from_a_file_relative_to_the_scenario(tmp_path):
    (tmp_path / "tariffs").mkdir()
    (tmp_path / "tariffs" / "night.json").write_text(NIGHT)
    _, device, _, _, _ = normalise(_base(tariff="tariffs/night.json"), KEY, base_dir=str(tmp_path))
    assert device["tariff"]["id"] == "night" and device["tariff"]["elements"][1]["price_components"][0]["price"] == "0.4"


@pytest.mark.parametrize("over, words", [
    ({"tariff": {"id": "x", "currency": "EUR", "elements": [{"price_components": [{"type": "COFFEE", "price": "1",
                                                                                    "step_size": 1}]}]}},
     ["tariff", "COFFEE"]),
    ({"tariff": {"id": "x", "currency": "EUR", "elements": [{"price_components": [{"type": "ENERGY", "price": 0.3,
                                                                                    "step_size": 1}]}]}},
     ["tariff", "float"]),                                      # a float from Python: its exact value is lost
    ({"tariff": "no/such/tariff.json"}, ["tariff", "cannot read", "no/such/tariff.json"]),
    ({"tariff": 30}, ["tariff", "OCPI"]),
    ({"tariff": "tariff.json", "price_per_kwh": "0.30"}, ["tariff", "price_per_kwh"]),
    ({"events": [{"t": 5, "tariff": {"id": "x"}}]}, ["events[0]", "tariff"]),
    ({"tz": "Mars/Olympus_Mons"}, ["tz", "Mars/Olympus_Mons"]),
    ({"tz": "Australia/Sydney"}, ["tz", "Australia/Sydney", "EU or US"]),
    ({"tz": {"utc_offset_min": 60, "dst": "CH"}}, ["tz", "dst"]),
    ({"tz": {"utc_offset_min": 60.5}}, ["tz", "offset"]),
    ({"tz": {"offset": 60}}, ["tz", "utc_offset_min"]),
])
def test_bad_tariffs_and_zones_are_refused_with_the_field(tmp_path, over, words):
    (tmp_path / "tariff.json").write_text(NIGHT)
    with pytest.raises(ScenarioError) as e:
        normalise(_base(**over), KEY, base_dir=str(tmp_path))
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("zone, site", [
    ("Europe/Berlin", {"utc_offset_min": 60, "dst": "EU"}),
    ("Europe/London", {"utc_offset_min": 0, "dst": "EU"}),
    ("America/New_York", {"utc_offset_min": -300, "dst": "US"}),
    ("Asia/Kolkata", {"utc_offset_min": 330, "dst": "none"}),
    ({"utc_offset_min": 120}, {"utc_offset_min": 120, "dst": "none"}),
])
def test_a_site_zone_becomes_the_firmwares_offset_and_rule(zone, site):
    assert normalise(_base(tz=zone), KEY)[1]["site"] == site
    assert "site" not in normalise(_base(), KEY)[1]


def test_tariff_events_are_versioned_in_time_order(tmp_path):
    (tmp_path / "night.json").write_text(NIGHT)
    flat = {"id": "flat", "currency": "EUR", "elements": [{"price_components": [
        {"type": "ENERGY", "price": "0.5", "step_size": 1}]}]}
    world = normalise(_base(events=[{"t": 50, "tariff": "night.json"}, {"t": 20, "tariff": flat}]), KEY,
                      base_dir=str(tmp_path))[0]
    assert world["events"][0]["t"] == 50000 and world["events"][0]["tariff"]["version"] == 2
    assert world["events"][1]["tariff"] == {"tariff": flat, "version": 1}


def test_the_operator_demo_scenario_is_valid():
    """demo/operator_evening.json, as docs/simulator.md shows it: night tariff, Berlin, a pushed tariff."""
    demo = os.path.join(ROOT, "demo")
    world, device, _, _, _ = normalise(load(os.path.join(demo, "operator_evening.json")), KEY, base_dir=demo)
    assert device["tariff"]["id"] == "night" and device["site"] == {"utc_offset_min": 60, "dst": "EU"}
    pushed = [ev["tariff"] for ev in world["events"] if "tariff" in ev]
    assert [(p["version"], p["tariff"]["id"]) for p in pushed] == [(1, "parking")]


def test_the_runners_fault_lines_carry_what_tripped_and_why(tmp_path):
    """A real overheating and a technician's clear, as tools/sim.py prints them: code, kind, the
    firmware's measured detail, and who cleared what (not bare codes or raw JSON)."""
    import sim

    sc = {"board": "sim", "start": "2026-03-02T07:00:00Z", "cards": {"alice": "04A1B2C3D4E5F6"}, "allow": ["alice"],
          "events": [{"t": 5, "plug": True}, {"t": 8, "tap": "alice"}, {"t": 10, "ev_current_a": 16},
                     {"t": 30, "temp_c": 95}, {"t": 60, "temp_c": 30}], "end": 120}
    path = tmp_path / "hot.json"
    path.write_text(json.dumps(sc))
    lines = []
    result = sim.simulate(str(path), site_key=bytes(32), out=lines.append)
    assert result.rc == 0, "\n".join(lines[-20:])
    faults = [x for x in lines if "] fault " in x]
    assert faults, "\n".join(lines)
    code, kind, detail = re.match(r"\[\+[\d:]+\] fault\s+(\S+) (\S+): (.+)", faults[0]).groups()
    assert kind == "overtemp" and "95" in detail, faults[0]
    assert not [x for x in lines if "] fault" in x and "{" in x]   # no raw JSON for fault events
