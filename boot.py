"""Runs first at power-up on the board: picks the firmware slot, counts trial boots, rolls back.

firmware/link/ota.py writes a new version into slots/a or slots/b and names the active one in
slots/state.json. This file (never updated over the air) puts that slot first on sys.path, so
`import firmware.app` loads it, ahead of the filesystem root and of frozen modules. A version
on trial must import cleanly and confirm within `max_boots` boots; otherwise its predecessor
(the other slot, or the base firmware) runs again and the reason is kept for the backend.

    on a board: runs by itself before main.py (the filesystem root is the current directory)
    on a PC:    cd BOARD_ROOT && micropython -c "exec(open('boot.py').read()); import firmware.app"
"""
import json
import os
import sys

_ENTRY = "firmware.app"          # imported at a trial boot: a version that cannot is rolled back
_PACKAGES = ("firmware", "hal")  # what a slot holds
_REASON_MAX = 160


def rolled_back(st, reason):
    """Give up the active slot for its predecessor (same rule as firmware/link/ota.py)."""
    info = st["slots"].pop(st["active"], None) or {}
    prev = st.get("previous")
    st["active"] = prev if prev in st["slots"] else None
    st["previous"] = None
    st["trial"] = None
    st["outcome"] = {"id": info.get("id"), "status": "rolled_back", "version": info.get("version"),
                     "reason": reason[:_REASON_MAX]}
    return st


def plan(st):
    """(changed, on trial) for this boot, updating st: count a trial boot or give up the slot."""
    if not isinstance(st.get("slots"), dict) or st.get("active") not in st["slots"]:
        return False, False  # base firmware (or a state not worth trusting: never guess a slot)
    trial = st.get("trial")
    if not isinstance(trial, int):
        return False, False
    limit = st.get("max_boots", 3)
    if trial >= limit:
        rolled_back(st, "not confirmed after %d boots" % trial)
        return True, False
    st["trial"] = trial + 1
    return True, True


def _save(path, st):
    try:
        with open(path + ".tmp", "w") as f:
            f.write(json.dumps(st))
        os.rename(path + ".tmp", path)
    except OSError as e:
        print("boot: cannot write %s (%s)" % (path, e))


def _forget():
    """Drop what a failed import left in sys.modules, so the previous slot imports afresh."""
    for name in list(sys.modules):
        if name.split(".")[0] in _PACKAGES:
            del sys.modules[name]


def boot(root):
    """Put the active slot first on sys.path; returns its name, or None for the base firmware."""
    slots = (root.rstrip("/") if root else ".") + "/slots"
    path = slots + "/state.json"
    try:
        with open(path) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return None  # no update was ever installed (or the file is unreadable): base firmware
    if not isinstance(st, dict):
        return None
    changed, trial = plan(st)
    if changed:
        _save(path, st)
    active = st.get("active") if isinstance(st.get("slots"), dict) and st.get("active") in st["slots"] else None
    if active is None:
        return None
    here = slots + "/" + active
    sys.path.insert(0, here)
    if trial:
        try:
            __import__(_ENTRY)
        except Exception as e:  # whatever the new version raises, the previous one runs
            sys.path.remove(here)
            _forget()
            rolled_back(st, "import failed: %s: %s" % (type(e).__name__, e))
            _save(path, st)
            active = st["active"]
            if active is not None:
                sys.path.insert(0, slots + "/" + active)
    return active


if __name__ == "__main__":
    if "/lib" not in sys.path:
        sys.path.append("/lib")
    boot(os.getcwd())
