"""The technician's helpers at the USB REPL: state, history, faults and a hardware check.

They work in every situation a technician meets: the firmware ran this boot and was stopped
with Ctrl-C (its objects are in `firmware.app.current`), the board sits in technician hold, or
the firmware never started; then they read what it persisted in the data directory
(state.json, the journal, the event log files). Each helper prints for a person and returns
the data. Drivers appear by pseudonym only: no raw card UID is ever stored to show.

    >>> from firmware.ops import tech
    >>> tech.status(); tech.log(20); tech.sessions(5); tech.faults(); tech.meter(); tech.selftest()
"""
import gc
import json
import os
import sys
import time

from micropython import const

from firmware.storage.eventlog import EventLog
from firmware.storage.journal import BOOT, CHECKPOINT, END, START, read_session
from firmware.storage.outbox import ACK, read_ack
from firmware.storage.recordlog import DONE, HAS_MSG, TYPE, UNREADABLE, RecordLog, read_message
from firmware.storage.state import exists

_RCD_TRIP_MS = const(200)      # the RCD module must trip within this on its test input
_RCD_RELEASE_MS = const(1000)  # ... and release within this once the test ends
_POLL_MS = const(10)
_SETTLE_MS = const(250)        # the meter's RMS and mean values: averages refreshed a few times a second
_BAND_F_MV = const(-10500)     # a constant -12 V pilot reads below this (state F)

_board_cache = []   # the board built for checks when the firmware did not build one
say = print         # where the helpers write (tests collect the lines)


# -- where things are -----------------------------------------------------------------------
def _current():
    """The running charger's parts (firmware/app.py), empty if the firmware was never imported."""
    app = sys.modules.get("firmware.app")
    return app.current if app is not None else {}


def _load(path):
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _data(data):
    """The data directory: given, the firmware's, or config.json's data_dir (default "data")."""
    if data:
        return data
    d = _current().get("data")
    if d:
        return d
    from firmware.core.settings import device_rows, one

    cfg = _load("config.json")
    try:
        return one(device_rows(), cfg if isinstance(cfg, dict) else {}, "data_dir")
    except ValueError:   # a bad data_dir: the default one
        return one(device_rows(), {}, "data_dir")


def _mode(d):
    cur = _current()
    if "ctl" in cur:
        return "running" if cur.get("running") else "stopped"
    return "hold" if exists(d + "/hold") else "offline"


_MODES = {"running": "running: charging goes on (console commands read only; Ctrl-C stops the charger)",
          "stopped": "ran this boot, stopped at the REPL (resume: import main, or machine.reset())",
          "hold": "technician hold: the charger stays off (tech.resume() to charge again)",
          "offline": "not started this boot: figures from the data directory"}


def _hw():
    """The board settings (firmware/core/settings.py): the firmware's, or board.json's; ValueError
    naming the file or the key when there are none."""
    hw = _current().get("hw")
    if hw is None:
        from firmware.core.config import load
        from firmware.core.settings import board_settings

        hw = board_settings(load("board.json"))
    return hw


def _simulated():
    try:
        return _hw().platform == "sim"
    except ValueError:
        return False


def _clock():
    c = _current().get("clock")
    if c is None:
        from firmware.core.clock import Clock

        c = Clock()
    return c


# -- reading the journal ---------------------------------------------------------------------
def _reader(d):
    """A record log for reading only (never open(): only the firmware writes)."""
    j = _current().get("journal")
    if j is not None:
        log = j.log
        return RecordLog(log.path, log.seg_bytes, log.segments, max_record=log.max_record)
    return RecordLog(d + "/journal")


def _history(d):
    """One pass over the journal: sessions by tx_id, boot count, pending message ids, last fault."""
    sessions = {}
    pending = {}
    acked = set()
    boot = [-1, 0]
    fault = [-1, None]
    log = _reader(d)
    try:
        for rtype, seq, body, _ in log.records():
            base = rtype & TYPE
            try:
                if rtype & HAS_MSG:
                    kind, mid, payload, _ = read_message(body)
                    if not rtype & DONE:
                        pending[mid] = seq
                    if kind == "started" or kind == "ended":
                        _session_event(sessions, json.loads(payload))
                    elif kind == "fault" and seq > fault[0]:
                        rec = json.loads(payload)
                        if rec.get("event") == "raised":
                            fault[0], fault[1] = seq, rec
                if base == ACK:
                    for mid in read_ack(body):
                        acked.add(mid)
                elif base != START:   # the journal's decoding; a start's state is its message
                    v = read_session(rtype, body)
                    if base == END and not rtype & HAS_MSG:
                        s = sessions.setdefault(v, {})
                        s["state"] = "ended"
                    elif base == CHECKPOINT:
                        s = sessions.get(v[0])
                        if s is not None and s.get("state") == "open" and "meter_start_wh" in s:
                            s["energy_wh"] = max(s.get("energy_wh", 0), v[1] - s["meter_start_wh"])
                    elif base == BOOT and seq > boot[0]:
                        boot[0], boot[1] = seq, v
            except UNREADABLE:
                pass   # skipped here; the firmware's own boot scan reports it
    except OSError:
        pass       # no journal yet
    for mid in acked:
        pending.pop(mid, None)
    return {"sessions": sessions, "boot": boot[1], "pending": len(pending), "fault": fault[1], "bad": log.bad}


def _session_event(sessions, rec):
    s = sessions.setdefault(rec["tx_id"], {})
    s["tx_id"] = rec["tx_id"]
    s["token"] = rec.get("token")
    if rec.get("event") == "started":
        s.setdefault("state", "open")
        s["started_at"] = rec.get("ts")
        s["meter_start_wh"] = rec.get("meter_start_wh", 0)
        return
    s["state"] = "ended"
    for k in ("started_at", "ended_at", "energy_wh", "stop_reason", "cost", "meter_start_wh"):
        s[k] = rec.get(k)


def _newest(sessions, n):
    keys = sorted(sessions)
    return [sessions[k] for k in keys[max(0, len(keys) - n):]]


# -- formatting ------------------------------------------------------------------------------
def _kwh(wh):
    if wh is None:
        return "?"
    return "%s%d.%03d kWh" % ("-" if wh < 0 else "", abs(wh) // 1000, abs(wh) % 1000)


def _money(cost):
    if not isinstance(cost, dict) or "total_incl_vat_minor" not in cost:
        return "?"
    from firmware.billing import fixed
    from firmware.billing.tariff import MINOR_DIGITS

    cur = cost.get("currency", "")
    digits = MINOR_DIGITS.get(cur, 2)
    return "%s %s" % (cur, fixed.text(cost["total_incl_vat_minor"], digits))


def _events(lines):
    """The dicts of `@ {json}` lines (lines that are not are skipped)."""
    out = []
    for line in lines:
        if line.startswith("@ "):
            try:
                out.append(json.loads(line[2:]))
            except ValueError:
                pass
    return out


def _readable(line):
    """`ts ev key=value ...` for one log line; the line itself if it is not an event."""
    ev = _events([line])
    if not ev:
        return line
    e = ev[0]
    rest = " ".join("%s=%s" % (k, _money(e[k]) if k == "cost" else e[k]) for k in sorted(e) if k not in ("ts", "ev"))
    return "%s %-13s %s" % (e.get("ts", "?"), e.get("ev", "?"), rest)


def _heap():
    gc.collect()
    if hasattr(gc, "mem_free"):
        return gc.mem_free(), gc.mem_alloc()
    return None, None


def _store(d):
    """The firmware's event log files (its own object when it ran, so RAM lines come too)."""
    lg = _current().get("log")
    store = getattr(lg, "store", None)
    return store if store is not None else EventLog(d)


# -- the helpers ------------------------------------------------------------------------------
def status(data=None):
    """One screen: connector, session, energy, offer, broker, faults, boot, uptime, heap."""
    d = _data(data)
    cur = _current()
    ctl = cur.get("ctl")
    out = {"mode": _mode(d), "data": d}
    if ctl is not None:
        s = ctl.session
        k = ctl.contactor
        out.update(connector=ctl.connector, error=ctl.error_code, contactor_closed=k.commanded,
                   aux_closed=k.feedback(), offered_a=ctl.ev.offered_a, broker=cur["sync"].connected,
                   queued=len(ctl.outbox), faults_active=sorted(ctl.faults.active),
                   faults_latched=list(ctl.faults.latched),
                   energy_wh=ctl.metering.register_wh(), boot=ctl.journal.boot, cycles=k.cycles,
                   session=None if s is None else {"tx_id": s.tx_id, "token": s.token, "started_at": s.started_at,
                                                  "energy_wh": ctl.metering.register_wh() - s.meter_start_wh},
                   last_tx=ctl.last_tx[0] if ctl.last_tx else None)
        board = cur.get("board")
        cause = board.reset_cause if board is not None else None
    else:
        state = _load(d + "/state.json") or {}
        hist = _history(d)
        saved = state.get("faults") or {}
        last = None
        for e in _events(_store(d).tail(60)):
            if e.get("ev") == "status":
                last = e
        opened = [s for s in _newest(hist["sessions"], 1 << 20) if s.get("state") == "open"]
        ended = [k for k, s in hist["sessions"].items() if s.get("state") == "ended"]
        out.update(connector=last.get("connector") if last else None, error=last.get("error") if last else None,
                   contactor_closed=False, aux_closed=None, offered_a=0, broker=False, queued=hist["pending"],
                   faults_active=[], faults_latched=list(saved.get("latched", [])),
                   energy_wh=state.get("meter_wh"), boot=hist["boot"], cycles=state.get("cycles"),
                   session=opened[-1] if opened else None, last_tx=max(ended) if ended else None)
        cause = None
        try:
            import machine

            cause = machine.reset_cause()
        except (ImportError, AttributeError):
            pass
    from firmware.app import RESET_CAUSES

    out["reset_cause"] = RESET_CAUSES.get(cause, cause)
    c = cur.get("clock")
    ticks = c.ticks_ms() if c is not None else getattr(time, "ticks_ms", lambda: None)()
    out["uptime_s"] = None if ticks is None else ticks // 1000
    out["heap_free"], out["heap_used"] = _heap()
    _print_status(out)
    return out


def _print_status(o):
    say("Charger: %s" % _MODES[o["mode"]])
    known = o["mode"] in ("running", "stopped")
    say("  connector  %s%s%s" % ("" if o["mode"] == "running" else "not running (last reported ",
                                 o["connector"] or "nothing", ", %s" % o["error"] if o["error"] else "")
        + ("" if o["mode"] == "running" else ")"))
    aux = o["aux_closed"]
    say("  contactor  %s%s, %s cycles" % ("CLOSED" if o["contactor_closed"] else "open",
                                           "" if aux is None else " (aux contact %s)" % ("closed" if aux else "open"),
                                           o["cycles"] if o["cycles"] is not None else "?"))
    s = o["session"]
    if s is not None:
        what = "running" if known else "open in the journal (closed as PowerLoss at the next boot)"
        say("  session    #%d %s, since %s, %s, driver %s" % (s["tx_id"], what, s.get("started_at"),
                                                             _kwh(s.get("energy_wh")), s.get("token")))
    else:
        say("  session    none running%s" % ("; last #%d" % o["last_tx"] if o["last_tx"] else ""))
    say("  energy     %s imported (lifetime register)" % _kwh(o["energy_wh"]))
    say("  offer      %s" % ("%d A" % o["offered_a"] if o["offered_a"] else "none"))
    say("  broker     %s, %d messages queued" % ("connected" if o["broker"] else "not connected", o["queued"]))
    say("  faults     active: %s; latched: %s" % (", ".join(o["faults_active"]) or "none",
                                                    ", ".join(o["faults_latched"]) or "none"))
    up = o["uptime_s"]
    say("  boot       #%s, reset cause %s, uptime %s" % (o["boot"] or "?", o["reset_cause"] or "unknown",
                                                          "?" if up is None else "%d h %02d min %02d s" % (
                                                              up // 3600, up // 60 % 60, up % 60)))
    if o["heap_free"] is not None:
        say("  heap       %d bytes free, %d used" % (o["heap_free"], o["heap_used"]))
    say("  data       %s" % o["data"])


def log(n=20, data=None):
    """The newest n event-log lines: from RAM if the firmware ran this boot, else from the files."""
    if n <= 0:
        return []
    lg = _current().get("log")
    recent = getattr(lg, "recent", None) or []
    store = getattr(lg, "store", None)
    if recent and (n <= len(recent) or store is None):
        lines = recent[-n:]
    else:
        lines = (store if store is not None else EventLog(_data(data))).tail(n)
    for line in lines:
        say(_readable(line))
    return lines


def sessions(n=10, data=None):
    """The newest n sessions the journal still holds (delivered ones are compacted away)."""
    d = _data(data)
    hist = _history(d)
    out = _newest(hist["sessions"], n)
    ctl = _current().get("ctl")
    live = ctl.session if ctl is not None else None
    say("   tx  state    started              ended                    energy   cost (incl. VAT)  "
          "stop reason        driver (pseudonym)")
    for s in out:
        state = s.get("state", "?")
        if state == "open":
            if live is not None and live.tx_id == s.get("tx_id"):
                state = "running"
                s["energy_wh"] = ctl.metering.register_wh() - live.meter_start_wh
            else:
                state = "open"   # cut by a reset: the next boot closes it (PowerLoss)
        s["state"] = state
        say("%5s  %-7s  %-20s %-20s %12s  %-16s  %-17s  %s" % (
            s.get("tx_id", "?"), state, s.get("started_at") or "?", s.get("ended_at") or "-",
            _kwh(s.get("energy_wh")), _money(s.get("cost")), s.get("stop_reason") or "-",
            (s.get("token") or "?")[:16]))
    if not out:
        say("  (no session in the journal)")
    if hist["bad"]:
        say("  %d damaged journal records skipped" % hist["bad"])
    return out


def faults(data=None):
    """Active and latched faults, trip counts, and the samples frozen at the last trip."""
    d = _data(data)
    ctl = _current().get("ctl")
    active = []
    snap = None
    if ctl is not None:
        fs = ctl.faults
        newest = None
        for f in fs.active.values():
            active.append({"kind": f.kind, "code": f.code, "detail": f.detail, "trips": f.trips,
                           "latched": f.latched, "present": f.present, "emergency": f.emergency})
            if f.samples is not None and (newest is None or ctl.clock.ticks_diff(f.at_ms, newest.at_ms) > 0):
                newest = f
        if newest is not None:
            snap = {"kind": newest.kind, "code": newest.code, "detail": newest.detail, "ts": None,
                    "samples": newest.samples}
        trips, latched, cycles = dict(fs.trips), list(fs.latched), ctl.contactor.cycles
    else:
        state = _load(d + "/state.json") or {}
        saved = state.get("faults") or {}
        trips, latched, cycles = dict(saved.get("trips", {})), list(saved.get("latched", [])), state.get("cycles")
    if snap is None:
        rec = _history(d)["fault"]
        if rec is not None:
            snap = {"kind": rec.get("kind"), "code": rec.get("code"), "detail": rec.get("detail"),
                    "ts": rec.get("ts"), "samples": rec.get("samples") or []}
    out = {"active": active, "latched": latched, "trips": trips, "cycles": cycles, "last_trip": snap}
    _print_faults(out, ctl is not None)
    return out


def _print_faults(o, live):
    if live:
        say("Active faults: %s" % ("none" if not o["active"] else ""))
        for f in o["active"]:
            say("  %-12s %-20s trips %d%s%s  %s" % (
                f["kind"], f["code"], f["trips"], "  LATCHED" if f["latched"] else "",
                "" if f["present"] else "  (condition gone)", f["detail"]))
    else:
        say("Active faults: unknown (firmware not running); latched ones stay active at the next boot")
    say("Latched (a technician clears them: tech.clear_fault()): %s" % (", ".join(o["latched"]) or "none"))
    say("Trip counts: %s" % (", ".join("%s %d" % (k, o["trips"][k]) for k in sorted(o["trips"])) or "none"))
    say("Contactor cycles: %s" % (o["cycles"] if o["cycles"] is not None else "?"))
    s = o["last_trip"]
    if s is None:
        say("Last trip: none on record")
        return
    rows = s["samples"] or []
    say("Last trip: %s (%s)%s: %s; %d samples before it" % (s["kind"], s["code"], " at %s" % s["ts"] if s["ts"] else "",
                                                              s["detail"], len(rows)))
    phases = 1
    for r in rows:
        for ph in range(3):
            if len(r) >= 10 and (r[1 + ph] or r[4 + ph]):
                phases = max(phases, ph + 1)
    say("  " + "%8s" % "ms" + "".join("   U%d V     I%d A    P%d W" % (p + 1, p + 1, p + 1) for p in range(phases)))
    for r in rows:
        if len(r) < 10:
            continue
        say("  %8d" % r[0] + "".join("  %3d.%02d  %3d.%03d  %6d" % (r[1 + p] // 100, r[1 + p] % 100, r[4 + p] // 1000,
                                                                     r[4 + p] % 1000, r[7 + p]) for p in range(phases)))


def clear_fault(data=None):
    """A technician's reset of latched faults: their trip counts restart; returns the kinds cleared."""
    ctl = _current().get("ctl")
    if ctl is not None:
        kinds = ctl.clear_fault()
    else:
        from firmware.safety.faults import Faults
        from firmware.storage.state import State

        d = _data(data)
        st = State(d + "/state.json")
        fs = Faults(None, st.faults())
        kinds = fs.clear_latched()
        if kinds:
            st.set_faults(fs.persist())
            st.save()
            from firmware.core.timefmt import iso

            EventLog(d).append("@ " + json.dumps({"ev": "fault_reset", "kinds": kinds, "by": "tech",
                                                  "ts": iso(_clock().time())}), True)
    say("Cleared: %s" % (", ".join(kinds) if kinds else "nothing (no latched fault)"))
    return kinds


def _board():
    """(board, live): the firmware's board, or one built for checks (never with its watchdog)."""
    cur = _current()
    if cur.get("board") is not None:
        return cur["board"], True
    if not _board_cache:
        hw = _hw()
        machine = cur.get("machine")
        if machine is None:
            if hw.platform == "sim":
                raise OSError("the simulated board exists only while the firmware runs (tools/sim.py, tools/ptyrun.py)")
            import machine
        from hal.board import Board

        # no watchdog: once started it would reset a board in technician hold
        _board_cache.append(Board(hw, machine, _clock().sleep_ms, watchdog=False))
    return _board_cache[0], False


def _meter_ready(board, live):
    """The firmware configured the chip, or it is configured now (soft reset, calibration, verify)."""
    if not live:
        board.meter.init()


def meter():
    """A live reading: U, I, P, PF per phase, frequency, temperature, energy, decoded status bits."""
    from hal.atm90e32 import faults as status_bits

    try:
        board, live = _board()
        _meter_ready(board, live)
        m = board.meter
        _clock().sleep_ms(_SETTLE_MS)   # a fresh averaging window: the reading describes now
        phases = []
        for ph in range(m.phases):
            phases.append({"u_cv": m.urms(ph), "i_ma": m.irms(ph), "p_w": m.pmean(ph), "pf": m.pf(ph)})
        out = {"phases": phases, "freq_chz": m.freq(), "temp_c": m.temp(), "status0": m.status0(),
               "status1": m.status1()}
        ctl = _current().get("ctl")
        if ctl is not None and ctl.meter_ok:
            ctl.metering.read_energy()   # clear-on-read registers: counted into the billing counter
            out["energy_wh"], out["export_wh"] = ctl.metering.register_wh(), ctl.metering.export_wh()
            out["energy_saved"] = False
        else:
            saved = _load(_data(None) + "/state.json") or {}
            out["energy_wh"], out["export_wh"], out["energy_saved"] = saved.get("meter_wh"), None, True
    except (OSError, ValueError, KeyError) as e:
        say("Meter: no reading (%s)" % e)
        return {"error": str(e)}
    out["flags"] = status_bits(out["status0"], out["status1"], len(phases))
    say("Meter (ATM90E32), read now")
    for i, p in enumerate(phases):
        say("  L%d  %3d.%02d V  %3d.%03d A  %6d W  PF %s%d.%03d" % (
            i + 1, p["u_cv"] // 100, p["u_cv"] % 100, p["i_ma"] // 1000, p["i_ma"] % 1000, p["p_w"],
            "-" if p["pf"] < 0 else "", abs(p["pf"]) // 1000, abs(p["pf"]) % 1000))
    f = out["freq_chz"]
    say("  %d.%02d Hz, chip at %d °C" % (f // 100, f % 100, out["temp_c"]))
    say("  energy register %s imported%s%s" % (
        _kwh(out["energy_wh"]), "" if out["export_wh"] is None else ", %s exported" % _kwh(out["export_wh"]),
        " (as last saved)" if out["energy_saved"] else ""))
    say("  status bits: %s (EMMState0 0x%04x, EMMState1 0x%04x)" % (
        ", ".join(out["flags"]) or "none set", out["status0"], out["status1"]))
    return out


def selftest():
    """Check each part without closing the contactor; prints PASS/FAIL per item, returns them."""
    results = []

    def item(name, ok, detail):
        results.append({"item": name, "ok": ok, "detail": detail})
        say("  %-4s %-10s %s" % ("PASS" if ok else "SKIP" if ok is None else "FAIL", name, detail))

    try:
        board, live = _board()
    except (OSError, ValueError) as e:
        say("Self-test: no board (%s)" % e)
        return [{"item": "board", "ok": False, "detail": str(e)}]
    k = board.contactor
    if k.commanded:
        say("Self-test refused: the contactor is commanded closed")
        return [{"item": "contactor", "ok": False, "detail": "commanded closed"}]
    say("Self-test (the contactor stays open)")
    m = board.meter
    try:
        _meter_ready(board, live)
        m.check()
        item("meter", True, "answers, MeterEn = 1")
        try:
            m.verify()
            item("calibration", True, "every configuration register reads back as written")
        except OSError as e:
            item("calibration", False, str(e))
    except (OSError, ValueError, KeyError) as e:
        item("meter", False, str(e))
        item("calibration", None, "not checked: the meter does not answer")
    try:
        board.rfid.init()   # resets the reader and checks VersionReg
        item("rfid", True, "MFRC522 VersionReg 0x%02x" % board.rfid.version)
    except OSError as e:
        item("rfid", False, str(e))
    fb = k.feedback()
    if fb is None:
        item("contactor", None, "no auxiliary contact on this board")
    else:
        item("contactor", not fb, "aux contact reports %s with the coil off" % ("CLOSED (welded?)" if fb else "open"))
    _rcd(board, item)
    _pilot(board, item)
    ctl = _current().get("ctl")
    if ctl is not None and ctl.safety.last_selftest is not None:
        say("  (the firmware's own periodic RCD test last %s)" % ctl.safety.last_selftest)
    return results


def _wait(clock, ms, cond):
    """Poll cond every few ms for up to ms; True once it held."""
    t0 = clock.ticks_ms()
    while True:
        if cond():
            return True
        if clock.ticks_diff(clock.ticks_ms(), t0) >= ms:
            return False
        clock.sleep_ms(_POLL_MS)


def _rcd(board, item):
    if not board.has_rcd:
        item("rcd", None, "no residual-current module on this board")
        return
    if board.rcd_tripped():
        item("rcd", False, "tripped before the test (residual current, or a stuck module)")
        return
    clock = _clock()
    board.rcd_test(True)
    try:
        tripped = _wait(clock, _RCD_TRIP_MS, board.rcd_tripped)
    finally:
        board.rcd_test(False)
    released = tripped and _wait(clock, _RCD_RELEASE_MS, lambda: not board.rcd_tripped())
    item("rcd", tripped and released, "trips on its test input and releases" if released else
         "did not trip within %d ms" % _RCD_TRIP_MS if not tripped else "did not release after the test")


def _pilot(board, item):
    p = board.pilot
    if p is None:
        item("pilot", None, "no control pilot on this board")
        return
    from firmware.charging.pilot import OFF, level_state

    duty = p.duty
    try:
        p.off()
        p.read()
        high = p.high_mv
        state = level_state(high)
        p.error()
        p.read()
        low = p.high_mv
    finally:
        if duty == OFF:
            p.off()
        elif duty == 0:
            p.error()
        else:
            p.offer(duty)
    ok = state in ("A", "B", "C", "D") and low < _BAND_F_MV
    item("pilot", ok, "+12 V drive reads %d mV (state %s), -12 V drive reads %d mV" % (high, state, low))


def resume(data=None):
    """End a technician hold: the hold file goes; a board restarts into normal charging."""
    d = _data(data)
    try:
        os.remove(d + "/hold")
        removed = True
    except OSError:
        removed = False
    sim = _simulated()
    say("Technician hold %s." % ("ended" if removed else "was not set"))
    if sim:
        say("Simulator: start the firmware again with `import main` (or a new tools/sim.py run).")
        return {"hold_removed": removed, "reset": False}
    say("Restarting the board...")
    import machine

    machine.reset()
    return {"hold_removed": removed, "reset": True}
