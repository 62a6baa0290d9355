"""A technician on the USB REPL, for real: the firmware runs on the MicroPython unix port with a
pseudo-terminal as its console (tools/ptyrun.py) and the real `mpremote` drives it.

mpremote's Ctrl-C interrupts a running session: the firmware must stop safely (contactor open,
session closed with a stop reason and journaled, banner printed); then the `tech` helpers run
at its REPL; a second boot on the same data sits in technician hold and reads the files.
"""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from chaos import journal_messages
from ptyrun import PtyRun
from scenario import ROOT

CARDS = {"alice": "04A1B2C3D4E5F6", "bob": "DEADBEEF"}
KEY = bytes(range(7, 39))
SCENARIO = {
    "name": "a session long enough for a technician", "board": "sim", "start": "2026-03-02T07:55:00Z",
    "device_id": "cp-pty", "cards": CARDS, "allow": ["alice", "bob"],
    "events": [{"t": 1, "plug": True}, {"t": 2, "tap": "alice"}, {"t": 3, "ev_current_a": 16}],
    "end": 30 * 24 * 3600,   # virtual time runs ~100x faster than real time: still charging when we connect
}


def _mpremote_exe():
    venv = os.path.join(ROOT, ".venv", "bin", "mpremote")
    return venv if os.path.exists(venv) else shutil.which("mpremote")


def mpremote(dev, *args):
    """Run `mpremote connect dev resume ...`; its output (it must succeed)."""
    r = subprocess.run([_mpremote_exe(), "connect", dev, "resume"] + list(args), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, "mpremote %s failed (%d):\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr)
    return r.stdout


def tech(dev, call):
    return mpremote(dev, "exec", "from firmware.ops import tech; tech.%s" % call)


def all_files(d):
    blob = b""
    for top, _, names in os.walk(d):
        for n in names:
            with open(os.path.join(top, n), "rb") as f:
                blob += f.read()
    return blob


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The firmware charging alice's EV on a pty, then interrupted by mpremote (its first command)."""
    tmp = tmp_path_factory.mktemp("repl")
    path = str(tmp / "scenario.json")
    with open(path, "w") as f:
        json.dump(SCENARIO, f)
    run = PtyRun(path, str(tmp / "run"), KEY).start()
    try:
        run.wait_for('"closed": true', timeout=60)   # the contactor closed: alice is charging
        run.wait_for('"ev": "pilot"', timeout=30)
        time.sleep(1.0)                               # a few virtual minutes of charging
        assert '"ev": "shutdown"' not in run.transcript()
        with open(os.path.join(ROOT, "board_configs", "sim.json")) as f:
            coil = json.load(f)["contactor"]["coil"]
        first = mpremote(run.device, "exec", "import firmware.app as a; from hal.sim import machine; "
                         "print('commanded', a.current['board'].contactor.commanded); "
                         "print('coil', machine.net(%d).level)" % coil)
        run.first = first   # what mpremote's first command saw right after its Ctrl-C
        yield run
    finally:
        run.stop()


def test_ctrl_c_from_mpremote_stops_the_charger_safely(stopped):
    out = stopped.transcript()
    assert "Charger stopped safely (interrupted at the console): contactor open, session #1 closed" in out
    assert "from firmware.ops import tech" in out and "import main" in out
    assert "commanded False" in stopped.first and "coil 0" in stopped.first   # the coil is de-energised
    shutdown = [json.loads(x[2:]) for x in out.splitlines() if x.startswith('@ {') and '"shutdown"' in x]
    assert shutdown and shutdown[0]["tx_id"] == 1
    ended = journal_messages(stopped.data, "ended")
    assert [(r["tx_id"], r["stop_reason"]) for r in ended] == [(1, "Other")]   # persisted, with its reason
    assert ended[0]["energy_wh"] > 0
    with open(os.path.join(stopped.data, "state.json")) as f:
        state = json.load(f)
    assert state["meter_wh"] == ended[0]["meter_stop_wh"] and state["cycles"] == 1
    with open(os.path.join(stopped.data, "hold")) as f:   # the sim board has a watchdog: reboot into hold
        assert f.read() == "interrupted at the console"


def test_tech_helpers_at_the_repl_after_the_stop(stopped):
    dev = stopped.device
    status = tech(dev, "status()")
    assert "stopped at the REPL" in status and "contactor  open (aux contact open), 1 cycles" in status
    assert "none running; last #1" in status and "offer      none" in status
    log = tech(dev, "log(30)")
    assert "session_start" in log and "session_end" in log and "why=interrupted at the console" in log
    sessions = tech(dev, "sessions()")
    row = [x for x in sessions.splitlines() if x.strip().startswith("1 ")]
    assert row and " ended " in row[0] and " Other " in row[0] and " kWh " in row[0] and "EUR " in row[0]
    faults = tech(dev, "faults()")
    assert "Active faults: none" in faults and "Last trip: none on record" in faults
    meter = tech(dev, "meter()")
    assert "L1  230.00 V    0.000 A       0 W" in meter and "50.00 Hz" in meter
    selftest = tech(dev, "selftest()")
    assert selftest.count("PASS") == 6 and "FAIL" not in selftest, selftest
    data = json.loads(mpremote(dev, "exec", "from firmware.ops import tech; import json; tech.say = lambda s: None; "
                                            "print(json.dumps(tech.status())); tech.say = print"))
    assert data["mode"] == "stopped" and data["last_tx"] == 1 and data["contactor_closed"] is False


def test_the_log_file_reads_with_mpremote_cat(stopped):
    text = mpremote(stopped.device, "cat", os.path.join(stopped.data, "log.0"))
    with open(os.path.join(stopped.data, "log.0")) as f:
        assert text == f.read()
    kinds = [json.loads(x[2:])["ev"] for x in text.splitlines()]
    assert kinds.index("boot") < kinds.index("session_start") < kinds.index("session_end") and kinds[-1] == "shutdown"


def test_no_raw_card_uid_in_tech_output_or_files(stopped):
    dev = stopped.device
    said = "".join(tech(dev, call) for call in ("status()", "log(100)", "sessions()", "faults()", "meter()"))
    blob = said.encode() + stopped.transcript().encode() + all_files(stopped.data)
    assert b'"token": "' in blob   # pseudonyms are there...
    for uid in CARDS.values():    # ... raw UIDs nowhere, in any form
        for form in (uid.upper().encode(), uid.lower().encode(), bytes.fromhex(uid)):
            assert form not in blob, uid


def test_a_reboot_on_the_same_data_sits_in_technician_hold(stopped):
    stopped.stop()
    path = os.path.join(os.path.dirname(stopped.run_dir), "scenario.json")
    with PtyRun(path, stopped.run_dir, KEY) as run:
        run.wait_for("Technician hold", timeout=60)
        run.wait_for(">>> ", timeout=30)
        status = tech(run.device, "status()")
        assert "technician hold" in status and "none running; last #1" in status and "open, 1 cycles" in status
        assert "Other" in tech(run.device, "sessions()")
        assert "shutdown" in tech(run.device, "log(3)")
        assert "PASS" in tech(run.device, "meter(); tech.selftest()")
        assert "Technician hold ended" in tech(run.device, "resume()")
        assert "hold" not in os.listdir(run.data)
        assert '"ev": "boot"' not in run.transcript()   # the charger never started


def _repl(dev, typed, settle_s=1.5):
    """`mpremote connect dev resume repl` on a terminal of its own (it needs one), the lines typed
    into it one by one, then Ctrl-] to leave; what the terminal showed."""
    import select as _select

    master, slave = os.openpty()
    p = subprocess.Popen([_mpremote_exe(), "connect", dev, "resume", "repl"], stdin=slave, stdout=slave,
                         stderr=slave)
    os.close(slave)
    out = bytearray()

    def drain(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if _select.select([master], [], [], 0.1)[0]:
                try:
                    out.extend(os.read(master, 65536))
                except OSError:   # EIO: mpremote ended
                    return

    try:
        drain(settle_s)
        for line in typed:
            os.write(master, line.encode() + b"\r")
            drain(settle_s)
        os.write(master, b"\x1d")
        drain(1.0)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    return out.decode("utf-8", "replace")


def test_console_commands_read_the_running_charger_without_stopping_it(tmp_path):
    """mpremote's `repl` sends no Ctrl-C: lines typed there reach the firmware's console commands
    (firmware/ops/console.py), which answer while the session goes on."""
    path = str(tmp_path / "scenario.json")
    with open(path, "w") as f:
        json.dump(SCENARIO, f)
    with PtyRun(path, str(tmp_path / "run"), KEY) as run:
        run.wait_for('"closed": true', timeout=60)
        shown = _repl(run.device, ["status", "log 3", "sessions 1", "faults", "selftest"])
        assert "Charger: running: charging goes on" in shown, shown[-2000:]
        assert "connector  Charging" in shown and "contactor  CLOSED" in shown and "#1 running" in shown
        assert "> log 3" in shown and "> sessions 1" in shown and "Active faults: none" in shown
        assert "console: unknown command 'selftest'" in shown       # nothing that drives the hardware
        later = _repl(run.device, ["status"])                       # the session went on meanwhile
        energy = [float(re.search(r"#1 running, since \S+, ([\d.]+) kWh", x).group(1)) for x in (shown, later)]
        assert 0 < energy[0] < energy[1], energy
        out = run.transcript()
        assert '"ev": "shutdown"' not in out and "Charger stopped safely" not in out
        assert not journal_messages(run.data, "ended")               # the session is still running
        for uid in CARDS.values():
            assert uid.upper() not in shown and uid.lower() not in shown
