"""The simulator's full flash (hal/sim/flashcap.py, chaos runs): a data directory that refuses new
files and appends with ENOSPC once it holds its cap, and takes them again when room is freed.

MicroPython only (a VFS written in Python is mounted with os.mount; CPython has none).
"""
import binascii
import os
import sys

from fakes import journal_stack

MP = sys.implementation.name == "micropython"


def _capped(cap):
    from hal.sim.flashcap import CappedDir

    d = "/tmp/fc-" + binascii.hexlify(os.urandom(4)).decode()
    os.mkdir(d)
    os.mount(CappedDir(d, cap), d)
    return d


def _errno(fn):
    try:
        fn()
    except OSError as e:
        return e.args[0]
    return None


def test_a_capped_directory_refuses_writes_once_full_and_takes_them_when_room_is_freed():
    if not MP:
        return
    d = _capped(100)
    try:
        with open(d + "/a", "wb") as f:
            f.write(b"x" * 60)
        os.mkdir(d + "/j")
        with open(d + "/j/b", "ab") as f:
            f.write(b"y" * 50)                                   # opened below the cap: may pass it
        assert _errno(lambda: open(d + "/c", "w")) == 28         # ENOSPC, as littlefs
        assert _errno(lambda: open(d + "/a", "ab")) == 28
        assert _errno(lambda: os.mkdir(d + "/k")) == 28
        with open(d + "/a", "rb") as f:                          # reading, listing, renaming still work
            assert f.read() == b"x" * 60
        os.rename(d + "/a", d + "/a2")
        assert sorted(os.listdir(d)) == ["a2", "j"] and os.stat(d + "/j/b")[6] == 50
        os.remove(d + "/a2")                                     # frees room
        with open(d + "/c", "w") as f:
            f.write("z")
    finally:
        os.umount(d)
        for p in (d + "/j/b", d + "/c"):
            os.remove(p)
        os.rmdir(d + "/j")
        os.rmdir(d)


def test_the_journal_on_a_full_capped_directory_reports_full_and_writes_again_after():
    if not MP:
        return
    d = _capped(10 ** 6)
    try:
        _, _, j = journal_stack(d + "/journal")
        j.recover()
        os.umount(d)
        from hal.sim.flashcap import CappedDir

        full = CappedDir(d, 0)
        os.mount(full, d)
        rec = {"msg_id": "1-0", "tx_id": 1, "seq": 0, "event": "started", "meter_start_wh": 0}
        assert j.session_started(rec) is False and j.full and j.error == 28
        full.cap = 10 ** 6
        assert j.checkpoint(1, 10, 1772438400, 1) and not j.full
    finally:
        os.umount(d)
        for n in os.listdir(d + "/journal"):
            os.remove(d + "/journal/" + n)
        os.rmdir(d + "/journal")
        os.rmdir(d)
