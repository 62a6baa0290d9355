"""The technician's REPL helpers: the firmware's own objects when it ran, its files when it did not."""
import json
import os

from configs import board as sim_board
from firmware import app
from firmware.ops import tech
from firmware.storage.eventlog import EventLog
from firmware.core.log import Log
from simharness import Harness

CARDS = {"alice": "04A1B2C3D4E5F6", "bob": "DEADBEEF"}


class Said:
    """Collects what the helpers print (tech.say), restores print when done."""

    def __enter__(self):
        self.lines = []
        tech.say = self.lines.append
        return self

    def __exit__(self, *exc):
        tech.say = print
        app.current.clear()
        del tech._board_cache[:]

    def text(self):
        return "\n".join(self.lines)


def _data(h):
    return h.records.path[:-len("/journal")]


def _live(h, log=None):
    """What firmware/app.py puts in `current` once the charger runs."""
    app.current.clear()
    app.current.update(data=_data(h), log=log, clock=h.clock, machine=None, hw=h.hw, ctl=h.ctl,
                       sync=h.sync, journal=h.journal, board=h.board, settings=h.settings)


def _files(d):
    """Every byte the firmware stored under d."""
    out = b""
    for n in os.listdir(d):
        p = d + "/" + n
        if os.stat(p)[0] & 0x4000:
            out += _files(p)
        else:
            with open(p, "rb") as f:
                out += f.read()
    return out


def _wipe(d):
    for n in os.listdir(d):
        os.remove(d + "/" + n)
    os.rmdir(d)


def _new_dir():
    d = "/tmp/tech-" + "".join("%02x" % b for b in os.urandom(4))
    os.mkdir(d)
    return d


def _two_sessions():
    """alice charged and stopped (Local); bob's session is still running at the end."""
    h = Harness(CARDS, ["alice", "bob"], [
        {"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16},
        {"t": 303000, "tap": "alice"}, {"t": 310000, "plug": False}, {"t": 320000, "plug": True},
        {"t": 322000, "tap": "bob"}, {"t": 323000, "ev_current_a": 10}], 700000)
    h.run()
    return h


def test_views_of_a_charger_that_ran_then_of_its_files_only():
    h = _two_sessions()
    d = _data(h)
    ended = [r for r in h.sessions() if r["event"] == "ended"]
    returned = []
    with Said() as said:
        app.current.clear()                       # never started this boot: files only
        st = tech.status(data=d)
        returned.append(st)
        assert st["mode"] == "offline" and st["boot"] == 1 and st["last_tx"] == 1
        assert st["session"]["tx_id"] == 2 and st["session"]["state"] == "open"
        assert st["energy_wh"] == h.ctl.state.values["meter_wh"] and st["queued"] == len(h.outbox)
        ss = tech.sessions(data=d)
        returned.append(ss)
        assert [(s["tx_id"], s["state"]) for s in ss] == [(1, "ended"), (2, "open")]
        assert ss[0]["stop_reason"] == "Local" and ss[0]["token"] == h.tokens["alice"]
        assert ss[0]["energy_wh"] == ended[0]["energy_wh"] > 0 and ss[0]["cost"] == ended[0]["cost"]
        assert ss[1]["token"] == h.tokens["bob"]
        assert "PowerLoss" in said.text()         # an open session is closed so at the next boot

        _live(h)                                  # stopped at the REPL: the firmware's objects
        st = tech.status()
        returned.append(st)
        running = h.ctl.metering.forward.wh - h.ctl.session.meter_start_wh
        assert st["mode"] == "stopped" and st["contactor_closed"] and st["offered_a"] == h.ctl.ev.offered_a == 32
        assert st["session"]["tx_id"] == 2 and st["session"]["energy_wh"] == running > 0
        assert st["queued"] == len(h.outbox) and st["boot"] == 1
        assert [s["state"] for s in tech.sessions()] == ["ended", "running"]
        refused = tech.selftest()
        assert refused == [{"item": "contactor", "ok": False, "detail": "commanded closed"}]
        m = tech.meter()
        returned.append(m)
        assert 22000 < m["phases"][0]["u_cv"] < 24000 and 9000 < m["phases"][0]["i_ma"] < 11000
        assert m["energy_wh"] == h.ctl.metering.forward.wh and m["flags"] == []

        tx = h.ctl.shutdown("Other", "interrupted at the console")   # what Ctrl-C does
        assert tx == 2 and not h.board.contactor.commanded and not h.world.closed
        ss = tech.sessions()
        returned.append(ss)
        assert ss[-1]["state"] == "ended" and ss[-1]["stop_reason"] == "Other" and ss[-1]["energy_wh"] >= running
        st = tech.status()
        assert st["session"] is None and st["last_tx"] == 2 and not st["contactor_closed"]
        m = tech.meter()
        assert m["phases"][0]["i_ma"] == 0 and m["phases"][0]["p_w"] == 0   # nothing flows through open poles
        said.lines[:] = []
        result = tech.selftest()
        returned.append(result)
        assert [(r["item"], r["ok"]) for r in result] == [
            ("meter", True), ("calibration", True), ("rfid", True), ("contactor", True), ("rcd", True),
            ("pilot", True)], result
        assert said.text().count("PASS") == 6 and not h.board.contactor.commanded and not h.world.closed
        returned.append(tech.faults())
        printed = said.text()
    blob = (json.dumps(returned) + printed).encode() + _files(d)
    for uid in CARDS.values():   # pseudonyms only: no raw UID in any output or file
        for form in (uid.upper().encode(), uid.lower().encode(), bytes.fromhex(uid)):
            assert form not in blob, uid


def test_fault_views_show_the_latch_and_the_samples_before_the_trip():
    h = Harness(CARDS, ["alice"], [
        {"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16},
        {"t": 10000, "contactor": "welded"}, {"t": 60000, "tap": "alice"}], 90000)
    h.run()
    d = _data(h)
    with Said() as said:
        _live(h)
        f = tech.faults()
        live = h.ctl.faults.active["welded"]
        assert [a["kind"] for a in f["active"]] == ["welded"] and f["active"][0]["latched"]
        assert f["latched"] == ["welded"] and f["trips"]["welded"] == 1
        assert f["last_trip"]["kind"] == "welded" and f["last_trip"]["samples"] == live.samples
        assert len(live.samples) > 0 and "LATCHED" in said.text()
        result = tech.selftest()
        assert ("contactor", False) in [(r["item"], r["ok"]) for r in result]   # aux: poles still closed

        h.world.meter.fault = "silent"        # a meter that stops answering fails its items
        result = tech.selftest()
        assert [(r["item"], r["ok"]) for r in result][:2] == [("meter", False), ("calibration", None)]
        assert "not responding" in tech.meter()["error"]
        h.world.meter.fault = None

        app.current.clear()                   # after a reset: from state.json and the journal
        f2 = tech.faults(data=d)
        assert f2["active"] == [] and f2["latched"] == ["welded"] and f2["trips"] == {"welded": 1}
        assert f2["last_trip"]["code"] == "PowerSwitchFailure" and f2["last_trip"]["samples"] == live.samples
        assert f2["last_trip"]["ts"] is not None

        _live(h)
        assert tech.clear_fault() == ["welded"]
        assert h.ctl.faults.latched == [] and "fault_reset" in h.log.kinds()
        app.current.clear()
        assert tech.faults(data=d)["latched"] == []   # the firmware saved it


def test_records_this_view_cannot_read_are_skipped():
    import binascii
    import struct

    from fakes import journal_stack
    from firmware.storage.recordlog import HAS_MSG, MESSAGE

    d = _new_dir()
    try:
        _, _, j = journal_stack(d + "/journal")
        j.recover()
        j.session_started({"msg_id": "1-0", "tx_id": 1, "seq": 0, "event": "started", "ts": "2026-03-02T08:00:00Z",
                           "token": "ab" * 16, "meter_start_wh": 100})
        j.session_ended(1, {"msg_id": "1-1", "tx_id": 1, "seq": 1, "event": "ended", "ts": "2026-03-02T09:00:00Z",
                            "started_at": "2026-03-02T08:00:00Z", "ended_at": "2026-03-02T09:00:00Z",
                            "meter_start_wh": 100, "energy_wh": 7400, "stop_reason": "Local", "token": "ab" * 16,
                            "cost": {"currency": "EUR", "total_excl_vat_minor": 222, "total_incl_vat_minor": 266}})
        for body in (b"\x05", b"\x05\x01\x01\x09\x00startedxy{not json"):   # whole records, nonsense inside
            head = struct.pack("<BBBHI", 0xA5, 0xC3, MESSAGE | HAS_MSG, len(body), 99)
            with open(d + "/journal/" + sorted(os.listdir(d + "/journal"))[-1], "ab") as f:
                f.write(head + struct.pack("<I", binascii.crc32(head + body)) + body)
        with Said() as said:
            ss = tech.sessions(data=d)
            assert [(s["tx_id"], s["state"], s["energy_wh"], s["stop_reason"]) for s in ss] == [
                (1, "ended", 7400, "Local")]
            assert "7.400 kWh" in said.text() and "EUR 2.66" in said.text()
            assert tech.status(data=d)["boot"] == 1
    finally:
        for n in os.listdir(d + "/journal"):
            os.remove(d + "/journal/" + n)
        os.rmdir(d + "/journal")
        _wipe(d)


def test_clear_fault_without_the_firmware_rewrites_state_and_logs_it():
    d = _new_dir()
    try:
        with open(d + "/state.json", "w") as f:
            f.write(json.dumps({"tx": 7, "cycles": 41, "faults": {"trips": {"rcd": 7, "overcurrent": 2},
                                                                  "latched": ["rcd"]}}))
        with Said() as said:
            assert tech.clear_fault(data=d) == ["rcd"]
            assert "Cleared: rcd" in said.text()
            assert tech.clear_fault(data=d) == []
            f = tech.faults(data=d)
        assert f["latched"] == [] and f["trips"] == {"rcd": 0, "overcurrent": 2} and f["cycles"] == 41
        with open(d + "/state.json") as fh:
            assert json.loads(fh.read())["tx"] == 7   # the rest of the state is kept
        lines = EventLog(d).tail(5)
        assert len(lines) == 1 and json.loads(lines[0][2:])["kinds"] == ["rcd"]
    finally:
        _wipe(d)


def test_log_reads_ram_while_it_has_enough_then_the_files():
    d = _new_dir()
    try:
        old = EventLog(d, batch=1)
        for i in range(40):
            old.append('@ {"ev": "status", "n": %d, "ts": "2026-03-02T08:00:00Z"}' % i)
        with Said() as said:
            got = tech.log(3, data=d)             # not started: the files
            assert [json.loads(x[2:])["n"] for x in got] == [37, 38, 39]
            assert "2026-03-02T08:00:00Z status" in said.lines[0]
            h_log = Log(_Clock(), keep=5, out=lambda line: None)
            h_log.store = EventLog(d)
            app.current.update(data=d, log=h_log)
            h_log.event("boot", boot=2)
            h_log.event("status", connector="Available")
            assert [json.loads(x[2:])["ev"] for x in tech.log(2)] == ["boot", "status"]   # RAM
            got = tech.log(7)                     # more than RAM keeps: files, then RAM
            assert [json.loads(x[2:]).get("n") for x in got] == [35, 36, 37, 38, 39, None, None]
            assert tech.log(0) == []
    finally:
        _wipe(d)


class _Clock:
    def time(self):
        return 1772438400

    def ticks_ms(self):
        return 0

    def ticks_diff(self, a, b):
        return a - b


def test_a_board_in_hold_is_checked_without_starting_its_watchdog():
    from hal.sim import machine
    from hal.sim.world import World

    hw = sim_board()
    world = World(hw, {"start_utc": 1772438100, "end_ms": 60000, "events": [{"t": 0, "plug": True}]})
    d = _new_dir()
    try:
        with open(d + "/state.json", "w") as f:
            f.write(json.dumps({"meter_wh": 1234}))
        with Said():
            app.current.update(data=d, clock=world.clock, machine=machine, hw=hw)   # what a hold boot leaves
            result = tech.selftest()
            assert [r["ok"] for r in result] == [True] * 6, result
            board = tech._board_cache[0]
            assert board.wdt is None and not board.contactor.commanded and not world.closed
            m = tech.meter()
            assert 22900 <= m["phases"][0]["u_cv"] <= 23100 and m["phases"][0]["i_ma"] == 0
            assert m["freq_chz"] == 5000 and m["energy_wh"] == 1234 and m["energy_saved"]
    finally:
        _wipe(d)


def test_resume_ends_a_technician_hold():
    d = _new_dir()
    try:
        with open(d + "/hold", "w") as f:
            f.write("interrupted at the console")
        with Said() as said:
            app.current.update(data=d, hw=sim_board())
            assert tech.status()["mode"] == "hold"
            assert tech.resume() == {"hold_removed": True, "reset": False}   # the simulator is not reset
            assert "import main" in said.text()
            assert tech.status()["mode"] == "offline" and tech.resume()["hold_removed"] is False
        assert "hold" not in os.listdir(d)
    finally:
        _wipe(d)
