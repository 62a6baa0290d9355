"""Session: the records it builds (started, updated, checkpoint, ended, reduced ended, PowerLoss)."""
from firmware.billing.localtime import LocalTime
from firmware.billing.tariff import Tariff, flat
from firmware.charging.session import Session
from firmware.core.timefmt import iso

T0 = 1772438100   # 2026-03-02T07:55:00Z
TARIFF = Tariff(flat("0.30", "EUR", "20"))


class Decision:
    token = "tok"
    key = 1
    method = "local_list"
    group = "fleet"
    max_current_a = 16
    max_wh = 5000
    offpeak_only = False


class Settings:
    tz = LocalTime(0)
    crosscheck_pct = 2
    crosscheck_min_wh = 20


class Stamp:
    """Stamps as the controller's does, offline and before the wall clock was known."""

    def record(self, rec):
        rec["offline"] = True
        if rec["ts"] is None:
            rec["boot"], rec["uptime_s"] = 3, 42
        return rec


class Profile:
    def __init__(self, fail=None):
        self.fail = fail

    def record(self):
        if self.fail is not None:
            raise self.fail
        return {"bucket_s": 300, "mean_w": [3680]}


class Journal:
    def __init__(self):
        self.calls = []

    def checkpoint(self, tx_id, energy_wh, t, seq=0, rem=0, rec=None, gasp=False):
        self.calls.append((tx_id, energy_wh, t, seq, rem, rec, gasp))


def _session(started_at=iso(T0), start=T0):
    return Session(7, Decision(), TARIFF, Settings(), start, started_at, 1200, 50, 1000)


def test_started_record_carries_what_a_receiver_needs_and_is_stamped():
    s = _session()
    rec = s.started(Stamp())
    assert rec["msg_id"] == "7-0" and rec["seq"] == 0 and rec["event"] == "started"
    assert rec["ts"] == "2026-03-02T07:55:00Z" and rec["token"] == "tok" and rec["key"] == 1
    assert (rec["meter_start_wh"], rec["auth"], rec["tariff_id"]) == (1200, "local_list", "flat")
    assert (rec["max_wh"], rec["group"], rec["start_utc"], rec["offline"]) == (5000, "fleet", T0, True)
    assert "boot" not in rec


def test_updated_and_checkpoint_count_from_the_start_register():
    s = _session()
    s.started(Stamp())
    rec = s.updated("2026-03-02T08:00:00Z", 1900)
    assert rec["event"] == "updated" and rec["energy_wh"] == 700 and rec["seq"] == 1
    assert rec["meter_start_wh"] == 1200   # docs/mqtt.md: every event carries it (the OCPP bridge needs it)
    j = Journal()
    s.checkpoint(j, 1900, 17, T0 + 300, rec)
    s.checkpoint(j, 1950, 3, T0 + 310, gasp=True)
    assert j.calls == [(7, 1900, T0 + 300, 2, 17, rec, False),    # the seq the next record will carry
                       (7, 1950, T0 + 310, 2, 3, None, True)]     # the last gasp's


def test_ended_record_prices_the_charging_periods_and_cross_checks_energy():
    s = _session()
    s.started(Stamp())
    for k in range(1, 61):   # one hour at 3.68 kW, ticked every minute
        s.tick(T0 + 60 * k, 1200 + 3680 * k // 60, 16000, 3680, True)
    rec, cost = s.ended("2026-03-02T08:55:00Z", T0 + 3600, 4880, "Local", 50 + 3680, Profile())
    assert rec["event"] == "ended" and rec["stop_reason"] == "Local" and rec["energy_wh"] == 3680
    assert rec["started_at"] == "2026-03-02T07:55:00Z" and rec["ended_at"] == "2026-03-02T08:55:00Z"
    assert (rec["meter_start_wh"], rec["meter_stop_wh"]) == (1200, 4880)
    assert rec["cost"] is cost and cost["total_excl_vat_minor"] == 110 and cost["total_incl_vat_minor"] == 132
    assert rec["charging_periods"][0]["start_date_time"] == "2026-03-02T07:55:00Z"
    assert rec["integral_wh"] == 3680 and rec["energy_mismatch"] is False and rec["parking_s"] == 0
    assert rec["profile"] == {"bucket_s": 300, "mean_w": [3680]} and "detail" not in rec
    rec2, _ = _session().ended(None, T0 + 3600, 4880, "Local", 50 + 3000, Profile())
    assert rec2["energy_mismatch"] is True   # 680 Wh apart, more than 2 % (73 Wh)


def test_a_failure_while_building_ended_gives_a_reduced_record_that_still_bills():
    s = _session()
    s.started(Stamp())
    s.tick(T0 + 60, 1300, 16000, 3680, True)
    rec, cost = s.ended("2026-03-02T08:55:00Z", T0 + 3600, 4880, "Remote", 3730, Profile(MemoryError()))
    assert rec["detail"] == "record reduced: MemoryError"
    assert "charging_periods" not in rec and "profile" not in rec
    assert rec["energy_wh"] == 3680 and rec["stop_reason"] == "Remote"
    assert cost == TARIFF.price(3680, T0, 3600, Settings.tz) and cost["total_excl_vat_minor"] == 110


def test_before_the_wall_clock_the_start_is_an_uptime_and_rebase_makes_it_utc():
    s = _session(started_at=None, start=30)   # 30 s after boot
    rec = s.started(Stamp())
    assert rec["ts"] is None and rec["boot"] == 3 and rec["start_utc"] == 30
    s.rebase(T0)
    assert s.start_utc == T0 + 30 and s.started_at == iso(T0 + 30)
    s2 = _session(started_at=None, start=30)
    ended, _ = s2.ended(None, 90, 1300, "Local", 150, Profile())
    assert ended["started_at"] is None and ended["started_uptime_s"] == 30


def test_soft_stop_and_drawing_are_the_sessions_own():
    s = _session()
    assert s.stopping is None and s.drawing_at == 1000 and not s.idle_told
    s.soft_stop("Local", 6000)
    s.drew(2500)
    assert s.stopping == ("Local", 6000) and s.drawing_at == 2500 and s.energy_wh(1500) == 300
    assert s.idle_reported() and not s.idle_reported()   # once per session
    s.finishing()
    assert s.stopping is None


def test_recovered_session_ends_with_power_loss_at_the_last_checkpoint():
    st = {"tx_id": 4, "token": "tok", "key": 2, "auth": "cache", "group": None, "max_wh": None,
          "ts": iso(T0), "meter_start_wh": 1000, "tariff_id": "flat", "start_utc": T0}
    cp = {"energy_wh": 1800, "t": T0 + 1800, "seq": 3, "rem": 5}
    s, rec, cost = Session.recovered(st, cp, 1850, TARIFF, Settings.tz, uncertain_wh=40, recovered_wh=50)
    assert (s.tx_id, rec["seq"], rec["msg_id"], rec["stop_reason"]) == (4, 3, "4-3", "PowerLoss")
    assert rec["ended_at"] == rec["ts"] == iso(T0 + 1800) and rec["started_at"] == iso(T0)
    assert rec["energy_wh"] == 850 and rec["meter_stop_wh"] == 1850 and rec["key"] == 2
    assert (rec["uncertain_wh"], rec["recovered_wh"]) == (40, 50) and "boot" not in rec
    assert cost == TARIFF.price(850, T0, 1800, Settings.tz)


def test_recovered_session_of_a_boot_without_wall_clock_keeps_its_boot_and_uptime():
    st = {"tx_id": 5, "token": "tok", "ts": None, "meter_start_wh": 1000, "start_utc": 20, "boot": 2,
          "uptime_s": 20}
    s, rec, cost = Session.recovered(st, {"t": 600, "seq": 2}, 1100, TARIFF, Settings.tz)
    assert rec["ts"] is None and rec["ended_at"] is None and (rec["boot"], rec["uptime_s"]) == (2, 600)
    assert cost == TARIFF.price(100, 20, 580, Settings.tz)   # both times are uptimes of that boot
    s, rec, _ = Session.recovered(st, {}, 1100, TARIFF, Settings.tz)
    assert rec["seq"] == 1 and (rec["boot"], rec["uptime_s"]) == (2, 20)   # no checkpoint: its start
