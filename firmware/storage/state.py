"""Small persistent counters (next transaction id, lifetime meter counts) written atomically.

A write goes to a temporary file that is then renamed over the old one, so a power cut
leaves either the old or the new state, never a torn one.

    st = State("data/state.json"); tx = st.next_tx()
    st.set_meter(1200, 17); st.set_cycles(3); st.save()   # one write for what changed together
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
                       "chain_prev": "0" * 64, "chain_n": 0, "cmd_ctr": 0}
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

    # each value has one writer (named): set_* only changes RAM, save() writes them together
    def meter(self):
        """(whole Wh, sub-Wh counts) of the billing register at the last save (metering)."""
        return self.values["meter_wh"], self.values["meter_rem"]

    def set_meter(self, wh, rem):
        self.values["meter_wh"], self.values["meter_rem"] = wh, rem

    def cycles(self):
        """Contactor close operations over the charger's life."""
        return self.values["cycles"]

    def set_cycles(self, n):
        self.values["cycles"] = n

    def chain(self):
        """(previous record hash, records signed) of the signing chain."""
        return self.values["chain_prev"], self.values["chain_n"]

    def set_chain(self, prev_hash, n):
        self.values["chain_prev"], self.values["chain_n"] = prev_hash, n

    def cmd_ctr(self):
        """The highest counter of a backend command accepted (firmware/link/commands.py): no replays."""
        return self.values["cmd_ctr"]

    def set_cmd_ctr(self, n):
        self.values["cmd_ctr"] = n

    def faults(self):
        """Fault trip counts and latches (Faults.persist()), None before the first fault."""
        return self.values["faults"]

    def set_faults(self, saved):
        self.values["faults"] = saved
