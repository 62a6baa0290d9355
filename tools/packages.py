"""The tools' third-party packages live in the project's .venv (`make setup`); a tool started with
another Python, as the docs show it (`python3 tools/backend.py ...`), runs itself again there.

    from packages import require
    require("paho")          # before `import paho...`
"""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")


def require(*packages):
    """Returns when every top-level package imports here; else re-executes the program under
    .venv/bin/python, or exits naming `make setup` when that is where it runs already or there is none."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if not missing:
        return
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV) or not os.path.exists(python):
        sys.exit("%s needs %s: run `make setup` in %s first (it makes .venv with the pinned packages)"
                 % (os.path.basename(sys.argv[0] or "this tool"), ", ".join(missing), ROOT))
    os.execv(python, [python] + sys.argv)
