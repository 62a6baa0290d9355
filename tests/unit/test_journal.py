"""The journal keeps whole records only, recovers an open session, stays under its caps and its budget.

Power-cut tests run over plain files and, under MicroPython, over littlefs (os.VfsLfs2) on a
flash chip simulated in RAM.
"""
import binascii
import json
import os
import sys

from check import raises
from firmware.storage.journal import BOOT, CHECKPOINT, END, START, Journal
from firmware.storage.outbox import Outbox
from firmware.storage.recordlog import RecordLog
from firmware.core.timefmt import iso
from hal.sim.clock import VirtualClock

MP = sys.implementation.name == "micropython"
T0 = 1772438100
TOKEN = "6f1c0e5d8a2b4c7e9f0a1b2c3d4e5f60"
COST = {"currency": "EUR", "total_excl_vat_minor": 2210, "total_incl_vat_minor": 2674}


# -- helpers shared with test_outbox ----------------------------------------------------------
def _name():
    return binascii.hexlify(os.urandom(4)).decode()


def _is_dir(p):
    return os.stat(p)[0] & 0x4000


def rmtree(p):
    for n in os.listdir(p):
        q = p + "/" + n
        if _is_dir(q):
            rmtree(q)
        else:
            os.remove(q)
    os.rmdir(p)


def each_fs(fn, block_size=512, blocks=256):
    """Run fn(journal directory) over plain files, then (MicroPython) over littlefs in RAM."""
    d = "/tmp/jt-" + _name()
    os.mkdir(d)
    try:
        fn(d + "/j")
    finally:
        rmtree(d)
    if MP:
        from firmware.storage.flashfs import RamFlash, mount

        at = "/lfs" + _name()
        mount(RamFlash(block_size, blocks), at, fresh=True)
        try:
            fn(at + "/j")
        finally:
            os.umount(at)


def plain_dir():
    d = "/tmp/jt-" + _name()
    os.mkdir(d)
    return d


def files(path):
    """{name: bytes} of a directory."""
    out = {}
    for n in os.listdir(path):
        with open(path + "/" + n, "rb") as f:
            out[n] = f.read()
    return out


def restore(path, saved, cut=None, at=None):
    """Make the directory hold exactly `saved`, file `at` cut to `cut` bytes."""
    for n in os.listdir(path):
        os.remove(path + "/" + n)
    for n, data in saved.items():
        with open(path + "/" + n, "wb") as f:
            f.write(data[:cut] if n == at else data)


def wire(path, clock=None, n=32, seg_bytes=4096, segments=8, opener=open, max_bytes=None, **kw):
    """A record log with a journal and an outbox on it, wired as firmware/app.py does: (journal, outbox)."""
    log = RecordLog(path, seg_bytes, segments, opener=opener)
    ob = Outbox(n, log, clock or VirtualClock(), max_bytes)
    j = Journal(log, ob, **kw)
    log.attach(j, ob)
    return j, ob


def opened(path, clock=None, **kw):
    """A journal with its outbox, recovered: (journal, outbox, recover() result)."""
    j, ob = wire(path, clock, **kw)
    return j, ob, j.recover()


def started(tx, wh=1000, t=T0):
    """(session, `started` record) shaped as docs/mqtt.md describes them."""
    rec = {"msg_id": "%d-0" % tx, "tx_id": tx, "seq": 0, "event": "started", "ts": iso(t), "token": TOKEN,
           "key": 1, "meter_start_wh": wh, "auth": "local_list", "tariff_id": "flat"}
    return {"rec": rec, "seq": 1}, rec


def ended(s, wh, t, reason="Local"):
    r = s["rec"]
    seq = s["seq"]
    s["seq"] += 1
    return {"msg_id": "%d-%d" % (r["tx_id"], seq), "tx_id": r["tx_id"], "seq": seq, "event": "ended",
            "ts": iso(t), "token": r["token"], "key": 1, "auth": r["auth"], "tariff_id": r["tariff_id"],
            "started_at": r["ts"], "ended_at": iso(t), "meter_start_wh": r["meter_start_wh"],
            "meter_stop_wh": wh, "energy_wh": wh - r["meter_start_wh"], "stop_reason": reason, "cost": COST}


def newest(path):
    names = [n for n in os.listdir(path) if n.endswith(".log")]
    names.sort(key=lambda n: int(n[:-4]))
    return names[-1]


# -- records, recovery ------------------------------------------------------------------------
def test_records_come_back_in_order_and_the_boot_count_grows():
    def run(path):
        j, ob, boot = opened(path)
        assert boot["boot"] == 1 and boot["session"] is None and boot["records"] == 0
        s, rec = started(1)
        assert j.session_started(rec)
        for k in range(3):
            assert j.checkpoint(1, 1000 + 100 * k, T0 + 60 * k, 1)
        assert j.session_ended(1, ended(s, 1300, T0 + 300))
        j2, ob2, boot2 = opened(path)
        assert boot2["boot"] == 2 and boot2["session"] is None and boot2["bad"] == 0
        got = [(t & 0x3F, seq) for t, seq, body in j2.log.scan()]
        assert [t for t, seq in got] == [BOOT, START, CHECKPOINT, CHECKPOINT, CHECKPOINT, END, BOOT]
        assert [seq for t, seq in got] == sorted(seq for t, seq in got)
        assert ob2.pending() == ["1-0", "1-1"]
        assert opened(path)[2]["boot"] == 3
    each_fs(run)


def test_a_last_gasp_checkpoint_says_so_and_a_later_plain_one_supersedes_it():
    def run(path):
        j, ob, _ = opened(path)
        j.session_started(started(3, wh=5000)[1])
        before = _segment_bytes(path)
        j.checkpoint(3, 5100, T0 + 300, 1, rem=9)
        plain = _segment_bytes(path) - before
        j.checkpoint(3, 5120, T0 + 310, 1, rem=11, gasp=True)
        assert (plain, _segment_bytes(path) - before - plain) == (31, 32)   # the flag costs one byte, only there
        cp = opened(path)[2]["checkpoint"]
        assert (cp["energy_wh"], cp["rem"], cp["gasp"]) == (5120, 11, True)
        opened(path)[0].checkpoint(3, 5300, T0 + 400, 1, rem=0)   # the supply came back, charging went on
        assert opened(path)[2]["checkpoint"]["gasp"] is False
    each_fs(run)


def _segment_bytes(path):
    return sum(os.stat(path + "/" + n)[6] for n in os.listdir(path))


def test_an_open_session_is_recovered_with_its_last_checkpoint():
    def run(path):
        j, ob, _ = opened(path)
        s, rec = started(7, wh=5000)
        j.session_started(rec)
        j.checkpoint(7, 5100, T0 + 300, 1, rem=17)
        j.checkpoint(7, 5350, T0 + 600, 2, rem=250)
        j2, ob2, boot = opened(path)
        assert boot["session"] == rec and j2.session == rec
        assert boot["checkpoint"] == {"tx_id": 7, "energy_wh": 5350, "t": T0 + 600, "seq": 2, "rem": 250,
                                      "gasp": False}
        # the controller closes it as PowerLoss from the checkpoint: the session then stays closed
        end = ended({"rec": boot["session"], "seq": boot["checkpoint"]["seq"]}, 5350, T0 + 600, "PowerLoss")
        assert j2.session_ended(7, end)
        j3, ob3, boot3 = opened(path)
        assert boot3["session"] is None and boot3["checkpoint"] is None
        assert ob3.pending() == ["7-0", "7-2"]
    each_fs(run)


def test_a_checkpoint_from_an_older_session_is_not_taken_for_the_open_one():
    def run(path):
        j, ob, _ = opened(path)
        s, rec = started(1)
        j.session_started(rec)
        j.checkpoint(1, 1500, T0 + 300, 1)
        j.session_ended(1, ended(s, 1600, T0 + 400))
        s, rec = started(2, wh=1600)
        j.session_started(rec)
        boot = opened(path)[2]
        assert boot["session"]["tx_id"] == 2 and boot["checkpoint"] is None
    each_fs(run)


def test_checkpoints_are_due_by_energy_or_time_and_never_too_often():
    d = plain_dir()
    try:
        j, ob, _ = opened(d + "/j", every_wh=100, every_s=300, min_s=60)
        assert not j.checkpoint_due(0, T0)          # no open session
        j.session_started(started(1)[1])
        assert not j.checkpoint_due(1000, T0)       # the first call sets the reference
        assert not j.checkpoint_due(1500, T0 + 59)  # 500 Wh, but within min_s
        assert j.checkpoint_due(1100, T0 + 60)
        j.checkpoint(1, 1100, T0 + 60, 1)
        assert not j.checkpoint_due(1100, T0 + 61)  # the first call after a checkpoint: the reference
        assert not j.checkpoint_due(1150, T0 + 360)
        assert j.checkpoint_due(1150, T0 + 361)     # every_s with little energy
        assert j.checkpoint_due(1100, T0 - 300)     # a clock step backwards counts as time passed
        assert "min_s" in str(raises(ValueError, Journal, j.log, ob, every_s=60, min_s=120))
    finally:
        rmtree(d)


def test_bad_calls_raise_value_error_naming_the_problem():
    d = plain_dir()
    try:
        j, ob = wire(d + "/j")
        assert "recover" in str(raises(ValueError, j.session_started, started(1)[1]))
        j.recover()
        assert "tx_id" in str(raises(ValueError, j.session_started, {"msg_id": "x"}))
        assert "tx_id" in str(raises(ValueError, j.checkpoint, 1, 10, T0))
        s, rec = started(1)
        j.session_started(rec)
        assert "still open" in str(raises(ValueError, j.session_started, started(2)[1]))
        assert "tx_id" in str(raises(ValueError, j.checkpoint, 2, 10, T0))
        assert "energy_wh" in str(raises(ValueError, j.checkpoint, 1, -1, T0))
        assert j.session == rec  # nothing was lost
        assert "segments" in str(raises(ValueError, RecordLog, d, segments=1))
        log = RecordLog(d + "/k")
        ob = Outbox(4, log)
        j = Journal(log, ob)
        log.attach(ob)                               # wired without the journal: its records would not be kept
        assert "attach" in str(raises(ValueError, j.recover))
    finally:
        rmtree(d)


# -- rotation, compaction, caps ---------------------------------------------------------------
def _day(j, ob, tx, cps=6):
    """One session: start, checkpoints, end, both messages acknowledged."""
    s, rec = started(tx, wh=tx * 1000)
    j.session_started(rec)
    for k in range(cps):
        j.checkpoint(tx, tx * 1000 + 50 * k, T0 + 60 * k, 1)
    j.session_ended(tx, ended(s, tx * 1000 + 400, T0 + 500))
    ob.ack(["%d-0" % tx, "%d-1" % tx])


def _check_caps(path, j):
    names = [n for n in os.listdir(path) if n.endswith(".log")]
    sizes = [os.stat(path + "/" + n)[6] for n in names]
    assert len(names) <= j.log.segments and max(sizes) <= j.log.seg_bytes, (names, sizes)
    return sum(sizes)


def test_segments_rotate_and_the_total_stays_under_the_cap():
    def run(path):
        j, ob, _ = opened(path, seg_bytes=1024, segments=3)
        total = 0
        for tx in range(1, 31):
            _day(j, ob, tx)
            total = max(total, _check_caps(path, j))
        assert j.log.written > 5 * 3 * 1024  # it really went round many times
        assert total <= 3 * 1024 and not j.full
        j2, ob2, boot = opened(path, seg_bytes=1024, segments=3)
        assert boot["session"] is None and boot["boot"] == 2 and len(ob2) == 0
    each_fs(run)


def test_compaction_keeps_the_open_session_and_pending_messages():
    def run(path):
        clock = VirtualClock()
        j, ob, _ = opened(path, clock, seg_bytes=512, segments=3)
        for n in range(4):
            ob.put("fault", '{"n": %d}' % n, "f-%d" % n, "fault")
        s, rec = started(9)
        j.session_started(rec)
        for k in range(200):  # 200 checkpoints of 29 bytes: the 3 x 512 bytes turn over many times
            assert j.checkpoint(9, 1000 + k, T0 + k, 1)
            _check_caps(path, j)
        assert j.log.written > 10 * 512
        j2, ob2, boot = opened(path, clock, seg_bytes=512, segments=3)
        assert boot["session"] == rec and boot["checkpoint"]["energy_wh"] == 1199
        assert ob2.pending() == ["f-0", "f-1", "f-2", "f-3", "9-0"]
        assert ob2.next_due(clock.ticks_ms())[1] == b'{"n": 0}'
    each_fs(run)


def test_session_records_are_packed_on_flash_and_published_as_the_same_json():
    def run(path):
        clock = VirtualClock()
        j, ob, _ = opened(path, clock)
        s, rec = started(4)
        j.session_started(rec)
        end = ended(s, 9000, T0 + 3600)
        assert j.session_ended(4, end)
        on_flash = dict((rtype & 0x3F, len(body)) for rtype, _, body in j.log.scan())
        assert on_flash[START] < len(json.dumps(rec, separators=(",", ":")))
        assert on_flash[END] < len(json.dumps(end, separators=(",", ":"))) * 2 // 3
        for want in (rec, end):   # what the broker gets is JSON, byte for byte what it unpacks to
            topic, payload, mid = ob.next_due(clock.ticks_ms())
            assert mid == want["msg_id"] and json.loads(bytes(payload)) == want
            assert payload == json.dumps(want, separators=(",", ":")).encode()
            ob.ack([mid])
    each_fs(run)


def test_live_records_that_fill_every_segment_make_it_full_not_crash():
    def run(path):
        j, ob, _ = opened(path, seg_bytes=512, segments=2)
        s, rec = started(1)
        j.session_started(rec)
        ok = [ob.put("fault", "x" * 120, "f-%d" % n, "started") for n in range(8)]  # never-dropped kind
        assert ok[0] and not ok[-1] and j.full and ob.ram_only > 0 and ob.full
        waiting = ob.ram_only
        for k in range(20):  # charging goes on: each checkpoint says whether it was stored
            assert j.checkpoint(1, 1100 + k, T0 + 60 + k, 1) is not j.full
        assert ob.ack(["f-%d" % n for n in range(7)]) == 7
        assert ob.ram_only < waiting  # acknowledged records made room for those waiting in RAM
        assert j.checkpoint(1, 1200, T0 + 120, 1)
    each_fs(run)


# -- power cuts and corruption ----------------------------------------------------------------
def _cut_every_byte(path, last_append, check):
    """Cut the newest segment at every length through last_append(); check(boot, whole) each time."""
    before = files(path)
    head = newest(path)
    n0 = len(before[head])
    last_append()
    after = files(path)
    assert newest(path) == head, "the append under test must not rotate"
    for cut in range(n0, len(after[head]) + 1):
        restore(path, after, cut, head)
        j, ob, boot = opened(path)
        check(boot, ob, cut == len(after[head]))
        assert boot["bad"] == (0 if cut in (n0, len(after[head])) else 1)


def test_a_power_cut_at_any_byte_of_a_checkpoint_keeps_the_previous_one():
    def run(path):
        j, ob, _ = opened(path)
        s, rec = started(3)
        j.session_started(rec)
        j.checkpoint(3, 1200, T0 + 300, 1)

        def check(boot, ob2, whole):
            assert boot["session"] == rec
            assert boot["checkpoint"]["energy_wh"] == (1450 if whole else 1200)
            assert ob2.pending() == ["3-0"]
        _cut_every_byte(path, lambda: j.checkpoint(3, 1450, T0 + 600, 1), check)
    each_fs(run)


def test_a_power_cut_at_any_byte_of_the_ended_record_leaves_the_session_open():
    def run(path):
        j, ob, _ = opened(path)
        s, rec = started(4)
        j.session_started(rec)
        j.checkpoint(4, 1300, T0 + 300, 1)
        end = ended(s, 1400, T0 + 400)

        def check(boot, ob2, whole):
            if whole:
                assert boot["session"] is None and ob2.pending() == ["4-0", "4-1"]
            else:
                assert boot["session"] == rec and boot["checkpoint"]["energy_wh"] == 1300
                assert ob2.pending() == ["4-0"]
        _cut_every_byte(path, lambda: j.session_ended(4, end), check)
    each_fs(run)


def _lcg(seed):
    """Reproducible pseudo-random numbers, the same on both interpreters."""
    while True:
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        yield seed


def test_bit_flips_cost_at_most_the_record_they_hit():
    def run(path):
        j, ob, _ = opened(path, seg_bytes=1024, segments=4)
        for tx in range(1, 4):
            _day(j, ob, tx, cps=3)
        good = set((t, seq, body) for t, seq, body in j.log.scan())
        saved = files(path)
        names = sorted(saved)
        rnd = _lcg(7)
        hits = 0
        for _ in range(150):
            name = names[next(rnd) % len(names)]
            data = bytearray(saved[name])
            pos = next(rnd) % len(data)
            data[pos] ^= 1 << (next(rnd) % 8)
            bad = dict(saved)
            bad[name] = bytes(data)
            restore(path, bad)
            log = RecordLog(path)
            got = set((t, seq, body) for t, seq, body in log.scan())
            assert got <= good and len(good - got) == 1 and log.bad == 1
            opened(path)  # recovery does not raise either
            hits += 1
        assert hits == 150
    each_fs(run)


def test_garbage_and_empty_files_are_skipped_and_good_records_survive():
    def run(path):
        j, ob, _ = opened(path, seg_bytes=1024, segments=6)
        s, rec = started(5)
        j.session_started(rec)
        j.checkpoint(5, 1100, T0 + 60, 1)
        good = list(j.log.scan())
        n = int(newest(path)[:-4])
        rnd = _lcg(3)
        junk = bytes(next(rnd) & 0xFF for _ in range(700)) + b"\xa5\xc3\x02\x10"
        with open(path + "/%08d.log" % (n + 1), "wb") as f:
            f.write(junk)
        with open(path + "/%08d.log" % (n + 2), "wb") as f:
            pass  # empty newest segment
        with open(path + "/notes.txt", "wb") as f:
            f.write(b"not a segment")
        with open(path + "/%08d.log" % (n + 3), "wb") as f:
            f.write(b"\xa5\xc3")  # a torn header as the newest file
        j2, ob2, boot = opened(path, seg_bytes=1024, segments=6)
        assert boot["session"] == rec and boot["checkpoint"]["energy_wh"] == 1100 and boot["bad"] >= 2
        assert [r for r in j2.log.scan() if r[0] & 0x3F != BOOT] == [r for r in good if r[0] & 0x3F != BOOT]
        assert j2.checkpoint(5, 1200, T0 + 120, 1)  # appends go to a fresh segment, not after garbage
        assert newest(path) == "%08d.log" % (n + 4)
        assert opened(path, seg_bytes=1024, segments=6)[2]["checkpoint"]["energy_wh"] == 1200
    each_fs(run)


def test_an_empty_or_missing_directory_is_a_fresh_journal():
    def run(path):
        boot = opened(path)[2]
        assert boot == {"session": None, "checkpoint": None, "boot": 1, "bad": 0, "lost": 0, "records": 0,
                        "top_tx": 0, "meter": (0, 0), "last_end": None, "seq": 0, "ep": None}
    each_fs(run)


class FullFlash:
    """An opener whose appends fail with ENOSPC once `room` bytes are used, after a torn partial write."""

    def __init__(self, room):
        self.room = room

    def __call__(self, name, mode):
        f = open(name, mode)
        return _Limited(f, self) if "a" in mode else f


class _Limited:
    def __init__(self, f, flash):
        self.f = f
        self.flash = flash

    def write(self, data):
        fl = self.flash
        if len(data) > fl.room:
            self.f.write(data[:fl.room // 2])
            fl.room = 0
            raise OSError(28, "No space left on device")
        fl.room -= len(data)
        return self.f.write(data)

    def close(self):
        self.f.close()


def test_a_full_filesystem_is_reported_and_the_session_goes_on():
    d = plain_dir()
    try:
        flash = FullFlash(400)
        clock = VirtualClock()
        j, ob = wire(d + "/j", clock, 16, opener=flash)
        j.recover()
        s, rec = started(1)
        assert j.session_started(rec)
        flash.room = 20                                   # the next record is torn after 10 bytes
        assert j.checkpoint(1, 1100, T0 + 60, 1) is False and j.full and j.error == 28
        end = ended(s, 1200, T0 + 120)
        assert j.session_ended(1, end) is False           # no exception: charging is not affected
        assert ob.pending() == ["1-0", "1-1"] and ob.ram_only == 1 and ob.full
        assert ob.put("fault", "{}", "f-1", "fault") is False
        flash.room = 10000                                # space comes back
        assert ob.ack(["1-0"]) == 1 and ob.ram_only == 0 and not j.full
        j2, ob2, boot = opened(d + "/j")
        assert ob2.pending() == ["1-1", "f-1"] and boot["session"] is None and boot["bad"] >= 1
    finally:
        rmtree(d)


def test_a_full_littlefs_volume_is_reported_not_raised():
    if not MP:
        return  # os.VfsLfs2 exists only on MicroPython; FullFlash covers CPython
    from firmware.storage.flashfs import RamFlash, mount

    at = "/lfs" + _name()
    mount(RamFlash(512, 16), at, fresh=True)
    try:
        j, ob, _ = opened(at + "/j")
        s, rec = started(1)
        assert j.session_started(rec)
        try:
            while True:  # fill the volume with committed data, 128 bytes at a time
                with open(at + "/filler", "ab") as f:
                    f.write(b"\0" * 128)
        except OSError as e:
            assert e.args[0] == 28
        results = [j.checkpoint(1, 1100 + k, T0 + k, 1) for k in range(40)]
        assert False in results and j.full and j.error == 28  # said, not raised
        assert ob.pending() == ["1-0"]
        os.remove(at + "/filler")
        assert j.checkpoint(1, 1200, T0 + 60, 1) and not j.full
        boot = opened(at + "/j")[2]
        assert boot["session"] == rec and boot["checkpoint"]["energy_wh"] == 1200
    finally:
        os.umount(at)


def test_a_power_cut_inside_littlefs_keeps_every_committed_record():
    if not MP:
        return  # needs os.VfsLfs2 (MicroPython)
    from firmware.storage.flashfs import RamFlash, mount

    at = "/lfs" + _name()
    dev = RamFlash(512, 64)
    mount(dev, at, fresh=True)
    j, ob, _ = opened(at + "/j")
    s, rec = started(2)
    j.session_started(rec)
    j.checkpoint(2, 1300, T0 + 300, 1)
    os.umount(at)
    base = bytes(dev.data)
    outcomes = set()
    k = 0
    while True:
        dev = RamFlash(512, 64, base)
        mount(dev, at)
        j, ob, _ = opened(at + "/j")
        dev.cut_after = k
        j.checkpoint(2, 1700, T0 + 600, 1)
        image = dev.image
        try:
            os.umount(at)
        except OSError:
            pass
        if image is None:
            break  # the write finished before the cut
        mount(RamFlash(512, 64, image), at)
        boot = opened(at + "/j")[2]
        os.umount(at)
        assert boot["session"] == rec
        outcomes.add(boot["checkpoint"]["energy_wh"])
        k += 1
    assert k > 2 and outcomes <= {1300, 1700} and 1300 in outcomes


# -- flash budget -----------------------------------------------------------------------------
def _charge(j, ob, tx, watts, meter_wh, t):
    """One hour at `watts`, energy read every 10 s as the controller does; returns bytes written."""
    w0 = j.log.written
    s, rec = started(tx, wh=meter_wh, t=t)
    j.session_started(rec)
    ob.ack(["%d-0" % tx])
    wh_x10 = meter_wh * 3600  # Wh scaled by 3600 s: integer energy
    for step in range(1, 361):
        wh_x10 += watts * 10
        wh = wh_x10 // 3600
        if j.checkpoint_due(wh, t + 10 * step):
            j.checkpoint(tx, wh, t + 10 * step, 1)
    end = ended(s, wh, t + 3600)
    j.session_ended(tx, end)
    ob.ack([end["msg_id"]])
    return j.log.written - w0, wh


def test_flash_writes_per_one_hour_session_stay_within_2_kb():
    d = plain_dir()
    try:
        j, ob, _ = opened(d + "/j")
        small, wh = _charge(j, ob, 1, 7400, 0, T0)
        big, wh = _charge(j, ob, 2, 22000, wh, T0 + 7200)
        assert 700 < small <= 2048 and 700 < big <= 2048, (small, big)
        w0 = j.log.written
        for tx in range(3, 43):  # 40 more: compaction copies are part of the bill
            wh = _charge(j, ob, tx, 7400, wh, T0 + tx * 7200)[1]
        avg = (j.log.written - w0) // 40
        assert avg <= 2048, avg
    finally:
        rmtree(d)


def test_the_checkpoint_policy_comes_from_the_device_config():
    from configs import settings

    s = settings()
    assert (s.journal.every_wh, s.journal.min_s, s.journal.every_s) == (250, 150, 300)
    dev = {"journal": {"every_wh": 500, "min_s": 240, "every_s": 600}}
    s = settings(dev)
    assert (s.journal.every_wh, s.journal.min_s, s.journal.every_s) == (500, 240, 600)
    dev["journal"] = {"min_s": 600, "every_s": 300}   # a checkpoint due before the cap allows it
    assert "journal.every_s" in str(raises(ValueError, settings, dev))
