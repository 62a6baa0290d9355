"""`make bench`: speed and memory figures of the firmware on the MicroPython unix port.

Prints one line per figure and writes them into the README's performance table. With the board-like
interpreters of `make mp32` (32-bit objects, float32; $MP32 and $MP32_FROZEN) it adds their heap
figures next to the PyPI interpreter's, and prints each module's bytecode size and import cost.

    python3 tools/bench.py            # all figures, README updated
    python3 tools/bench.py --no-readme
    python3 tools/bench.py --budget    # only the memory budget on the frozen 32-bit build
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sim  # noqa: E402
from broker import Broker  # noqa: E402
from scenario import ROOT  # noqa: E402

SCENARIOS = os.path.join(ROOT, "tests", "data", "scenarios")
ESP32_READ_US = (75, 100)   # a Python register read on an ESP32 (../shared/GUIDE.md, section 5)
MP32 = os.environ.get("MP32", os.path.join(ROOT, "out", "mp32", "build-f32", "micropython"))
MP32_FROZEN = os.environ.get("MP32_FROZEN", os.path.join(ROOT, "out", "mp32", "build-f32-frozen", "micropython"))
BOARD_KB = 112              # GC heap of an ESP32 without PSRAM, grown to its maximum
DATA_KB = 60                # what the application's live data may need of it


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


def deploy_modules():
    """What `make deploy` puts on a board: firmware/, hal/ without the simulator, umqtt and urequests."""
    names = []
    for top in ("firmware", "hal"):
        for d, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = sorted(x for x in dirs if x not in ("sim", "__pycache__"))
            for n in sorted(files):
                if n.endswith(".py"):
                    mod = os.path.relpath(os.path.join(d, n[:-3]), ROOT).replace(os.sep, ".")
                    names.append(mod[:-9] if mod.endswith(".__init__") else mod)
    return names + ["umqtt.simple", "urequests"]


def sim_modules():
    return ["hal.sim." + n[:-3] for n in sorted(os.listdir(os.path.join(ROOT, "hal", "sim")))
            if n.endswith(".py") and n != "__init__.py"]


def heap_imports(interp, code_dir, names, world=None):
    """Run tools/bench_heap.py: {"total", "modules", ["world"]} in bytes; code_dir None = frozen only."""
    env = dict(os.environ, MICROPYPATH=".frozen" + (":" + code_dir if code_dir else ""))
    args = [interp, os.path.join(ROOT, "tools", "bench_heap.py")] + (["--world"] + list(world) if world else []) + names
    out = subprocess.run(args, cwd=tempfile.gettempdir(), env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError("bench_heap.py on %s failed:\n%s" % (interp, out.stderr[-2000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _frozen_cmd(interp, script, name, heapsize, tmp, tls=None, limit_s=None):
    """(command, run dir, world, printer names, environment) to run `script` (main.py or a bench
    tool) on an interpreter with the firmware and the simulator frozen in: main.py alone on the
    filesystem; limit_s: killed after that many seconds (a heap so tight the collector thrashes)."""
    stage = os.path.join(tmp, "root")
    os.makedirs(stage)
    shutil.copy(os.path.join(ROOT, "main.py"), stage)
    run_dir = os.path.join(tmp, "run")
    world, _, board_path, names = sim.prepare(os.path.join(SCENARIOS, name), run_dir, os.urandom(32),
                                              "127.0.0.1:9" if tls else None, tls=tls)
    cmd = [interp, "-X", "heapsize=%s" % heapsize, script if script != "main.py" else os.path.join(stage, script),
           "--board", board_path, "--config", os.path.join(run_dir, "config.json"),
           "--secrets", os.path.join(run_dir, "secrets.json"), "--scenario", os.path.join(run_dir, "scenario.json"),
           "--data", os.path.join(run_dir, "data")]
    if limit_s:
        cmd = ["timeout", "-s", "KILL", str(int(limit_s))] + cmd
    return cmd, run_dir, world, names, dict(os.environ, MICROPYPATH=".frozen:" + stage)


def run_frozen(interp, name, heapsize, limit_s=None):
    """Run a scenario on the frozen build (make mp32), as on a board. Returns (boot event, halt event, wall s)."""
    tmp = tempfile.mkdtemp(prefix="cp-bench-")
    try:
        cmd, run_dir, world, names, env = _frozen_cmd(interp, "main.py", name, heapsize, tmp, limit_s=limit_s)
        lines = []
        t0 = time.time()
        run = sim.Simulation(world, run_dir, cmd, env, sim.Printer(world["start_utc"], names, lines.append), None,
                             None, True, lines.append)
        run.run()
        wall = time.time() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    events = [json.loads(line[2:]) for line in lines if line.startswith("@ ")]
    if run.rc != 0:
        raise RuntimeError("%s failed (exit %d):\n%s" % (name, run.rc, "\n".join(lines[-20:])))
    return [e for e in events if e["ev"] == "boot"][0], [e for e in events if e["ev"] == "halt"][0], wall


def boot_split(interp, name, tls=None):
    """What the boot keeps on the frozen build (tools/bench_boot.py), firmware and simulator apart:
    {"firmware", "simulator", "parts": [(part, bytes)...] largest first}. tls: as sim.prepare's."""
    tmp = tempfile.mkdtemp(prefix="cp-bench-")
    try:
        cmd, _, _, _, env = _frozen_cmd(interp, os.path.join(ROOT, "tools", "bench_boot.py"), name, "1M", tmp, tls)
        out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [line for line in out.stdout.splitlines() if line.startswith('{"')]
    if not rows:
        raise RuntimeError("bench_boot.py failed:\n%s%s" % (out.stdout[-1000:], out.stderr[-2000:]))
    d = json.loads(rows[-1])
    parts = d["parts"]
    parts.pop("(measuring)", None)
    simulator = d["sim_imports"] + parts.pop("World", 0) + parts.pop("load scenario.json", 0) + \
        sum(parts.pop(k) for k in [k for k in parts if k.startswith("machine ")])
    parts["imports"] = d["imports"]
    return {"firmware": d["live"] - simulator, "simulator": simulator,
            "parts": sorted(parts.items(), key=lambda kv: -kv[1])}


SLOWDOWN = 4   # a run taking this many times its time in a roomy heap "does not run": the collector thrashes


def _runs(interp, name, kb, limit_s=None):
    try:
        return run_frozen(interp, name, "%dK" % kb, limit_s)
    except RuntimeError:
        return None


def smallest_heap_kb(interp, name, lo_kb, hi_kb, step_kb=8):
    """The smallest -X heapsize (multiple of step_kb) the scenario runs in, each run within SLOWDOWN
    times its time at hi_kb, by bisection between a size known to fail and hi_kb; None if hi_kb
    fails. At most log2((hi-lo)/step) + 2 runs."""
    ref = _runs(interp, name, hi_kb)
    if ref is None:
        return None
    limit_s = max(30, SLOWDOWN * ref[2])
    lo, hi = lo_kb // step_kb, hi_kb // step_kb
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _runs(interp, name, mid * step_kb, limit_s) is None:
            lo = mid
        else:
            hi = mid
    return hi * step_kb


def _kb(n):
    return "%.1f KB" % (n / 1024)


def _pki(d):
    """A CA and a client certificate (openssl), for a boot with TLS on; None without openssl."""
    if shutil.which("openssl") is None:
        return None
    def ossl(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)
    ca, key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", "/CN=bench-ca", "-keyout", key, "-out", ca)
    cert, ckey, csr = (os.path.join(d, n) for n in ("cp.pem", "cp.key", "cp.csr"))
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=cp-bench",
         "-keyout", ckey, "-out", csr)
    ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", key, "-CAcreateserial", "-days", "2", "-out", cert)
    return {"ca": ca, "cert": cert, "key": ckey, "hostname": "localhost"}


BUDGET_KB = 40      # issue #16: the firmware's live heap after boot, frozen, 32-bit
SMALL_HEAP_KB = 64  # and the long day, simulator included, in this heap


def mp32_figures(pypi_boot_heap):
    """Heap figures on the board-like interpreters next to the PyPI one's; module table printed."""
    if not (os.path.exists(MP32) and os.path.exists(MP32_FROZEN)):
        print("no board-like interpreter (run `make mp32`): its heap figures are left out")
        return []
    rows = []
    code = sim.build_mpy()
    names = deploy_modules()
    pypi = heap_imports(sim.micropython_path(), code, names)
    m32 = heap_imports(MP32, code, names)
    frozen = heap_imports(MP32_FROZEN, None, names)
    limit = (BOARD_KB - DATA_KB) * 1024
    rows.append(("heap taken by importing firmware + drivers + umqtt + urequests from .mpy (what `make deploy` "
                 "installs): 64-bit PyPI port / 32-bit float32 port",
                 "%s / %s" % (_kb(pypi["total"]), _kb(m32["total"])),
                 "≤ %d KB (%d KB heap − %d KB data)" % (BOARD_KB - DATA_KB, BOARD_KB, DATA_KB), m32["total"] <= limit))
    rows.append(("the same with the firmware frozen (32-bit float32 port, `make mp32`): objects only",
                 _kb(frozen["total"]), "≤ %d KB" % (BOARD_KB - DATA_KB), frozen["total"] <= limit))
    print_module_table(code, pypi, m32, frozen)
    rows += budget_rows()
    return rows


def budget_rows():
    """Issue #16's memory budget on the frozen 32-bit build: the firmware's live heap after boot
    (the simulator's share apart; with the MQTT link and TLS context), the long day's peak, and the
    smallest heap that runs it, found in bounded time (a bisection over the one-hour session, then
    the long day at that size and at most two 8 KB steps above)."""
    if not os.path.exists(MP32_FROZEN):
        print("no frozen board-like interpreter (run `make mp32`): the budget rows are left out")
        return []
    split = boot_split(MP32_FROZEN, "long_day.json")
    tmp = tempfile.mkdtemp(prefix="cp-bench-pki-")
    try:
        tls = _pki(tmp)
        linked = boot_split(MP32_FROZEN, "long_day.json", tls) if tls else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("live heap after boot, frozen 32-bit, by part (bytes; `imports`: every module's objects):")
    for part, n in split["parts"][:12]:
        print("  %-28s %6d" % (part, n))
    roomy = run_frozen(MP32_FROZEN, "long_day.json", "512K")
    limit_s = SLOWDOWN * roomy[2]
    small = _runs(MP32_FROZEN, "long_day.json", SMALL_HEAP_KB, limit_s)
    boot_kb = (split["firmware"] + split["simulator"]) // 1024
    kb = SMALL_HEAP_KB if small else smallest_heap_kb(MP32_FROZEN, "session_hour.json", boot_kb // 8 * 8, 256)
    tries = 3   # the long day at the one-hour session's smallest heap, then two 8 KB steps up
    while not small and kb is not None and tries and _runs(MP32_FROZEN, "long_day.json", kb, limit_s) is None:
        kb, tries = kb + 8, tries - 1
    if not tries:
        kb = None
    boot, halt, _ = small or roomy
    # the boot event's own figure (no measuring wrappers), the simulator's share taken off; the
    # link and its TLS context as bench_boot.py measured them
    alone = boot["heap"] - split["simulator"]
    fw = alone + (linked["firmware"] - split["firmware"] if linked else 0)
    rows = [("firmware's live heap after boot, frozen, 32-bit float32, MQTT link + TLS context built "
             "(simulator apart: its modules, world, scenario and simulated peripherals)",
             "%s (%s without the link; simulator %s)%s" % (
                 _kb(fw), _kb(alone), _kb(split["simulator"]), "" if linked else " — no openssl: measured without TLS"),
             "≤ %d KB" % BUDGET_KB, fw <= BUDGET_KB * 1024)]
    spare = SMALL_HEAP_KB * 1024 - halt["heap_peak"]
    rows.append(("peak live heap, long day (8.5 virtual h, 7 sessions), frozen, 32-bit float32: "
                 "firmware + simulator, without the link",
                 "%s (%s after boot); %s %s %d KB" % (_kb(halt["heap_peak"]), _kb(boot["heap"]), _kb(abs(spare)),
                                                     "below" if spare >= 0 else "above", SMALL_HEAP_KB),
                 "fits %d KB" % SMALL_HEAP_KB, halt["heap_peak"] <= SMALL_HEAP_KB * 1024))
    if kb is None:
        found = "not found (the one-hour session's smallest heap + 16 KB did not run it)"
    else:
        found = "%d KB, %d KB more than %d KB" % (kb, kb - SMALL_HEAP_KB, SMALL_HEAP_KB)
    rows.append(("long day in -X heapsize=%dK, frozen, 32-bit float32, simulator included; else the smallest "
                 "heap it runs in (8 KB steps)" % SMALL_HEAP_KB,
                 "runs in %d KB" % SMALL_HEAP_KB if small else "does not run; smallest: " + found,
                 "runs in %d KB" % SMALL_HEAP_KB, small is not None))
    return rows


def print_module_table(code_dir, pypi, m32, frozen):
    """Per module: .mpy bytes (bytecode, -O2) and the heap its import keeps, largest 32-bit cost first."""
    print("%-34s %8s %10s %10s %10s" % ("module", ".mpy B", "heap x64", "heap 32b", "frozen 32b"))
    for name in sorted(m32["modules"], key=lambda n: -m32["modules"][n]):
        path = os.path.join(code_dir, *name.split("."))
        path = path + ".mpy" if os.path.exists(path + ".mpy") else os.path.join(path, "__init__.mpy")
        size = os.path.getsize(path) if os.path.exists(path) else 0
        print("%-34s %8d %10d %10d %10d" % (name, size, pypi["modules"].get(name, 0), m32["modules"][name],
                                             frozen["modules"].get(name, 0)))
    print("%-34s %8s %10d %10d %10d" % ("total (with what the hook costs)", "", pypi["total"], m32["total"],
                                         frozen["total"]))


def loop_pass_row():
    """A loop pass in steady charging, nothing due, under heap_lock on each interpreter (tools/bench_loop.py)."""
    got = []
    for interp in ([MP32] if os.path.exists(MP32) else []) + [sim.micropython_path()]:
        out = subprocess.run([interp, "-X", "heapsize=8M", "tools/bench_loop.py"], cwd=ROOT,
                             env=sim.micropython_env(), capture_output=True, text=True, check=True)
        got.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ok = all(g["error"] is None and g["charging"] for g in got)
    value = " / ".join("0 B (%d passes under heap_lock)" % g["passes"] if g["error"] is None
                       else "allocates: %s after %d passes" % (g["error"], g["passes"]) for g in got)
    return ("bytes allocated per loop pass, steady charging with two schedules, nothing due: "
            + ("32-bit float32 port / " if len(got) == 2 else "") + "PyPI port", value, "0", ok)


def quick_figures(samples):
    """The figures a change to the loop or the link can make worse, in a minute or two: allocation
    per sample, the pipeline ratio and the worst sample gap with a silent broker."""
    rows = sampling_rows(sampling_figures(samples))
    rows.append(loop_pass_row())
    rows.append(silent_broker_row())
    return rows


def sampling_rows(s):
    ratio = s["pipeline_us"] / s["bare_us"]
    return [("bytes allocated per sample (sampling path, %d samples, GC counters)" % s["samples"],
             "%.2f B" % s["bytes_per_sample"], "0", s["bytes_per_sample"] == 0),
            ("sampling pipeline ÷ bare driver reads of the same registers (%d vs %d reads)"
             % (s["reads_per_sample"], s["bare_reads"]),
             "%.2f (%.1f µs / %.1f µs)" % (ratio, s["pipeline_us"], s["bare_us"]), "≤ 2.0", ratio <= 2.0)]


def silent_broker_row():
    with Broker() as b:
        _, halt_rt, _ = run_scenario("realtime_silent.json", broker=b)
    gap = halt_rt["max_gap_ms"]
    return ("worst gap between samples, 10 Hz, real clock, broker accepting TCP and never answering",
            "%d ms%s" % (gap, " (timestamps are whole ms: 100 ms + rounding)" if gap == 101 else ""),
            "≤ 100 ms", gap <= 101)


def figures(samples):
    s = sampling_figures(samples)
    rows = sampling_rows(s)
    rows.append(loop_pass_row())
    ratio = s["pipeline_us"] / s["bare_us"]
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
    rows += mp32_figures(boot["heap"])
    rows.append(silent_broker_row())
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
    ap.add_argument("--quick", action="store_true", help="only the sampling figures and the silent-broker gap "
                                                         "(a minute or two; prints, never writes README.md)")
    ap.add_argument("--budget", action="store_true", help="only issue #16's memory budget on the frozen 32-bit build "
                                                          "(out/mp32; prints, never writes README.md)")
    args = ap.parse_args()
    if args.quick or args.budget:
        args.no_readme = True
    if args.budget:
        rows = budget_rows()
    else:
        rows = quick_figures(args.samples) if args.quick else figures(args.samples)
    for name, value, target, ok in rows:
        print("%-100s %s  (target %s%s)" % (name, value, target, "" if ok else ", NOT MET"))
    if not args.no_readme:
        write_readme(rows, "make bench")
        print("README.md performance table updated")


if __name__ == "__main__":
    main()
