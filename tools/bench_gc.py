"""How long one full garbage collection stops the loop, inside MicroPython (a PC port or a board).

    MICROPYPATH=.frozen:build/mpy-host out/mp32/build-f32/micropython -X heapsize=4M tools/bench_gc.py
    mpremote connect /dev/ttyUSB0 run tools/bench_gc.py     # on a board after `make deploy`

Imports what `make deploy` puts on a board (the firmware, drivers, umqtt, urequests: from .mpy
their bytecode lives on the heap), keeps live records like a busy charger's (an outbox, a local
list, log lines), then leaves garbage and times gc.collect(). The controller collects once a
second between loop passes; the pause adds to that pass. Prints one JSON line, times in µs
(on a shared PC the maximum includes the operating system's own pauses: read the minimum and median).
"""
import gc
import json
import time

_MODULES = ("firmware.app", "firmware.controller", "firmware.link.mqtt", "firmware.link.ota", "firmware.ops.tech",
            "hal.board", "umqtt.simple", "urequests")
_RECORDS = 100        # live dicts like queued records and list entries
_GARBAGE = 2000       # short-lived objects between two collections (a busy second)
_ROUNDS = 20


def _live_set():
    """Objects a running charger keeps: records, list entries, buffers."""
    keep = []
    for i in range(_RECORDS):
        keep.append({"msg_id": "f-%d" % i, "event": "raised", "ts": 1772438100 + i, "detail": "x" * 40,
                     "samples": [i, i + 1, i + 2]})
    keep.append(bytearray(4096))
    keep.append(bytearray(4096))
    return keep


def _garbage(n):
    for i in range(n):
        d = {"t": i, "v": [i, i]}
        s = "%d-%d" % (i, i)
        del d, s


def main():
    loaded = []
    for name in _MODULES:
        try:
            __import__(name)
            loaded.append(name)
        except ImportError:
            pass   # a board without that part: measured without it
    keep = _live_set()
    pauses = []
    for _ in range(_ROUNDS):
        _garbage(_GARBAGE)
        t0 = time.ticks_us()
        gc.collect()
        pauses.append(time.ticks_diff(time.ticks_us(), t0))
    pauses.sort()
    print(json.dumps({"heap": gc.mem_free() + gc.mem_alloc(), "live": gc.mem_alloc(), "modules": len(loaded),
                      "kept": len(keep), "min_us": pauses[0], "median_us": pauses[len(pauses) // 2],
                      "max_us": pauses[-1]}))


main()
