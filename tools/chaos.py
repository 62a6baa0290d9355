"""Chaos run: a busy charger whose power is cut (kill -9) at a hundred random moments, then audited.

A generated scenario (several drivers, sessions back to back, broker down and silent spells)
runs through tools/sim.py against a real mosquitto and the reference backend (SQLite store).
A Killer cuts the power at random wall-clock moments of the MicroPython process's life: during
boot and recovery, a few milliseconds after lines that precede journal writes and publishes,
or anywhere; each restart is a new process on the same data directory at the virtual time the
world reached, with the meter chip keeping or losing its supply; during a few outages state.json
is removed or damaged (the firmware rebuilds it from the journal), and during a few the flash
fills (the next life boots on a full flash or fills it mid-session; a later outage frees it). On
a board with a power-good input (sim_gasp) a cut fails the mains and the process dies hold_up_ms
of virtual time later (docs/simulator.md). The audit then checks the backend against the
simulated meter: every session once, with an `ended` event, no gaps, the billed energy equal to
what the chip counted within the declared uncertainty; a session that only RAM held when a cut
came on a full flash is counted apart (`lost_on_a_full_flash`, docs/journal.md allows it).

    python3 tools/chaos.py                       # make chaos: 40 sessions, >= 400 kills
    python3 tools/chaos.py --sessions 8 --kills 110 --seed 7 --keep out/chaos
    python3 tools/chaos.py --board sim_flash     # the same without the FRAM (flash checkpoints only)
    python3 tools/chaos.py --board sim_gasp      # no FRAM, a power-good input: the last gasp

Energy figures per cut: `lost_wh` is what the chip counted that no bill holds (sessions closed
with PowerLoss), `lost_wh_per_power_loss` and `uncertain_wh_per_power_loss` spread it over those
sessions, and `worst_lost_wh` is the largest single loss: with the FRAM (board sim) at most one
energy-read interval of charging per cut, with the last gasp only (sim_gasp) what is drawn in the
hold-up time, with neither (sim_flash) up to a journal checkpoint interval (each plus < 1 Wh: the
bill counts whole Wh).

In Python: `figures, problems = run(seed=7, sessions=8, kills=110)`; problems == [] is a pass.
"""
import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sim  # noqa: E402
from backend import Backend  # noqa: E402
from broker import Broker  # noqa: E402
from store import Store, epoch  # noqa: E402

COUNTS_PER_WH = 320   # the ATM90E32 energy registers at the PLconst the driver writes (hal/atm90e32.py)
DRIVERS = {"alice": "04A1B2C3D4E5F6", "bob": "DEADBEEF", "carol": "04112233445566", "dave": "11223344",
           "erin": "0A0B0C0D"}
# kill plans: (name, share, lines that a journal write or a publish follows within milliseconds).
# A calm life runs a while; its kill may start a storm, lives cut again within a second or so
# (a flickering supply), which is where boot, journal scan and recovery get interrupted.
CALM = (("session", 0.35, ("tap", "contactor", "pilot", "stopping")),  # START, END, state saves
        ("publish", 0.1, ("mqtt",)),                                  # the outbox burst after connecting
        ("journal", 0.2, None),                                       # the moment a journal record lands
        ("timer", 0.35, None))                                        # anywhere
STORM = (("boot", 0.3, None),                                        # import, journal scan, first connect
         ("recovery", 0.25, ("recovered",)),                          # closing the open session: END, state
         ("journal", 0.25, None),
         ("timer", 0.2, None))
STORMS = (0, 0, 1, 2, 3, 4, 5, 6)   # extra kills after a calm life's one
PLAN_NAMES = ("boot", "recovery", "session", "publish", "journal", "timer")
WRITE_LINES = ("recovered", "tap", "contactor", "pilot", "stopping", "mqtt")
NEAR_S = 0.005
FREE_CHANCE = 0.3      # per outage, that a full flash is freed again (a technician, a finished download)
HOLD_UP_WALL_S = 0.3   # a power-good board's process not gone this long after its mains failed is killed


def busy_scenario(seed, sessions=16, minutes=(5, 20), gap_s=(20, 120), tail_s=1800, board="sim"):
    """A scenario dict: drivers charging back to back, stopping in the ways drivers do, broker
    outages (down for minutes, silent for a minute or two), and drivers who tap again when a
    power cut stopped their charge (retap_after_cut)."""
    rng = random.Random(seed)
    names = sorted(DRIVERS)
    events = []
    t = 20
    for _ in range(sessions):
        name = rng.choice(names)
        amps = rng.choice([6, 10, 13, 16, 20, 25, 32])
        events += [{"t": t, "plug": True}, {"t": t, "ev_current_a": amps}, {"t": t + 3, "tap": name}]
        t += rng.randint(*minutes) * 60
        how = rng.choice(("card", "unplug", "full"))
        if how == "card":      # the driver stops with the card (and wants nothing more), then unplugs
            events += [{"t": t, "tap": name}, {"t": t, "ev_current_a": 0}, {"t": t + rng.randint(10, 60), "plug": False}]
            t += 60
        elif how == "unplug":
            events += [{"t": t, "plug": False}, {"t": t, "ev_current_a": 0}]
        else:                  # the battery is full: the EV stops drawing, the driver comes back later
            events += [{"t": t, "ev_current_a": 0}, {"t": t + rng.randint(60, 300), "plug": False}]
            t += 300
        t += rng.randint(*gap_s)
    busy = t
    # broker spells: about one per 90 minutes, down (refusing) or silent (accepting TCP, never answering)
    spells = max(1, busy // 5400)
    at = 300
    for i in range(spells):
        start = at + rng.randint(0, max(1, busy // spells - 1200))
        if i % 2 == 0:
            length = rng.randint(10, 40) * 60
            events += [{"t": start, "broker": "down"}, {"t": start + length, "broker": "up"}]
        else:
            length = rng.randint(60, 150)
            events += [{"t": start, "broker": "silent"}, {"t": start + length, "broker": "up"}]
        at = start + length + 60
        if at >= busy:
            break
    events.sort(key=lambda e: e["t"])
    return {"name": "chaos %d" % seed, "board": board, "start": "2026-03-02T06:00:00Z", "device_id": "cp-chaos",
            "cards": DRIVERS, "allow": names, "price_per_kwh": "0.30", "currency": "EUR", "vat_percent": "20",
            "retap_after_cut": 20, "events": events, "end": max(busy, at) + tail_s,
            "comment": "generated by tools/chaos.py, seed %d" % seed}


class Killer:
    """Cuts the power (SIGKILL) at random moments; the runner asks it at each life (tools/sim.py)."""

    def __init__(self, rng, kills, stop_ms, data_dir=None, lose_state=0.0, loss_rng=None, mains=False,
                 fill=0.0, fill_rng=None):
        self.rng = rng
        self.fill = fill              # chance, per outage, that the flash fills (freed again at a later outage)
        self.fill_rng = fill_rng or random.Random(2)
        self.flash_cap = None         # bytes: the next life's flash is full once its data directory holds this
        self.flash_moments = []       # "full at boot" / "fills" / "freed", one per change
        self.mains = mains            # a power-good board: a cut fails its mains, the world ends it after the hold-up
        self.hold_up_kills = 0        # of those, killed by the wall-time fallback (e.g. before the world started)
        self.lose_state = lose_state  # chance, per outage, that state.json is lost or corrupt (rebuilt at boot)
        self.loss_rng = loss_rng or random.Random(1)   # its own stream: the kill schedule stays the same
        self.state_losses = []        # "removed" / "corrupt", one per loss
        self.target = kills
        self.stop_ms = stop_ms        # no new kill is planned for a life that starts after this
        self.data_dir = data_dir
        self.kills = []               # one dict per kill: plan, delay, what came just before
        self.flash = 0                # journal bytes appended, summed over lives
        self._lock = threading.Lock()
        self._timers = []
        self._proc = None
        self._fired = False
        self._plan = None
        self._last = None             # (event kind, wall time) of the latest line
        self._sizes = {}
        self._storm = 0               # lives still to cut quickly
        self._calm_wall = 0.0         # wall seconds calm lives ran, for the pace
        self._off_ms = 0              # virtual ms without power so far
        self._calm = False

    # -- the runner's interface ------------------------------------------------------------------
    def arm(self, proc, at_ms):
        now = time.time()
        self._proc, self._fired, self._last, self._started = proc, False, None, now
        self._sizes = journal_sizes(self.data_dir)
        self._plan = None
        self._calm = False
        if len(self.kills) >= self.target or at_ms >= self.stop_ms:
            return
        rng = self.rng
        plans = STORM if self._storm else CALM
        x = rng.random()
        for name, share, kinds in plans:
            x -= share
            if x < 0:
                break
        if self._storm:
            self._storm -= 1
            mean = 0.2
        else:
            self._calm = True
            mean = self._mean_s(at_ms)
        if name == "boot":
            self._plan = {"plan": name, "delay_s": rng.uniform(0, 0.3)}
        elif name == "timer":
            self._plan = {"plan": name, "delay_s": rng.uniform(0, 2 * mean)}
        else:
            after = 0 if name == "recovery" or not self._calm else rng.uniform(0, mean)
            self._plan = {"plan": name, "after_s": after, "kinds": kinds}
            if name == "journal":
                threading.Thread(target=self._watch, args=(self._plan, proc, 2 * mean), daemon=True).start()
            self._timer(after + 2 * mean, "fallback")
            return
        self._timer(self._plan["delay_s"], None)

    def line(self, ev):
        now = time.time()
        p = self._plan
        kind = ev.get("ev")
        if p is not None and p.get("kinds") and "trigger" not in p and kind in p["kinds"] \
                and now - self._started >= p["after_s"]:
            p["trigger"] = kind        # a journal write or a publish follows within milliseconds
            p["trigger_at"] = now
            self._timer(self.rng.uniform(0, NEAR_S), None)
        self._last = (kind, now)

    def disarm(self):
        with self._lock:
            for t in self._timers:
                t.cancel()
            self._timers = []
            self._proc = None
        self.flash += grown(self._sizes, journal_sizes(self.data_dir))
        if self._calm:
            self._calm_wall += time.time() - self._started
        return self._fired

    def outage(self):
        """(off_ms, meter_kept) for the cut just made; notes what the kill interrupted."""
        k = self.kills[-1]
        k["state_tmp"] = bool(self.data_dir) and os.path.exists(os.path.join(self.data_dir, "state.json.tmp"))
        k["segments"] = len(journal_sizes(self.data_dir))
        self._lose_state(k)
        self._fill_or_free(k)
        if self._calm:
            self._storm = self.rng.choice(STORMS)
        off = int(self.rng.uniform(1, 10 if self._storm else 120) * 1000)
        self._off_ms += off
        return off, self.rng.random() < 0.5

    def _lose_state(self, k):
        """Sometimes, while the power is off, state.json goes missing or is damaged (a technician, bad flash)."""
        path = os.path.join(self.data_dir or "", "state.json")
        if not self.data_dir or self.loss_rng.random() >= self.lose_state or not os.path.exists(path):
            return
        if self.loss_rng.random() < 0.5:
            os.remove(path)
            k["state_lost"] = "removed"
        else:
            with open(path, "w") as f:
                f.write('{"tx": -5, "meter_wh": ')
            k["state_lost"] = "corrupt"
        self.state_losses.append(k["state_lost"])

    def _fill_or_free(self, k):
        """Sometimes, while the power is off, the flash fills (the next life boots on a full flash, or it
        fills a few KB later, mid-session); a full one is freed again at a later outage."""
        if not self.data_dir or not os.path.isdir(self.data_dir):
            return
        used = data_bytes(self.data_dir)
        k["flash_full"] = self.flash_cap is not None and used >= self.flash_cap   # at this cut
        rng = self.fill_rng
        if self.flash_cap is None:
            if rng.random() < self.fill:
                room = rng.choice((0, rng.randint(256, 4096)))
                self.flash_cap = used + room
                k["flash"] = "fills" if room else "full at boot"
        elif rng.random() < FREE_CHANCE:
            self.flash_cap = None
            k["flash"] = "freed"
        if "flash" in k:
            self.flash_moments.append(k["flash"])

    # -- inside ------------------------------------------------------------------------------------
    def _mean_s(self, at_ms):
        """Mean wall seconds a calm life runs, so that the kills left spread over the run left."""
        calm_left = max(1.0, (self.target - len(self.kills)) / (1 + sum(STORMS) / len(STORMS))) * 1.6
        ran = at_ms - self._off_ms
        rate = self._calm_wall / ran if ran > 300000 else 0.004 / 1000   # wall s per virtual ms
        return max(0.05, (self.stop_ms - at_ms) / calm_left * rate)

    def _watch(self, plan, proc, give_up_s):
        """Kill the moment the journal grows: after one record is on flash, before whatever follows it."""
        time.sleep(plan["after_s"])
        before = sum(journal_sizes(self.data_dir).values())
        end = time.time() + give_up_s
        while time.time() < end and self._proc is proc and not self._fired:
            size = sum(journal_sizes(self.data_dir).values())
            if size != before:
                plan["trigger"] = "journal %+d bytes" % (size - before)
                plan["trigger_at"] = time.time()
                self._kill(None)
                return
            time.sleep(0.0002)

    def _timer(self, delay, tag):
        t = threading.Timer(delay, self._kill, (tag,))
        t.daemon = True
        self._timers.append(t)
        t.start()

    def _kill(self, tag):
        with self._lock:
            proc = self._proc
            if proc is None or self._fired or proc.poll() is not None:
                return
            try:
                if self.mains:   # power-good falls now; the world asks the runner to end it hold_up_ms later
                    os.write(proc.stdin.fileno(), b"mains_off\n")
                    t = threading.Timer(HOLD_UP_WALL_S, self._hold_up_over, (proc,))
                    t.daemon = True
                    self._timers.append(t)
                    t.start()
                else:
                    os.kill(proc.pid, signal.SIGKILL)
            except OSError:
                return
            self._fired = True
            now = time.time()
            k = dict(self._plan, wall_s=now - self._started, fallback=tag == "fallback")
            k.pop("kinds", None)
            if "trigger_at" in k:
                k["trigger_s"] = now - k.pop("trigger_at")
            if self._last is not None:
                k["after"], k["since_s"] = self._last[0], now - self._last[1]
            else:
                k["after"], k["since_s"] = None, None   # before the firmware printed anything
            self.kills.append(k)


    def _hold_up_over(self, proc):
        """The process outlived its hold-up (still booting, or no world yet to see the mains fail)."""
        with self._lock:
            if self._proc is proc and proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    return
                self.hold_up_kills += 1


def journal_messages(data_dir, kind):
    """The outbox messages of this kind ("started", "updated", "ended") on a data directory's journal,
    read with the firmware's own reader, each once, in journal order."""
    from firmware.storage.recordlog import HAS_MSG, RecordLog, read_message   # tools/compat is on the path (scenario.py)

    out, seen = [], set()
    for rtype, _, body in RecordLog(os.path.join(data_dir, "journal")).scan():
        if not rtype & HAS_MSG:
            continue
        k, mid, payload, _ = read_message(body)
        if k == kind and mid not in seen:
            seen.add(mid)
            out.append(json.loads(payload))
    return out


RECORD_NAMES = {1: "boot", 2: "start", 3: "checkpoint", 4: "end", 5: "message", 6: "ack"}


def journal_records(data_dir):
    """(record type name, bytes on flash) of every good record of a data directory's journal."""
    from firmware.storage.recordlog import HEADER, TYPE, RecordLog

    return [(RECORD_NAMES.get(rtype & TYPE, "?"), HEADER + len(body))
            for rtype, _, body in RecordLog(os.path.join(data_dir, "journal")).scan()]


def journal_sizes(data_dir):
    """{segment name: size} of the journal directory (empty without one)."""
    d = os.path.join(data_dir, "journal") if data_dir else None
    try:
        return dict((n, os.path.getsize(os.path.join(d, n))) for n in os.listdir(d) if n.endswith(".log"))
    except OSError:
        return {}


def data_bytes(path):
    """Bytes the files under a directory hold (what hal/sim/flashcap.py counts against its cap)."""
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def grown(before, after):
    """Bytes appended between two listings of append-only files (deleted ones count as nothing)."""
    return sum(size - before.get(n, 0) if size >= before.get(n, 0) else size for n, size in after.items())


# -- the audit ---------------------------------------------------------------------------------
def intervals(edges):
    """(closed at ms, opened at ms, counts) for every stretch the contactor's poles were closed."""
    out = []
    start = None
    for t, what, made in edges:
        if what == "closed":
            start = (t, made)
        elif start is not None:   # "open", or "cut": the contactor drops with the board's supply
            out.append((start[0], t, made - start[1]))
            start = None
    return out


def full_lives(result, kills):
    """The lives that ran on a full flash: the firmware reported the journal or the state full, or the
    flash was full at the cut that ended the life (kills: the Killer's, one per chaos cut, in order)."""
    lives = set(life for life, ev in result.events if ev.get("ev") == "storage" and ev.get("state") == "full")
    chaos_cuts = [c for c in result.cuts if c["cause"] == "chaos"]
    return lives | set(c["life"] for k, c in zip(kills, chaos_cuts) if k.get("flash_full"))


def _lives_between(lines, tx_a, tx_b):
    """The lives from session tx_a's start to session tx_b's (both by their session_start lines)."""
    a, b = lines.get(tx_a), lines.get(tx_b)
    return set(range(a[0], b[0] + 1)) if a and b else set()


def audit(result, db, device, full=()):
    """(figures, problems) of a finished simulation against the backend's store. A session that started
    in a life in `full` (full_lives) and that the backend lacks or never saw end is not a problem but a
    documented loss (docs/journal.md: what a full flash refused waits in RAM, and a cut takes it)."""
    problems = []
    st = Store(db)
    try:
        rows = st.query("SELECT tx_id, seq, event, offline, record FROM session_events WHERE device = ? "
                        "ORDER BY tx_id, seq", (device,))
        gaps = st.query("SELECT tx_id, seq, kind FROM gaps WHERE device = ? AND resolved_s IS NULL", (device,))
    finally:
        st.close()
    by_tx = {}
    for tx, seq, event, offline, record in rows:
        by_tx.setdefault(tx, []).append((seq, event, json.loads(record)))
    lines = dict((ev["tx_id"], (life, ev)) for life, ev in result.events if ev.get("ev") == "session_start")
    started = sorted(lines)
    for tx in started:   # an id used twice: the backend cannot tell the two sessions apart
        lives = [life for life, ev in result.events if ev.get("ev") == "session_start" and ev["tx_id"] == tx]
        if len(lives) > 1:
            problems.append("session id %d used by %d sessions (started in lives %s%s)" % (
                tx, len(lives), lives, ", after a cut on a full flash" if set(lives[:-1]) & set(full) else ""))
    in_ram = []   # sessions a cut took while the flash was full: {"tx_id", "started_at"}
    for tx in started:
        if tx not in by_tx:
            if lines[tx][0] in full:
                in_ram.append({"tx_id": tx, "started_at": lines[tx][1]["ts"]})
            else:
                problems.append("session %d started (session_start line) but the backend has nothing of it" % tx)
    sessions = []
    for tx, evs in sorted(by_tx.items()):
        seqs = [s for s, _, _ in evs]
        ended = [r for _, e, r in evs if e == "ended"]
        if seqs != list(range(len(seqs))):
            problems.append("session %d: seqs %s are not 0..n" % (tx, seqs))
        if not evs or evs[0][1] != "started":
            problems.append("session %d: no started event" % tx)
        if not ended and tx in lines and lines[tx][0] in full:
            in_ram.append({"tx_id": tx, "started_at": lines[tx][1]["ts"]})
            continue
        if len(ended) != 1:
            problems.append("session %d: %d ended events" % (tx, len(ended)))
            continue
        if seqs[-1] != ended[0]["seq"]:
            problems.append("session %d: events after its ended event" % tx)
        sessions.append(ended[0])
    for tx, seq, kind in gaps:
        problems.append("gap at the backend: session %s seq %s (%s)" % (tx, seq, kind))
    # energy: what the chip counted while the poles were closed, session by session
    start_utc = result.world["start_utc"]
    spans = intervals(result.edges)
    sessions.sort(key=lambda r: (epoch(r["started_at"]), r["tx_id"]))
    owners = sorted(sessions + in_ram, key=lambda r: (epoch(r["started_at"]), r["tx_id"]))
    truth = dict((r["tx_id"], 0) for r in owners)
    outside = 0
    for closed, _, counts in spans:
        at = start_utc + closed // 1000
        owner = None
        for r in owners:
            if epoch(r["started_at"]) <= at:
                owner = r["tx_id"]
        if owner is None:
            outside += counts
        else:
            truth[owner] += counts
    if outside:
        problems.append("%d counts flowed outside any session" % outside)
    billed = lost = uncertain = register_back = 0
    worst = None
    worst_lost = 0.0
    prev = None
    for r in sessions:
        true_wh = truth[r["tx_id"]] / COUNTS_PER_WH
        short = true_wh - r["energy_wh"]
        billed += r["energy_wh"]
        if r.get("stop_reason") == "PowerLoss":
            u = r.get("uncertain_wh") or 0
            uncertain += u
            lost += max(0.0, short)
            worst_lost = max(worst_lost, short)
            if not -1 < short < u + 1:
                problems.append("session %d (PowerLoss): billed %d Wh, the meter counted %.2f Wh: %.2f Wh short, "
                                "%d Wh declared uncertain" % (r["tx_id"], r["energy_wh"], true_wh, short, u))
            if worst is None or short - u > worst[0]:
                worst = (short - u, r["tx_id"])
        elif not -1 < short < 1:
            problems.append("session %d (%s): billed %d Wh, the meter counted %.2f Wh"
                            % (r["tx_id"], r.get("stop_reason"), r["energy_wh"], true_wh))
        if prev is not None and r["meter_start_wh"] < prev["meter_stop_wh"]:
            if _lives_between(lines, prev["tx_id"], r["tx_id"]) & set(full):
                register_back += 1   # the register only RAM held went with a cut on a full flash
            else:
                problems.append("session %d starts at register %d Wh, below session %d's stop at %d Wh"
                                % (r["tx_id"], r["meter_start_wh"], prev["tx_id"], prev["meter_stop_wh"]))
        prev = r
    ram_wh = sum(truth[r["tx_id"]] for r in in_ram) / COUNTS_PER_WH   # drawn in sessions a full flash lost
    made = result.end["made_fwd"] if result.end else None
    if made is None:
        problems.append("the world did not report the meter's total at the end")
    elif not -len(sessions) <= made / COUNTS_PER_WH - ram_wh - billed <= uncertain + len(sessions):
        problems.append("billed %d Wh in all, the meter counted %.2f Wh, %d Wh declared uncertain"
                        % (billed, made / COUNTS_PER_WH, uncertain))
    # every life ended by a kill (or at the scenario's end), never by a crash
    for life, rc in enumerate(result.exits):
        if rc not in (0, -signal.SIGKILL) or (rc == 0 and life != len(result.exits) - 1):
            problems.append("life %d exited with status %s" % (life, rc))
    missing = sum(1 for tx in started if tx not in by_tx)
    losses = missing + len(gaps) + sum(1 for tx, evs in by_tx.items() if not any(e == "ended" for _, e, _ in evs))
    losses -= len(in_ram)
    duplicates = sum(1 for tx, evs in by_tx.items() if sum(1 for _, e, _ in evs if e == "ended") > 1)
    traces = [ev for _, ev in result.events if ev.get("ev") == "storage"]
    power_loss = [r for r in sessions if r.get("stop_reason") == "PowerLoss"]
    figures = {"losses": losses, "duplicates": duplicates,
               "lost_on_a_full_flash": len(in_ram), "lost_on_a_full_flash_wh": round(ram_wh, 2),
               "register_back_on_a_full_flash": register_back,
               "lives": len(result.exits), "cuts": len(result.cuts), "sessions": len(sessions),
               "sessions_power_loss": len(power_loss), "started_lines": len(started),
               "ended_events": sum(1 for r in rows if r[2] == "ended"), "events_stored": len(rows),
               "offline_events": sum(1 for r in rows if r[3]), "gaps": len(gaps),
               "meter_wh": round(made / COUNTS_PER_WH, 2) if made is not None else None,
               "billed_wh": billed, "lost_wh": round(lost, 2), "uncertain_wh": uncertain,
               "worst_margin_wh": round(-worst[0], 2) if worst else None,
               "worst_lost_wh": round(worst_lost, 2),
               "lost_wh_per_power_loss": round(lost / len(power_loss), 2) if power_loss else None,
               "uncertain_wh_per_power_loss": round(uncertain / len(power_loss), 2) if power_loss else None,
               "unbilled_pct": round(100 * lost / (made / COUNTS_PER_WH), 3) if made else None,
               "storage_events": len(traces), "storage_detail": [t.get("error") for t in traces][:8]}
    return figures, problems


def run(seed=7, sessions=16, kills=110, keep=None, out=None, ack_delay_s=0.02, mpy=True, minutes=(5, 20),
        board="sim", lose_state=0.04, fill=0.05):
    """A chaos run from start to audit: (figures, problems)."""
    out = out or (lambda line: None)
    work = os.path.abspath(keep) if keep else tempfile.mkdtemp(prefix="cp-chaos-")   # the sim mounts its data dir
    os.makedirs(work, exist_ok=True)
    run_dir = os.path.join(work, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    db = os.path.join(work, "backend.sqlite")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    sc = busy_scenario(seed, sessions, minutes, board=board)
    path = os.path.join(work, "scenario.json")
    with open(path, "w") as f:
        json.dump(sc, f, indent=1)
    with open(os.path.join(sim.ROOT, "board_configs", board + ".json")) as f:
        mains = "power_good" in json.load(f)
    rng = random.Random(seed * 7919 + 1)
    killer = Killer(rng, kills, (sc["end"] - 600) * 1000, os.path.join(run_dir, "data"), lose_state,
                    random.Random(seed * 104729 + 3), mains, fill, random.Random(seed * 7727 + 5))
    t0 = time.time()
    try:
        with Broker() as broker:
            backend = Backend(db, **broker.client_args("backend"), auth={}, ack_delay_s=ack_delay_s,
                              out=lambda line: None).start()
            backend.wait_connected()
            try:
                result = sim.simulate(path, broker=broker, site_key=bytes(range(32)),
                                      run_dir=run_dir, out=out, mpy=mpy, killer=killer)
                backend.wait_idle(1.0, timeout=30)
            finally:
                backend.stop()
        wall = time.time() - t0
        if result.rc is None or getattr(result, "exits", None) is None:
            return {"wall_s": round(wall, 1)}, ["the scenario did not run (exit %s)" % result.rc]
        figures, problems = audit(result, db, sc["device_id"], full_lives(result, killer.kills))
        near = [k for k in killer.kills if k.get("trigger_s") is not None and not k["fallback"]]
        for k in near:
            if k["trigger"].startswith("journal"):
                k["trigger"] = "journal"
        figures.update({
            "kills": len(killer.kills), "scenario_cuts": sum(1 for c in result.cuts if c["cause"] == "scenario"),
            "kills_before_first_line": sum(1 for k in killer.kills if k["after"] is None),
            "kills_at_writes": len(near), "hold_up_kills": killer.hold_up_kills,
            "last_gasps": sum(1 for _, ev in result.events if ev.get("ev") == "last_gasp"),
            "kills_by_plan": dict((p, sum(1 for k in killer.kills if k["plan"] == p)) for p in PLAN_NAMES),
            "kill_triggers": dict((w, sum(1 for k in near if k["trigger"] == w)) for w in WRITE_LINES + ("journal",)),
            "kills_inside_a_state_write": sum(1 for k in killer.kills if k.get("state_tmp")),
            "state_losses": len(killer.state_losses),
            "flash_moments": dict((m, killer.flash_moments.count(m)) for m in ("full at boot", "fills", "freed")),
            "cuts_on_a_full_flash": sum(1 for k in killer.kills if k.get("flash_full")),
            "kills_mid_compaction": sum(1 for k in killer.kills if k.get("segments", 0) >= 8),
            "meter_kept_cuts": sum(1 for c in result.cuts if c["meter_kept"]),
            "duplicates_deduplicated": backend.counts["duplicates"],
            "backend_stored": backend.counts["stored"], "backend_errors": backend.counts["errors"],
            "journal_bytes": killer.flash,
            "journal_bytes_per_session": killer.flash // max(1, figures["sessions"]),
            "virtual_hours": round(sc["end"] / 3600, 2), "wall_s": round(wall, 1), "board": board})
        if backend.counts["errors"]:
            problems.append("the backend had %d store errors" % backend.counts["errors"])
        if len(killer.kills) < min(kills // 2, 100):   # the pace is wall time: a loaded machine lands fewer
            problems.append("only %d kills landed (wanted %d)" % (len(killer.kills), kills))
        return figures, problems
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python3 tools/chaos.py --sessions 40 --kills 400 --seed 1")
    ap.add_argument("--seed", type=int, default=1, help="scenario and kill schedule (default 1)")
    ap.add_argument("--sessions", type=int, default=40, help="sessions in the scenario (default 40)")
    ap.add_argument("--kills", type=int, default=400, help="power cuts at random moments (default 400)")
    ap.add_argument("--keep", metavar="DIR", help="keep the scenario, data directory and backend store here")
    ap.add_argument("--board", default="sim", help="board config: sim (FRAM), sim_gasp (last gasp) or sim_flash (default sim)")
    ap.add_argument("--fill", type=float, default=0.05, help="chance per outage that the flash fills (default 0.05)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the simulator's lines")
    args = ap.parse_args(argv)
    figures, problems = run(args.seed, args.sessions, args.kills, args.keep,
                            out=(lambda line: print(line, flush=True)) if args.verbose else None, board=args.board,
                            fill=args.fill)
    print(json.dumps(figures, indent=1))
    for p in problems:
        print("PROBLEM: %s" % p)
    print("chaos: %s kills, %s sessions, losses %s, duplicates %s, %s journal bytes per session: %s" % (
        figures.get("kills"), figures.get("sessions"), figures.get("losses"), figures.get("duplicates"),
        figures.get("journal_bytes_per_session"), "PASS" if not problems else "FAIL (%d problems)" % len(problems)))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
