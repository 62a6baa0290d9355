"""The flash kept back for a session's records and the counters (firmware/storage/reserve.py)."""
import os

from firmware.storage.reserve import Reserve
from firmware.storage.state import ensure_dir

_DIR = "/tmp/cp-reserve-test"


def _fresh(name):
    ensure_dir(_DIR)
    path = _DIR + "/" + name
    try:
        os.remove(path)
    except OSError:
        pass
    return path


def test_made_at_boot_given_once_and_made_again_a_minute_later():
    path = _fresh("r1")
    r = Reserve(path, 2048)
    assert r.ensure() and r.held and r.error == 0 and os.stat(path)[6] == 2048
    assert Reserve(path, 2048).ensure()   # the next boot finds it whole
    assert r.release() and not r.held and r.released == 1 and r.error == 28
    assert not r.release()                # nothing left to give
    try:
        os.stat(path)
        raise AssertionError("the file is still there")
    except OSError:
        pass
    for _ in range(59):
        r.retry()
    assert not r.held                     # not before a minute has passed
    r.retry()
    assert r.held and r.error == 0 and os.stat(path)[6] == 2048


def test_a_half_made_file_is_replaced_by_a_whole_one():
    path = _fresh("r2")
    with open(path, "wb") as f:
        f.write(b"\0" * 100)              # a cut while making it
    r = Reserve(path, 1024)
    assert r.ensure() and os.stat(path)[6] == 1024
