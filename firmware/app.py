"""Boots the charger: settings, hardware (real or simulated), journal, sync, then the controller loop.

    micropython main.py --board board_configs/sim.json --config run/config.json \\
        --secrets run/secrets.json --scenario run/scenario.json   # on a PC; a board: no arguments

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
from firmware.auth.authorize import from_config as auth_from_config
from firmware.core.config import load
from firmware.controller import Controller
from firmware.storage.eventlog import EventLog
from firmware.storage.journal import Journal
from firmware.core.log import Log, print_exception
from firmware.storage.outbox import Outbox
from firmware.core.settings import Settings
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


def _platform(board_cfg, args):
    """(machine module, clock, stop condition): the real board, or the simulated world."""
    if board_cfg.get("platform") == "sim":
        from hal.sim import machine
        from hal.sim.world import World

        if not args["scenario"]:
            raise ValueError("the sim board needs --scenario (see tools/sim.py)")
        world = World(board_cfg, load(args["scenario"]))
        return machine, world.clock, world.finished
    import machine

    from firmware.core.clock import Clock

    return machine, Clock(), lambda: False


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def main(argv):
    args = parse_args(argv)
    board_cfg = load(args["board"])
    device_cfg = load(args["config"])
    secrets = load(args["secrets"])
    machine, clock, stop = _platform(board_cfg, args)
    log = Log(clock)
    try:
        settings = Settings(board_cfg, device_cfg, secrets)
    except ValueError as e:
        log.event("config_error", error=str(e))
        raise
    data = args["data"] or settings.data_dir
    ensure_dir(data)
    gc.collect()   # the journal's two record buffers (4 KB each) first, while the heap is least fragmented
    journal = Journal(data + "/journal", every_wh=settings.checkpoint_wh, every_s=settings.checkpoint_max_s,
                      min_s=settings.checkpoint_min_s)
    log.store = EventLog(data, clock)
    current.update(data=data, log=log, clock=clock, machine=machine, board_cfg=board_cfg)
    if _exists(data + "/hold"):
        print("Technician hold: the charger stays off (contactor open). "
              "from firmware.ops import tech; tech.status() ... tech.resume() to charge again.")
        return
    board = Board(board_cfg, machine, clock.sleep_ms)
    auth = auth_from_config(device_cfg, clock, settings.keys, data)
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
    outbox = Outbox(settings.outbox_size, journal, clock)
    boot = journal.recover()
    if boot["bad"]:
        log.event("storage", file="journal", error="%d damaged records skipped" % boot["bad"])
    link = None
    if settings.mqtt_host:
        from firmware.link.mqtt import Link

        link = Link(settings.device_id, settings.mqtt_host, settings.mqtt_port, clock,
                    settings.mqtt_keepalive_s, settings.mqtt_timeout_ms, settings.mqtt_user,
                    settings.mqtt_password, tls=settings.mqtt_tls)
        link.tls_context()   # a bad certificate is a config error now, not a failed connect later
    sync = Sync(link, clock, log, outbox, "cp/v1/%s/" % settings.device_id)
    updater = ota.from_config(device_cfg, secrets, clock, log=log, root=data if board_cfg.get("platform") == "sim" else "/",
                              on_status=lambda ack: sync.publish_now("cmd_ack", json.dumps(ack), 1))
    ctl = Controller(settings, board, clock, log, sync, outbox, State(data + "/state.json"), auth, journal, data,
                     updater)
    current.update(ctl=ctl, sync=sync, journal=journal, board=board, settings=settings)
    gc.collect()
    log.event("boot", device_id=settings.device_id, board=board_cfg.get("name", "?"), boot=boot["boot"],
              version=updater.version or VERSION,
              reset=RESET_CAUSES.get(board.reset_cause, board.reset_cause),
              heap=gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0)
    log.event("tariff", id=ctl.tariff.id, version=ctl.tariff_version, text=ctl.price_text())
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
              journal_bytes=journal.written)
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


def run():
    """Entry point for main.py: bad settings end the boot with the reason, charger off; on a board
    any other error restarts it (boot.py counts a new version's failed boots and rolls back)."""
    try:
        main(sys.argv[1:])
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
