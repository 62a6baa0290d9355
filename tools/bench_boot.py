"""What the boot keeps on the heap, per part, inside MicroPython (called by tools/bench.py).

    MICROPYPATH=.frozen:STAGE micropython tools/bench_boot.py --board B --config C --secrets S --scenario W --data D
Boots main.py (found on MICROPYPATH) up to the loop and prints one JSON object: the live heap at
that point (`live`, without the interpreter's own and this tool's), what the imports kept
(`imports`; the simulator's: `sim_imports`) and what each part built at boot kept (`parts`:
bytes beyond the parts it built itself, GC-collected before and after, a file read by `load`
while its result was alive; the simulated world is `World`, the simulated peripherals `machine
Pin`, `machine SPI`, ...). The loop does not run.
"""
import gc
import json
import sys

_BOOT = {"firmware.app": ("load", "board_settings", "Settings", "CrashWatch", "RecordLog", "EventLog", "Log", "Board",
                          "auth_from_settings", "Outbox", "Journal", "State", "storage_troubles", "Sync",
                          "Controller"),
         "firmware.link.otacore": ("from_settings",),
         "firmware.link.mqtt": ("Link",),
         "firmware.controller": ("CardReader", "Feedback", "Metering", "_ev_sense", "Faults", "Stamp", "Tariffs",
                                 "Revenue", "Chain", "Safety", "Reactions", "Status", "Health", "OcppCommands",
                                 "Handlers", "Commands", "Every", "LowMemory"),
         "hal.sim.world": ("World",),
         # the simulated peripherals the board builds (an ESP32's machine.Pin, SPI, ... are C objects,
         # most of them static): the simulator's share, not the firmware's
         "hal.sim.machine": ("Pin", "SPI", "I2C", "PWM", "ADC", "WDT")}
_parts = {}
_stack = []


def _live():
    gc.collect()
    return gc.mem_alloc()


def _wrap(mod, name):
    real = getattr(mod, name)
    if mod.__name__ == "hal.sim.machine":   # a class: what its __init__ builds is what an instance keeps
        mod, name, real = real, "__init__", real.__init__

    def measured(*args, **kw):
        _stack.append(0)
        a0 = _live()
        try:
            obj = real(*args, **kw)
        finally:
            nested = _stack.pop()
        used = _live() - a0
        key = name if name != "load" else "load " + str(args[0]).split("/")[-1]   # per file read
        if name == "__init__":
            key = "machine " + type(args[0]).__name__
        _parts[key] = _parts.get(key, 0) + used - nested
        if _stack:
            _stack[-1] += used
        return obj

    setattr(mod, name, measured)


def main():
    base = _live()
    for name in _BOOT:
        if not name.startswith("hal.sim"):
            __import__(name)
    imports = _live() - base
    a0 = _live()
    __import__("hal.sim.world")
    __import__("hal.sim.machine")
    sim_imports = _live() - a0
    before = _live()
    for name, attrs in _BOOT.items():
        mod = sys.modules[name]
        for a in attrs:
            _wrap(mod, a)
    _parts["(measuring)"] = 0
    overhead = _live() - before + base   # the interpreter, this tool and its wrappers
    ctl = sys.modules["firmware.controller"].Controller
    real_run = ctl.run

    def report(self, stop):
        print(json.dumps({"live": _live() - overhead, "imports": imports, "sim_imports": sim_imports, "parts": _parts}))

    ctl.run = report
    try:
        __import__("main")
    finally:
        ctl.run = real_run


main()
