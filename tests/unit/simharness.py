"""Runs the real controller over the simulated world in-process, for tests on both interpreters.

    h = Harness({"alice": "04A1B2C3"}, allow=["alice"], events=[{"t": 1000, "plug": True}], end_ms=60000)
    h.run(); h.log.kinds(); h.link.published
    h = steady_charging(start_utc); locked_passes(h, 150000, heap_lock, heap_unlock)   # allocation proofs
"""
import binascii
import gc
import json
import os

from fakes import FakeLink, ListLog
from firmware.app import storage_troubles
from firmware.auth.authorize import from_settings as auth_from_settings
from firmware.controller import Controller
from firmware.storage.journal import Journal
from firmware.storage.reserve import Reserve
from firmware.storage.outbox import Outbox
from firmware.storage.recordlog import RecordLog
from firmware.auth.pseudonym import pseudonym
from firmware.core.settings import Settings, board_settings
from firmware.storage.state import State, ensure_dir
from firmware.link import otacore
from firmware.link.seal import B2D, seal
from firmware.link.sync import Sync
from firmware.billing.tariff import flat
from hal.board import Board
from hal.sim import machine
from hal.sim.world import World

KEY = bytes(range(16, 48))
DEVICE_KEY = "5e" * 32   # secrets.json device_key: the backend seals what it sends under it
_dirs = [0]


def board_config():
    with open("board_configs/sim.json") as f:
        return json.load(f)


def _wipe(path):
    """Empty a data directory left by an earlier test run."""
    for name in os.listdir(path):
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:
            _wipe(p)
            os.rmdir(p)
        else:
            os.remove(p)


def entry(token, **fields):
    e = {"token": token, "key": 1, "status": "Accepted"}
    e.update(fields)
    return e


class Harness:
    def __init__(self, cards, allow, events, end_ms, board=None, device=None, start_utc=1772438100,
                 entries=None, secrets=None, make_link=None, data=None, updates=False):
        """make_link(clock): a real Link instead of the fake one; data: the data directory of an
        earlier Harness (a reboot) or one on a filesystem of the test's own, default a fresh one;
        updates: over-the-air updates wired in (slots under data), as firmware/app.py wires them."""
        self.cards = dict((alias, bytes.fromhex(uid)) for alias, uid in cards.items())
        self.tokens = dict((alias, pseudonym(KEY, uid)) for alias, uid in self.cards.items())
        world_events = []
        for ev in events:
            ev = dict(ev)
            if "tap" in ev:
                taps = ev["tap"] if isinstance(ev["tap"], list) else [ev["tap"]]
                ev["tap"] = [cards[a] for a in taps]
            world_events.append(ev)
        self.board_cfg = board or board_config()
        self.hw = board_settings(self.board_cfg)
        self.world = World(self.hw, {"start_utc": start_utc, "end_ms": end_ms, "events": world_events})
        self.clock = self.world.clock
        listed = [entry(self.tokens[a]) for a in allow] + (entries or [])
        dev = {"device_id": "cp-test", "tariff": flat("0.30", "EUR", "20"),
               "local_list": {"version": 1, "entries": listed},
               "auth": {"LocalPreAuthorize": True, "LocalAuthorizeOffline": True}}
        dev.update(device or {})
        secrets = dict({"site_keys": {"1": "".join("%02x" % b for b in KEY)}, "site_key_current": 1,
                        "device_key": DEVICE_KEY}, **(secrets or {}))
        _dirs[0] += 1
        if data is None:
            data = "/tmp/cp-harness-%s-%d" % (binascii.hexlify(os.urandom(4)).decode(), _dirs[0])
            ensure_dir(data)
            _wipe(data)
        self.data = data
        self.settings = Settings(self.hw, dev, secrets)
        self.ctr = 0   # the backend's message counter for this charger
        self.board = Board(self.hw, machine, self.clock.sleep_ms)
        self.log = ListLog()
        if make_link is None:
            self.link = FakeLink()
            self.link.on_publish = self._backend
        else:
            self.link = make_link(self.clock)   # the firmware's Link, on a fake network (tests/unit/fakenet.py)
        self.online_answers = {}   # pseudonym -> auth/resp payload; unknown cards get Invalid
        self.answer_auth = True
        self.acking = True         # a healthy backend acknowledges every message it receives
        self.records = RecordLog(data + "/journal")     # wired as firmware/app.py wires them
        self.outbox = Outbox(self.settings.outbox_size, self.records, self.clock)
        self.reserve = Reserve(data + "/reserve")
        self.journal = Journal(self.records, self.outbox, reserve=self.reserve)
        self.records.attach(self.journal, self.outbox)
        self.boot = self.journal.recover()
        self.sync = Sync(self.link, self.clock, self.log, self.outbox, "cp/v1/cp-test/")
        self.auth = auth_from_settings(self.settings.auth, self.clock, self.settings.keys, data)
        if dev["local_list"]["version"] > self.auth.local_list.version:   # as firmware/app.py provisions
            self.auth.local_list.update(dict(dev["local_list"], type="full"))
        state = State(data + "/state.json", self.reserve)
        self.troubles = storage_troubles(state, self.boot, self.journal, self.clock.time())
        self.reserve.ensure()
        updater = None
        if updates:
            updater = otacore.from_settings(self.settings.ota, self.clock, log=self.log, root=data,
                                            on_status=lambda ack: self.sync.publish_now("cmd_ack", json.dumps(ack), 1))
        self.ctl = Controller(self.settings, self.board, self.clock, self.log, self.sync, self.outbox, state,
                              self.auth, self.journal, data, updater)
        if self.troubles:
            self.ctl.health.report(self.troubles)

    def run(self, until_ms=None):
        stop = self.world.finished if until_ms is None else (lambda: self.clock.ms >= until_ms)
        self.ctl.run(stop)

    def _backend(self, topic, payload):
        if topic.endswith("/auth/req") and self.answer_auth:
            req = json.loads(payload)
            answer = dict(self.online_answers.get(req["token"], {"status": "Invalid"}), id=req["id"])
            self.inject("auth/resp", answer)
        elif self.acking and topic.endswith(("/session", "/fault", "/feedback")):
            rec = json.loads(payload)
            ack = {"msg_ids": [rec["msg_id"]]}
            if "ep" in rec:   # as tools/backend.py: the ack names the record's data epoch
                ack["ep"] = rec["ep"]
            self.inject("ack", ack)

    def inject(self, suffix, payload):
        """A message from the backend, as the broker would deliver it."""
        self.sync.inbox.append((suffix, self.sealed(suffix, payload)))

    def sealed(self, suffix, payload):
        """payload (an object, or raw bytes) sealed as the backend does; commands get the next ctr."""
        if not isinstance(payload, bytes):
            if suffix.startswith("cmd/") and isinstance(payload, dict):
                self.ctr += 1
                payload = dict(payload, ctr=self.ctr)
            payload = json.dumps(payload).encode()
        if payload[:1] != b"{":
            return payload   # only an object can carry a MAC: this one arrives unsealed
        return seal(self.settings.device_key, B2D, self.settings.device_id, suffix, payload)

    def acks(self):
        return [json.loads(p) for t, p, _, _ in self.link.published if t.endswith("/cmd_ack")]

    def sessions(self):
        """Session records published, each once (re-sends of unacknowledged ones left out)."""
        out, seen = [], set()
        for t, p, _, _ in self.link.published:
            if t.endswith("/session"):
                rec = json.loads(p)
                if rec["msg_id"] not in seen:
                    seen.add(rec["msg_id"])
                    out.append(rec)
        return out

    def events(self, kind):
        return [e for e in self.log.events if e["ev"] == kind]


def steady_charging(start_utc):
    """A session charging at 16 A since t=3 s under two schedules (station-wide from an absolute
    start, per session), run to t=30 s. Until its first checkpoint (250 Wh: about 4 min) and the next
    clock-aligned meter value (900 s slots) nothing is due to be sent or written."""
    h = Harness({"alice": "04A1B2C3D4E5F6"}, ["alice"],
                [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"}, {"t": 3000, "ev_current_a": 16}],
                3600000, start_utc=start_utc, device={"meter_values_s": 3600})
    lim = h.ctl.limits
    lim.set_profile("station_max", {"periods": [[0, 20], [3600, 10]], "start_schedule": start_utc,
                                    "valid_to": start_utc + 86400})
    lim.set_profile("tx_default", {"periods": [[0, 32], [7200, 16]]})
    h.run(until_ms=30000)
    return h


def locked_passes(h, until_ms, lock, unlock, pass_ms=50):
    """Loop passes (Controller.step) every pass_ms until until_ms, each between lock() and unlock()
    (micropython.heap_lock: any allocation raises MemoryError); the simulated world plays its
    physics (floats) between passes, outside the lock. Returns the number of passes."""
    ctl, clock = h.ctl, h.clock
    passes = 0
    gc.collect()
    while clock.ms < until_ms:
        h.world.meter.flush()   # the simulated chip integrates the line lazily, in floats
        lock()
        try:
            ctl.step()
        finally:
            unlock()
        passes += 1
        clock.sleep_ms(pass_ms)
    return passes
