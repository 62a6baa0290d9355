"""A loop pass in steady charging, inside MicroPython (called by tools/bench.py): does it allocate?

    MICROPYPATH=.frozen:.:lib micropython tools/bench_loop.py
Runs the controller over the simulated world (tests/unit/simharness.py) charging with two schedules
and nothing due to send or write, each loop pass under micropython.heap_lock(). Prints one JSON
object: the passes that ran and the allocation that stopped one (None: no pass allocated a byte).
"""
import json
import sys

import micropython

sys.path.append("tests/unit")   # the harness is a test fixture (run from the project root)
from simharness import locked_passes, steady_charging  # noqa: E402

START = 1772438100   # 2026-03-02T07:55:00Z: Unix seconds above 2^30, heap objects on 32 bits


def main():
    h = steady_charging(START)
    passes, error = 0, None
    try:
        passes = locked_passes(h, 150000, micropython.heap_lock, micropython.heap_unlock)
    except MemoryError as e:
        error = "%s (at virtual %d ms)" % (e, h.clock.ms)
    print(json.dumps({"passes": passes, "error": error, "charging": h.ctl.connector == "Charging"}))


main()
