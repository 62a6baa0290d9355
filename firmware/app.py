"""Boots the charger: settings, hardware (real or simulated), journal, sync, then the controller loop.

    micropython main.py --board board_configs/sim.json --config run/config.json \\
        --secrets run/secrets.json --scenario run/scenario.json   # on a PC; a board: no arguments

main.py chooses the platform (the board's `machine`, or the simulated world) and passes it in:
this package never imports the simulator, which a board's frozen image does not even hold.

Whatever ends the loop (Ctrl-C from a technician's mpremote, an escaping error) opens the
contactor, closes a running session, saves state and prints how to resume. A `hold` file in
the data directory (written when a technician interrupts a board whose watchdog cannot be
stopped) keeps the charger off at the next boot, for REPL work: `tech.resume()` ends it.
"""
import gc
import json
import os
import sys

from micropython import const

from firmware.link import otacore
from firmware.auth.authorize import from_settings as auth_from_settings
from firmware.billing.signing import record_hash
from firmware.core.clock import VALID_AFTER, Clock
from firmware.core.config import load
from firmware.core.timesync import synced
from firmware.controller import Controller
from firmware.storage.eventlog import EventLog
from firmware.storage.journal import Journal
from firmware.storage.reserve import Reserve
from firmware.core.log import Log, print_exception
from firmware.storage.outbox import Outbox
from firmware.storage.recordlog import RecordLog
from firmware.core.settings import Settings, board_settings
from firmware.storage.state import State, ensure_dir, exists
from firmware.link.sync import Sync
from firmware.version import VERSION
from hal.board import Board

DEFAULTS = {"board": "board.json", "config": "config.json", "secrets": "secrets.json", "scenario": None,
            "data": None}
CRASH_BOOTS = 5                   # crashed boots in a row before safe mode: above boot.py's trial
# max_boots (3), so a crashing new version is rolled back before safe mode is considered
_HEALTHY_MS = const(60000)        # running this long ends a crash count
_PWRON_RESET = const(1)
_REASON_MAX = const(200)
_EP_MASK = const(0x3FFFFFFF)      # data epochs stay small ints on a 32-bit board
RESET_CAUSES = {1: "power-on", 2: "hard reset", 3: "watchdog", 4: "deep sleep", 5: "soft reset"}
current = {}   # the running charger's parts, for the technician's REPL helpers (firmware/ops/tech.py)


def parse_args(argv):
    """--name value pairs over DEFAULTS (MicroPython has no argparse)."""
    args = dict(DEFAULTS)
    i = 0
    while i < len(argv):
        name = argv[i][2:] if argv[i].startswith("--") else None
        if name not in args or i + 1 >= len(argv):
            raise ValueError("usage: main.py [--board F] [--config F] [--secrets F] [--scenario F] [--data DIR]"
                             " (at %r)" % argv[i])
        args[name] = argv[i + 1]
        i += 2
    return args


def provision_list(provisioned, local_list, log):
    """Store a newer local list that came with the config (tools/provision.py); a function of its
    own so the list leaves the heap once stored, not when the loop ends."""
    if provisioned and provisioned.get("version", 0) > local_list.version:
        update = dict(provisioned)
        update["type"] = "full"
        try:
            local_list.update(update)
        except ValueError as e:
            raise ValueError("config: local_list.%s" % e)
        except OSError as e:   # a full flash: the stored list stays; the next boot tries again
            log.event("storage", file="local_list", state="error", error=e.args[0] if e.args else -1)


def main(argv, platform):
    """Boot with `platform(hw, scenario)` -> (machine, clock, stop, console input) choosing the hardware."""
    args = parse_args(argv)
    try:
        hw = board_settings(load(args["board"]))
    except ValueError as e:
        Log(Clock()).event("config_error", error=str(e))   # no platform yet: the board's own clock
        raise
    device_cfg = load(args["config"])
    secrets = load(args["secrets"])
    machine, clock, stop, port = platform(hw, load(args["scenario"]) if args["scenario"] else None)
    log = Log(clock)
    try:
        settings = Settings(hw, device_cfg, secrets)
    except ValueError as e:
        log.event("config_error", error=str(e))
        raise
    del device_cfg, secrets   # the raw files (a provisioned list with them) must not outlive the boot
    data = args["data"] or settings.data_dir
    ensure_dir(data)
    current.update(data=data)
    watch = CrashWatch(data, clock, machine.reset_cause() if hasattr(machine, "reset_cause") else None)
    current.update(watch=watch)
    if watch.count > CRASH_BOOTS:
        safe_mode(settings, hw, machine, clock, stop, log, watch)
        return
    gc.collect()   # the record log's two record buffers (4 KB each) first, while the heap is least fragmented
    records = RecordLog(data + "/journal")
    log.store = EventLog(data, clock)
    current.update(data=data, log=log, clock=clock, machine=machine, hw=hw)
    if exists(data + "/hold"):
        print("Technician hold: the charger stays off (contactor open). "
              "from firmware.ops import tech; tech.status() ... tech.resume() to charge again.")
        watch.healthy()
        return
    board = Board(hw, machine, clock.sleep_ms)
    auth = auth_from_settings(settings.auth, clock, settings.keys, data)
    for what in ("local_list", "cache"):
        err = getattr(auth, what).load_error
        if err:
            log.event("storage", file=what, error=err)
    provision_list(settings.take_local_list(), auth.local_list, log)
    outbox = Outbox(settings.outbox_size, records, clock)
    reserve = Reserve(data + "/reserve")   # flash a full partition still gives a session's records
    journal = Journal(records, outbox, every_wh=settings.journal.every_wh, every_s=settings.journal.every_s,
                      min_s=settings.journal.min_s, reserve=reserve)
    records.attach(journal, outbox)   # compaction asks both what is live; a refused write asks the outbox to shed
    boot = journal.recover()
    state = State(data + "/state.json", reserve)
    troubles = storage_troubles(state, boot, journal, clock.time())
    reserve.ensure()   # none on a full flash: Health reports it and makes it once there is room
    link = None
    mq = settings.mqtt
    if mq.host:
        from firmware.link.mqtt import Link

        link = Link(settings.device_id, mq.host, mq.port, clock, mq.keepalive_s, mq.timeout_ms, mq.user,
                    mq.password, tls=mq.tls)
        link.tls_context()   # a bad certificate is a config error now, not a failed connect later
    sync = Sync(link, clock, log, outbox, "cp/v1/%s/" % settings.device_id, settings.device_key, settings.device_id)
    updater = otacore.from_settings(settings.ota, clock, log=log, root=data if hw.platform == "sim" else "/",
                                    on_status=lambda ack: sync.publish_now("cmd_ack", json.dumps(ack), 1))
    ctl = Controller(settings, board, clock, log, sync, outbox, state, auth, journal, data, updater)
    if troubles:
        ctl.health.report(troubles)   # on the console and upstream (a `fault` notice)
    current.update(ctl=ctl, sync=sync, journal=journal, board=board, settings=settings)
    gc.collect()
    log.event("boot", device_id=settings.device_id, board=hw.name, boot=boot["boot"], ep=state.epoch(),
              version=updater.version or VERSION,
              reset=RESET_CAUSES.get(board.reset_cause, board.reset_cause),
              heap=gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0)
    log.event("tariff", id=ctl.tariffs.current.id, version=ctl.tariffs.version, text=ctl.tariffs.price_text())
    ctl.recover(boot)
    try:
        current.update(running=True, console=None)
        ctl.run(lambda: watch.tick() or console_step(port, clock) or stop())
    except KeyboardInterrupt:
        _stopped(ctl, board, data, "interrupted at the console")
        return
    except Exception as e:   # noqa: BLE001 - whatever escaped, the charger must end safe
        print_exception(e)
        _stopped(ctl, board, data, "%s: %s" % (type(e).__name__, e))
        raise
    finally:
        current["running"] = False
        board.contactor.open()  # whatever ended the loop, the contactor opens
        log.store.flush()
    watch.healthy()   # a clean end (scenario over, update reset) is no crash
    sync.flush()
    log.event("halt", delivered=sync.published, queued=len(outbox), heap_peak=ctl.heap_peak,
              max_gap_ms=ctl.metering.max_gap_ms, samples=ctl.metering.ring.total,
              journal_bytes=records.written)
    if ctl.reset_requested is not None:   # a new version (or back to the old one): restart now
        log.event("reset", why=ctl.reset_requested)
        if hasattr(machine, "reset"):
            machine.reset()
        sys.exit(4)   # the simulator: the runner starts the firmware again


def console_step(port, clock):
    """The loop's look at the console: the technician's read-only commands (firmware/ops/console.py)
    load once something is typed, so a charger nobody types at keeps their heap. Short of heap to
    load them, the bytes wait for a later pass."""
    console = current.get("console")
    try:
        if console is None:
            if port is None or not port.waiting():
                return None
            from firmware.ops.console import Console

            console = current["console"] = Console(port, clock)
        return console.tick()
    except MemoryError:
        return None


class CrashWatch:
    """Boots in a row that crashed before running a minute, kept in data/boots with the last crash's
    reason; a power-on reset (a power cut, not a crash) starts the count again."""

    def __init__(self, data, clock, cause):
        self.path = data + "/boots"
        self.clock = clock
        self.count, self.reason = 0, ""
        if cause != _PWRON_RESET:
            try:
                with open(self.path) as f:
                    n, _, self.reason = f.read().partition("\n")
                self.count = int(n)
            except (OSError, ValueError):
                pass
        self.count += 1
        self._write()
        self._t0 = clock.ticks_ms()

    def _write(self):
        try:
            with open(self.path, "w") as f:
                f.write("%d\n%s" % (self.count, self.reason[:_REASON_MAX]))
        except OSError:
            pass   # a full flash: no count, no safe mode, but never a crash for it

    def crashed(self, why):
        """This boot ends in an error: keep why for the safe mode's report."""
        self.reason = why
        self._write()

    def tick(self):
        """Called by the loop's stop condition: a minute of running proves this boot healthy."""
        if self.count and self.clock.ticks_diff(self.clock.ticks_ms(), self._t0) >= _HEALTHY_MS:
            self.healthy()
        return False

    def healthy(self):
        self.count = 0
        try:
            os.remove(self.path)
        except OSError:
            pass


def safe_mode(settings, hw, machine, clock, stop, log, watch):
    """After CRASH_BOOTS crashed boots in a row: contactor open, nothing on flash touched but the
    count, the link up to tell the backend why; REPL helpers work. clear_crashes() + reset ends it."""
    board = Board(hw, machine, clock.sleep_ms)
    board.contactor.open()
    reason = watch.reason or "unknown (no error was recorded)"
    log.event("safe_mode", boots=watch.count - 1, reason=reason)
    print("Safe mode after %d crashed boots (%s): the charger stays off. Technician: "
          "from firmware import app; app.clear_crashes(); then reset." % (watch.count - 1, reason))
    outbox = Outbox(4, None, clock)   # RAM only: flash may be what crashed
    link = None
    mq = settings.mqtt
    if mq.host:
        from firmware.link.mqtt import Link

        link = Link(settings.device_id, mq.host, mq.port, clock, mq.keepalive_s, mq.timeout_ms, mq.user,
                    mq.password, tls=mq.tls)
    sync = Sync(link, clock, log, outbox, "cp/v1/%s/" % settings.device_id)
    sync.set_connector("Unavailable", "InternalError")
    rec = {"msg_id": "safe-" + "".join("%02x" % b for b in os.urandom(6)), "event": "notice", "info": "safe_mode",
           "ts": None, "boots": watch.count - 1, "reason": reason}
    outbox.put("fault", json.dumps(rec), rec["msg_id"], "fault")
    current.update(board=board, sync=sync, settings=settings, safe_mode=reason)
    while not stop():
        sync.tick()
        if board.wdt is not None:
            board.wdt.feed()   # the loop is alive; it charges nothing
        clock.sleep_ms(200)
    board.contactor.open()


def clear_crashes():
    """REPL: end safe mode at the next boot (after fixing what crashed)."""
    data = current.get("data")
    if data is not None:
        try:
            os.remove(data + "/boots")
        except OSError:
            pass


def new_epoch(utc, old=0):
    """The data epoch of a new life (0 < ep < 2**30): seconds since VALID_AFTER while the wall
    clock is known, so successive lives go up; 30 random bits when it is not."""
    if synced(utc):
        ep = (utc - VALID_AFTER + 1) & _EP_MASK
        if ep <= old < _EP_MASK:
            ep = old + 1
    else:
        r = os.urandom(4)
        ep = (r[0] << 24 | r[1] << 16 | r[2] << 8 | r[3]) & _EP_MASK
    return ep or 1


def _epoch(state, boot, first):
    """This life's data epoch: state.json's; if it is lost, the journal's (records older firmware
    wrote say none: epoch 0); a new one when both are gone (new_epoch, by the caller)."""
    if not state.lost:
        return state.epoch()
    for ep in (boot.get("ep"), (boot.get("session") or {}).get("ep"), (boot.get("last_end") or {}).get("ep")):
        if isinstance(ep, int) and not isinstance(ep, bool) and 0 <= ep <= _EP_MASK:
            return ep
    return None if first else 0


def storage_troubles(state, boot, journal, utc):
    """Rebuild state.json's counters from the journal (never below what it holds: a lost or stale
    file must not reuse a tx id or restart the meter register), settle the data epoch (a new one
    when state.json and the journal are both gone: ids start again, in a new epoch) and list what
    was wrong as (file, text) pairs to report."""
    records = journal.log
    out = []
    if records.trouble:
        out.append(("journal", records.trouble))
    missing = state.values["jseq"] - boot["seq"]   # records written before state.json's last save, gone
    lost = max(boot["lost"], missing)
    if boot["bad"] or missing > 0:
        out.append(("journal", "%d records lost (%d damaged stretches%s)"
                    % (lost, boot["bad"], ", emptied" if not boot["records"] else "")))
    for p in state.problems:
        out.append(("state", p))
    first = state.lost and boot["boot"] == 1 and not boot["records"]   # a new device (or one that lost all)
    ep = _epoch(state, boot, first)
    state.set_epoch(new_epoch(utc, state.epoch()) if ep is None else ep)
    journal.set_epoch(state.epoch())
    rebuilt = state.rebuild(boot["top_tx"], *boot["meter"])
    end = boot.get("last_end") or {}
    n = end.get("chain_n")
    if isinstance(n, int) and not isinstance(n, bool) and n >= state.chain()[1]:   # the chain went on past state.json
        state.set_chain(record_hash(end), n + 1)
        rebuilt.append("chain_n %d" % (n + 1))
    if state.lost and not first:
        # earlier fault and feedback ids are unknown: continue above a random base (< 2**30, small int)
        r = os.urandom(3)
        state.reseed(((r[0] << 16 | r[1] << 8 | r[2]) & 0xFFFFF) * 1000)
        out.append(("state", "lost: rebuilt from the journal (%s); latched faults are "
                    "forgotten" % (", ".join(rebuilt) or "no counters found")))
    else:   # a register above state.json's is a running session's checkpoint: normal after a power cut
        behind = [r for r in rebuilt if not r.startswith("meter_wh")]
        if behind:
            out.append(("state", "behind the journal: " + ", ".join(behind)))
    state.seq_of = records.peek_seq
    if out or first:   # a new device writes its file now: a later boot without it means it was lost
        state.save()
    return out


def _stopped(ctl, board, data, why):
    tx = ctl.shutdown("Other", why)
    if board.wdt is not None:   # an ESP32 watchdog cannot be stopped: reboot into technician hold
        try:
            with open(data + "/hold", "w") as f:
                f.write(why)
        except OSError as e:   # a full flash: no hold; the crash count still leads to safe mode
            print("cannot write %s/hold (%s)" % (data, e))
    print("=" * 64)
    print("Charger stopped safely (%s): contactor open, %s, state saved."
          % (why, "session #%d closed" % tx if tx else "no session was running"))
    if board.wdt is not None:
        print("The watchdog restarts the board in a few seconds into technician hold (no charging).")
    print("Technician: from firmware.ops import tech; tech.status(), tech.log(20), tech.faults()")
    print("Resume charging: import main   (or machine.reset())")
    print("=" * 64)


def run(platform):
    """Entry point for main.py, which passes the platform: bad settings end the boot with the reason, charger off; on a board
    any other error restarts it (boot.py counts a new version's failed boots and rolls back)."""
    try:
        main(sys.argv[1:], platform)
    except ValueError as e:
        print("charger not started: %s" % e)
        sys.exit(3)
    except Exception as e:  # noqa: BLE001
        watch = current.get("watch")
        if watch is not None:
            watch.crashed("%s: %s" % (type(e).__name__, e))   # counted at boot; safe mode after CRASH_BOOTS
        if sys.platform != "esp32":
            raise
        print_exception(e)
        import time

        import machine

        time.sleep(5)   # long enough to read on the console
        machine.reset()
