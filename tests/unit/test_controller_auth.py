"""Issue 4 in-process: cards, every authorization path, session rules, remote start/stop, driver
preferences, list management, key rotation, purge, bad input and driver feedback, through the
real controller over the simulated world (tests/unit/simharness.py)."""
import binascii
import json
import os

from firmware.auth.authorize import LocalList
from firmware.auth.keys import keys_from_config
from firmware.auth.pseudonym import pseudonym
from firmware.core.timefmt import iso
from hal.sim import machine
from simharness import KEY, Harness, board_config, entry

START = 1772438100   # the harness's scenario start: 2026-03-02T07:55:00Z
FOUR, SEVEN, TEN = "DEADBEEF", "04A1B2C3D4E5F6", "0102030405060708090A"
CARDS = {"alice": SEVEN, "bob": FOUR, "carol": TEN, "eve": "0BADCAFE", "dave": "11223344"}
KEY2 = bytes(range(48, 80))


def tok(uid_hex, key=KEY):
    return pseudonym(key, binascii.unhexlify(uid_hex))


def published(h, suffix):
    return [json.loads(p) for t, p, _, _ in h.link.published if t.endswith("/" + suffix)]


def taps(h):
    """(alias, result, status or reason, auth) of each tap event."""
    names = dict((t, a) for a, t in h.tokens.items())
    return [(names.get(e.get("token")), e["result"], e.get("status") or e.get("reason"), e.get("auth"))
            for e in h.events("tap")]


def ended(h):
    return [s for s in h.sessions() if s["event"] == "ended"]


def started(h):
    return [s for s in h.sessions() if s["event"] == "started"]


def charge(card, at=2000, stop_at=None):
    """Plug, tap, draw 16 A; the same card again at stop_at."""
    ev = [{"t": 1000, "plug": True}, {"t": at, "tap": card}, {"t": at + 1000, "ev_current_a": 16}]
    if stop_at:
        ev.append({"t": stop_at, "tap": card})
    return ev


def offline(h):
    h.link.up = False   # the broker is unreachable from boot
    return h


def stamp(h):
    """Stamp every log event with the virtual ms it happened at ("ms")."""
    event = h.log.event

    def stamped(kind, **fields):
        fields["ms"] = h.clock.ms
        event(kind, **fields)
    h.log.event = stamped


def patterns(h):
    """Record every LED pattern the controller's Feedback starts, as (ms, name)."""
    shown = []
    fb = h.ctl.feedback
    start = fb._start

    def record(name):
        shown.append((h.clock.ms, name))
        start(name)
    fb._start = record
    return shown


# -- cards: UID sizes, collisions, one tap per presentation ------------------------------------
def test_4_7_and_10_byte_uids_authorize_and_bill_under_their_own_pseudonym():
    events = [{"t": 1000, "plug": True}, {"t": 2000, "ev_current_a": 16}]
    for n, card in enumerate(("bob", "alice", "carol")):
        events += [{"t": 5000 + n * 60000, "tap": card}, {"t": 5000 + n * 60000 + 40000, "tap": card}]
    h = Harness(CARDS, ["alice", "bob", "carol"], events, 200000)
    h.run()
    recs = ended(h)
    assert [r["token"] for r in recs] == [tok(FOUR), tok(SEVEN), tok(TEN)]
    assert len(set(r["token"] for r in recs)) == 3 and all(len(r["token"]) == 32 for r in recs)
    for r in recs:
        assert r["stop_reason"] == "Local" and r["auth"] == "local_list"
        # 16 A at 230 V for about 40 s (the EV ramps up, and stops 2 s after the offer goes)
        assert 30 <= r["energy_wh"] <= 230 * 16 * 45 // 3600, r["energy_wh"]
        assert r["cost"]["total_incl_vat_minor"] >= 1


def test_two_cards_at_once_are_refused_with_one_card_please_and_start_nothing():
    h = Harness(CARDS, ["alice", "bob"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": ["alice", "bob"]}],
                20000)
    shown = patterns(h)
    h.run()
    assert taps(h) == [(None, "refused", "one card please", None)]
    assert h.sessions() == [] and h.ctl.authorized is None and h.ctl.connector == "Preparing"
    assert "refused" in [p for _, p in shown]
    assert published(h, "auth/req") == []


def test_a_card_held_on_the_reader_is_one_tap_and_a_bounce_within_the_hold_off_is_the_same_tap():
    board = board_config()
    board["sim"]["card_hold_ms"] = 15000       # the driver leaves the card on the reader for 15 s
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 18000, "tap": "alice"},     # back 0.5 s after it left: same tap
                                   {"t": 40000, "tap": "alice"}], 60000, board=board)
    h.run()
    assert taps(h) == [("alice", "accepted", None, "local_list"), ("alice", "stop", None, None)]
    assert [r["stop_reason"] for r in ended(h)] == ["Local"]


def test_a_re_tap_after_removal_cancels_an_authorization_waiting_for_the_plug():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "tap": "alice"}, {"t": 10000, "tap": "alice"},
                                   {"t": 20000, "plug": True}], 30000)
    h.run()
    assert taps(h) == [("alice", "accepted", None, "local_list"), ("alice", "cancelled", None, None)]
    assert h.sessions() == [] and h.ctl.connector == "Preparing"


# -- authorization paths ------------------------------------------------------------------------
def test_local_list_accepted_online_with_pre_authorize_asks_nobody():
    h = Harness(CARDS, ["alice"], charge("alice", stop_at=30000), 40000)
    h.run()
    assert published(h, "auth/req") == []
    assert taps(h)[0] == ("alice", "accepted", None, "local_list")
    assert [s["auth"] for s in h.sessions()] == ["local_list", "local_list"]


def test_local_list_blocked_and_expired_entries_are_refused_online_and_offline():
    entries = [entry(tok(FOUR), status="Blocked"), entry(tok(TEN), status="Expired"),
               entry(tok(SEVEN), expiry=iso(START + 30)),                  # runs out 30 s in
               entry(tok("11223344"), expiry=iso(START + 3600))]           # valid for an hour
    events = [{"t": 2000, "tap": "bob"}, {"t": 5000, "tap": "carol"}, {"t": 10000, "tap": "alice"},
              {"t": 15000, "tap": "alice"}, {"t": 40000, "tap": "alice"}, {"t": 45000, "tap": "dave"}]
    for link_up in (True, False):
        h = Harness(CARDS, [], events, 50000, entries=entries)
        h.link.up = link_up
        h.run()
        assert taps(h) == [("bob", "refused", "Blocked", "local_list"), ("carol", "refused", "Expired", "local_list"),
                           ("alice", "accepted", None, "local_list"), ("alice", "cancelled", None, None),
                           ("alice", "refused", "Expired", "local_list"), ("dave", "accepted", None, "local_list")]
        assert published(h, "auth/req") == []


def test_online_accepted_answer_starts_a_session_with_its_preferences():
    h = Harness(CARDS, [], charge("eve", stop_at=40000), 50000)
    h.online_answers[h.tokens["eve"]] = {"status": "Accepted", "max_current_a": 10, "group": "fleet"}
    h.run()
    req = published(h, "auth/req")
    assert len(req) == 1 and req[0]["token"] == h.tokens["eve"] and req[0]["key"] == 1
    assert taps(h)[:2] == [("eve", "asking", None, None), ("eve", "accepted", None, "online")]
    assert [s["auth"] for s in h.sessions()] == ["online", "online"]
    assert [e["amps"] for e in h.events("offer")][0] == 10 and h.events("offer")[0]["limit"] == "card"


def test_online_refusals_are_refused_with_the_backend_status():
    for status in ("Blocked", "Expired", "Invalid", "ConcurrentTx"):
        h = Harness(CARDS, [], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "eve"}], 10000)
        h.online_answers[h.tokens["eve"]] = {"status": status}
        h.run()
        assert taps(h) == [("eve", "asking", None, None), ("eve", "refused", status, "online")]
        assert h.sessions() == [] and h.ctl.authorized is None


def test_an_online_accept_is_cached_and_authorizes_offline_later():
    h = Harness(CARDS, [], charge("eve", stop_at=20000) + [{"t": 40000, "tap": "eve"},
                                                             {"t": 60000, "tap": "eve"}], 70000)
    h.online_answers[h.tokens["eve"]] = {"status": "Accepted"}
    h.run(until_ms=30000)
    h.link.up = False                           # the broker goes away
    h.run()
    assert [(e["token"], e["auth"]) for e in h.events("session_start")] == [(h.tokens["eve"], "online"),
                                                                           (h.tokens["eve"], "cache")]
    assert [e["reason"] for e in h.events("session_end")] == ["Local", "Local"]
    assert len(published(h, "auth/req")) == 1
    assert taps(h)[-2:] == [("eve", "accepted", None, "cache"), ("eve", "stop", None, None)]


def test_no_answer_in_time_decides_by_the_offline_rules():
    for allow_unknown, expect, timeout in (
            (False, [("eve", "asking", None, None), ("eve", "refused", "Invalid", "offline_unknown")], 3000),
            (True, [("eve", "asking", None, None), ("eve", "accepted", None, "offline_unknown")], 1000)):
        auth = {"AllowOfflineTxForUnknownId": allow_unknown}
        if timeout != 3000:                     # 3 s by default
            auth["timeout_s"] = timeout // 1000
        h = Harness(CARDS, [], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "eve"}], 8000, device={"auth": auth})
        stamp(h)
        h.answer_auth = False                   # the backend never answers
        h.run()
        assert taps(h) == expect
        asked = h.events("tap")[0]["ms"]
        assert [e["token"] for e in h.events("auth_timeout")] == [h.tokens["eve"]]
        assert timeout <= h.events("auth_timeout")[0]["ms"] - asked <= timeout + 200
        assert [s["auth"] for s in started(h)] == (["offline_unknown"] if allow_unknown else [])


def test_a_malformed_answer_is_ignored_with_a_reason_and_the_timeout_decides():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}], 6000,
                device={"auth": {"LocalPreAuthorize": False, "LocalAuthorizeOffline": True, "timeout_s": 1}})
    h.online_answers[h.tokens["alice"]] = {"status": "Maybe", "max_current_a": "lots"}
    h.run()
    ignored = [e for e in h.events("command") if e.get("topic") == "auth/resp"]
    assert len(ignored) == 1 and ignored[0]["result"] == "ignored" and "status" in ignored[0]["reason"]
    # the list still vouches for alice once the backend failed to answer properly
    assert taps(h) == [("alice", "asking", None, None), ("alice", "accepted", None, "local_list")]
    assert [s["auth"] for s in started(h)] == ["local_list"]


def test_local_pre_authorize_off_asks_the_backend_for_a_listed_card():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}], 10000,
                device={"auth": {"LocalPreAuthorize": False}})
    h.online_answers[h.tokens["alice"]] = {"status": "Accepted"}
    h.run()
    assert len(published(h, "auth/req")) == 1
    assert taps(h) == [("alice", "asking", None, None), ("alice", "accepted", None, "online")]
    assert h.auth.cache.get([(1, h.tokens["alice"])], h.clock.time()) is None   # listed: never cached


def test_offline_policy_switches_each_way():
    cases = (  # (LocalAuthorizeOffline, AllowOfflineTxForUnknownId) -> alice (listed), eve (unknown)
        ((True, False), [("alice", "accepted", None, "local_list"), ("alice", "cancelled", None, None),
                         ("eve", "refused", "Invalid", "offline_unknown")]),
        ((False, False), [("alice", "refused", "Invalid", "offline_unknown"),
                          ("alice", "refused", "Invalid", "offline_unknown"),
                          ("eve", "refused", "Invalid", "offline_unknown")]),
        ((True, True), [("alice", "accepted", None, "local_list"), ("alice", "cancelled", None, None),
                        ("eve", "accepted", None, "offline_unknown")]),
        ((False, True), [("alice", "accepted", None, "offline_unknown"), ("alice", "cancelled", None, None),
                         ("eve", "accepted", None, "offline_unknown")]),
    )
    for (local_offline, unknown), expect in cases:
        h = offline(Harness(CARDS, ["alice"], [{"t": 2000, "tap": "alice"}, {"t": 10000, "tap": "alice"},
                                               {"t": 20000, "tap": "eve"}], 30000,
                            device={"auth": {"LocalAuthorizeOffline": local_offline, "LocalPreAuthorize": True,
                                             "AllowOfflineTxForUnknownId": unknown}}))
        h.run()
        assert taps(h) == expect, (local_offline, unknown, taps(h))
        assert h.link.published == []


def test_offline_sessions_record_how_they_were_authorized_and_that_they_were_offline():
    h = offline(Harness(CARDS, ["alice"], charge("alice", stop_at=20000) + [{"t": 30000, "tap": "eve"},
                                                                         {"t": 50000, "tap": "eve"}], 150000,
                        device={"auth": {"AllowOfflineTxForUnknownId": True}}))
    h.run(until_ms=60000)
    assert h.link.published == [] and len(h.outbox) == 4
    h.link.up = True                            # the broker comes back: the outbox is delivered
    h.run()
    assert [(r["event"], r["auth"], r["offline"]) for r in h.sessions()] == [
        ("started", "local_list", True), ("ended", "local_list", True),
        ("started", "offline_unknown", True), ("ended", "offline_unknown", True)]
    assert len(h.outbox) == 0


# -- session rules ------------------------------------------------------------------------------
def test_a_card_of_the_same_group_stops_the_session_and_any_other_card_is_refused():
    entries = [entry(tok(SEVEN), group="fleet-a"), entry(tok(FOUR), group="fleet-a"),
               entry(tok(TEN), group="fleet-b"), entry(tok("11223344"))]
    h = Harness(CARDS, [], charge("alice") + [{"t": 10000, "tap": "carol"}, {"t": 15000, "tap": "dave"},
                                              {"t": 20000, "tap": "eve"}, {"t": 25000, "tap": "bob"}], 40000,
                entries=entries)
    h.run()
    assert taps(h) == [("alice", "accepted", None, "local_list"), ("carol", "refused", "ConcurrentTx", None),
                       ("dave", "refused", "ConcurrentTx", None), ("eve", "refused", "ConcurrentTx", None),
                       ("bob", "stop", None, None)]
    assert published(h, "auth/req") == []            # a running session needs no online check
    assert [(r["token"], r["stop_reason"]) for r in ended(h)] == [(tok(SEVEN), "Local")]
    assert started(h)[0]["group"] == "fleet-a"


def test_a_group_learned_online_and_cached_also_stops_the_session():
    # carol is checked online (cached, group fleet-c) and cancels; eve charges; carol's tap stops her session
    h = Harness(CARDS, [], [{"t": 1000, "tap": "carol"}, {"t": 5000, "tap": "carol"}, {"t": 10000, "plug": True},
                            {"t": 12000, "tap": "eve"}, {"t": 30000, "tap": "carol"}], 40000)
    h.online_answers[h.tokens["eve"]] = {"status": "Accepted", "group": "fleet-c"}
    h.online_answers[h.tokens["carol"]] = {"status": "Accepted", "group": "fleet-c"}
    h.run()
    assert taps(h)[-1] == ("carol", "stop", None, None)
    assert [(r["token"], r["group"]) for r in started(h)] == [(h.tokens["eve"], "fleet-c")]
    assert [(r["token"], r["stop_reason"]) for r in ended(h)] == [(h.tokens["eve"], "Local")]
    assert len(published(h, "auth/req")) == 2        # carol once (then from the cache), eve once


def test_an_authorization_expires_when_no_ev_is_plugged_within_60_s():
    h = Harness(CARDS, ["alice", "bob"], [{"t": 1000, "tap": "alice"}, {"t": 70000, "plug": True},
                                          {"t": 80000, "plug": False}, {"t": 90000, "tap": "bob"},
                                          {"t": 145000, "plug": True}], 160000)
    stamp(h)
    h.run(until_ms=60000)
    assert h.ctl.connector == "Preparing" and h.ctl.authorized is not None
    h.run()
    expired = h.events("auth_expired")
    assert [e["token"] for e in expired] == [h.tokens["alice"]]
    tapped = h.events("tap")[0]["ms"]
    assert 60000 < expired[0]["ms"] - tapped <= 60200
    # bob plugs 55 s after his tap: in time
    assert [(e["token"], e["auth"]) for e in h.events("session_start")] == [(h.tokens["bob"], "local_list")]


def test_unplugging_ends_the_session_and_relocks_the_charger():
    h = Harness(CARDS, ["alice"], charge("alice") + [{"t": 30000, "plug": False}, {"t": 40000, "plug": True},
                                                     {"t": 60000, "tap": "alice"}], 70000)
    h.run(until_ms=55000)
    assert [r["stop_reason"] for r in ended(h)] == ["EVDisconnected"]
    assert h.ctl.session is None and h.ctl.authorized is None and h.ctl.connector == "Preparing"
    assert not h.board.contactor.commanded
    h.run()                                     # plugged again: only a new tap starts a session
    assert [e["tx_id"] for e in h.events("session_start")] == [1, 2]


# -- remote start and stop (the app) ------------------------------------------------------------
def cmd(h, name, **payload):
    h.inject("cmd/" + name, payload)


def test_remote_start_and_remote_stop_are_acknowledged_and_recorded():
    h = Harness(CARDS, [], [{"t": 1000, "plug": True}, {"t": 3000, "ev_current_a": 16}], 60000,
                device={"auth": {"LocalPreAuthorize": True, "AuthorizeRemoteTxRequests": False}})
    h.run(until_ms=2000)
    cmd(h, "remote_start", id="c-1", token=h.tokens["eve"], max_current_a=8)
    h.run(until_ms=30000)
    cmd(h, "remote_stop", id="c-2")
    h.run(until_ms=40000)
    cmd(h, "remote_stop", id="c-3")
    h.run()
    assert h.acks() == [{"id": "c-1", "cmd": "remote_start", "status": "accepted"},
                        {"id": "c-2", "cmd": "remote_stop", "status": "accepted", "tx_id": 1},
                        {"id": "c-3", "cmd": "remote_stop", "status": "rejected", "reason": "no session running"}]
    recs = h.sessions()
    assert [(r["event"], r["auth"], r["token"]) for r in recs] == [("started", "remote", h.tokens["eve"]),
                                                                  ("ended", "remote", h.tokens["eve"])]
    assert recs[1]["stop_reason"] == "Remote" and recs[1]["energy_wh"] > 0
    assert published(h, "auth/req") == []       # trusted: the config turns AuthorizeRemoteTxRequests off
    assert h.events("offer")[0]["amps"] == 8 and h.events("offer")[0]["limit"] == "card"


def test_remote_commands_that_cannot_be_carried_out_are_rejected_with_the_reason():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 6000, "tap": "alice"}], 40000)
    h.run(until_ms=2000)
    cmd(h, "remote_start", id="r-1", token="alice")                 # not a pseudonym
    cmd(h, "remote_start", id="r-2", token=h.tokens["eve"], key=9)  # no such key version
    cmd(h, "remote_start", id="r-3", token=h.tokens["eve"], max_current_a=3)
    h.run(until_ms=5000)
    assert h.ctl.authorized is None and h.ctl.connector == "Preparing"
    h.run(until_ms=10000)
    cmd(h, "remote_start", id="r-4", token=h.tokens["eve"])        # a session is running
    cmd(h, "remote_stop", id="r-5", tx_id=7)                        # not the running session
    h.run()
    acks = dict((a["id"], (a["status"], a.get("reason"))) for a in h.acks())
    assert acks["r-1"] == ("rejected", "token: must be a pseudonym of 32 hex digits")
    assert acks["r-2"][0] == "rejected" and acks["r-2"][1].startswith("key:")
    assert acks["r-3"] == ("rejected", "max_current_a: must be an integer 6..80 or null")
    assert acks["r-4"] == ("rejected", "ConcurrentTx: a session is running")
    assert acks["r-5"][0] == "rejected" and "tx_id 7" in acks["r-5"][1]
    assert h.ctl.session is not None and h.ctl.session.token == h.tokens["alice"]
    assert [e["tx_id"] for e in h.events("session_start")] == [1]


def test_remote_start_while_a_driver_is_authorized_is_concurrent_tx():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "tap": "alice"}], 10000)
    h.run(until_ms=5000)
    cmd(h, "remote_start", id="r-1", token=h.tokens["eve"])
    h.run()
    assert h.acks() == [{"id": "r-1", "cmd": "remote_start", "status": "rejected",
                         "reason": "ConcurrentTx: a driver is already authorized"}]
    assert h.ctl.authorized.token == h.tokens["alice"]


def test_checked_remote_start_of_a_blocked_card_is_rejected():
    h = Harness(CARDS, [], [{"t": 1000, "plug": True}], 10000, entries=[entry(tok(FOUR), status="Blocked")],
                device={"auth": {"LocalPreAuthorize": True, "AuthorizeRemoteTxRequests": True}})
    h.run(until_ms=2000)
    cmd(h, "remote_start", id="r-1", token=h.tokens["bob"])
    h.run()
    assert h.acks() == [{"id": "r-1", "cmd": "remote_start", "status": "rejected", "reason": "Blocked: remote"}]
    assert h.sessions() == []


# -- driver preferences -------------------------------------------------------------------------
def test_the_cards_maximum_current_caps_the_offer():
    h = Harness(CARDS, [], charge("alice", stop_at=50000), 60000, entries=[entry(tok(SEVEN), max_current_a=10)],
                device={"meter_values_s": 10})
    h.run()
    offers = h.events("offer")
    assert (offers[0]["amps"], offers[0]["limit"]) == (10, "card")
    meter = [m for m in published(h, "meter") if m["ts"] < iso(START + 50)]   # before the stop
    assert len(meter) >= 4 and all(m["offered_a"] == 10 for m in meter)
    assert 9900 <= max(max(m["i_ma"]) for m in meter) <= 10100    # the EV wants 16 A, draws the 10 A offered


def test_the_energy_cap_stops_the_session_with_energy_limit_reached():
    h = Harness(CARDS, [], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                            {"t": 3000, "ev_current_a": 32}], 120000,
                entries=[entry(tok(SEVEN), max_kwh="0.05")])
    h.run()
    rec = ended(h)
    assert [r["stop_reason"] for r in rec] == ["EnergyLimitReached"]
    # 7.4 kW: 50 Wh in ~25 s; the registers are read every second, and past the cap the EV has 2 s
    # to follow the withdrawn offer: at most ~6 Wh more.
    assert 50 <= rec[0]["energy_wh"] <= 50 + 7360 * 3 // 3600, rec[0]["energy_wh"]
    assert started(h)[0]["max_wh"] == 50


def test_off_peak_only_cards_charge_only_inside_the_sites_off_peak_hours():
    # the scenario starts at 07:55 UTC; off-peak 07:57-07:58 (UTC site)
    h = Harness(CARDS, [], charge("alice", stop_at=240000), 250000,
                entries=[entry(tok(SEVEN), offpeak_only=True)],
                device={"site": {"offpeak": [["07:57", "07:58"]]}})
    stamp(h)
    h.run()
    offers = [(e["ms"] // 1000, e["amps"]) for e in h.events("offer")]
    assert offers[0][1] == 32 and 120 <= offers[0][0] <= 121, offers
    assert offers[1][1] == 0 and 180 <= offers[1][0] <= 181, offers
    status = [(e.get("ms", 0) // 1000, e["connector"]) for e in h.events("status")]
    assert [c for t, c in status if t < 120][-1] == "SuspendedEVSE"
    assert "Charging" in [c for t, c in status if 120 <= t < 180]
    assert [c for t, c in status if t < 240][-1] == "SuspendedEVSE"
    e = ended(h)[0]["energy_wh"]
    assert 230 * 16 * 55 // 3600 <= e <= 230 * 16 * 62 // 3600, e   # one minute's worth, less the ramp


def test_cards_without_off_peak_only_charge_at_once():
    h = Harness(CARDS, ["alice"], charge("alice", stop_at=60000), 70000,
                device={"site": {"offpeak": [["22:00", "06:00"]]}})
    h.run()
    assert h.events("offer")[0]["amps"] == 32 and ended(h)[0]["energy_wh"] > 40


# -- list management over MQTT ------------------------------------------------------------------
def _file(path):
    with open(path, "rb") as f:
        return f.read()


def test_full_and_differential_list_updates_over_mqtt_change_who_is_accepted():
    h = Harness(CARDS, ["alice"], [{"t": 5000, "tap": "eve"}, {"t": 10000, "tap": "eve"}, {"t": 15000, "tap": "alice"},
                                   {"t": 25000, "tap": "bob"}, {"t": 30000, "tap": "bob"}, {"t": 35000, "tap": "eve"}],
                40000,
                device={"auth": {"LocalPreAuthorize": True, "timeout_s": 1}})
    h.run(until_ms=1000)
    cmd(h, "list_update", id="l-1", version=2, type="full", entries=[entry(h.tokens["eve"])])
    h.run(until_ms=20000)
    cmd(h, "list_update", id="l-2", version=3, type="diff",
        entries=[entry(h.tokens["bob"], max_current_a=10), {"token": h.tokens["eve"], "remove": True}])
    h.run()
    assert h.acks() == [{"id": "l-1", "cmd": "list_update", "status": "accepted", "version": 2, "entries": 1},
                        {"id": "l-2", "cmd": "list_update", "status": "accepted", "version": 3, "entries": 1}]
    assert taps(h) == [("eve", "accepted", None, "local_list"), ("eve", "cancelled", None, None),
                       ("alice", "asking", None, None), ("alice", "refused", "Invalid", "online"),
                       ("bob", "accepted", None, "local_list"), ("bob", "cancelled", None, None),
                       ("eve", "asking", None, None), ("eve", "refused", "Invalid", "online")]
    assert h.auth.local_list.version == 3
    saved = _file(h.auth.local_list.path)
    assert h.tokens["bob"].encode() in saved and h.tokens["eve"].encode() not in saved


def test_a_bad_list_update_is_rejected_whole_and_the_old_list_stays():
    h = Harness(CARDS, ["alice"], [{"t": 20000, "tap": "alice"}], 30000)
    h.run(until_ms=1000)
    before = _file(h.auth.local_list.path)
    good = entry(h.tokens["eve"])
    bad = [
        ("b-1", {"version": 2, "type": "full", "entries": [good, entry(h.tokens["bob"], status="Maybe")]},
         "entries[1].status: must be Accepted, Blocked, Expired or Invalid"),
        ("b-2", {"version": 1, "type": "diff", "entries": [good]},
         "version: a diff must be 2..1001, above the current version 1 by at most 1000 (got 1; a full list sets any version)"),
        ("b-3", {"version": 2, "type": "full", "entrys": [good]}, "entrys: unknown field"),
        ("b-4", {"version": "2", "type": "full", "entries": [good]}, "version: must be an integer 1..1073741823"),
        ("b-5", {"version": 2, "type": "all", "entries": [good]}, "type: must be \"full\" or \"diff\""),
        ("b-6", {"version": 2, "type": "full", "entries": {"token": h.tokens["eve"]}}, "entries: must be a list"),
        ("b-7", {"version": 2, "type": "full", "entries": [good, good]}, "entries[1].token: listed twice under key 1"),
        ("b-8", {"version": 2, "type": "full", "entries": [dict(good, remove=True)]},
         "entries[0].remove: only true, and only in a diff update"),
        ("b-9", {"version": 2, "type": "diff", "entries": [dict(good, expiry=12345)]},
         "entries[0].expiry: must be a date-time like 2027-01-01T00:00:00Z (1970..2106) or null"),
        ("b-10", {"version": 2, "type": "full", "entries": [dict(good, uid="04A1B2C3")]},
         "entries[0].uid: unknown field"),
    ]
    for cid, payload, _ in bad:
        cmd(h, "list_update", id=cid, **payload)
    h.run()
    assert [(a["id"], a["status"], a.get("reason")) for a in h.acks()] == [(c, "rejected", r) for c, _, r in bad]
    assert h.auth.local_list.version == 1 and len(h.auth.local_list) == 1
    assert _file(h.auth.local_list.path) == before
    assert taps(h) == [("alice", "accepted", None, "local_list")]


# -- key rotation -------------------------------------------------------------------------------
def rotate(h, current, accept):
    """Give the running harness the site keys {1: KEY, 2: KEY2} (secrets.json during a rotation)."""
    keys = keys_from_config({"site_keys": {"1": binascii.hexlify(KEY).decode(),
                                           "2": binascii.hexlify(KEY2).decode()},
                             "site_key_current": current, "site_key_accept": accept})
    h.settings.keys = h.auth.keys = keys


def test_during_a_key_overlap_entries_under_the_old_key_authorize_and_records_use_the_new_one():
    entries = [entry(tok(FOUR, KEY2), key=2)]          # bob was re-provisioned under key 2 already
    h = Harness(CARDS, ["alice"], charge("alice", stop_at=20000) + [{"t": 26000, "plug": False},
                                                                  {"t": 28000, "tap": "bob"},
                                                                  {"t": 32000, "tap": "bob"},
                                                                  {"t": 36000, "tap": "eve"}], 45000,
                entries=entries)
    rotate(h, 2, [1, 2])
    h.online_answers[tok(CARDS["eve"], KEY2)] = {"status": "Accepted"}
    h.run()
    recs = h.sessions()
    assert [(r["event"], r["token"], r["key"], r["auth"]) for r in recs] == [
        ("started", tok(SEVEN, KEY2), 2, "local_list"), ("ended", tok(SEVEN, KEY2), 2, "local_list")]
    assert recs[1]["stop_reason"] == "Local"     # the same card stops it (under either key)
    assert taps(h)[2:4] == [(None, "accepted", None, "local_list"), (None, "cancelled", None, None)]
    assert h.events("tap")[2]["token"] == tok(FOUR, KEY2)
    assert published(h, "auth/req")[0]["token"] == tok(CARDS["eve"], KEY2)
    assert published(h, "auth/req")[0]["key"] == 2
    assert all(tok(c) not in json.dumps(h.log.events) for c in (SEVEN, FOUR))  # no key-1 token in the log


def test_after_the_overlap_old_key_entries_no_longer_match():
    h = Harness(CARDS, ["alice"], [{"t": 2000, "tap": "alice"}], 10000, device={"auth": {"timeout_s": 1}})
    rotate(h, 2, [2])
    h.run()
    assert published(h, "auth/req") == [{"id": published(h, "auth/req")[0]["id"], "token": tok(SEVEN, KEY2),
                                         "key": 2}]
    assert h.events("tap")[-1]["result"] == "refused"


def test_a_remote_start_names_its_key_version():
    h = Harness(CARDS, [], [{"t": 1000, "plug": True}], 20000, device={"auth": {"LocalPreAuthorize": True, "LocalAuthorizeOffline": True, "AuthorizeRemoteTxRequests": False}})   # trusted
    rotate(h, 2, [1, 2])
    h.run(until_ms=2000)
    cmd(h, "remote_start", id="r-1", token=tok(SEVEN), key=1)
    h.run()
    assert h.acks()[0]["status"] == "accepted"
    assert [(r["token"], r["key"], r["auth"]) for r in started(h)] == [(tok(SEVEN), 1, "remote")]


# -- purge --------------------------------------------------------------------------------------
def _queued(outbox):
    """Every payload still waiting in the outbox, in order."""
    out = []
    for mid in outbox.pending():
        out.append(outbox.payload(mid).decode())
    return out


def test_purge_forgets_a_pseudonym_in_list_and_cache_once_its_records_are_acknowledged():
    h = Harness(CARDS, ["alice"], charge("eve", stop_at=20000) + [{"t": 30000, "tap": "alice"},
                                                                 {"t": 60000, "tap": "alice"},
                                                                 {"t": 70000, "tap": "eve"}], 80000,
                device={"auth": {"LocalPreAuthorize": True, "timeout_s": 1}})
    eve, alice = h.tokens["eve"], h.tokens["alice"]
    h.online_answers[eve] = {"status": "Accepted"}
    h.acking = False                            # the backend acknowledges nothing yet
    h.run(until_ms=55000)                       # eve's session is over, alice's is running
    assert any(eve in p for p in _queued(h.outbox))
    assert eve.encode() in _file(h.auth.cache.path)
    cmd(h, "purge", id="p-1", token=eve.upper())
    h.run(until_ms=56000)
    assert h.acks() == [{"id": "p-1", "cmd": "purge", "status": "rejected", "reason":
                         "token: 2 records naming it are not yet acknowledged by the backend; purge again once they are"}]
    assert eve.encode() in _file(h.auth.cache.path)       # nothing changed
    recs = [json.loads(p) for p in _queued(h.outbox)]
    assert [(r["tx_id"], r["event"], r["token"], r.get("purged")) for r in recs] == [
        (1, "started", eve, None), (1, "ended", eve, None), (2, "started", alice, None)]
    assert recs[1]["energy_wh"] > 0 and "cost" in recs[1]   # the billing data stays, with its driver
    h.inject("ack", {"msg_ids": [r["msg_id"] for r in recs if r["token"] == eve]})   # delivered now
    h.run(until_ms=57000)
    cmd(h, "purge", id="p-2", token=eve.upper())
    h.run(until_ms=58000)
    assert h.acks()[1] == {"id": "p-2", "cmd": "purge", "status": "accepted", "token": eve, "list": 0, "cache": 1,
                           "pending": 0, "journal": True}
    assert eve.encode() not in _file(h.auth.cache.path)
    for name in os.listdir(h.records.path):    # the journal's older records left the flash too
        assert eve.encode() not in _file(h.records.path + "/" + name), name
    assert h.journal.session["tx_id"] == 2                 # alice's open session survived the scrub
    h.acking = True
    h.run()
    assert [(r["token"], r["stop_reason"]) for r in ended(h) if r["tx_id"] == 2] == [(alice, "Local")]
    assert taps(h)[-2:] == [("eve", "asking", None, None), ("eve", "accepted", None, "online")]  # asked again


def test_a_refused_purge_leaves_the_waiting_records_whole_across_a_reboot():
    from firmware.storage.journal import Journal
    from firmware.storage.outbox import Outbox
    from firmware.storage.recordlog import RecordLog

    h = offline(Harness(CARDS, ["alice"], charge("alice", stop_at=20000), 30000))
    h.run()                                     # offline: both records wait in the outbox
    alice = h.tokens["alice"]
    cmd(h, "purge", id="p-1", token=alice)
    h.run(until_ms=31000)
    assert [(e["id"], e["result"]) for e in h.events("command")] == [("p-1", "rejected")]
    log = RecordLog(h.records.path)             # the next boot, on the same flash
    outbox = Outbox(h.settings.outbox_size, log, h.clock)
    journal = Journal(log, outbox)
    log.attach(journal, outbox)
    boot = journal.recover()
    assert boot["session"] is None and boot["bad"] == 0
    queued = [json.loads(p) for p in _queued(outbox)]
    assert [(r["event"], r["token"], r.get("purged")) for r in queued] == [("started", alice, None), ("ended", alice, None)]
    assert queued[1]["energy_wh"] > 0


def test_purge_of_a_card_whose_session_or_check_is_in_progress_is_rejected():
    h = Harness(CARDS, ["alice"], charge("alice") + [{"t": 30000, "tap": "alice"}, {"t": 40000, "plug": False},
                                                     {"t": 45000, "tap": "eve"}], 60000,
                device={"auth": {"LocalPreAuthorize": True, "timeout_s": 2}})
    h.answer_auth = False
    h.run(until_ms=10000)
    cmd(h, "purge", id="p-1", token=h.tokens["alice"])
    h.run(until_ms=46000)                       # eve's online check is waiting for the backend
    assert h.ctl.pending is not None
    cmd(h, "purge", id="p-2", token=h.tokens["eve"])
    h.run()
    acks = h.acks()
    assert [(a["id"], a["status"]) for a in acks] == [("p-1", "rejected"), ("p-2", "rejected")]
    assert "in progress" in acks[0]["reason"] and "in progress" in acks[1]["reason"]
    assert [r["token"] for r in ended(h)] == [h.tokens["alice"]]
    assert h.ctl.pending is None and h.events("auth_timeout")      # the check still ended
    assert len(h.auth.local_list) == 1


def test_during_a_key_overlap_a_card_is_purged_by_its_pseudonym_under_each_version():
    entries = [entry(tok(SEVEN, KEY2), key=2, group="fleet-a")]   # alice under key 1 and key 2
    h = Harness(CARDS, ["alice"], [{"t": 20000, "tap": "alice"}], 30000, entries=entries,
                device={"auth": {"LocalPreAuthorize": True, "timeout_s": 1}})
    rotate(h, 2, [1, 2])
    h.run(until_ms=2000)
    cmd(h, "purge", id="p-1", token=tok(SEVEN))              # one pseudonym per key version
    h.run(until_ms=3000)
    assert len(h.auth.local_list) == 1
    cmd(h, "purge", id="p-2", token=tok(SEVEN, KEY2), key=2)
    h.run()
    assert [(a["id"], a["list"], a["cache"]) for a in h.acks()] == [("p-1", 1, 0), ("p-2", 1, 0)]
    assert len(h.auth.local_list) == 0
    saved = _file(h.auth.local_list.path)
    assert tok(SEVEN).encode() not in saved and tok(SEVEN, KEY2).encode() not in saved
    assert [(e["result"], e.get("auth")) for e in h.events("tap")] == [("asking", None), ("refused", "online")]
    assert [r["token"] for r in published(h, "auth/req")] == [tok(SEVEN, KEY2)]


def test_purge_also_erases_a_cache_entry_dropped_for_its_age_and_unreadable_files():
    h = Harness(CARDS, [], [{"t": 2000, "tap": "eve"}, {"t": 80000, "tap": "eve"}], 100000,
                device={"auth": {"cache_max_age_s": 60, "LocalPreAuthorize": True}})
    eve = h.tokens["eve"]
    h.online_answers[eve] = {"status": "Accepted"}
    h.run(until_ms=10000)
    assert eve.encode() in _file(h.auth.cache.path)
    h.link.up = False                           # offline: the 78 s old entry is too old and is dropped
    h.run(until_ms=85000)
    assert taps(h)[-1] == ("eve", "refused", "Invalid", "offline_unknown") and len(h.auth.cache) == 0
    cmd(h, "purge", id="p-1", token=eve)
    h.run()
    assert [(e["id"], e["result"]) for e in h.events("command")] == [("p-1", "accepted")]
    assert eve.encode() not in _file(h.auth.cache.path)
    # a list file the charger could not read at boot (it started empty) is overwritten by a purge too
    with open(h.auth.local_list.path, "w") as f:
        f.write('{"version": 3, "entries": 2}\n{"token": "%s", "key": 1}\n' % eve)
    damaged = LocalList(h.auth.local_list.path)
    assert damaged.load_error and len(damaged) == 0
    assert damaged.remove(eve) == 0 and eve.encode() not in _file(h.auth.local_list.path)


# -- bad input ----------------------------------------------------------------------------------
def test_crc_errors_from_the_reader_are_no_tap_and_the_next_clean_read_is_one_tap():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}], 10000)
    h.world.rfid.crc_errors = 3                 # the first three SAK answers arrive corrupted
    stamp(h)
    h.run()
    assert taps(h) == [("alice", "accepted", None, "local_list")]
    assert h.world.rfid.crc_errors == 0
    assert h.events("tap")[0]["ms"] >= 2000 + 3 * 200      # one poll per corrupted read
    assert [e["tx_id"] for e in h.events("session_start")] == [1] and not h.events("fault")


def test_garbage_and_truncated_frames_never_become_a_tap_or_a_fault():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 4000, "tap": "alice"}, {"t": 12000, "tap": "alice"}], 20000)
    h.world.rfid.fault = "garbage"              # wrong BCC, SAK without its CRC_A
    h.run(until_ms=10000)
    assert h.events("tap") == [] and h.sessions() == [] and not h.events("fault")
    assert h.ctl.connector == "Preparing" and not h.ctl.reader.failed
    h.world.rfid.fault = None
    h.run()
    assert taps(h) == [("alice", "accepted", None, "local_list")]


def test_a_dead_reader_is_reported_and_remote_start_still_works():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 3000, "reader": "offline"},
                                   {"t": 20000, "tap": "alice"}, {"t": 60000, "reader": "online"},
                                   {"t": 90000, "tap": "alice"}], 100000, device={"auth": {"LocalPreAuthorize": True, "LocalAuthorizeOffline": True, "AuthorizeRemoteTxRequests": False}})
    h.run(until_ms=15000)
    assert h.ctl.error_code == "ReaderFailure" and h.ctl.connector == "Preparing"
    cmd(h, "remote_start", id="r-1", token=h.tokens["eve"])
    h.run()
    faults = published(h, "fault")
    assert [(f["event"], f["code"]) for f in faults] == [("raised", "ReaderFailure"), ("cleared", "ReaderFailure")]
    assert h.acks()[0]["status"] == "accepted"
    assert [(e["token"], e["auth"]) for e in h.events("session_start")] == [(h.tokens["eve"], "remote")]
    # the remote start's decision, then alice at 90 s (her tap at 20 s was never read)
    assert taps(h) == [("eve", "accepted", None, "remote"), ("alice", "refused", "ConcurrentTx", None)]


def test_malformed_wrong_typed_unknown_and_oversized_commands_are_refused_and_change_nothing():
    h = Harness(CARDS, ["alice"], charge("alice"), 40000)
    h.run(until_ms=10000)
    tx = h.ctl.session.tx_id
    before = (h.auth.local_list.version, _file(h.auth.local_list.path), len(h.auth.cache))
    inbox = h.sync.inbox
    inbox.append(("cmd/remote_stop", h.sealed("cmd/remote_stop", b"{not json}")))
    inbox.append(("cmd/remote_stop", b"[1, 2]"))          # cannot carry a MAC: refused unread
    inbox.append(("cmd/remote_stop", b"\xff\xfe"))
    cmd(h, "remote_stop", tx_id=tx)                                        # no id
    cmd(h, "remote_stop", id=7)                                            # id of the wrong type
    cmd(h, "remote_stop", id="x" * 65)                                     # id too long
    cmd(h, "format_flash", id="u-1")                                       # unknown command
    cmd(h, "remote_stop", id="w-1", tx_id=str(tx))                         # wrong type
    cmd(h, "report_problem", id="w-2", text=5)
    cmd(h, "report_problem", id="w-3", text="x" * 201)
    h.run(until_ms=11000)
    for _ in range(9):                         # more than the inbox holds
        h.sync._on_message("cp/v1/cp-test/cmd/purge", h.sealed("cmd/purge", {"id": "f", "token": h.tokens["eve"]}))
    h.ctl.commands.handle_inbox()
    big = json.dumps({"id": "big-1", "version": 2, "type": "full",
                      "entries": [entry(h.tokens["eve"])] * 200}).encode()
    assert len(big) > 8192
    h.sync._on_message(b"cp/v1/cp-test/cmd/list_update", h.sealed("cmd/list_update", big))
    h.inject("auth/resp", {"id": [1], "status": "Accepted"})
    h.inject("auth/resp", {"id": {"a": 1}, "status": "Accepted"})
    h.inject("auth/resp", "Accepted")
    h.inject("ack", {"msg_ids": "1-0"})
    h.run()
    acks = [(a["id"], a["cmd"], a["status"], a.get("reason")) for a in h.acks()]
    assert acks[:10] == [
        (None, "remote_stop", "rejected", "payload must be a JSON object"),
        (None, "remote_stop", "rejected", 'unauthenticated: not sealed (no trailing "mac" member)'),
        (None, "remote_stop", "rejected", 'unauthenticated: not sealed (no trailing "mac" member)'),
        (None, "remote_stop", "rejected", "id must be a string of 1..64 characters"),
        (None, "remote_stop", "rejected", "id must be a string of 1..64 characters"),
        (None, "remote_stop", "rejected", "id must be a string of 1..64 characters"),
        ("u-1", "format_flash", "rejected", "unknown command 'format_flash'"),
        ("w-1", "remote_stop", "rejected", "tx_id '%d' is not the running session (%d)" % (tx, tx)),
        ("w-2", "report_problem", "rejected", "text must be a string of at most 200 characters"),
        ("w-3", "report_problem", "rejected", "text must be a string of at most 200 characters")]
    assert [a[0] for a in acks[10:]] == ["f"] * 8 and "big-1" not in [a[0] for a in acks]
    refused = [e["reason"] for e in h.events("command") if e.get("result") == "refused"]
    assert refused == ["inbox full", "larger than 8192 bytes",
                       'unauthenticated: not sealed (no trailing "mac" member)']   # "Accepted": no object, no MAC
    ignored = [e["reason"] for e in h.events("command") if e.get("result") == "ignored"]
    assert len(ignored) == 3 and ignored[0].startswith("id:") and ignored[2].startswith("ack must be")
    # nothing changed: the session runs on, no fault, the list and cache are as they were
    assert h.ctl.session is not None and h.ctl.session.tx_id == tx and ended(h) == []
    assert not h.events("fault") and h.ctl.connector == "Charging"
    assert (h.auth.local_list.version, _file(h.auth.local_list.path), len(h.auth.cache)) == before


def test_a_flash_write_failing_during_a_command_rejects_it_and_the_session_goes_on():
    h = Harness(CARDS, ["alice"], charge("alice"), 30000)
    h.run(until_ms=10000)
    os.mkdir(h.auth.local_list.path + ".tmp")   # the list's temporary file cannot be written
    try:
        cmd(h, "list_update", id="l-1", version=2, type="full", entries=[entry(h.tokens["eve"])])
        cmd(h, "purge", id="p-1", token=h.tokens["bob"])
        h.run()
    finally:
        os.rmdir(h.auth.local_list.path + ".tmp")
    acks = h.acks()
    assert [(a["id"], a["status"]) for a in acks] == [("l-1", "rejected"), ("p-1", "accepted")]
    assert acks[0]["reason"].startswith("storage error")
    assert h.auth.local_list.version == 1 and h.ctl.session is not None and not h.events("fault")


# -- driver feedback ----------------------------------------------------------------------------
def _edges(pin):
    seen = []
    machine.net(pin).listeners.append(lambda level: seen.append(level))
    return seen


def test_led_and_buzzer_patterns_for_accepted_refused_charging_finished_and_fault():
    board = board_config()
    board["buzzer"] = {"pin": 12, "active": 1}
    h = Harness(CARDS, ["alice"], charge("alice", stop_at=40000) + [
        {"t": 50000, "tap": "eve"}, {"t": 60000, "rcd": "trip"}], 70000, board=board)
    shown = patterns(h)
    led, buzz = _edges(2), _edges(12)
    h.run(until_ms=49000)
    names = [p for _, p in shown]
    seq = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    # plugged (waiting for a card), accepted, charging, the soft stop (offer withdrawn), unplug please
    assert seq == ["ready", "waiting", "accepted", "charging", "waiting", "finished"], seq
    buzz_at = len(buzz)
    assert buzz.count(1) == 1                  # one beep: the accepted flash; steady patterns are silent
    h.run()
    names = [p for _, p in shown]
    assert "refused" in names and names[-1] == "fault" and h.ctl.connector == "Faulted"
    assert buzz[buzz_at:].count(1) == 3        # refused: three beeps
    assert led.count(1) > 10 and led.count(0) > 10   # the LED really blinks


def test_report_a_problem_by_button_and_by_app_is_tied_to_the_current_or_last_session():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "button": "report_problem"}] + charge("alice", at=3000, stop_at=30000)
                + [{"t": 20000, "button": "report_problem"}, {"t": 50000, "button": "report_problem"}], 60000)
    h.run(until_ms=40000)
    cmd(h, "report_problem", id="fb-1", text="the cable is damaged")
    h.run()
    fb = published(h, "feedback")
    alice = h.tokens["alice"]
    assert [(f["source"], f["tx_id"], f["token"], f["text"]) for f in fb] == [
        ("button", None, None, None), ("button", 1, alice, None), ("app", 1, alice, "the cable is damaged"),
        ("button", 1, alice, None)]
    assert len(set(f["msg_id"] for f in fb)) == 4
    assert h.acks() == [{"id": "fb-1", "cmd": "report_problem", "status": "accepted"}]
