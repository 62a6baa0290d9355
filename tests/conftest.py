"""pytest on CPython: firmware modules import from the project root, `micropython` from the shim,
micropython-lib modules from lib/."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (os.path.join(ROOT, "lib"), os.path.join(ROOT, "tools", "compat"), os.path.join(ROOT, "tests", "unit"), ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)
