"""Runs the unit tests under the MicroPython unix port: the same files pytest runs on CPython.

    micropython tests/mp_runner.py tests/unit [test_name_substring]    (from the project root)
"""
import gc
import os
import sys


def _modules(folder):
    names = [n[:-3] for n in os.listdir(folder) if n.startswith("test_") and n.endswith(".py")]
    names.sort()
    return names


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "tests/unit"
    pick = sys.argv[2] if len(sys.argv) > 2 else ""
    sys.path[:0] = [folder, "", "lib"]  # tests, then the project root (run from there), then lib/
    passed = failed = 0
    for name in _modules(folder):
        mod = __import__(name)
        for attr in sorted(dir(mod)):
            fn = getattr(mod, attr)
            if not attr.startswith("test_") or not callable(fn) or pick not in name + "." + attr:
                continue
            gc.collect()   # each test starts from a collected heap
            try:
                fn()
                passed += 1
            except Exception as e:  # report every failure, keep going
                failed += 1
                print("FAIL %s.%s" % (name, attr))
                sys.print_exception(e)
    print("micropython %d.%d.%d: %d passed, %d failed" % (sys.implementation.version[:3] + (passed, failed)))
    sys.exit(1 if failed or not passed else 0)


main()
