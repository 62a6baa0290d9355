"""Reports over a store filled with known sessions: figures equal the sums, bad data is named."""
import base64
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
                 stop_reason="Local", cost=cost)
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
