"""No boot loop: boots that crash are counted (a power cut is not a crash); after CRASH_BOOTS of them
in a row the firmware comes up in safe mode: contactor open whatever the EV and cards do, the
reason queued for the backend, the REPL's `current` filled."""
import binascii
import json
import os

from firmware import app
from firmware.billing.tariff import flat
from hal.sim import machine
from hal.sim.world import World

KEY = "".join("%02x" % b for b in range(16, 48))


def _dir():
    d = "/tmp/sm-" + binascii.hexlify(os.urandom(4)).decode()
    os.mkdir(d)
    return d


def _clock():
    from hal.sim.clock import VirtualClock

    return VirtualClock()


def test_crashed_boots_are_counted_and_a_power_on_or_a_healthy_minute_ends_the_count():
    d = _dir()
    clock = _clock()
    w = app.CrashWatch(d, clock, machine.HARD_RESET)
    assert w.count == 1
    w.crashed("OSError: boom")
    w = app.CrashWatch(d, clock, machine.HARD_RESET)
    assert (w.count, w.reason) == (2, "OSError: boom")
    assert app.CrashWatch(d, clock, machine.PWRON_RESET).count == 1   # a power cut is no crash
    w = app.CrashWatch(d, clock, machine.HARD_RESET)
    assert w.count == 2
    clock.sleep_ms(59000)
    w.tick()
    assert app.CrashWatch(d, clock, machine.HARD_RESET).count == 3
    w = app.CrashWatch(d, clock, machine.HARD_RESET)
    clock.sleep_ms(60000)
    assert w.tick() is False and w.count == 0
    assert app.CrashWatch(d, clock, machine.HARD_RESET).count == 1


def _files(d):
    with open("board_configs/sim.json") as f:
        board = json.load(f)
    dev = {"device_id": "cp-safe", "tariff": flat("0.30", "EUR", "20"),
           "auth": {"LocalPreAuthorize": True, "LocalAuthorizeOffline": True, "AllowOfflineTxForUnknownId": True}}
    for name, body in (("board", board), ("config", dev), ("secrets", {"site_keys": {"1": KEY}, "site_key_current": 1})):
        with open("%s/%s.json" % (d, name), "w") as f:
            f.write(json.dumps(body))


def _boot(d, crashed):
    """app.main over the simulated board after `crashed` crashed boots (a watchdog-style reset)."""
    with open(d + "/data/boots", "w") as f:
        f.write("%d\nValueError: bad frame" % crashed)
    machine.set_reset_cause(machine.HARD_RESET)
    worlds = []

    def platform(hw, scenario):
        world = World(hw, {"start_utc": 1772438100, "end_ms": 60000, "events": [
            {"t": 1000, "plug": True}, {"t": 2000, "tap": ["04A1B2C3"]}, {"t": 3000, "ev_current_a": 16}]})
        worlds.append(world)
        return machine, world.clock, world.finished, world.console

    try:
        app.current.clear()
        app.main(["--board", d + "/board.json", "--config", d + "/config.json", "--secrets", d + "/secrets.json",
                  "--data", d + "/data"], platform)
    finally:
        machine.set_reset_cause(machine.PWRON_RESET)
    return worlds[0]


def test_after_crash_boots_in_a_row_safe_mode_keeps_the_contactor_open_and_tells_why():
    d = _dir()
    os.mkdir(d + "/data")
    _files(d)
    _boot(d, app.CRASH_BOOTS)
    assert app.current["board"].contactor.commanded is False and "safe_mode" in app.current
    queued = app.current["sync"].outbox.peek()
    assert queued[0] == "fault"
    rec = json.loads(queued[1])
    assert rec["info"] == "safe_mode" and rec["reason"] == "ValueError: bad frame" and rec["boots"] == app.CRASH_BOOTS
    app.clear_crashes()   # the technician's way out
    try:
        _boot(d, 0)           # not safe mode: the session runs
        assert "safe_mode" not in app.current and app.current["board"].contactor.cycles >= 1
    finally:
        app.current.clear()   # later tests (test_tech) fill it as a boot would
