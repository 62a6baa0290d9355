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

from firmware.link import ota
from firmware.auth.authorize import from_settings as auth_from_settings
from firmware.core.clock import Clock
from firmware.core.config import load
from firmware.controller import Controller
from firmware.storage.eventlog import EventLog
from firmware.storage.journal import Journal
from firmware.core.log import Log, print_exception
from firmware.storage.outbox import Outbox
from firmware.storage.recordlog import RecordLog
from firmware.core.settings import Settings, board_settings
from firmware.storage.state import State, ensure_dir
from firmware.link.sync import Sync
from firmware.version import VERSION
from hal.board import Board

DEFAULTS = {"board": "board.json", "config": "config.json", "secrets": "secrets.json", "scenario": None,
            "data": None}
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


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def main(argv, platform):
    """Boot with `platform(hw, scenario)` -> (machine, clock, stop) choosing the hardware."""
    args = parse_args(argv)
    try:
        hw = board_settings(load(args["board"]))
    except ValueError as e:
        Log(Clock()).event("config_error", error=str(e))   # no platform yet: the board's own clock
        raise
    device_cfg = load(args["config"])
    secrets = load(args["secrets"])
    machine, clock, stop = platform(hw, load(args["scenario"]) if args["scenario"] else None)
    log = Log(clock)
    try:
        settings = Settings(hw, device_cfg, secrets)
    except ValueError as e:
        log.event("config_error", error=str(e))
        raise
    data = args["data"] or settings.data_dir
    ensure_dir(data)
    gc.collect()   # the record log's two record buffers (4 KB each) first, while the heap is least fragmented
    records = RecordLog(data + "/journal")
    log.store = EventLog(data, clock)
    current.update(data=data, log=log, clock=clock, machine=machine, hw=hw)
    if _exists(data + "/hold"):
        print("Technician hold: the charger stays off (contactor open). "
              "from firmware.ops import tech; tech.status() ... tech.resume() to charge again.")
        return
    board = Board(hw, machine, clock.sleep_ms)
    auth = auth_from_settings(settings.auth, clock, settings.keys, data)
    for what in ("local_list", "cache"):
        err = getattr(auth, what).load_error
        if err:
            log.event("storage", file=what, error=err)
    provisioned = settings.local_list
    if provisioned and provisioned.get("version", 0) > auth.local_list.version:
        update = dict(provisioned)
        update["type"] = "full"
        try:
            auth.local_list.update(update)  # a newer list came with the config (tools/provision.py)
        except ValueError as e:
            raise ValueError("config: local_list.%s" % e)
    outbox = Outbox(settings.outbox_size, records, clock)
    journal = Journal(records, outbox, every_wh=settings.journal.every_wh, every_s=settings.journal.every_s,
                      min_s=settings.journal.min_s)
    records.attach(journal, outbox)   # compaction asks both what is live; a refused write asks the outbox to shed
    boot = journal.recover()
    if boot["bad"]:
        log.event("storage", file="journal", error="%d damaged records skipped" % boot["bad"])
    link = None
    mq = settings.mqtt
    if mq.host:
        from firmware.link.mqtt import Link

        link = Link(settings.device_id, mq.host, mq.port, clock, mq.keepalive_s, mq.timeout_ms, mq.user,
                    mq.password, tls=mq.tls)
        link.tls_context()   # a bad certificate is a config error now, not a failed connect later
    sync = Sync(link, clock, log, outbox, "cp/v1/%s/" % settings.device_id, settings.device_key, settings.device_id)
    updater = ota.from_settings(settings.ota, clock, log=log, root=data if hw.platform == "sim" else "/",
                                on_status=lambda ack: sync.publish_now("cmd_ack", json.dumps(ack), 1))
    ctl = Controller(settings, board, clock, log, sync, outbox, State(data + "/state.json"), auth, journal, data,
                     updater)
    current.update(ctl=ctl, sync=sync, journal=journal, board=board, settings=settings)
    gc.collect()
    log.event("boot", device_id=settings.device_id, board=hw.name, boot=boot["boot"],
              version=updater.version or VERSION,
              reset=RESET_CAUSES.get(board.reset_cause, board.reset_cause),
              heap=gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0)
    log.event("tariff", id=ctl.tariffs.current.id, version=ctl.tariffs.version, text=ctl.tariffs.price_text())
    ctl.recover(boot)
    try:
        ctl.run(stop)
    except KeyboardInterrupt:
        _stopped(ctl, board, data, "interrupted at the console")
        return
    except Exception as e:   # noqa: BLE001 - whatever escaped, the charger must end safe
        print_exception(e)
        _stopped(ctl, board, data, "%s: %s" % (type(e).__name__, e))
        raise
    finally:
        board.contactor.open()  # whatever ended the loop, the contactor opens
        log.store.flush()
    sync.flush()
    log.event("halt", delivered=sync.published, queued=len(outbox), heap_peak=ctl.heap_peak,
              max_gap_ms=ctl.metering.max_gap_ms, samples=ctl.metering.ring.total,
              journal_bytes=records.written)
    if ctl.reset_requested is not None:   # a new version (or back to the old one): restart now
        log.event("reset", why=ctl.reset_requested)
        if hasattr(machine, "reset"):
            machine.reset()
        sys.exit(4)   # the simulator: the runner starts the firmware again


def _stopped(ctl, board, data, why):
    tx = ctl.shutdown("Other", why)
    if board.wdt is not None:   # an ESP32 watchdog cannot be stopped: reboot into technician hold
        with open(data + "/hold", "w") as f:
            f.write(why)
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
        if sys.platform != "esp32":
            raise
        print_exception(e)
        import time

        import machine

        time.sleep(5)   # long enough to read on the console
        machine.reset()
