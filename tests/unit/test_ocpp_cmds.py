"""The OCPP central system's commands on the real controller (firmware/link/ocpp_cmds.py): availability,
reset, trigger, configuration, cache, list version; profiles and settings that survive a reboot."""
import json

from simharness import Harness

CARDS = {"alice": "04A1B2C3", "eve": "0BADCAFE"}
PLUG_TAP = [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16}]


def cmd(h, name, **payload):
    h.inject("cmd/" + name, payload)


def acks(h):
    return dict((a["id"], a) for a in h.acks())


def published(h, suffix):
    return [json.loads(p) for t, p, _, _ in h.link.published if t.endswith("/" + suffix)]


def ended(h):
    return [s for s in h.sessions() if s["event"] == "ended"]


def test_inoperative_refuses_new_sessions_shows_unavailable_and_survives_a_reboot():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 3000, "tap": "alice"}], 10000)
    h.run(until_ms=2000)
    cmd(h, "availability", id="a1", connector=1, type="Inoperative")
    cmd(h, "availability", id="a2", connector=2, type="Inoperative")
    cmd(h, "availability", id="a3", connector=0, type="Broken")
    h.run(until_ms=2500)
    cmd(h, "remote_start", id="r1", token=h.tokens["eve"])
    h.run()
    a = acks(h)
    assert a["a1"] == {"id": "a1", "cmd": "availability", "status": "accepted"}
    assert a["a2"]["reason"] == "connector must be 0 or 1" and a["a3"]["reason"] == "type must be Operative or Inoperative"
    assert a["r1"]["status"] == "rejected" and a["r1"]["reason"].startswith("Unavailable")
    assert h.ctl.session is None and h.events("session_start") == []
    assert [(e["result"], e.get("status")) for e in h.events("tap")] == [("refused", "Unavailable")]
    assert h.ctl.connector == "Unavailable" and published(h, "status")[-1]["connector"] == "Unavailable"
    again = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 3000, "tap": "alice"}], 8000, data=h.data)
    again.ctr = h.ctr   # the backend's command counter goes on: the charger remembers the last one
    again.run(until_ms=2000)
    assert again.ctl.connector == "Unavailable"
    cmd(again, "availability", id="a4", connector=0, type="Operative")
    again.run()
    assert acks(again)["a4"]["status"] == "accepted" and [e["tx_id"] for e in again.events("session_start")] == [1]


def test_inoperative_during_a_session_is_scheduled_for_its_end():
    h = Harness(CARDS, ["alice"], PLUG_TAP + [{"t": 20000, "tap": "alice"}, {"t": 30000, "tap": "alice"}], 40000)
    h.run(until_ms=10000)
    cmd(h, "availability", id="a1", connector=1, type="Inoperative")
    h.run(until_ms=15000)
    assert acks(h)["a1"]["scheduled"] is True and h.ctl.session is not None and h.ctl.connector == "Charging"
    assert h.ctl.ev.offered_a == 32               # the running session keeps its offer (the board's)
    h.run()
    assert [s["stop_reason"] for s in ended(h)] == ["Local"]
    assert h.ctl.connector == "Unavailable" and len(h.events("session_start")) == 1   # the second tap is refused


def test_clear_cache_and_list_version_answer_with_their_numbers():
    h = Harness(CARDS, ["alice"], [], 5000)
    h.auth.cache.put(1, h.tokens["eve"], ("Accepted", None, None, None, None, False), 100)
    h.run(until_ms=1000)
    cmd(h, "clear_cache", id="c1")
    cmd(h, "clear_cache", id="c2")
    cmd(h, "list_version", id="l1")
    h.run()
    a = acks(h)
    assert a["c1"]["entries"] == 1 and a["c2"]["entries"] == 0 and len(h.auth.cache) == 0
    assert a["l1"]["version"] == 1


def test_a_hard_reset_ends_the_session_now_and_the_loop_with_it():
    h = Harness(CARDS, ["alice"], PLUG_TAP, 60000)
    h.run(until_ms=10000)
    cmd(h, "reset", id="r0", type="warm")
    cmd(h, "reset", id="r1", type="hard")
    h.run()
    a = acks(h)
    assert a["r0"]["reason"] == "type must be soft or hard" and a["r1"]["status"] == "accepted"
    assert [s["stop_reason"] for s in ended(h)] == ["ImmediateReset"]
    assert h.ctl.reset_requested == "reset_hard" and h.clock.ms < 11000   # the loop ended at once
    assert not h.board.contactor.commanded


def test_a_soft_reset_stops_the_session_in_order_then_restarts_and_refuses_taps_meanwhile():
    h = Harness(CARDS, ["alice"], PLUG_TAP + [{"t": 10500, "tap": "eve"}], 60000)
    h.run(until_ms=10000)
    cmd(h, "reset", id="r1", type="soft")
    h.run(until_ms=10300)
    assert h.ctl.reset_requested is None and h.ctl.session.stopping is not None   # the EV is asked to stop first
    h.run()
    assert acks(h)["r1"]["status"] == "accepted"
    assert [s["stop_reason"] for s in ended(h)] == ["SoftReset"] and h.ctl.reset_requested == "reset_soft"
    assert h.clock.ms < 20000 and len(h.events("session_start")) == 1


def test_a_reset_without_a_session_restarts_at_once():
    h = Harness(CARDS, ["alice"], [], 30000)
    h.run(until_ms=1000)
    cmd(h, "reset", id="r1", type="soft")
    h.run()
    assert acks(h)["r1"]["status"] == "accepted" and h.ctl.reset_requested == "reset_soft" and h.clock.ms < 2000


def test_trigger_publishes_the_status_again_and_a_meter_value_now():
    h = Harness(CARDS, ["alice"], PLUG_TAP, 30000)
    h.run(until_ms=1500)
    n = len(published(h, "status"))
    cmd(h, "trigger", id="t1", message="status")
    cmd(h, "trigger", id="t2", message="meter")            # no session yet
    cmd(h, "trigger", id="t3", message="boot")
    h.run(until_ms=1800)
    assert len(published(h, "status")) == n + 1
    h.run(until_ms=10000)
    m = len(published(h, "meter"))
    cmd(h, "trigger", id="t4", message="meter")
    h.run(until_ms=10300)
    a = acks(h)
    assert a["t1"]["status"] == "accepted" and a["t4"]["status"] == "accepted"
    assert a["t2"]["reason"].startswith("no session running") and a["t3"]["reason"] == "message must be status or meter"
    assert len(published(h, "meter")) == m + 1 and published(h, "meter")[-1]["tx_id"] == 1


def test_get_and_set_config_check_like_the_config_file_apply_live_and_persist():
    h = Harness(CARDS, ["alice"], [], 30000)
    h.run(until_ms=1000)
    cmd(h, "get_config", id="g1", keys=["auth.LocalPreAuthorize", "meter_values_s", "mqtt.host"])
    cmd(h, "set_config", id="s1", key="auth.LocalPreAuthorize", value=False)
    cmd(h, "set_config", id="s2", key="meter_values_s", value=5)
    cmd(h, "set_config", id="s3", key="auth_timeout_s", value="90")
    cmd(h, "set_config", id="s4", key="mqtt.host", value="evil")
    h.run(until_ms=1500)
    cmd(h, "set_config", id="s5", key="auth_timeout_s", value=90)
    cmd(h, "set_config", id="s6", key="meter_aligned_s", value=60)
    cmd(h, "get_config", id="g2")
    h.run()
    a = acks(h)
    assert a["g1"]["values"] == {"auth.LocalPreAuthorize": True, "meter_values_s": 60}
    assert a["s1"]["status"] == "accepted" and h.auth.local_pre_authorize is False
    assert a["s2"]["reason"] == "config: meter_values_s must be within 10..3600 (got 5)"
    assert a["s3"]["reason"] == "config: auth_timeout_s must be an integer (got '90')"
    assert a["s4"]["status"] == "rejected" and a["s4"]["reason"].startswith("key:")
    assert a["s5"]["status"] == "accepted" and h.ctl.s.auth_timeout_s == 90
    assert a["g2"]["values"] == {"auth.LocalAuthorizeOffline": True, "auth.LocalPreAuthorize": False,
                                 "auth.AllowOfflineTxForUnknownId": False, "auth.AuthorizeRemoteTxRequests": True,
                                 "meter_values_s": 60, "meter_aligned_s": 60, "auth_timeout_s": 90}
    again = Harness(CARDS, ["alice"], [], 1000, data=h.data)
    assert again.auth.local_pre_authorize is False and again.settings.auth_timeout_s == 90
    assert again.settings.meter_values_s == 60 and again.settings.meter_aligned_s == 60


def test_a_shorter_meter_value_interval_applies_to_the_running_session():
    h = Harness(CARDS, ["alice"], PLUG_TAP, 120000)
    h.run(until_ms=5000)
    cmd(h, "set_config", id="s1", key="meter_values_s", value=10)
    h.run(until_ms=5200)
    n = len(published(h, "meter"))
    h.run()
    assert acks(h)["s1"]["status"] == "accepted"
    assert len(published(h, "meter")) - n >= 10   # every 10 s instead of every 60 s


def test_a_charging_profile_survives_a_reboot():
    h = Harness(CARDS, ["alice"], [], 2000)
    h.run(until_ms=1000)
    cmd(h, "charging_profile", id="p1", kind="station_max", profile={"periods": [[0, 10]]})
    cmd(h, "charging_profile", id="p2", kind="tx_default", profile={"periods": [[0, 12]], "stack_level": 2})
    cmd(h, "charging_profile", id="p3", kind="tx_default", profile=None, stack_level=2)
    h.run()
    assert [a["status"] for a in h.acks()] == ["accepted"] * 3
    again = Harness(CARDS, ["alice"], PLUG_TAP, 20000, data=h.data)   # after a power cut
    again.run()
    assert again.events("offer")[0]["amps"] == 10 and again.events("offer")[0]["limit"] == "schedule"


def test_a_damaged_profile_file_is_reported_and_dropped():
    h = Harness(CARDS, ["alice"], [], 1000)
    with open(h.data + "/profiles.json", "w") as f:
        f.write('{"station_max": [{"periods": [[5, 10]]}]}')
    again = Harness(CARDS, ["alice"], PLUG_TAP, 20000, data=h.data)
    again.run()
    assert [e for e in again.events("storage") if "profiles.json" in e["error"]]
    assert again.events("offer")[0]["amps"] == 32 and again.events("offer")[0]["limit"] == "board"


def test_the_status_names_firmware_vendor_and_model():
    h = Harness(CARDS, ["alice"], [], 2000, device={"vendor": "org.example", "model": "CP-1"})
    h.run()
    st = published(h, "status")[-1]
    assert st["firmware"] == "dev" and st["vendor"] == "org.example" and st["model"] == "CP-1"
    bare = Harness(CARDS, ["alice"], [], 2000)
    bare.run()
    st = published(bare, "status")[-1]
    assert st["firmware"] == "dev" and "vendor" not in st and "model" not in st


def test_a_saved_setting_out_of_bounds_is_reported_and_the_config_files_value_stays():
    h = Harness(CARDS, ["alice"], [], 1000)
    with open(h.data + "/ocpp.json", "w") as f:
        f.write('{"operative": true, "config": {"meter_values_s": 1, "auth_timeout_s": 120, "mqtt.host": "x"}}')
    again = Harness(CARDS, ["alice"], [], 1000, data=h.data)
    assert again.settings.meter_values_s == 60 and again.settings.auth_timeout_s == 120
    errors = [e["error"] for e in again.events("storage")]
    assert len(errors) == 1 and "ocpp.json" in errors[0] and "mqtt.host" in errors[0] and "meter_values_s" in errors[0]
