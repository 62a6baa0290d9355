"""What the boot leaves unloaded until it is needed, for the heap of a 32-bit board: the OTA code
(firmware/link/otacore.py loads firmware/link/ota.py with the first cmd/update, or at boot when the
slots hold work) and the technician's console (loaded once something is typed). Each path still
works as before: an update end to end, a version on trial confirmed or rolled back, busy when the
heap cannot take the code, a typed console line."""
import os
import sys

from firmware.link.bundle import pack
from firmware.link.commands import BUSY
from firmware.ops import tech
from firmware.storage.state import exists
from hal.sim import machine
from hal.sim.clock import VirtualClock
from hal.sim.world import Typed, World
from simharness import Harness
from test_ota import _ShortFor, _cmd, _files, _reboot, _state, body
from test_safemode import _dir, _files as _config_files
from testkeys import KEY_A

OTA = "firmware.link.ota"
CONSOLE = "firmware.ops.console"
DEVICE = {"ota": {"public_key": KEY_A.hex, "trial_s": 60, "confirm_after_s": 10}}


class _Requests:
    """urequests as firmware/link/ota.py's http_get finds it: every GET answers with the bundle."""

    def __init__(self, blob):
        self.blob = blob
        self.urls = []

    def request(self, method, url, timeout=None, parse_headers=None):
        self.urls.append(url)
        return self

    @property
    def status_code(self):
        return 200

    @property
    def headers(self):
        return {"length": len(self.blob)}

    @property
    def raw(self):
        return body(self.blob)


class _Network:
    """The fake urequests in sys.modules while the test runs (the real one would go to the network)."""

    def __init__(self, blob):
        self.requests = _Requests(blob)

    def __enter__(self):
        self.saved = sys.modules.get("urequests")
        sys.modules["urequests"] = self.requests
        return self.requests

    def __exit__(self, *exc):
        if self.saved is None:
            sys.modules.pop("urequests", None)
        else:
            sys.modules["urequests"] = self.saved


def _harness(data=None, end_ms=120000):
    return Harness({}, [], [], end_ms, device=DEVICE, data=data, updates=True)


def _statuses(h):
    return [(a["id"], a["status"]) for a in h.acks() if a["status"] != "progress"]


def _installed(blob):
    """A charger booted with empty slots (no OTA code loaded), then the first cmd/update, end to end:
    accepted, downloaded, verified, switched (the loop ends for the reset)."""
    sys.modules.pop(OTA, None)
    h = _harness()
    assert OTA not in sys.modules and h.ctl.updater.version is None
    h.run(until_ms=2000)
    assert OTA not in sys.modules   # ticks and confirms of an empty slot state need no OTA code
    h.inject("cmd/update", _cmd(blob))
    with _Network(blob) as net:
        h.run()
    assert OTA in sys.modules and net.urls == ["http://10.0.0.2/cp.bin"]
    assert _statuses(h) == [("u-1", "accepted")] and h.acks()[-1]["percent"] == 100
    assert h.ctl.reset_requested == "install"
    st = _state(h.data)
    assert (st["active"], st["trial"], st["slots"]["a"]["version"]) == ("a", 0, "2.0.0")
    return h


def test_an_empty_slot_state_boots_without_the_ota_code_and_the_first_update_loads_it():
    _installed(pack(_files("2.0.0")))


def _confirmed():
    """An update installed, then its trial boot (with the OTA code) confirmed."""
    h = _installed(pack(_files("2.0.0")))
    assert _reboot(h.data) is True   # boot.py: the new slot's first trial boot
    sys.modules.pop(OTA, None)
    h = _harness(h.data, 15000)
    assert OTA in sys.modules and h.ctl.updater.version == "2.0.0"
    h.run()
    assert _statuses(h) == [("u-1", "installed")]
    st = _state(h.data)
    assert (st["active"], st["trial"], st["outcome"]) == ("a", None, None)
    return h


def test_a_version_on_trial_boots_with_the_ota_code_and_is_confirmed():
    _confirmed()


def test_a_confirmed_version_boots_without_the_ota_code_and_names_itself():
    h = _confirmed()
    assert _reboot(h.data) is False   # boot.py: a confirmed slot, nothing to count
    sys.modules.pop(OTA, None)
    h = _harness(h.data, 3000)
    assert OTA not in sys.modules and h.ctl.updater.version == "2.0.0"
    h.run()
    assert OTA not in sys.modules and h.ctl.reset_requested is None and _statuses(h) == []


def test_a_version_on_trial_that_never_connects_is_rolled_back():
    h = _installed(pack(_files("2.0.0")))
    _reboot(h.data)
    sys.modules.pop(OTA, None)
    h = _harness(h.data)
    h.link.up = False   # never connected: never confirmed
    h.run()
    assert OTA in sys.modules and h.ctl.reset_requested == "rollback" and h.clock.ms > 60000
    st = _state(h.data)
    assert (st["active"], st["slots"], st["outcome"]["status"]) == (None, {}, "rolled_back")


def test_leftover_slots_without_a_state_file_boot_with_the_ota_code_and_are_removed():
    h = _harness()
    slot = h.data + "/slots/b"
    for d in (h.data + "/slots", slot):
        os.mkdir(d)
    with open(slot + "/app.py", "w") as f:
        f.write("half a file")
    sys.modules.pop(OTA, None)
    h = _harness(h.data, 3000)
    assert OTA in sys.modules
    h.run()
    assert not exists(slot)


def test_an_update_whose_ota_code_finds_no_heap_is_answered_busy_and_works_when_sent_again():
    blob = pack(_files("2.0.0"))
    sys.modules.pop(OTA, None)
    h = _harness()
    h.run(until_ms=2000)
    h.inject("cmd/update", _cmd(blob))
    with _ShortFor(OTA):
        h.run(until_ms=4000)
    assert _statuses(h) == [("u-1", "rejected")] and h.acks()[0]["reason"] == BUSY
    assert OTA not in sys.modules and h.ctl.updater.version is None and not h.ctl.updater.working
    h.inject("cmd/update", _cmd(blob, cid="u-2"))
    with _Network(blob):
        h.run()
    assert _statuses(h)[1:] == [("u-2", "accepted")] and h.ctl.reset_requested == "install"


class _FreshApp:
    """firmware/app.py imported anew, as at power-up, so what its import and boot load shows in
    sys.modules; the modules of the test run come back afterwards."""

    NAMES = ("firmware.app", OTA, CONSOLE)

    def __enter__(self):
        self.saved = [(n, sys.modules.pop(n, None)) for n in self.NAMES]
        return __import__("firmware.app", None, None, ("main",))

    def __exit__(self, *exc):
        import firmware
        from firmware import link, ops

        for (name, mod), package in zip(self.saved, (firmware, link, ops)):
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
                setattr(package, name.rsplit(".", 1)[1], mod)


def test_a_boot_loads_neither_ota_nor_the_console_until_a_line_is_typed():
    d = _dir()
    os.mkdir(d + "/data")
    _config_files(d)
    port = Typed()
    seen = []
    said = []
    saved_say = tech.say
    tech.say = said.append

    def platform(hw, scenario):
        world = World(hw, {"start_utc": 1772438100, "end_ms": 10000, "events": []})

        def stop():
            if world.clock.ms >= 5000 and not seen:
                seen.append(CONSOLE in sys.modules)
                for b in b"faults\n":
                    port.typed(b)
            return world.finished()

        return machine, world.clock, stop, port

    try:
        with _FreshApp() as app:
            app.main(["--board", d + "/board.json", "--config", d + "/config.json", "--secrets",
                      d + "/secrets.json", "--data", d + "/data"], platform)
            assert OTA not in sys.modules and app.current["ctl"].updater.version is None
            assert seen == [False] and CONSOLE in sys.modules and not port.waiting()
            assert said and "faults" in said[0].lower(), said
            app.current.clear()
    finally:
        tech.say = saved_say


def test_a_console_short_of_heap_leaves_the_line_waiting():
    from firmware import app

    clock = VirtualClock()
    port = Typed()
    for b in b"help\n":
        port.typed(b)
    app.current.pop("console", None)
    saved = sys.modules.pop(CONSOLE, None)
    try:
        with _ShortFor(CONSOLE):
            assert app.console_step(port, clock) is None
        assert port.waiting() and CONSOLE not in sys.modules
        assert app.console_step(port, clock) is None and not port.waiting()
    finally:
        app.current.pop("console", None)
        if saved is not None:
            sys.modules[CONSOLE] = saved
