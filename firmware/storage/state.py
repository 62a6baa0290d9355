"""Small persistent counters (next transaction id, lifetime meter counts) written atomically.

A write goes to a temporary file that is then renamed over the old one, so a power cut
leaves either the old or the new state, never a torn one. A refused write (full flash) never
raises: the values stay in RAM, `error` says why, and retry() writes them once there is room.
A missing, unreadable or invalid file gives defaults and says so in `problems` (app.py rebuilds
the counters from the journal and reports it).

    st = State("data/state.json"); tx = st.next_tx()
    st.set_meter(1200, 17); st.set_cycles(3); st.save()   # one write for what changed together
"""
import json
import os

_COUNTERS = ("tx", "fb", "fault", "meter_wh", "meter_rem", "cycles", "chain_n", "jseq", "cmd_ctr", "ep")


def exists(path):
    """Whether a file or folder is there (MicroPython's os has no path.exists)."""
    try:
        os.stat(path)
        return True
    except OSError:
        return False


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
    """Write text to path through a temporary file; an OSError (full flash) leaves the old file and
    removes the partial temporary one, whose blocks a full flash needs back."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def errno_of(e):
    """The errno of an OSError (-1 if it has none)."""
    return e.args[0] if e.args and isinstance(e.args[0], int) else -1


class State:
    def __init__(self, path, reserve=None):
        self.path = path
        self.reserve = reserve   # flash kept back for the counters (storage/reserve.py)
        self.values = {"tx": 0, "fb": 0, "fault": 0, "meter_wh": 0, "meter_rem": 0, "cycles": 0, "faults": None,
                       "chain_prev": "0" * 64, "chain_n": 0, "jseq": 0, "cmd_ctr": 0, "ep": 0}
        self.seq_of = None   # the journal's next sequence number (app.py): saved as jseq, so a boot
        # finding the journal wiped or emptied knows how many records it lost
        self.problems = []   # what was wrong with the stored file (reported at boot)
        self.lost = False    # no usable file: the counters are defaults, rebuild them (rebuild())
        self.error = 0       # errno of the last failed write, 0 after a good one
        self.dirty = False   # RAM holds values flash refused: retry() writes them
        try:
            with open(path) as f:
                saved = json.load(f)
            if not isinstance(saved, dict):
                raise ValueError("not an object")
        except OSError:
            self.lost = True   # first boot, or the file is gone: app.py tells them apart by the journal
            return
        except ValueError as e:
            self.lost = True
            self.problems.append("unreadable (%s), kept as state.json.bad" % e)
            try:
                os.rename(path, path + ".bad")
            except OSError:
                pass
            return
        for k in self.values:
            v, default = saved.get(k), self.values[k]
            if k not in saved:
                continue   # written by older firmware: the default, rebuilt from the journal where it counts
            if not self._valid(k, v):
                self.problems.append("%s=%r invalid, %r used" % (k, v, default))
            else:
                self.values[k] = v

    @staticmethod
    def _valid(k, v):
        if k in _COUNTERS:
            return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 0x40000000
        if k == "faults":
            return v is None or isinstance(v, dict)
        return isinstance(v, str) and len(v) == 64   # chain_prev: a SHA-256 in hex

    def save(self):
        """Write every value; False if flash refused (kept in RAM for retry(), never raises)."""
        if self.seq_of is not None:
            self.values["jseq"] = self.seq_of()
        text = json.dumps(self.values)
        try:
            try:
                write_atomic(self.path, text)
            except OSError:   # the flash is full (littlefs may say so by another errno than ENOSPC):
                if self.reserve is None or not self.reserve.release():   # the next tx id not in RAM only
                    raise
                write_atomic(self.path, text)
        except OSError as e:
            self.error = errno_of(e)
            self.dirty = True
            return False
        self.error = 0
        self.dirty = False
        return True

    def retry(self):
        """Write what a full flash refused earlier; True when flash holds the values."""
        return self.save() if self.dirty else True

    def rebuild(self, tx, meter_wh, meter_rem):
        """Counters found in the journal (lost or stale state): never go below them. Returns what changed."""
        changed = []
        if tx > self.values["tx"]:
            changed.append("tx %d->%d" % (self.values["tx"], tx))
            self.values["tx"] = tx
        if (meter_wh, meter_rem) > (self.values["meter_wh"], self.values["meter_rem"]):
            changed.append("meter_wh %d->%d" % (self.values["meter_wh"], meter_wh))
            self.values["meter_wh"], self.values["meter_rem"] = meter_wh, meter_rem
        return changed

    def reseed(self, base):
        """After a loss: fault and feedback ids restart above a random base, never repeating old ones."""
        for k in ("fb", "fault"):
            if self.values[k] < base:
                self.values[k] = base

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

    def epoch(self):
        """The data epoch of this life of the device (app.py chooses it): every record carries it, so
        (device, ep, msg_id) never repeats even after state.json and the journal are both lost."""
        return self.values["ep"]

    def set_epoch(self, ep):
        self.values["ep"] = ep

    def faults(self):
        """Fault trip counts and latches (Faults.persist()), None before the first fault."""
        return self.values["faults"]

    def set_faults(self, saved):
        self.values["faults"] = saved
