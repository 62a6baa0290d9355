"""Reports over a store filled with known sessions: figures equal the sums, bad data is named."""
import base64
import csv
import datetime
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from firmware.billing.tariff import Tariff
from report import build_report
from store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUT = os.environ.get("TEST_OUTPUT_DIR", os.path.join(ROOT, "out", "test-output"))
DRIVERS = ["%032x" % (0x1111 * (i + 1)) for i in range(4)]
STATIONS = ("cp-1", "cp-2", "cp-3")
TARIFF = Tariff({"id": "flat", "currency": "EUR", "elements": [{"price_components": [
    {"type": "ENERGY", "price": "0.30", "vat": "20", "step_size": 1}]}]})
BASE = 1772323200  # 2026-03-01T00:00:00Z, a Sunday


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def known_sessions(n=60, seed=42):
    """Sessions as the test knows them (the expected figures are computed from these)."""
    rng = random.Random(seed)
    out = []
    tx = {s: 0 for s in STATIONS}
    for _ in range(n):
        st = rng.choice(STATIONS)
        tx[st] += 1
        start = BASE + rng.randrange(0, 50 * 86400)
        dur = rng.randrange(600, 5 * 3600)
        energy = rng.randrange(100, 30000)
        parking = rng.choice([0, 0, 600, 1800])
        out.append({"station": st, "tx": tx[st], "token": rng.choice(DRIVERS), "start": start, "end": start + dur,
                    "energy": energy, "cost": TARIFF.price(energy), "parking": parking,
                    "offline": rng.random() < 0.2})
    return out


def records(s):
    """The firmware's started and ended records for one known session (docs/mqtt.md)."""
    common = {"tx_id": s["tx"], "token": s["token"], "key": 1, "auth": "local_list", "tariff_id": "flat",
              "meter_start_wh": 10000}
    if s["offline"]:
        common["offline"] = True
    started = dict(common, msg_id="%d-0" % s["tx"], seq=0, event="started", ts=iso(s["start"]))
    cost = dict(s["cost"])
    if s["parking"]:
        cost["parking"] = {"excl_vat_minor": s["parking"] // 60, "incl_vat_minor": s["parking"] // 50}
    ended = dict(common, msg_id="%d-1" % s["tx"], seq=1, event="ended", ts=iso(s["end"]), started_at=iso(s["start"]),
                 ended_at=iso(s["end"]), meter_stop_wh=10000 + s["energy"], energy_wh=s["energy"],
                 stop_reason=s.get("stop_reason", "Local"), cost=cost)
    ended.update(s.get("ended_extra", {}))
    if s["parking"]:
        ended["parking_s"] = s["parking"]
    return started, ended


def fill(url, sessions, open_ones=2):
    with Store(url) as st:
        for s in sessions:
            for rec in records(s):
                st.add_session_event(s["station"], rec, s["end"])
        for i in range(open_ones):
            st.add_session_event("cp-1", {"msg_id": "%d-0" % (900 + i), "tx_id": 900 + i, "seq": 0, "event": "started",
                                          "ts": iso(BASE + 40 * 86400), "token": DRIVERS[0]}, 0)
        faults = [("cp-1", "f-1", "raised", "ReaderFailure", 2, False),
                  ("cp-1", "f-2", "raised", "ReaderFailure", 3, False),
                  ("cp-2", "f-1", "raised", "ReaderFailure", 4, False),
                  ("cp-2", "f-2", "raised", "OverCurrentFailure", 5, True),
                  ("cp-2", "f-3", "cleared", "OverCurrentFailure", 6, True),
                  ("cp-3", "f-1", "raised", "GroundFailure", 7, True)]
        for dev, mid, ev, code, day, latched in faults:
            st.add_fault(dev, {"msg_id": mid, "event": ev, "code": code, "ts": iso(BASE + day * 86400),
                               "latched": latched, "tx_id": 1}, 0)
        st.add_stats("cp-1", {"ts": iso(BASE + 86400), "currency": "EUR", "contactor_cycles": 100}, 0)
        st.add_stats("cp-1", {"ts": iso(BASE + 11 * 86400), "currency": "EUR", "contactor_cycles": 300}, 0)
        st.add_stats("cp-2", {"ts": iso(BASE + 86400), "currency": "EUR", "contactor_cycles": 42}, 0)
        s0 = sessions[0]
        st.add_feedback(s0["station"], {"msg_id": "fb-1", "ts": iso(s0["end"]), "tx_id": s0["tx"],
                                        "token": s0["token"], "source": "button", "text": None}, 0)
        st.add_feedback("cp-3", {"msg_id": "fb-2", "ts": iso(BASE + 3 * 86400), "tx_id": None, "token": None,
                                 "source": "button", "text": "screen dark"}, 0)


@pytest.fixture(scope="module")
def sqlite_report(tmp_path_factory):
    """One filled SQLite store and its report, shared by the read-only checks."""
    d = tmp_path_factory.mktemp("report")
    sessions = known_sessions()
    fill(str(d / "store.sqlite"), sessions)
    lines = []
    f = build_report(str(d / "store.sqlite"), str(d / "out"), progress_every=25, out=lines.append)
    return sessions, f, lines, d


def quiet(line):
    pass


def _sum(sessions, key):
    return sum(key(s) for s in sessions)


def test_totals_equal_the_sum_of_the_sessions(db_url, tmp_path):
    sessions = known_sessions()
    fill(db_url, sessions)
    f = build_report(db_url, str(tmp_path / "out"), out=quiet)
    assert f["sessions"] == 60 and f["open_sessions"] == 2
    assert f["energy_wh"] == _sum(sessions, lambda s: s["energy"])
    assert f["revenue"]["EUR"]["excl_minor"] == _sum(sessions, lambda s: s["cost"]["total_excl_vat_minor"])
    assert f["revenue"]["EUR"]["incl_minor"] == _sum(sessions, lambda s: s["cost"]["total_incl_vat_minor"])
    assert f["revenue"]["EUR"]["parking_incl_minor"] == _sum(sessions, lambda s: s["parking"] // 50)
    for st in STATIONS:
        mine = [s for s in sessions if s["station"] == st]
        got = f["stations"][st]
        assert got["sessions"] == len(mine)
        assert got["energy_wh"] == _sum(mine, lambda s: s["energy"])
        assert got["parking_s"] == _sum(mine, lambda s: s["parking"])
        assert got["revenue"]["EUR"]["incl_minor"] == _sum(mine, lambda s: s["cost"]["total_incl_vat_minor"])
    assert f["skipped"] == []


def test_revenue_per_station_and_period_adds_up(sqlite_report):
    sessions, f, _, _ = sqlite_report
    def week(t):
        return "%04d-W%02d" % datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isocalendar()[:2]

    for kind, key in (("day", lambda t: iso(t)[:10]), ("month", lambda t: iso(t)[:7]), ("week", week)):
        expect = {}
        for s in sessions:
            k = (key(s["start"]), s["station"])
            e = expect.setdefault(k, [0, 0, 0])
            e[0] += 1
            e[1] += s["energy"]
            e[2] += s["cost"]["total_excl_vat_minor"]
        got = {(r["period"], r["station"]): [r["sessions"], r["energy_wh"], r["excl_minor"]]
               for r in f["periods"][kind]}
        assert got == expect, kind
    march = [r for r in f["periods"]["month"] if r["period"] == "2026-03" and r["station"] == "cp-1"][0]
    # average price incl. VAT per kWh: 0.30 + 20 % = 0.36 EUR, up to the per-session rounding
    assert march["avg_incl_per_kwh"].startswith("0.36")


def test_driver_history_rows(sqlite_report):
    sessions, f, _, d = sqlite_report
    for token in DRIVERS:
        mine = sorted((s for s in sessions if s["token"] == token), key=lambda s: (s["start"], s["station"]))
        rows = f["drivers"][token]
        got = [(r["station"], r["tx_id"], r["energy_wh"], r["duration_s"], r["incl_minor"]) for r in rows]
        assert got == [(s["station"], s["tx"], s["energy"], s["end"] - s["start"], s["cost"]["total_incl_vat_minor"])
                       for s in mine]
        assert rows[0]["date"] == iso(mine[0]["start"])[:10] and rows[0]["start"] == iso(mine[0]["start"])[11:16]
    csv_lines = (d / "out" / "drivers.csv").read_text().splitlines()
    assert len(csv_lines) == 61 and csv_lines[0].startswith("token,station,tx_id,date,start,end,duration_s")
    text = (d / "out" / "drivers.txt").read_text()
    assert "Driver %s: " % DRIVERS[0] in text and "cost incl. VAT" in text


def test_utilization_counts(sqlite_report):
    sessions, f, _, _ = sqlite_report
    assert sum(map(sum, f["occupancy_s"])) == _sum(sessions, lambda s: s["end"] - s["start"])
    assert sum(d["sessions"] for d in f["daily"].values()) == 60
    assert sum(d["energy_wh"] for d in f["daily"].values()) == f["energy_wh"]
    assert all(0 <= v <= 1000 for row in f["occupancy_permille"] for v in row)


def test_occupancy_cells_and_local_days_follow_the_time_zone(tmp_path):
    monday = BASE + 86400 + 10 * 3600 + 1800          # 2026-03-02 10:30 UTC
    late = BASE + 86400 + 23 * 3600 + 1800             # 2026-03-02 23:30 UTC = 03-03 00:30 in Berlin
    sessions = [{"station": "cp-1", "tx": 1, "token": DRIVERS[0], "start": monday, "end": monday + 6300,
                 "energy": 1000, "cost": TARIFF.price(1000), "parking": 0, "offline": False},
                {"station": "cp-1", "tx": 2, "token": DRIVERS[0], "start": late, "end": late + 600,
                 "energy": 10, "cost": TARIFF.price(10), "parking": 0, "offline": False}]
    url = str(tmp_path / "s.sqlite")
    fill(url, sessions, open_ones=0)
    utc = build_report(url, str(tmp_path / "utc"), out=quiet)
    assert utc["occupancy_s"][0][10:13] == [1800, 3600, 900]
    assert utc["occupancy_s"][0][23] == 600
    assert sorted(utc["daily"]) == ["2026-03-02"]
    berlin = build_report(url, str(tmp_path / "berlin"), tz="Europe/Berlin", out=quiet)
    assert berlin["occupancy_s"][0][11:14] == [1800, 3600, 900]
    assert berlin["occupancy_s"][1][0] == 600          # Tuesday, just after midnight
    assert sorted(berlin["daily"]) == ["2026-03-02", "2026-03-03"]


def test_date_range_and_driver_filters(sqlite_report, tmp_path):
    sessions, _, _, d = sqlite_report
    url = str(d / "store.sqlite")
    f = build_report(url, str(tmp_path / "range"), date_from="2026-03-10", date_to="2026-03-20", out=quiet)
    mine = [s for s in sessions if "2026-03-10" <= iso(s["start"])[:10] <= "2026-03-20"]
    assert f["sessions"] == len(mine) and f["energy_wh"] == _sum(mine, lambda s: s["energy"])
    g = build_report(url, str(tmp_path / "driver"), driver=DRIVERS[1].upper(), out=quiet)
    mine = [s for s in sessions if s["token"] == DRIVERS[1]]
    assert list(g["drivers"]) == [DRIVERS[1]] and g["sessions"] == len(mine)
    assert g["revenue"]["EUR"]["incl_minor"] == _sum(mine, lambda s: s["cost"]["total_incl_vat_minor"])
    assert all(x["token"] == DRIVERS[1] for x in g["feedback"])
    with pytest.raises(ValueError, match="--from must be a date"):
        build_report(url, str(tmp_path / "bad"), date_from="10.03.2026", out=quiet)
    with pytest.raises(ValueError, match="not a known time zone"):
        build_report(url, str(tmp_path / "bad"), tz="Mars/Olympus", out=quiet)


def test_maintenance_faults_lockouts_readers_and_contactor_wear(sqlite_report, tmp_path):
    _, f, _, d = sqlite_report
    m = f["maintenance"]
    assert m["faults"] == {"ReaderFailure": {"cp-1": 2, "cp-2": 1}, "OverCurrentFailure": {"cp-2": 1},
                           "GroundFailure": {"cp-3": 1}}
    assert m["reader_failures"] == {"cp-1": 2, "cp-2": 1}
    assert [(x["station"], x["code"], x["cleared"]) for x in m["latched"]] == [
        ("cp-2", "OverCurrentFailure", iso(BASE + 6 * 86400)), ("cp-3", "GroundFailure", None)]
    c1 = m["contactors"]["cp-1"]
    assert (c1["cycles"], c1["wear_permille"], c1["remaining"], c1["cycles_per_day"], c1["days_left"]) == \
        (300, 3, 99700, 20, 4985)
    assert m["contactors"]["cp-2"]["cycles_per_day"] is None     # one stats message: no rate yet
    short = build_report(str(d / "store.sqlite"), str(tmp_path / "life"), contactor_life=1000, out=quiet)
    assert short["maintenance"]["contactors"]["cp-1"]["wear_permille"] == 300
    assert m["gaps"] == {"flagged": 0, "closed": 0}


def test_feedback_is_listed_with_station_time_and_session(sqlite_report):
    sessions, f, _, d = sqlite_report
    s0 = sessions[0]
    fb = {x["msg_id"]: x for x in f["feedback"]}
    assert fb["fb-1"]["station"] == s0["station"] and fb["fb-1"]["tx_id"] == s0["tx"]
    assert fb["fb-1"]["session_start"] == iso(s0["start"])[:16].replace("T", " ")
    assert fb["fb-2"]["text"] == "screen dark" and fb["fb-2"]["session_start"] is None
    assert "screen dark" in (d / "out" / "report.html").read_text()


def test_progress_lines_for_long_runs(sqlite_report):
    _, _, lines, _ = sqlite_report
    assert lines == ["report: 25 sessions read", "report: 50 sessions read", "report: 62 sessions read in all"]


def test_empty_store_renders(tmp_path):
    url = str(tmp_path / "empty.sqlite")
    Store(url).close()
    f = build_report(url, str(tmp_path / "out"), out=quiet)
    assert f["sessions"] == 0 and f["energy_wh"] == 0 and f["revenue"] == {} and f["skipped"] == []
    page = (tmp_path / "out" / "report.html").read_text()
    assert "0 sessions" in page and "Nothing skipped" in page
    for name in ("occupancy.png", "daily.png", "revenue.png", "drivers.csv", "revenue_month.csv"):
        assert os.path.getsize(f["files"][name]) > 0
    with pytest.raises(FileNotFoundError):
        build_report(str(tmp_path / "missing.sqlite"), str(tmp_path / "out2"), out=quiet)


def test_partially_corrupt_store_renders_and_says_what_it_skipped(db_url, tmp_path):
    sessions = known_sessions(8, seed=3)
    fill(db_url, sessions, open_ones=0)
    broken, no_energy = sessions[0], sessions[1]
    with Store(db_url) as st:
        st.execute("UPDATE sessions SET record = ? WHERE device = ? AND tx_id = ?",
                   ("{broken", broken["station"], broken["tx"]))
        st.execute("UPDATE sessions SET energy_wh = NULL WHERE device = ? AND tx_id = ?",
                   (no_energy["station"], no_energy["tx"]))
        st.execute("UPDATE faults SET record = ? WHERE msg_id = ?", ("not json", "f-2"))
        st.add_session_event("cp-9", {"msg_id": "1-1", "tx_id": 1, "seq": 1, "event": "ended",
                                      "ts": iso(BASE + 3600), "ended_at": iso(BASE + 3600), "energy_wh": 50}, 0)
        st.commit()
    f = build_report(db_url, str(tmp_path / "out"), out=quiet)
    kept = [s for s in sessions if s is not no_energy]
    assert f["sessions"] == 7 and f["energy_wh"] == _sum(kept, lambda s: s["energy"])
    skipped = "\n".join(f["skipped"])
    assert "session %s tx %d: record JSON unreadable" % (broken["station"], broken["tx"]) in skipped
    assert "session %s tx %d: skipped, missing energy_wh" % (no_energy["station"], no_energy["tx"]) in skipped
    assert "session cp-9 tx 1: skipped, missing started_s, currency" in skipped
    assert "fault cp-1 f-2: record JSON unreadable" in skipped
    page = (tmp_path / "out" / "report.html").read_text()
    assert "records were skipped or used only in part" in page and "missing energy_wh" in page
    assert "missing energy_wh" in (tmp_path / "out" / "skipped.txt").read_text()


def test_a_reinitialised_charger_s_second_life_is_counted_apart_and_listed(tmp_path):
    """State and journal lost: tx 1 again in a new data epoch, another session in the totals."""
    url = str(tmp_path / "store.sqlite")
    first, second = known_sessions(2, seed=5)
    second.update(station=first["station"], tx=1, start=first["end"] + 3600, end=first["end"] + 7200)
    with Store(url) as st:
        for s, ep in ((first, 0), (second, 77)):
            for rec in records(s):
                st.add_session_event(s["station"], dict(rec, ep=ep) if ep else rec, s["end"])
            st.note_epoch(s["station"], ep, s["end"])
        st.add_feedback(second["station"], {"msg_id": "fb-1", "ep": 77, "ts": iso(second["end"]), "tx_id": 1,
                                            "source": "button"}, 0)
    f = build_report(url, str(tmp_path / "out"), out=quiet)
    assert f["sessions"] == 2 and f["energy_wh"] == first["energy"] + second["energy"]   # on main: one, overwritten
    assert [(x["station"], x["ep"], x["previous"]) for x in f["maintenance"]["reinitialised"]] == \
        [(first["station"], 77, 0)]
    assert [x["session_start"] for x in f["feedback"]] == [iso(second["start"])[:16].replace("T", " ")]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Chargers re-initialised" in page


def test_html_is_self_contained(sqlite_report):
    _, f, _, _ = sqlite_report
    page = open(f["files"]["report.html"], encoding="utf-8").read()
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:)", page), "only data: URIs"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_renders_in_headless_chromium(sqlite_report):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the HTML render check is skipped")
    _, f, _, _ = sqlite_report
    os.makedirs(OUTPUT, exist_ok=True)
    shot = os.path.join(OUTPUT, "report_screenshot.png")
    if os.path.exists(shot):
        os.remove(shot)
    profile = tempfile.mkdtemp(prefix="cp-chromium-")
    try:
        r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            "--user-data-dir=" + profile, "--hide-scrollbars", "--window-size=1200,2400",
                            "--enable-logging=stderr", "--v=0", "--screenshot=" + shot,
                            "file://" + os.path.abspath(f["files"]["report.html"])],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, text=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert r.returncode == 0, r.stdout[-2000:]
    problems = [line for line in r.stdout.splitlines()
                if "CONSOLE" in line or "Failed to load resource" in line or "Uncaught" in line]
    assert problems == []
    from PIL import Image
    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the page shows tables and plots, not a blank sheet"


def test_command_line(sqlite_report, tmp_path):
    _, _, _, d = sqlite_report
    tool = os.path.join(ROOT, "tools", "report.py")
    r = subprocess.run([sys.executable, tool, "--db", str(d / "store.sqlite"), "--out", str(tmp_path / "cli"),
                        "--from", "2026-03-01", "--to", "2026-04-30"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    assert re.search(r"report: 60 sessions, [0-9.]+ kWh, EUR [0-9.]+ incl. VAT -> .*report.html", r.stdout)
    r = subprocess.run([sys.executable, tool, "--db", str(tmp_path / "nothing.sqlite"), "--out", str(tmp_path / "x")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 2 and "no store at" in r.stdout
    r = subprocess.run([sys.executable, tool, "--help"], stdout=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0 and "examples:" in r.stdout and "--contactor-life" in r.stdout
    figures = json.loads(json.dumps(build_report(str(d / "store.sqlite"), str(tmp_path / "j"), out=quiet)))
    assert figures["sessions"] == 60, "the figures are plain JSON-able data"


# --- what an operator found missing (issue 14, item 6) --------------------------------------

from firmware.billing.localtime import LocalTime  # noqa: E402
from reportlib import charts  # noqa: E402
from reportlib.sitetime import site_zone, tariff_clock  # noqa: E402

DAY = 86400
MON = BASE + DAY                                         # 2026-03-02, a Monday (00:00 UTC)
CET = LocalTime(60, "EU")
UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?Z")


def one(station, tx, start, dur=3600, energy=5000, token=None, **extra):
    """One known session (see known_sessions) with optional ended-record fields in `ended_extra`."""
    s = {"station": station, "tx": tx, "token": token or DRIVERS[0], "start": start, "end": start + dur,
         "energy": energy, "cost": TARIFF.price(energy), "parking": 0, "offline": False}
    s.update(extra)
    return s


def store_with(tmp_path, sessions, name="s.sqlite"):
    url = str(tmp_path / name)
    fill(url, sessions, open_ones=0)
    return url


def test_one_day_report_plots_hours_with_whole_session_ticks(tmp_path):
    url = store_with(tmp_path, [one("cp-1", 1, MON + 8 * 3600), one("cp-1", 2, MON + 9 * 3600 + 600),
                                one("cp-2", 1, MON + 17 * 3600, energy=900)])
    f = build_report(url, str(tmp_path / "day"), date_from="2026-03-02", date_to="2026-03-02", out=quiet)
    tl = f["timeline"]
    assert tl["unit"] == "hour" and tl["bins"] == ["%02d" % h for h in range(24)]
    assert tl["stations"]["cp-1"]["sessions"][8:10] == [1, 1] and sum(tl["stations"]["cp-1"]["sessions"]) == 2
    assert tl["stations"]["cp-2"]["energy_wh"][17] == 900 and sum(tl["stations"]["cp-2"]["energy_wh"]) == 900
    fig = charts.timeline_figure(tl, "UTC")
    try:
        panels = [ax for ax in fig.axes if ax.get_ylabel() == "sessions"]
        assert len(panels) == 2, "one panel per station"
        for ax in panels:
            ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
            assert ticks and all(t == int(t) for t in ticks), "whole sessions only: %r" % ticks
        labels = [t.get_text() for t in panels[-1].get_xticklabels()]
        assert labels[:3] == ["00:00", "02:00", "04:00"] and len(labels) == 12
        assert "hour of 2026-03-02" in panels[-1].get_xlabel()
    finally:
        charts.plt.close(fig)


def test_week_month_and_longer_reports_get_day_and_week_axes(tmp_path):
    url = store_with(tmp_path, [one("cp-1", 1, MON + 3600), one("cp-1", 2, MON + 40 * DAY)])
    week = build_report(url, str(tmp_path / "w"), date_from="2026-03-02", date_to="2026-03-08", out=quiet)
    assert week["timeline"]["unit"] == "day" and len(week["timeline"]["bins"]) == 7
    assert charts.ticks("day", week["timeline"]["bins"])[1] == ["Mon 02", "Tue 03", "Wed 04", "Thu 05", "Fri 06",
                                                                "Sat 07", "Sun 08"]
    month = build_report(url, str(tmp_path / "m"), date_from="2026-03-01", date_to="2026-03-31", out=quiet)
    assert month["timeline"]["unit"] == "day" and len(month["timeline"]["bins"]) == 31
    assert charts.ticks("day", month["timeline"]["bins"])[1] == ["02 Mar", "09 Mar", "16 Mar", "23 Mar", "30 Mar"]
    half_year = build_report(url, str(tmp_path / "y"), date_from="2026-01-01", date_to="2026-06-30", out=quiet)
    tl = half_year["timeline"]
    assert tl["unit"] == "week" and tl["bins"][0] == "2026-W01" and tl["bins"][-1] == "2026-W27"
    assert sum(tl["stations"]["cp-1"]["sessions"]) == 2


def test_empty_days_are_zero_in_every_station_series(tmp_path):
    url = store_with(tmp_path, [one("cp-1", 1, MON + 3600, energy=1000), one("cp-1", 2, MON + 4 * DAY, energy=3000),
                                one("cp-2", 1, MON + 2 * DAY, energy=700)])
    f = build_report(url, str(tmp_path / "out"), out=quiet)
    tl = f["timeline"]
    assert tl["bins"] == ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"]
    assert tl["stations"]["cp-1"]["energy_wh"] == [1000, 0, 0, 0, 3000]
    assert tl["stations"]["cp-2"]["energy_wh"] == [0, 0, 700, 0, 0]
    assert tl["stations"]["cp-2"]["sessions"] == [0, 0, 1, 0, 0]
    fig = charts.timeline_figure(tl, "UTC")
    try:
        lines = [ln for ax in fig.axes for ln in ax.get_lines()]
        assert [list(ln.get_ydata()) for ln in lines] == [[1.0, 0, 0, 0, 3.0], [0, 0, 0.7, 0, 0]]
    finally:
        charts.plt.close(fig)


def test_occupancy_is_per_station(tmp_path):
    url = store_with(tmp_path, [one("cp-1", 1, MON + 10 * 3600), one("cp-2", 1, MON + DAY + 15 * 3600, dur=1800)])
    f = build_report(url, str(tmp_path / "out"), date_from="2026-03-02", date_to="2026-03-08", out=quiet)
    per = f["station_occupancy_permille"]
    assert per["cp-1"][0][10] == 1000 and per["cp-2"][0][10] == 0
    assert per["cp-2"][1][15] == 500 and per["cp-1"][1][15] == 0
    assert f["occupancy_permille"][0][10] == 500          # the site as a whole: one of two stations
    assert f["station_occupancy_s"]["cp-1"][0][10] == 3600
    fig = charts.occupancy_figure(per, "UTC")
    try:
        assert [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")] == [
            "cp-1: share of the hour in use, %", "cp-2: share of the hour in use, %"]
    finally:
        charts.plt.close(fig)


def test_every_time_is_in_the_site_zone(tmp_path):
    late = MON + 23 * 3600 + 1800                        # 2026-03-02 23:30 UTC = 03-03 00:30 in Berlin
    s = one("cp-1", 1, late - 7200, dur=7200)
    url = store_with(tmp_path, [s])
    with Store(url) as st:
        st.add_feedback("cp-1", {"msg_id": "fb-9", "ts": iso(late), "tx_id": 1, "token": DRIVERS[0],
                                 "source": "button", "text": "cable stuck"}, 0)
        st.add_fault("cp-9", {"msg_id": "f-9", "event": "raised", "code": "GroundFailure", "ts": iso(late),
                              "latched": True, "tx_id": 1}, 0)
        st.add_fault("cp-9", {"msg_id": "f-10", "event": "cleared", "code": "GroundFailure", "ts": iso(late + 3600),
                              "latched": True, "tx_id": 1}, 0)
        st.add_stats("cp-9", {"ts": iso(late), "currency": "EUR", "contactor_cycles": 7}, 0)
    f = build_report(url, str(tmp_path / "out"), tz="Europe/Berlin", out=quiet)
    fb = [x for x in f["feedback"] if x["msg_id"] == "fb-9"][0]
    assert fb["ts"] == "2026-03-03T00:30:00+01:00" and fb["session_start"] == "2026-03-02 22:30"
    m = f["maintenance"]
    assert [(x["ts"], x["cleared"]) for x in m["latched"] if x["station"] == "cp-9"] == [
        ("2026-03-03T00:30:00+01:00", "2026-03-03T01:30:00+01:00")]
    assert m["contactors"]["cp-9"]["stats_ts"] == "2026-03-03T00:30:00+01:00"
    page = (tmp_path / "out" / "report.html").read_text()
    assert "2026-03-03 00:30" in page and "2026-03-03 01:30" in page and "times in Europe/Berlin" in page
    out = tmp_path / "out"
    for name in ("report.html", "feedback.csv", "faults.csv", "sessions.csv", "drivers.csv", "drivers.txt"):
        text = (out / name).read_text()
        assert not UTC_STAMP.search(text), "%s shows a UTC time: %s" % (name, UTC_STAMP.search(text).group(0))
        assert "23:30" not in text, name
    assert "2026-03-03T00:30:00+01:00" in (out / "feedback.csv").read_text()
    assert "2026-03-03T00:30:00+01:00" in (out / "faults.csv").read_text()


def test_ev_not_charging_notice_is_reported_not_flagged(tmp_path):
    url = store_with(tmp_path, [one("cp-1", 1, MON + 3600)])
    with Store(url) as st:
        st.add_fault("cp-1", {"msg_id": "f-n1", "event": "notice", "info": "ev_not_charging", "ts": iso(MON + 4000),
                              "tx_id": 1, "detail": "authorized and plugged, no current for 600 s"}, 0)
        st.add_fault("cp-1", {"msg_id": "f-n2", "event": "notice", "ts": iso(MON + 5000), "tx_id": 1}, 0)
    f = build_report(url, str(tmp_path / "out"), out=quiet)
    m = f["maintenance"]
    assert m["notices"] == {"ev_not_charging": {"cp-1": {"count": 1, "last": iso(MON + 4000)}}}
    assert m["faults"] == {"ReaderFailure": {"cp-1": 2, "cp-2": 1}, "OverCurrentFailure": {"cp-2": 1},
                           "GroundFailure": {"cp-3": 1}}, "a notice is not a station fault"
    assert all(x["code"] for x in m["latched"])
    assert f["skipped"] == ["fault cp-1 f-n2: skipped, a notice without info"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Notices (not station faults)" in page and "ev_not_charging" in page
    assert "ev_not_charging" in (tmp_path / "out" / "faults.csv").read_text()


def test_stop_reasons_power_losses_and_uncertain_energy(tmp_path):
    sessions = [one("cp-1", 1, MON + 3600, stop_reason="Local"),
                one("cp-1", 2, MON + 3 * 3600, stop_reason="EVDisconnected", energy=2000),
                one("cp-2", 1, MON + 5 * 3600, stop_reason="PowerLoss", energy=1200,
                    ended_extra={"uncertain_wh": 40, "recovered_wh": 1160}),
                one("cp-2", 2, MON + 7 * 3600, stop_reason="EVDisconnected", energy=100)]
    url = store_with(tmp_path, sessions)
    f = build_report(url, str(tmp_path / "out"), out=quiet)
    assert f["stop_reasons"] == {"Local": {"sessions": 1, "energy_wh": 5000},
                                 "EVDisconnected": {"sessions": 2, "energy_wh": 2100},
                                 "PowerLoss": {"sessions": 1, "energy_wh": 1200}}
    assert f["stations"]["cp-2"]["stop_reasons"] == {"PowerLoss": 1, "EVDisconnected": 1}
    assert (f["stations"]["cp-2"]["power_loss"], f["stations"]["cp-2"]["uncertain_wh"]) == (1, 40)
    assert f["stations"]["cp-1"]["power_loss"] == 0 and f["uncertain_wh"] == 40
    assert [(x["station"], x["tx_id"], x["energy_wh"], x["uncertain_wh"], x["recovered_wh"])
            for x in f["power_loss"]] == [("cp-2", 1, 1200, 40, 1160)]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Stop reasons" in page and "EVDisconnected" in page
    assert "1 ended by a power loss, 0.040 kWh uncertain" in page
    rows = list(csv.DictReader(open(tmp_path / "out" / "sessions.csv")))
    lost = [r for r in rows if r["stop_reason"] == "PowerLoss"][0]
    assert (lost["uncertain_wh"], lost["recovered_wh"]) == ("40", "1160")
    assert [r["uncertain_wh"] for r in rows if r["stop_reason"] != "PowerLoss"] == ["", "", ""]
    assert "EVDisconnected" in (tmp_path / "out" / "drivers.txt").read_text()


def test_labels_replace_pseudonyms_for_the_operator(tmp_path):
    url = store_with(tmp_path, [one("cp-1", 1, MON + 3600, token=DRIVERS[0]),
                                one("cp-1", 2, MON + 3 * 3600, token=DRIVERS[1])])
    with Store(url) as st:
        st.add_feedback("cp-1", {"msg_id": "fb-1", "ts": iso(MON + 2 * 3600), "tx_id": 1, "token": DRIVERS[0],
                                 "source": "button", "text": None}, 0)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("token,name,group\n%s,Anna (fleet),fleet-a\n" % DRIVERS[0].upper())
    f = build_report(url, str(tmp_path / "csv"), labels=str(labels_csv), out=quiet)
    assert f["labels"] == {DRIVERS[0]: "Anna (fleet)"}
    assert f["feedback"][0]["label"] == "Anna (fleet)"
    page = (tmp_path / "csv" / "report.html").read_text()
    assert "Anna (fleet)" in page and DRIVERS[1][:12] in page
    rows = list(csv.DictReader(open(tmp_path / "csv" / "drivers.csv")))
    assert {(r["token"], r["label"]) for r in rows} == {(DRIVERS[0], "Anna (fleet)"), (DRIVERS[1], "")}
    assert "Driver %s (Anna (fleet))" % DRIVERS[0] in (tmp_path / "csv" / "drivers.txt").read_text()
    labels_json = tmp_path / "labels.json"
    labels_json.write_text(json.dumps({DRIVERS[1]: "Ben"}))
    g = build_report(url, str(tmp_path / "json"), labels=str(labels_json), driver="Ben", out=quiet)
    assert list(g["drivers"]) == [DRIVERS[1]] and g["labels"] == {DRIVERS[1]: "Ben"}
    bad = tmp_path / "bad.csv"
    bad.write_text("token,name\n%s,\n" % DRIVERS[0])
    with pytest.raises(ValueError, match="bad.csv line 2: name is missing"):
        build_report(url, str(tmp_path / "bad"), labels=str(bad), out=quiet)
    bad.write_text("uid,name\n04a1b2c3,Anna\n")
    with pytest.raises(ValueError, match="token \\(or pseudonym\\) and name columns"):
        build_report(url, str(tmp_path / "bad"), labels=str(bad), out=quiet)


PROFILE = {"bucket_s": 300, "min_w": [0, 3600, 3500, 0], "mean_w": [1800, 3650, 3600, 200],
           "max_w": [3690, 3690, 3680, 900], "max_ma": [16000, 16000, 15900, 4000], "peak_w": 3690}


def test_power_curve_per_session_from_its_profile(tmp_path):
    url = store_with(tmp_path, [one("cp-1", 1, MON + 3600, dur=1200, ended_extra={"profile": PROFILE}),
                                one("cp-1", 2, MON + 3 * 3600),
                                one("cp-2", 1, MON + 5 * 3600, ended_extra={"profile": {"bucket_s": 0}})])
    f = build_report(url, str(tmp_path / "out"), tz="Europe/Berlin", out=quiet)
    assert f["curves"] == [os.path.join("curves", "cp-1-tx1.png")]
    with open(f["files"][f["curves"][0]], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert f["skipped"] == ["session cp-2 tx 1: profile unreadable, no power curve"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<summary>cp-1 tx 1, 2026-03-02 02:00, 5.000 kWh, Local" in page
    fig = charts.curve_figure(PROFILE, MON + 3600, site_zone("Europe/Berlin"), "Europe/Berlin", "t")
    try:
        mean = [ln for ln in fig.axes[0].get_lines()][0]
        assert list(mean.get_ydata()) == [1.8, 3.65, 3.6, 0.2, 0.2]
        assert fig.axes[0].xaxis.get_major_formatter()(charts.matplotlib.dates.date2num(
            datetime.datetime(2026, 3, 2, 2, 5))) == "02:05"
    finally:
        charts.plt.close(fig)
    none = build_report(url, str(tmp_path / "none"), curves=0, out=quiet)
    assert none["curves"] == []


NIGHT = os.path.join(ROOT, "tests", "data", "tariffs", "night_dst.tariff.json")


def _night():
    with open(NIGHT) as fh:
        return Tariff(json.load(fh, parse_float=str))


def _periods(*rows):
    return [{"start_date_time": iso(t), "dimensions": [{"type": k, "volume": v} for k, v in dims]} for t, dims in rows]


def cdr_sessions():
    """Sessions with the charger's own periods and cost, across the 22:00 local night switch and DST."""
    night = _night()
    out = []
    specs = [  # (station, start, [(period start offset, energy kWh, hours)], stop reason)
        ("cp-1", MON + 20 * 3600 + 600, [(0, "3.300", "0.833333"), (3000, "6.600", "1.000000")], "Local"),
        ("cp-1", MON + 2 * DAY + 9 * 3600, [(0, "11.040", "2")], "EVDisconnected"),
        ("cp-2", BASE + 27 * DAY + 19 * 3600, [(0, "11.040", "2"), (7200, "38.640", "7"), (32400, "11.040", "2")],
         "PowerLoss"),   # 2026-03-28 19:00 UTC, through the switch to summer time
    ]
    for i, (station, start, rows, reason) in enumerate(specs):
        periods = _periods(*[(start + off, [("ENERGY", e), ("TIME", h)]) for off, e, h in rows])
        end = start + sum(round(float(h) * 3600) for _, _, h in rows)
        energy = sum(int(e.replace(".", "")) for _, e, _ in rows)
        cost = night.price_cdr(periods, start, end, CET)
        extra = {"charging_periods": periods, "tariff_id": "night"}
        if reason == "PowerLoss":
            extra.update(uncertain_wh=30, recovered_wh=100)
        out.append({"station": station, "tx": i + 1, "token": DRIVERS[i], "start": start, "end": end,
                    "energy": energy, "cost": cost, "parking": 0, "offline": False, "stop_reason": reason,
                    "ended_extra": extra})
    return out


def _price_tool(tariff, cdr_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "price.py"), tariff, cdr_path,
                        "--tz-offset", "60", "--dst", "EU"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout, parse_float=str)


def test_cdr_export_prices_like_the_price_tool(tmp_path):
    sessions = cdr_sessions()
    url = store_with(tmp_path, sessions + [one("cp-3", 1, MON + 3600)])
    f = build_report(url, str(tmp_path / "out"), tz="Europe/Berlin", tariffs=[NIGHT], ocpi_party="de-abc",
                     out=quiet)
    assert f["cdr_count"] == 3
    assert f["skipped"] == ["session cp-3 tx 1: no CDR, tariff 'flat' is not among the --tariff files"]
    cdrs = json.loads((tmp_path / "out" / "cdrs.json").read_text(), parse_float=str)
    assert [c["id"] for c in cdrs] == ["cp-1-1", "cp-1-2", "cp-2-3"]
    for c, s in zip(cdrs, sessions):
        path = tmp_path / ("%s.json" % c["id"])
        path.write_text(json.dumps(c))
        tool = _price_tool(NIGHT, str(path))
        for key in ("currency", "total_cost", "total_fixed_cost", "total_energy_cost", "total_time_cost",
                    "total_parking_cost", "total_energy", "total_time", "total_parking_time"):
            assert c[key] == tool[key], (c["id"], key)
        # and what the charger billed, from the same engine and periods
        assert c["total_cost"] == {"excl_vat": text2(s["cost"]["total_excl_vat_minor"]),
                                   "incl_vat": text2(s["cost"]["total_incl_vat_minor"])}
        assert (c["country_code"], c["party_id"], c["cdr_token"]["uid"], c["auth_method"]) == (
            "DE", "ABC", s["token"], "WHITELIST")
        assert c["start_date_time"] == iso(s["start"]) and c["end_date_time"] == iso(s["end"])
    assert cdrs[0]["total_cost"] == {"excl_vat": "2.64", "incl_vat": "3.14"}   # 3.3 kWh at 0.40, 6.6 at 0.20
    assert "PowerLoss" in cdrs[2]["remark"] and "remark" not in cdrs[0]
    raw = (tmp_path / "out" / "cdrs.json").read_text()
    assert '"volume": 3.300' in raw and '"total_energy": 9.9' in raw, "OCPI numbers, not strings"
    utc = build_report(url, str(tmp_path / "utc"), tariffs=[NIGHT], out=quiet)
    assert any("the CDR prices EUR" in x and "the charger billed" in x for x in utc["skipped"]), \
        "priced in the wrong zone, the first session differs from what the charger billed"


def text2(minor):
    return "%d.%02d" % divmod(minor, 100)


def test_cdr_needs_a_zone_the_tariff_engine_can_follow(tmp_path):
    assert (tariff_clock(site_zone("Europe/Berlin"), [2026]).offset_s, tariff_clock(
        site_zone("Europe/Berlin"), [2026]).dst) == (3600, "EU")
    ny = tariff_clock(site_zone("America/New_York"), [2025, 2026])
    assert (ny.offset_s, ny.dst) == (-5 * 3600, "US")
    kolkata = tariff_clock(site_zone("Asia/Kolkata"), [2026])
    assert (kolkata.offset_s, kolkata.dst) == (330 * 60, None)
    with pytest.raises(ValueError, match="no fixed offset with EU or US daylight saving"):
        tariff_clock(site_zone("Australia/Sydney"), [2026])
    url = store_with(tmp_path, cdr_sessions())
    with pytest.raises(ValueError, match="Australia/Sydney"):
        build_report(url, str(tmp_path / "syd"), tz="Australia/Sydney", tariffs=[NIGHT], out=quiet)
    with pytest.raises(ValueError, match="--ocpi-party"):
        build_report(url, str(tmp_path / "p"), tariffs=[NIGHT], ocpi_party="Germany", out=quiet)


def test_sessions_csv_export(tmp_path):
    sessions = [one("cp-1", 1, MON + 3600, energy=1840), one("cp-2", 7, MON + 7200, energy=10, stop_reason="Remote")]
    url = store_with(tmp_path, sessions)
    f = build_report(url, str(tmp_path / "out"), tz="Europe/Berlin", out=quiet)
    rows = list(csv.DictReader(open(f["files"]["sessions.csv"])))
    assert [(r["station"], r["tx_id"], r["start"], r["end"], r["energy_wh"], r["stop_reason"],
             r["total_incl_vat_minor"]) for r in rows] == [
        ("cp-1", "1", "2026-03-02T02:00:00+01:00", "2026-03-02T03:00:00+01:00", "1840", "Local",
         str(TARIFF.price(1840)["total_incl_vat_minor"])),
        ("cp-2", "7", "2026-03-02T03:00:00+01:00", "2026-03-02T04:00:00+01:00", "10", "Remote",
         str(TARIFF.price(10)["total_incl_vat_minor"]))]
    assert f["cdr_count"] is None and "cdrs.json" not in f["files"]


def test_command_line_labels_tariffs_and_exports(tmp_path):
    url = store_with(tmp_path, cdr_sessions())
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"token": DRIVERS[0], "name": "Anna"}]))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "report.py"), "--db", url, "--out",
                        str(tmp_path / "cli"), "--tz", "Europe/Berlin", "--labels", str(labels), "--tariff", NIGHT,
                        "--ocpi-party", "DE-ABC", "--curves", "5"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    assert "report: 3 OCPI CDRs -> " in r.stdout
    assert "Anna" in (tmp_path / "cli" / "report.html").read_text()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "report.py"), "--db", url, "--out",
                        str(tmp_path / "x"), "--labels", str(tmp_path / "missing.csv")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 2 and "--labels: cannot read" in r.stdout
