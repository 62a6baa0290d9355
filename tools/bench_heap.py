"""Heap taken by importing modules, per module, inside MicroPython (called by tools/bench.py).

    MICROPYPATH=.frozen:build/mpy-host micropython tools/bench_heap.py firmware.app hal.board ...
    ... tools/bench_heap.py --world RUN/board.json RUN/scenario.json hal.sim.world   # + the simulated world
Prints one JSON object: the live heap the named imports added (`total`), each module's own share
(`modules`: what its import kept beyond the modules it imported itself, GC-collected before and after),
and with --world the simulator's objects for that scenario (`world`). Frozen modules cost their objects
only; .mpy and .py files also their bytecode.
"""
import builtins
import gc
import json
import sys

_real_import = builtins.__import__
_own = {}        # module name -> live bytes its import kept, without the modules it imported
_stack = []      # per import in progress: bytes kept by the imports nested in it


def _live():
    gc.collect()
    return gc.mem_alloc()


def _measured_import(name, globals=None, locals=None, fromlist=(), level=0):
    """Builtin import, timed in bytes: modules first loaded here are charged what they kept."""
    if name in sys.modules and not fromlist:
        return _real_import(name, globals, locals, fromlist, level)
    before = set(sys.modules)
    a0 = _live()
    _stack.append(0)
    try:
        mod = _real_import(name, globals, locals, fromlist, level)
    finally:
        nested = _stack.pop()
    used = _live() - a0
    new = [n for n in sys.modules if n not in before and n not in _own]
    if new:
        new.sort(key=len)
        _own[new[-1]] = used - nested   # the deepest new name: `from a.b import c` loads a.b.c
    if _stack:
        _stack[-1] += used
    return mod


def main(argv):
    world = None
    if argv and argv[0] == "--world":
        world = (argv[1], argv[2])
        argv = argv[3:]
    start = _live()
    builtins.__import__ = _measured_import
    try:
        for name in argv:
            __import__(name)
    finally:
        builtins.__import__ = _real_import
    out = {"total": _live() - start, "modules": _own}
    if world:
        from hal.sim.world import World

        with open(world[0]) as f:
            board = json.load(f)
        with open(world[1]) as f:
            scenario = json.load(f)
        a0 = _live()
        w = World(board, scenario)
        out["world"] = _live() - a0
        out["world_alive"] = w is not None
    print(json.dumps(out))


main(sys.argv[1:])
