"""Revenue totals per local day and month: bounded, persistent, atomic."""
import binascii
import json
import os

from firmware.billing.revenue import Revenue
from firmware.core.timefmt import civil, days_from_civil


def _tmpdir():
    path = "/tmp/revenue_test_" + binascii.hexlify(os.urandom(6)).decode()
    os.mkdir(path)
    return path


def _rmtree(path):
    for name in os.listdir(path):
        os.remove(path + "/" + name)
    os.rmdir(path)


def test_sessions_add_up_per_day_and_month():
    d = _tmpdir()
    try:
        rev = Revenue(d + "/revenue.json")
        rev.add((2026, 3, 2), 3650, 110, 132, "EUR")
        rev.add((2026, 3, 2), 3096, 92, 111, "EUR")
        rev.add((2026, 3, 3), 1000, 30, 36, "EUR")
        snap = rev.snapshot((2026, 3, 2))
        assert snap["currency"] == "EUR"
        assert snap["day"] == {"date": "2026-03-02", "currency": "EUR", "sessions": 2, "energy_wh": 6746,
                               "excl_vat_minor": 202, "incl_vat_minor": 243}
        assert snap["month"]["month"] == "2026-03" and snap["month"]["sessions"] == 3
        assert snap["month"]["incl_vat_minor"] == 279
        assert rev.snapshot()["day"]["date"] == "2026-03-03"          # default: the latest session
        assert rev.snapshot((2026, 4, 1))["day"]["sessions"] == 0     # a day without sessions
    finally:
        _rmtree(d)


def test_totals_survive_a_restart_and_the_file_is_plain_json():
    d = _tmpdir()
    try:
        Revenue(d + "/revenue.json").add((2026, 3, 2), 3650, 110, 132)
        rev = Revenue(d + "/revenue.json")
        assert rev.load_error is None and rev.snapshot()["day"]["energy_wh"] == 3650
        with open(d + "/revenue.json") as f:
            assert json.load(f)["days"] == {"2026-03-02/EUR": [1, 3650, 110, 132]}
        assert not ("revenue.json.tmp" in os.listdir(d))              # renamed into place
    finally:
        _rmtree(d)


def test_history_is_bounded_to_31_days_and_13_months():
    d = _tmpdir()
    try:
        rev = Revenue(d + "/revenue.json")
        first = days_from_civil(2025, 1, 1)
        for i in range(400):                     # one session a day for 400 days from 2025-01-01
            rev.add(civil(first + i), 1000, 30, 36)
        hist = rev.history()
        assert len(hist["days"]) == 31 and len(hist["months"]) == 13
        assert hist["days"][-1]["date"] == "2026-02-04" and hist["days"][0]["date"] == "2026-01-05"
        assert hist["months"][0]["month"] == "2025-02" and hist["months"][-1]["month"] == "2026-02"
        assert hist["months"][-1]["sessions"] == 4
    finally:
        _rmtree(d)


def test_currencies_are_never_mixed():
    d = _tmpdir()
    try:
        rev = Revenue(d + "/revenue.json")
        rev.add((2026, 3, 2), 1000, 30, 36, "EUR")
        rev.add((2026, 3, 2), 1000, 4000, 4400, "JPY")
        assert rev.snapshot(currency="EUR")["day"]["excl_vat_minor"] == 30
        assert rev.snapshot()["currency"] == "JPY" and rev.snapshot()["day"]["excl_vat_minor"] == 4000
    finally:
        _rmtree(d)


def test_a_damaged_file_is_kept_aside_and_counting_restarts():
    d = _tmpdir()
    try:
        with open(d + "/revenue.json", "w") as f:
            f.write('{"days": {"2026-03-02/EUR": [1, 2]')
        rev = Revenue(d + "/revenue.json")
        assert rev.load_error and "revenue.json.bad" in rev.load_error
        assert "revenue.json.bad" in os.listdir(d)
        assert rev.snapshot()["day"] is None
        rev.add((2026, 3, 2), 1, 1, 1)
        assert Revenue(d + "/revenue.json").snapshot()["day"]["sessions"] == 1
    finally:
        _rmtree(d)
