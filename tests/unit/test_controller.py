"""The controller over the simulated world: taps, sessions, refusals and a failing meter."""
from simharness import Harness

CARDS = {"alice": "04A1B2C3D4E5F6", "bob": "DEADBEEF", "eve": "0BADCAFE"}


def test_session_by_card_bills_the_energy_drawn():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 3000, "ev_current_a": 10}, {"t": 363000, "tap": "alice"}], 400000)
    h.run()
    started, ended = h.sessions()
    assert started["event"] == "started" and ended["event"] == "ended"
    assert ended["token"] == h.tokens["alice"] and ended["stop_reason"] == "Local"
    assert abs(ended["energy_wh"] - 230 * 10 * 360 / 3600) <= 2
    assert not h.board.contactor.commanded


def test_another_card_cannot_stop_or_start_during_a_session():
    h = Harness(CARDS, ["alice", "bob"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                          {"t": 10000, "tap": "bob"}, {"t": 20000, "tap": "alice"}], 30000)
    h.run()
    taps = [(e["token"], e["result"], e.get("status")) for e in h.events("tap")]
    assert taps == [(h.tokens["alice"], "accepted", None), (h.tokens["bob"], "refused", "ConcurrentTx"),
                    (h.tokens["alice"], "stop", None)]
    assert [s["event"] for s in h.sessions()] == ["started", "ended"]


def test_unknown_card_is_refused_and_two_cards_at_once_too():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "tap": "eve"}, {"t": 5000, "tap": ["alice", "bob"]}], 10000)
    h.run()
    taps = h.events("tap")
    assert [t["result"] for t in taps] == ["asking", "refused", "refused"]   # online: the backend is asked
    assert taps[1]["status"] == "Invalid" and taps[1]["auth"] == "online"
    assert taps[2]["reason"] == "one card please"
    assert h.sessions() == []


def test_authorization_expires_without_a_plug():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "tap": "alice"}, {"t": 70000, "plug": True}], 80000)
    h.run()
    assert [e["token"] for e in h.events("auth_expired")] == [h.tokens["alice"]]
    assert h.sessions() == []


def test_unplug_ends_the_session():
    h = Harness(CARDS, ["bob"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "bob"},
                                 {"t": 2500, "ev_current_a": 16}, {"t": 60000, "plug": False}], 70000)
    h.run()
    ended = h.sessions()[-1]
    assert ended["stop_reason"] == "EVDisconnected" and ended["energy_wh"] > 0
    assert h.ctl.connector == "Available"


def test_a_meter_that_stops_answering_opens_the_contactor_and_ends_the_session():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 3000, "ev_current_a": 16}], 120000)
    h.run(until_ms=60000)
    assert h.board.contactor.commanded
    h.world.meter.fault = "silent"
    h.run()
    assert not h.board.contactor.commanded
    assert h.events("fault")[0]["code"] == "PowerMeterFailure"
    ended = h.sessions()[-1]
    assert ended["stop_reason"] == "Other" and ended["energy_wh"] > 0
    assert h.ctl.connector == "Faulted"


def test_ended_record_carries_profile_and_energy_cross_check():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 3000, "ev_current_a": 16}, {"t": 603000, "ev_current_a": 8},
                                   {"t": 1203000, "tap": "alice"}], 1300000)
    h.run()
    ended = h.sessions()[-1]
    prof = ended["profile"]
    assert prof["bucket_s"] == 300 and 4 <= len(prof["mean_w"]) <= 5   # 20 min in 5-min buckets
    assert abs(prof["mean_w"][0] - 230 * 16) <= 40 and abs(prof["mean_w"][3] - 230 * 8) <= 40
    assert prof["peak_w"] >= 230 * 16 - 40 and max(prof["max_ma"]) >= 15900
    assert abs(ended["integral_wh"] - ended["energy_wh"]) <= 0.01 * ended["energy_wh"]
    assert ended["energy_mismatch"] is False


def test_meter_values_are_published_while_charging():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 3000, "ev_current_a": 16}, {"t": 1800000, "tap": "alice"}], 1900000,
                device={"meter_values_s": 300})
    h.run()
    values = [__import__("json").loads(p) for t, p, _, q in h.link.published if t.endswith("/meter")]
    # every 5 min from boot (07:55) while the session runs, the aligned ones at :00/:15/:30/:45
    assert [v["ts"][11:16] for v in values][:5] == ["08:00", "08:05", "08:10", "08:15", "08:20"]
    assert [v["ts"][11:] for v in values if v["aligned"]] == ["08:00:00Z", "08:15:00Z"]
    assert all(v["tx_id"] == 1 for v in values)
    assert abs(values[-1]["p_w"] - 230 * 16) <= 40 and values[-1]["i_ma"][0] > 15900
    assert values[1]["energy_wh"] < values[3]["energy_wh"] == values[3]["register_wh"]
    assert all(q == 0 for t, p, _, q in h.link.published if t.endswith("/meter"))
