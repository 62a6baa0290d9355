"""A power cut in the middle of a session, in-process: the next boot's controller closes it as
PowerLoss from what survived (journal in flash, FRAM if fitted, the chip's unread counts).

The cut is simulated by building a second boot (journal, state, board, controller) on the same
data directory and the same simulated chips, as firmware/app.py does at power-on.
"""
import json

from simharness import Harness, board_config
from firmware.controller import Controller
from firmware.core.settings import board_settings
from firmware.storage.journal import Journal
from firmware.storage.outbox import Outbox
from firmware.storage.recordlog import RecordLog
from firmware.storage.state import State
from fakes import ListLog
from hal.board import Board
from hal.sim import machine

CARDS = {"alice": "04A1B2C3D4E5F6"}
COUNTS_PER_WH = 320


def _charge(board, cut_ms):
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 1000, "ev_current_a": 32},
                                   {"t": 2000, "tap": "alice"}], cut_ms + 60000, board=board)
    h.run(until_ms=cut_ms)
    assert h.ctl.session is not None
    return h


def _next_boot(h):
    """Power back: a new boot on the same flash and chips; returns (its log, the chip's truth in Wh)."""
    data = h.records.path.rsplit("/", 1)[0]
    log = ListLog()
    records = RecordLog(data + "/journal")
    outbox = Outbox(h.settings.outbox_size, records, h.clock)
    journal = Journal(records, outbox)
    records.attach(journal, outbox)
    boot = journal.recover()
    board = Board(board_settings(h.board_cfg), machine, h.clock.sleep_ms, watchdog=False)
    ctl = Controller(h.settings, board, h.clock, log, h.sync, outbox, State(data + "/state.json"), h.auth,
                     journal, data)
    ctl.recover(boot)
    rec = [e for e in log.events if e["ev"] == "recovered"]
    assert len(rec) == 1
    h.next_log = log
    return rec[0]


def _truth_wh(h, start_wh):
    """Everything the chip counted since the session's start, in Wh."""
    return h.world.meter.counts_made() / COUNTS_PER_WH - start_wh


def _flash_board():
    cfg = board_config()
    del cfg["fram"]
    return cfg


def _cut(board, chip_kept, cut_ms=140500):
    h = _charge(board, cut_ms)
    start = h.ctl.session.meter_start_wh
    truth = _truth_wh(h, start)
    if not chip_kept:
        h.world.meter.flush()
        lost = h.world.meter.counts_made()
        h.world.meter.brownout()   # the meter chip lost its supply too: unread counts gone
        assert h.world.meter.counts_made() == lost
    rec = _next_boot(h)
    return truth, rec


def test_with_fram_nothing_read_before_the_cut_is_lost_and_the_declared_bound_is_one_read():
    truth, rec = _cut(None, chip_kept=True)     # sim.json: FRAM fitted
    assert truth > 250                            # 138 s at 7.36 kW
    assert abs(truth - rec["energy_wh"]) < 1      # every count: read ones from FRAM, unread from the chip
    assert rec["uncertain_wh"] <= 3               # 7.36 kW over one 1 s read interval


def test_with_fram_and_a_blank_meter_chip_at_most_one_read_interval_is_lost():
    truth, rec = _cut(None, chip_kept=False)
    assert 0 <= truth - rec["energy_wh"] < rec["uncertain_wh"] + 1
    assert rec["uncertain_wh"] <= 3


def test_without_fram_what_was_read_since_the_last_checkpoint_is_lost_but_declared():
    truth, rec = _cut(_flash_board(), chip_kept=True)
    lost = truth - rec["energy_wh"]
    assert lost > 200                             # 138 s of reads after the checkpoint at the start
    assert lost < rec["uncertain_wh"] + 1 and rec["uncertain_wh"] > 250


def test_a_silent_fram_at_boot_is_logged_and_billing_goes_on_from_flash():
    h = _charge(None, 20000)
    h.world.fram.silent = True
    start = h.ctl.session.meter_start_wh
    truth = _truth_wh(h, start)
    rec = _next_boot(h)
    assert [(e["file"], "0x50" in e["error"]) for e in h.next_log.events if e["ev"] == "storage"] == [("fram", True)]
    assert rec["uncertain_wh"] > 3                # no FRAM record: the flash bound
    assert 0 <= truth - rec["energy_wh"] < rec["uncertain_wh"] + 1


def _gasp_board():
    with open("board_configs/sim_gasp.json") as f:   # power-good input, 50 ms hold-up, no FRAM
        return json.load(f)


def _gasp_cut(dip_ms=None, cut_ms=140500):
    """Charge at 7.36 kW; the supply fails at cut_ms (power-good falls), the board dies hold_up_ms
    later with the meter chip (its unread counts gone). With dip_ms the supply first comes back after
    the gasp and the session charges on for dip_ms before that cut, which comes without a gasp (a
    kill). Returns (truth Wh, recovered record, last_gasp events)."""
    h = _charge(_gasp_board(), cut_ms)
    start = h.ctl.session.meter_start_wh
    hold = h.board.hold_up_ms
    h.world.supply = False
    h.run(until_ms=cut_ms + hold)
    if dip_ms is not None:
        h.world.supply = True
        h.run(until_ms=cut_ms + hold + dip_ms)
    gasps = [e for e in h.log.events if e["ev"] == "last_gasp"]
    truth = _truth_wh(h, start)
    h.world.meter.flush()
    h.world.meter.brownout()
    return truth, _next_boot(h), gasps


def test_after_a_last_gasp_checkpoint_the_declared_bound_is_the_hold_up_time():
    truth, rec, gasps = _gasp_cut()
    assert len(gasps) == 1 and gasps[0]["tx_id"] == 1
    assert truth > 250                               # 138 s at 7.36 kW
    assert 0 <= truth - rec["energy_wh"] < rec["uncertain_wh"] + 1
    assert rec["uncertain_wh"] == 1                  # 7.36 kW for 50 ms = 0.1 Wh, rounded up (main: 306)


def test_a_dip_that_recovered_leaves_no_gasp_claim_behind():
    truth, rec, gasps = _gasp_cut(dip_ms=100000)     # 100 s more charging after the supply came back
    assert len(gasps) == 1
    lost = truth - rec["energy_wh"]
    assert lost > 150                                # read since the plain checkpoint the dip's end wrote
    assert lost < rec["uncertain_wh"] + 1 and rec["uncertain_wh"] >= 200  # 100 s at 7.36 kW since it


def test_a_checkpoint_without_the_gasp_flag_keeps_the_flash_bound_on_a_power_good_board():
    h = _charge(_gasp_board(), 140500)               # the supply never failed: periodic checkpoints only
    start = h.ctl.session.meter_start_wh
    truth = _truth_wh(h, start)
    h.world.meter.flush()
    h.world.meter.brownout()
    rec = _next_boot(h)
    assert rec["uncertain_wh"] > 250 and 0 <= truth - rec["energy_wh"] < rec["uncertain_wh"] + 1
