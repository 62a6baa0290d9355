"""tools/price.py prices CDRs with the firmware's engine, byte-identical on CPython and MicroPython."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from scenario import ROOT

DATA = os.path.join(ROOT, "tests", "data", "tariffs")
CEST = ["--tz-offset", "60", "--dst", "EU"]


def _micropython():
    venv = os.path.join(ROOT, ".venv", "bin", "micropython")
    return venv if os.path.exists(venv) else (shutil.which("micropython") or "micropython")


def _run(interpreter, args):
    env = dict(os.environ)
    if interpreter == "micropython":
        cmd = [_micropython()]
        env["MICROPYPATH"] = ".frozen:" + ROOT
    else:
        cmd = [sys.executable]
    return subprocess.run(cmd + [os.path.join(ROOT, "tools", "price.py")] + args, cwd=ROOT, env=env,
                          capture_output=True, timeout=60)


def _files(tariff, cdr):
    return [os.path.join(DATA, tariff + ".tariff.json"), os.path.join(DATA, cdr + ".cdr.json")]


# (tariff, cdr, options, total_cost excl/incl as printed, other fields) — worked by hand:
CASES = [
    # 20 kWh * 0.25 = 5.00 ; +10 % = 5.50
    ("spec_simple_kwh", "spec_simple_kwh", [], ("5.00", "5.50"), {"total_energy": 20, "total_time": 2}),
    # start fee 0.50 (+20 %) + 5.00 (+10 %)
    ("spec_start_fee", "spec_start_fee", [], ("5.50", "6.10"), {"total_fixed_cost": ("0.50", "0.60")}),
    # 1.5 kWh = 0.375 / 0.4125 -> min_price 0.50 / 0.55
    ("spec_min_price", "spec_min_price", [], ("0.50", "0.55"), {"total_energy_cost": ("0.38", "0.41")}),
    # 0.50 + 12.50 = 13.00 / 14.35 -> max_price 10.00 / 11.00
    ("spec_max_price", "spec_max_price", [], ("10.00", "11.00"), {}),
    # + 40 min parking billed as 45 min at 2.00/h = 1.50 / 1.80
    ("spec_parking_start", "spec_parking_start", [], ("7.00", "7.90"),
     {"total_parking_cost": ("1.50", "1.80"), "total_parking_time": 0.666667}),
    # 2.5 h * 3.00 + 45 min * 5.00/h = 7.50 + 3.75 ; 8.25 + 4.50
    ("spec_time_parking", "spec_time_parking", [], ("11.25", "12.75"), {"total_time": 3.2}),
    # Monday 09:30 CEST, 147 min < 32 A at 1.00/h (not stepped: parking follows) + 45 min at 5.00/h
    ("spec_complex", "spec_complex_monday", CEST, ("8.70", "9.94"), {"total_time_cost": ("2.45", "2.94")}),
    # Saturday 13:30 CEST, 114 min >= 32 A weekend 1.25/h + 75 min at 6.00/h: 2.50 + 2.375 + 7.50
    ("spec_complex", "spec_complex_saturday", CEST, ("12.38", "13.98"), {"total_parking_cost": ("7.50", "8.25")}),
    # 1 kWh @ 6 kW * 0.20 + 40 kWh @ 48 kW * 0.50 + 0.5 kWh @ 4 kW * 0.20 = 20.30 ; +20 % = 24.36
    ("spec_max_power", "spec_max_power", [], ("20.30", "24.36"), {"total_energy": 41.5}),
    # 19 kWh * 0.20 + 1.75 h parking after the free hour * 2.00 = 3.80 + 3.50 ; no VAT given
    ("spec_first_hour_free", "spec_first_hour_free", [], ("7.30", "7.30"), {"total_parking_time": 2.75}),
    # the CDR example: 7103 s of TIME billed per 300 s = 2 h * 2.00 = 4.00 ; 4.40
    ("spec_cdr_example", "spec_cdr_example", [], ("4.00", "4.40"), {"total_time": 1.973056}),
    # 16:35, 35 min: 25 min at 1.20 + 20 min (step 15 min of the last element) at 2.40 = 0.50 + 0.80
    ("spec_step_switch", "spec_step_switch", [], ("1.30", "1.30"), {}),
    # DST night: 22.08 kWh * 0.40 + 38.64 kWh * 0.20 = 16.56 ; 19.7064 -> 19.71
    ("night_dst", "night_dst", CEST, ("16.56", "19.71"), {"total_energy": 60.72, "total_time": 11}),
    # without DST the 04:00Z period starts at 05:00 local, still night: 11.04 * 0.40 + 49.68 * 0.20
    # = 4.416 + 9.936 = 14.352 ; 17.07888
    ("night_dst", "night_dst", ["--tz-offset", "60"], ("14.35", "17.08"), {}),
]


@pytest.mark.parametrize("tariff,cdr,opts,total,more", CASES, ids=[c[1] + "".join(c[2][1:2]) for c in CASES])
def test_prices_match_the_hand_computed_totals_on_both_interpreters(tariff, cdr, opts, total, more):
    args = _files(tariff, cdr) + opts
    cpy, mpy = _run("python", args), _run("micropython", args)
    assert cpy.returncode == 0, cpy.stderr.decode()
    assert mpy.returncode == 0, mpy.stderr.decode()
    assert cpy.stdout == mpy.stdout                      # byte-identical
    out = json.loads(cpy.stdout, parse_float=str)
    assert list(out) == ["currency", "total_cost", "total_fixed_cost", "total_energy_cost", "total_time_cost",
                         "total_parking_cost", "total_energy", "total_time", "total_parking_time"]
    assert (out["total_cost"]["excl_vat"], out["total_cost"]["incl_vat"]) == total
    for key, want in more.items():
        got = out[key]
        if isinstance(want, tuple):
            assert (got["excl_vat"], got["incl_vat"]) == want, key
        else:
            assert got == str(want) or got == want, (key, got)


def test_output_is_exact_decimal_json():
    out = _run("micropython", _files("spec_start_fee", "spec_start_fee")).stdout.decode()
    assert out == ('{"currency": "EUR", "total_cost": {"excl_vat": 5.50, "incl_vat": 6.10}, '
                   '"total_fixed_cost": {"excl_vat": 0.50, "incl_vat": 0.60}, '
                   '"total_energy_cost": {"excl_vat": 5.00, "incl_vat": 5.50}, '
                   '"total_time_cost": {"excl_vat": 0.00, "incl_vat": 0.00}, '
                   '"total_parking_cost": {"excl_vat": 0.00, "incl_vat": 0.00}, '
                   '"total_energy": 20, "total_time": 2, "total_parking_time": 0}\n')


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(p)


@pytest.mark.parametrize("interpreter", ["python", "micropython"])
def test_invalid_input_exits_2_naming_the_field(tmp_path, interpreter):
    tariff = json.load(open(os.path.join(DATA, "spec_complex.tariff.json")))
    tariff["elements"][4]["restrictions"]["start_time"] = "25:00"
    cdr = os.path.join(DATA, "spec_complex_monday.cdr.json")
    r = _run(interpreter, [_write(tmp_path, "t.json", tariff), cdr])
    assert r.returncode == 2 and r.stdout == b""
    assert 'tariff.elements[4].restrictions.start_time: "25:00" is not HH:MM' in r.stderr.decode()

    good = os.path.join(DATA, "spec_start_fee.tariff.json")
    bad_cdr = json.load(open(os.path.join(DATA, "spec_parking_start.cdr.json")))
    bad_cdr["charging_periods"][1]["dimensions"][0]["volume"] = "lots"
    r = _run(interpreter, [good, _write(tmp_path, "c.json", bad_cdr)])
    assert r.returncode == 2 and "cdr.charging_periods[1].dimensions[0].volume" in r.stderr.decode()

    r = _run(interpreter, [good, _write(tmp_path, "broken.json", "{\"start_date_time\": ")])
    assert r.returncode == 2 and "not JSON" in r.stderr.decode()
    r = _run(interpreter, [good, str(tmp_path / "missing.json")])
    assert r.returncode == 2 and "cannot read" in r.stderr.decode()
    r = _run(interpreter, [good, cdr, "--dst", "XX"])
    assert r.returncode == 2 and "--dst" in r.stderr.decode()


def test_help_shows_an_example():
    for interpreter in ("python", "micropython"):
        r = _run(interpreter, ["--help"])
        assert r.returncode == 0 and b"example:" in r.stdout and b"--tz-offset" in r.stdout


FUZZ = r'''
import sys
if sys.implementation.name != "micropython":
    sys.path[:0] = [sys.argv[1] + "/tools/compat", sys.argv[1]]
from firmware.billing.localtime import LocalTime
from firmware.billing.periods import PeriodBuilder
from firmware.billing.tariff import Tariff

x = [12345]
def rnd(n):
    x[0] = (x[0] * 1103515245 + 12345) % 2147483648
    return (x[0] >> 8) % n

def price(lo, hi, places):
    v = lo + rnd(hi - lo)
    return "%d.%0*d" % (v // 10 ** places, places, v % 10 ** places)

for case in range(60):
    els = [{"price_components": [{"type": "FLAT", "price": price(0, 300, 2), "vat": price(0, 2500, 2)}]}]
    for kind in ("ENERGY", "TIME", "PARKING_TIME"):
        for k in range(1 + rnd(3)):
            r = {}
            pick = rnd(6)
            if pick == 0:
                r = {"start_time": "%02d:%02d" % (rnd(24), rnd(4) * 15), "end_time": "%02d:00" % rnd(24)}
            elif pick == 1:
                r = {"max_power": price(1000, 22000, 3)}
            elif pick == 2:
                r = {"min_kwh": price(0, 30000, 3)}
            elif pick == 3:
                r = {"max_duration": rnd(20000)}
            elif pick == 4:
                r = {"day_of_week": ["MONDAY", "SATURDAY", "SUNDAY"][rnd(3):]}
            el = {"price_components": [{"type": kind, "price": price(0, 900000, 6), "vat": price(0, 2500, 2),
                                        "step_size": (1, 60, 300, 500, 900)[rnd(5)]}]}
            if r:
                el["restrictions"] = r
            els.append(el)
    t = Tariff({"id": "f%d" % case, "currency": "EUR", "elements": els,
                "max_price": {"excl_vat": price(2000, 9000, 2), "incl_vat": price(9000, 12000, 2)}})
    tz = LocalTime(60, "EU")
    start = 1774000000 + rnd(40000000)
    pb = PeriodBuilder(t, tz, start, dwell_s=30)
    wh = 0
    for s in range(10, 20000 + rnd(30000), 10):
        w = (0, 2300, 7400, 11000, 22000)[(s // (600 + rnd(3))) % 5]
        wh += w * 10 // 3600
        pb.update(s, wh, w * 1000 // 690, w, w > 0)
    periods = pb.finish(start + s + rnd(3600), wh)
    c = t.price_cdr(periods, start, start + s + 3600, tz)
    parts = [str(c[k][m]) for k in ("energy", "time", "parking", "fixed")
             for m in ("excl_vat_minor", "incl_vat_minor")]
    dims = [d["type"] + "=" + d["volume"] for p in periods for d in p["dimensions"]]
    print(case, len(periods), c["total_excl_vat_minor"], c["total_incl_vat_minor"], " ".join(parts),
          c["price_limit"], " ".join(p["start_date_time"] for p in periods), " ".join(dims))
'''


def test_engine_and_period_builder_agree_across_interpreters(tmp_path):
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    cpy = subprocess.run([sys.executable, str(script), ROOT], capture_output=True, text=True, timeout=300)
    env = dict(os.environ, MICROPYPATH=".frozen:" + ROOT)
    mpy = subprocess.run([_micropython(), str(script), ROOT], capture_output=True, text=True, env=env, timeout=300)
    assert cpy.returncode == 0, cpy.stderr
    assert mpy.returncode == 0, mpy.stderr
    assert len(cpy.stdout.splitlines()) == 60
    assert cpy.stdout == mpy.stdout
