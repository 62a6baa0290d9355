"""A full flash is a state, not a crash: on a real littlefs (os.VfsLfs2 over a RAM flash chip of an
ESP32's data-partition size) the charger keeps charging and billing and reports the condition.

MicroPython only (CPython has no littlefs); test_state.py covers the same paths on both.
"""
import binascii
import json
import os
import sys

from simharness import Harness

MP = sys.implementation.name == "micropython"
CARDS = {"alice": "04A1B2C3D4E5F6"}
BLOCK, BLOCKS = 4096, 256   # a 1 MB littlefs partition, as on a 4 MB ESP32


def _flash():
    """A fresh littlefs mounted in RAM: its mount point."""
    from firmware.storage.flashfs import RamFlash, mount

    at = "/ff" + binascii.hexlify(os.urandom(3)).decode()
    mount(RamFlash(BLOCK, BLOCKS), at, fresh=True)
    os.mkdir(at + "/data")
    return at


def _fill(at):
    """Write filler until littlefs refuses: big blocks, then small files (inline in a directory's
    metadata) at the root and in the data directory, whose metadata blocks also take small files."""
    chunk = b"\0" * 1024
    with open(at + "/filler", "wb") as f:
        while True:
            try:
                f.write(chunk)
                f.flush()
            except OSError:
                break
    for where in (at, at + "/data"):
        for size in (64, 16, 1):
            for i in range(10000):
                try:
                    with open("%s/fill%d_%d" % (where, size, i), "wb") as f:
                        f.write(b"\0" * size)
                except OSError:
                    break


def _unfill(at):
    for where in (at, at + "/data"):
        for n in os.listdir(where):
            if n.startswith("fill"):
                os.remove(where + "/" + n)


def _storage(h):
    """Storage notices published, in order."""
    out = [json.loads(p) for t, p, _, _ in h.link.published if t.endswith("/fault")]
    return [f for f in out if f["event"] == "notice" and f["info"] == "storage"]


def _ended(h):
    return [s for s in h.sessions() if s["event"] == "ended"]


def test_full_flash_at_boot_the_first_session_charges_bills_and_reports():
    if not MP:
        return
    at = _flash()
    try:
        Harness(CARDS, ["alice"], [], 1000, data=at + "/data").run()   # provisioned, then the flash fills
        _fill(at)
        h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                       {"t": 3000, "ev_current_a": 10}, {"t": 123000, "tap": "alice"}],
                    200000, data=at + "/data")
        h.run()   # on main: state.save() raises ENOSPC at the tap, then again in the shutdown
        started, ended = h.sessions()[:2]
        assert started["event"] == "started" and ended["event"] == "ended"
        assert ended["energy_wh"] > 0 and ended["tx_id"] == started["tx_id"] == 1 and ended["stop_reason"] == "Local"
        storage = _storage(h)
        # the flash kept back took the counters' write (storage/reserve.py): reported as used up
        assert any(i[0] in ("state", "reserve") and i[1] in ("full", "error") and i[2]
                   for f in storage for i in f["items"]), storage
        assert h.events("storage")   # and on the REPL / local log
    finally:
        os.umount(at)


def test_flash_filling_mid_session_still_ends_the_session_with_its_record():
    if not MP:
        return
    at = _flash()
    try:
        h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                       {"t": 3000, "ev_current_a": 16}, {"t": 400000, "tap": "alice"}],
                    500000, data=at + "/data")
        h.acking = False   # the backend is away: the records stay queued while the flash fills
        h.run(60000)
        assert h.ctl.session is not None
        _fill(at)
        h.acking = True
        h.run()
        ended = _ended(h)
        assert len(ended) == 1 and ended[0]["stop_reason"] == "Local"
        assert abs(ended[0]["energy_wh"] - 230 * 16 * 397 // 3600) <= 3
        assert h.ctl.session is None and not h.board.contactor.commanded
        assert "internal" not in h.ctl.faults.active   # no escaped OSError ended it
        assert h.ctl.revenue.snapshot()["day"]["sessions"] == 1   # billed in RAM, written later
        assert any(i[1] in ("full", "error") for f in _storage(h) for i in f["items"]), _storage(h)
        _unfill(at)   # space again: the state that waited in RAM is written
        h.run(h.clock.ms + 62000)   # housekeeping retries, makes the flash kept back again within a
        # minute (storage/reserve.py) and reports the flash ok again
        storage = _storage(h)
        assert storage[-1]["info"] == "storage" and storage[-1]["state"] == "ok", storage
        with open(at + "/data/state.json") as f:
            assert json.load(f)["tx"] == 1
    finally:
        os.umount(at)



def test_a_power_cut_on_a_full_flash_loses_no_session_and_reuses_no_tx_id():
    """The flash kept back (storage/reserve.py) takes the session's START record and state.json's
    next tx id when the flash refuses every new block, so a cut neither loses the session nor lets
    the next boot give tx 1 again (on the simulator's full flash, hal/sim/flashcap.py: littlefs often
    still appends into a file's last block, where the chaos run found the loss)."""
    if not MP:
        return
    from hal.sim.flashcap import CappedDir

    d = "/tmp/ffcap-" + binascii.hexlify(os.urandom(4)).decode()
    os.mkdir(d)
    flash = CappedDir(d, 1 << 30)
    os.mount(flash, d)
    try:
        Harness(CARDS, ["alice"], [], 1000, data=d).run()   # provisioned: the reserve is made
        assert "reserve" in os.listdir(d)
        flash.cap = flash.used()   # full: no new file, no append
        h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                       {"t": 3000, "ev_current_a": 16}], 400000, data=d)
        h.acking = False   # the backend is away: nothing leaves RAM before the cut
        h.run(120000)
        assert h.ctl.session is not None and h.ctl.session.tx_id == 1 and h.reserve.released
        # the power is cut here; the flash is still full at the next boot
        h = Harness(CARDS, ["alice"], [{"t": 5000, "tap": "alice"}, {"t": 6000, "plug": True},
                                       {"t": 7000, "ev_current_a": 8}, {"t": 60000, "tap": "alice"}],
                    90000, data=d)
        h.ctl.recover(h.boot)   # as firmware/app.py boots
        h.run()
        ended = _ended(h)
        # on main: [(1, "Local")]: the first session is gone and its tx id given again
        assert [(e["tx_id"], e["stop_reason"]) for e in ended] == [(1, "PowerLoss"), (2, "Local")], ended
        assert ended[0]["uncertain_wh"] > 0 and ended[0]["ep"] == ended[1]["ep"]   # no FRAM: declared
        assert any(i[0] == "reserve" and i[1] == "full" for f in _storage(h) for i in f["items"]), _storage(h)
    finally:
        os.umount(d)
