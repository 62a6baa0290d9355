"""Small persistent counters (next transaction id, lifetime meter counts) written atomically.

A write goes to a temporary file that is then renamed over the old one, so a power cut
leaves either the old or the new state, never a torn one.

    st = State("data/state.json"); tx = st.next_tx()
"""
import json
import os


def ensure_dir(path):
    """mkdir -p for MicroPython's os (no makedirs)."""
    cur = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if part:
            cur = cur + part if not cur or cur.endswith("/") else cur + "/" + part
            try:
                os.mkdir(cur)
            except OSError:
                pass


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class State:
    def __init__(self, path):
        self.path = path
        self.values = {"tx": 0, "fb": 0, "fault": 0, "meter_wh": 0, "meter_rem": 0, "cycles": 0, "faults": None,
                       "chain_prev": "0" * 64, "chain_n": 0}
        try:
            with open(path) as f:
                saved = json.load(f)
            for k in self.values:
                if isinstance(saved.get(k), type(self.values[k]) if self.values[k] is not None else dict):
                    self.values[k] = saved[k]
        except (OSError, ValueError):
            pass  # first boot, or a torn temp file never renamed: start from defaults

    def save(self):
        write_atomic(self.path, json.dumps(self.values))

    def next(self, counter):
        """The next number of a persisted counter: never used before on this device."""
        self.values[counter] += 1
        self.save()
        return self.values[counter]

    def next_tx(self):
        return self.next("tx")
