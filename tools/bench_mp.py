"""Sampling-path measurements that run inside MicroPython (called by tools/bench.py).

    MICROPYPATH=.frozen:.:lib micropython tools/bench_mp.py 10000
Prints one JSON object: bytes allocated per sample, µs per sample, µs for the bare register reads.
"""
import gc
import json
import sys
import time

sys.path.append("tests/unit")   # the metering rig is a test fixture (run from the project root)
from rig import meter_rig  # noqa: E402

PHASES = 3


def bare_reads(meter):
    """The same registers the pipeline samples, read through the driver and nothing else."""
    r = meter._read
    for ph in range(PHASES):
        r(0xD9 + ph)   # Urms
        r(0xDD + ph)   # Irms
        r(0xB1 + ph)   # Pmean high word
        r(0xC1 + ph)   # Pmean low word
    r(0x71)            # EMMState0
    r(0x72)            # EMMState1


def main(n):
    m, line, chip, clock = meter_rig(PHASES)
    line.amps = [16.0, 16.0, 16.0]
    m.start_session()
    for _ in range(20):                  # warm up
        clock.sleep_ms(100)
        m.sample()
    # 1. allocation: the GC's own counter around each sample (gc.mem_alloc() walks the heap,
    #    so it is kept out of the timed loop below)
    allocated = 0
    gc.collect()
    gc.disable()
    for i in range(n):
        clock.sleep_ms(100)              # the simulated chip integrates (and allocates) here
        a0 = gc.mem_alloc()
        m.sample()
        allocated += gc.mem_alloc() - a0
        if i % 50 == 49:
            gc.enable()
            gc.collect()
            gc.disable()
    gc.enable()
    # 2. time: the pipeline and the bare register reads of the same registers, interleaved
    pipeline_us = 0
    bare_us = 0
    for i in range(n):
        clock.sleep_ms(100)
        t0 = time.ticks_us()
        m.sample()
        t1 = time.ticks_us()
        bare_reads(m.meter)
        t2 = time.ticks_us()
        pipeline_us += time.ticks_diff(t1, t0)
        bare_us += time.ticks_diff(t2, t1)
    print(json.dumps({"samples": n, "bytes_per_sample": allocated / n, "pipeline_us": pipeline_us / n,
                      "bare_us": bare_us / n, "phases": PHASES,
                      "reads_per_sample": PHASES * 5 + 2, "bare_reads": PHASES * 4 + 2}))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
