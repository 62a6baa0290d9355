"""Commands that cannot hurt charging, through the controller over the simulated world: a remote
clear of a welded contactor, a remote start for a pseudonym nobody authorized, a command flood on a
slow link, a tariff that cannot be saved."""
import json

from check import raises
from configs import settings
from firmware.link.commands import BURST, PER_PASS, RATE
from simharness import Harness

CARDS = {"alice": "04A1B2C3D4E5F6", "eve": "0BADCAFE"}


def cmd(h, name, **payload):
    h.inject("cmd/" + name, payload)


def _welded(**device):
    """alice charges at 16 A; the contactor welds; her second tap opens it: current keeps flowing."""
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 3000, "ev_current_a": 16}, {"t": 10000, "contactor": "welded"},
                                   {"t": 20000, "tap": "alice"}, {"t": 60000, "tap": "alice"}], 70000,
                device=device or None)
    h.run(until_ms=40000)
    assert h.ctl.faults.latched == ["welded"]
    return h


def test_a_welded_contactor_is_never_cleared_remotely_only_at_the_charger():
    for device in ({}, {"faults": {"remote_clear": ["overcurrent", "rcd"]}}):
        h = _welded(**device)
        cmd(h, "clear_fault", id="cf-1")
        h.run()                                   # alice taps again at 60 s
        ack = h.acks()[-1]
        assert (ack["id"], ack["status"]) == ("cf-1", "rejected")
        assert ack["reason"].startswith("latched welded: cleared only at the charger (tech.clear_fault())")
        assert h.ctl.faults.latched == ["welded"]          # main cleared it: the next session closed it
        assert len(h.sessions()) == 2                      # no new session
        assert h.events("tap")[-1]["status"] == "Unavailable"
        assert h.ctl.clear_fault() == ["welded"]           # tech.clear_fault() at the charger
    e = raises(ValueError, settings, {"faults": {"remote_clear": ["welded"]}})
    assert "faults.remote_clear" in str(e) and "welded" in str(e)
    assert "faults.remote_clear" in str(raises(ValueError, settings, {"faults": {"remote_clear": ["nope"]}}))


def test_the_config_lets_the_backend_clear_the_kinds_it_lists_and_only_those():
    h = Harness(CARDS, ["alice"], [{"t": 4000, "plug": True}], 5000, device={"faults": {"remote_clear": ["overcurrent"]}})
    h.run(until_ms=2000)
    for kind in ("overcurrent", "rcd_selftest"):
        for _ in range(4 if kind == "overcurrent" else 1):
            h.ctl.faults.trip(kind, "test")
            h.ctl.faults.clear(kind)
    assert sorted(h.ctl.faults.latched) == ["overcurrent", "rcd_selftest"]
    cmd(h, "clear_fault", id="cf-1")
    cmd(h, "clear_fault", id="cf-2")
    h.run()
    a1, a2 = h.acks()
    assert (a1["status"], a1["cleared"], a1["kept"]) == ("accepted", ["overcurrent"], ["rcd_selftest"])
    assert (a2["status"], a2["reason"]) == ("rejected", "latched rcd_selftest: cleared only at the charger "
                                            "(tech.clear_fault()); faults.remote_clear does not list it")
    assert h.ctl.faults.latched == ["rcd_selftest"]


def test_a_remote_start_is_authorized_like_a_tap():
    h = Harness(CARDS, [], [{"t": 1000, "plug": True}, {"t": 3000, "ev_current_a": 16}], 30000)
    h.run(until_ms=2000)
    cmd(h, "remote_start", id="r-1", token="ab" * 16)          # made up: the backend does not know it
    h.run(until_ms=5000)
    assert h.ctl.authorized is None and h.sessions() == []
    req = [json.loads(p) for t, p, _, _ in h.link.published if t.endswith("/auth/req")]
    assert [r["token"] for r in req] == ["ab" * 16]          # asked, as for a tap: main trusted it
    h.online_answers[h.tokens["eve"]] = {"status": "Accepted"}
    cmd(h, "remote_start", id="r-2", token=h.tokens["eve"])   # a driver the backend accepts
    h.run()
    acks = dict((a["id"], a["status"]) for a in h.acks())
    assert acks == {"r-1": "accepted", "r-2": "accepted"}      # r-1 went to the backend, which said no
    assert [(r["event"], r["token"]) for r in h.sessions()][:1] == [("started", h.tokens["eve"])]
    assert [e["result"] for e in h.events("tap") if e.get("token") == "ab" * 16][-1] == "refused"


def test_a_command_flood_on_a_slow_link_never_starves_the_watchdog_or_the_session():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 3000, "ev_current_a": 16}, {"t": 40000, "tap": "alice"}], 45000)
    backend = h.link.on_publish
    sent = [0]

    def slow(topic, payload):                  # a blocking QoS-1 publish on a poor link: 100 ms each
        h.clock.advance(100)
        backend(topic, payload)

    def flood():                               # the broker delivers ~30 bad commands a second, 5..17 s
        due = min(max(h.clock.ms - 5000, 0) * 30 // 1000, 360)
        while sent[0] < due:
            h.sync._on_message(b"cp/v1/cp-test/cmd/remote_stop",
                               json.dumps({"id": "x-%d" % sent[0], "tx_id": 999}).encode())
            sent[0] += 1

    feeds = []
    wdt = h.board.wdt
    fed = wdt.feed

    def feed():
        feeds.append(h.clock.ms)
        fed()

    wdt.feed = feed
    tick = h.link.tick

    def tick_and_flood():                      # what arrived since the last pass, then the link's own work
        flood()
        return tick()

    h.link.on_publish = slow
    h.link.tick = tick_and_flood
    h.run()                                    # a watchdog reset raises SystemExit
    assert sent[0] == 360
    assert max(b - a for a, b in zip(feeds, feeds[1:])) <= PER_PASS * 100 + 100   # fed every pass or so
    ended = h.sessions()[-1]
    assert ended["event"] == "ended" and ended["stop_reason"] == "Local"
    assert abs(ended["energy_wh"] - 230 * 16 * 37 / 3600) <= 8   # sampled and billed all along
    acks = len(h.acks())
    assert acks <= BURST + RATE * 12 + 8 and h.ctl.commands.dropped > 200   # the excess is not answered
    assert 1 <= len([e for e in h.events("command") if e.get("result") == "dropped"]) <= 3


def test_a_tariff_that_cannot_be_saved_or_a_bad_tariff_file_never_stops_the_charger():
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 5000, "tap": "alice"},
                                   {"t": 6000, "ev_current_a": 10}, {"t": 20000, "tap": "alice"}], 25000)
    h.run(until_ms=2000)
    deep = '{"id": "t-1", "version": 2, "tariff": {"id": "x", "currency": "EUR", "elements": [], "junk": ' + \
        "[" * 3000 + "]" * 3000 + "}}"
    h.inject("cmd/tariff", deep.encode())
    h.inject("cmd/tariff", ('{"id": "t-2", "version": %s}' % ("9" * 8037)).encode())
    h.run()
    assert [(a["status"], a["reason"]) for a in h.acks()] == [("rejected", "payload: nested deeper than 16"),
                                                              ("rejected", "payload: number longer than 32 characters")]
    assert "internal" not in h.ctl.faults.active and h.events("fault") == []
    assert [r["event"] for r in h.sessions()] == ["started", "ended"]   # taps still work


def test_a_remote_stop_for_an_earlier_life_of_the_charger_stops_nothing():
    """After state.json and the journal were lost, tx ids start again in a new data epoch: a stop
    the OCPP bridge meant for the old life's tx 1 must not stop the new life's tx 1."""
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 3000, "ev_current_a": 16}], 30000)
    h.run(until_ms=10000)
    ep, tx = h.ctl.stamp.ep, h.ctl.session.tx_id
    cmd(h, "remote_stop", id="rs-1", tx_id=tx, ep=ep + 1)
    cmd(h, "remote_stop", id="rs-2", tx_id=tx, ep=True)
    h.run(until_ms=15000)
    old, flag = h.acks()[-2:]
    assert (old["id"], old["status"]) == ("rs-1", "rejected") and "data epoch" in old["reason"]
    assert (flag["id"], flag["status"]) == ("rs-2", "rejected")
    assert h.ctl.session is not None and h.ctl.session.tx_id == tx   # still charging
    cmd(h, "remote_stop", id="rs-3", tx_id=tx, ep=ep)
    h.run(until_ms=30000)
    assert (h.acks()[-1]["id"], h.acks()[-1]["status"]) == ("rs-3", "accepted")
    assert h.ctl.session is None and h.sessions()[-1]["event"] == "ended"
