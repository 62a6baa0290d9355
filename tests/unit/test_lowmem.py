"""Running short of heap is not an outage: the task that hit a MemoryError waits for its next turn,
commands are answered busy, and the charge goes on; in the safety path charging is suspended and
resumes when memory allows (firmware/controller.py). Squeeze stands where the heap ran out."""
import json

from firmware.link.commands import BUSY
from simharness import Harness

CARDS = {"alice": "04A1B2C3D4E5F6"}
PLUGGED = [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 10}]


class Squeeze:
    """A callable in place of a real one: raises MemoryError `times` times, then calls through."""

    def __init__(self, real, times):
        self.real = real
        self.times = times
        self.raised = 0

    def __call__(self, *args):
        if self.raised < self.times:
            self.raised += 1
            raise MemoryError("memory allocation failed")
        return self.real(*args)


def _opened(h):
    return [e["it"] for e in h.events("contactor") if not e["closed"]]


def _notices(h):
    out = [json.loads(p) for t, p, _, _ in h.link.published if t.endswith("/fault")]
    return [f for f in out if f["event"] == "notice" and f.get("info") == "low_memory"]


def test_a_link_short_of_memory_sends_later_and_the_charge_goes_on():
    h = Harness(CARDS, ["alice"], PLUGGED + [{"t": 60000, "tap": "alice"}], 70000)
    h.run(until_ms=1500)
    squeeze = h.link.publish = Squeeze(h.link.publish, 100)   # ~10 s of passes: sending, acks, meter values
    h.run()
    assert squeeze.raised == 100 and h.ctl.lowmem.n >= 100
    assert set(e["deferred"] for e in h.events("low_memory")) >= {"sync"}
    assert _opened(h)[:-1] == []   # the contactor opened once: at the end of the session
    assert not h.ctl.faults.active
    started, ended = h.sessions()   # queued while the link was short, sent when it had room
    assert started["event"] == "started" and ended["stop_reason"] == "Local"
    assert abs(ended["energy_wh"] - 230 * 10 * 57 // 3600) <= 2
    assert _notices(h)[0]["deferred"] in ("sync", "status", "commands")


def test_a_command_short_of_memory_is_answered_busy_and_runs_when_sent_again():
    h = Harness(CARDS, ["alice"], PLUGGED + [{"t": 40000, "tap": "alice"}], 45000)
    routes = h.ctl.commands.routes
    routes["report_problem"] = Squeeze(routes["report_problem"], 1)
    h.run(until_ms=10000)
    h.inject("cmd/report_problem", {"id": "c-1", "text": "cable"})
    h.run(until_ms=20000)
    h.inject("cmd/report_problem", {"id": "c-2", "text": "cable"})
    h.run()
    assert [(a["id"], a["status"], a.get("reason")) for a in h.acks()] == [("c-1", "rejected", BUSY),
                                                                            ("c-2", "accepted", None)]
    fb = [json.loads(p) for t, p, _, _ in h.link.published if t.endswith("/feedback")]
    assert [f["text"] for f in fb] == ["cable"]
    assert _opened(h)[:-1] == [] and not h.ctl.faults.active
    assert abs(h.sessions()[-1]["energy_wh"] - 230 * 10 * 37 // 3600) <= 2


def test_an_update_whose_lazy_module_finds_no_heap_is_answered_busy_and_the_charge_goes_on():
    """The OTA bundle reader loads with the first update (firmware/link/ota.py load_reader)."""
    import sys

    from test_ota import Acks, Server, _ShortFor, _clock, _cmd, _files, _tmp, _updater, ok
    from firmware.link.bundle import pack

    h = Harness(CARDS, ["alice"], PLUGGED + [{"t": 40000, "tap": "alice"}], 45000)
    blob = pack(_files("2.0.0"))
    up = _updater(_tmp(), _clock(), Acks(), Server(ok(blob)))
    h.ctl.commands.routes["update"] = up.start   # what Handlers.update calls
    h.run(until_ms=10000)
    sys.modules.pop("firmware.link.bundle", None)
    h.inject("cmd/update", _cmd(blob, cid="u-1"))
    with _ShortFor("firmware.link.bundle"):
        h.run(until_ms=20000)
    h.inject("cmd/update", _cmd(blob, cid="u-2"))
    h.run()
    assert [(a["id"], a["status"], a.get("reason")) for a in h.acks()] == [("u-1", "rejected", BUSY),
                                                                            ("u-2", "accepted", None)]
    assert _opened(h)[:-1] == [] and not h.ctl.faults.active
    assert abs(h.sessions()[-1]["energy_wh"] - 230 * 10 * 37 // 3600) <= 2


def test_a_session_close_short_of_memory_finishes_at_the_next_step_with_one_record():
    h = Harness(CARDS, ["alice"], PLUGGED + [{"t": 30000, "plug": False}], 40000)
    squeeze = h.journal.session_ended = Squeeze(h.journal.session_ended, 3)
    h.run()
    assert squeeze.raised == 3
    ended = [r for r in h.sessions() if r["event"] == "ended"]
    assert len(ended) == 1 and ended[0]["stop_reason"] == "EVDisconnected"
    assert abs(ended[0]["energy_wh"] - 230 * 10 * 27 // 3600) <= 2
    assert ended[0]["chain_n"] == 0 and "detail" not in ended[0]   # signed once, the full record
    assert h.ctl.session is None and not h.board.contactor.commanded
    assert "internal" not in h.ctl.faults.active


def test_the_safety_path_short_of_memory_suspends_charging_until_memory_allows():
    h = Harness(CARDS, ["alice"], PLUGGED + [{"t": 90000, "tap": "alice"}], 100000)
    h.run(until_ms=20000)
    tx = h.ctl.session.tx_id
    squeeze = h.ctl.safety.fast = Squeeze(h.ctl.safety.fast, 1)
    h.run(until_ms=21000)
    assert squeeze.raised == 1 and not h.board.contactor.commanded
    assert "memory" in h.ctl.faults.active and h.ctl.connector == "Faulted"
    assert h.ctl.session.tx_id == tx and h.ctl.ev.offered_a == 0   # suspended, not ended
    h.run(until_ms=40000)
    assert "memory" not in h.ctl.faults.active and h.board.contactor.commanded   # charging again
    assert h.ctl.session.tx_id == tx
    h.run()
    faults = [json.loads(p) for t, p, _, _ in h.link.published if t.endswith("/fault")]
    assert [(f["event"], f.get("kind")) for f in faults] == [("raised", "memory"), ("cleared", "memory")]
    started, ended = h.sessions()
    assert ended["tx_id"] == tx and ended["stop_reason"] == "Local"
    assert 0 < ended["energy_wh"] < 230 * 10 * 87 // 3600   # the suspension drew nothing



def test_a_fault_that_cannot_be_raised_for_memory_keeps_power_off_and_is_raised_once_there_is_room():
    h = Harness(CARDS, ["alice"], PLUGGED + [{"t": 90000, "tap": "alice"}], 100000)
    h.run(until_ms=20000)
    h.ctl.safety.fast = Squeeze(h.ctl.safety.fast, 1)
    trip = h.ctl.faults.trip = Squeeze(h.ctl.faults.trip, 5)   # building the fault runs out of heap too
    h.run(until_ms=21000)   # on main the second MemoryError escaped the loop: the charger stopped
    assert trip.raised == 5 and not h.board.contactor.commanded and h.ctl.ev.offered_a == 0
    assert "memory" in h.ctl.faults.active and h.ctl.connector == "Faulted"
    h.run()
    assert [r["event"] for r in h.sessions()] == ["started", "ended"]
    assert h.sessions()[1]["energy_wh"] > 230 * 10 * 30 // 3600   # charged again after the suspension
