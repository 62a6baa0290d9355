"""What a boot leaves on the heap (issue #16): the raw config, and the local list provisioning
brings, are stored and let go of, not held for as long as the loop runs."""
import binascii
import gc
import json
import os

try:
    import tracemalloc   # CPython: its own allocations counted
except ImportError:
    tracemalloc = None   # MicroPython: gc.mem_alloc()

from firmware import app
from firmware.billing.tariff import flat
from hal.sim import machine
from hal.sim.world import World

KEY = "".join("%02x" % b for b in range(16, 48))
CARDS = 200
PER_CARD = 100   # bytes of heap a stored card may keep (the list's packed table); a card held as a
#                  parsed JSON object takes several times that


def _live():
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if tracemalloc else gc.mem_alloc()


def _token(i):
    return "%032x" % (0x5EED0000 + i)


def _files(cards):
    """A charger's files with a provisioned list of `cards` cards (written here, so that this test
    holds none of it while the charger runs)."""
    d = "/tmp/bh-" + binascii.hexlify(os.urandom(4)).decode()
    os.mkdir(d)
    with open("board_configs/sim.json") as f:
        board = json.load(f)
    dev = {"device_id": "cp-heap", "tariff": flat("0.30", "EUR", "20"),
           "local_list": {"version": 3, "entries": [{"token": _token(i), "key": 1, "status": "Accepted"}
                                                    for i in range(cards)]}}
    for name, body in (("board", board), ("config", dev), ("secrets", {"site_keys": {"1": KEY}, "site_key_current": 1})):
        with open("%s/%s.json" % (d, name), "w") as f:
            f.write(json.dumps(body))
    return d


def _boot(cards):
    """app.main over the simulated board with a provisioned list of `cards` cards; the live heap
    is read once the loop runs."""
    d = _files(cards)
    seen = {}

    def platform(hw, scenario):
        world = World(hw, {"start_utc": 1772438100, "end_ms": 3000, "events": []})

        def finished():
            if app.current.get("running") and "live" not in seen:
                seen["live"] = _live()
                seen["list"] = app.current["settings"].take_local_list()
                seen["stored"] = len(app.current["ctl"].auth.local_list)
            return world.finished()

        return machine, world.clock, finished, world.console

    app.current.clear()
    try:
        app.main(["--board", d + "/board.json", "--config", d + "/config.json", "--secrets", d + "/secrets.json",
                  "--data", d + "/data"], platform)
    finally:
        app.current.clear()
    return seen


def test_the_provisioned_local_list_is_stored_then_let_go():
    if tracemalloc:
        tracemalloc.start()
    try:
        few, many = _boot(1), _boot(CARDS)
    finally:
        if tracemalloc:
            tracemalloc.stop()
    assert many["stored"] == CARDS and few["stored"] == 1   # the list reached the authorizer (and its file)
    assert many["list"] is None                             # ... the settings no longer hold it
    grown = many["live"] - few["live"]
    assert grown < CARDS * PER_CARD, "%d cards keep %d bytes of heap while the loop runs" % (CARDS, grown)
