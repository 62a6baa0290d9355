"""hal/console.py, the board's console input, over a real pipe: bytes come one at a time as
typed, whether any waits is known without taking it (the loop loads the console only then), and
asking when nothing waits (or the other end is gone) returns at once."""
import os
import time

from hal.console import Console


def test_typed_bytes_come_one_by_one_and_nothing_waiting_never_blocks():
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as stream:
        port = Console(stream)
        t0 = time.monotonic()
        assert port.read_byte() is None and not port.waiting()   # nothing typed: no wait
        assert time.monotonic() - t0 < 0.5
        os.write(w, b"st\n")
        assert port.waiting() and port.waiting()       # asking takes nothing
        assert [port.read_byte() for _ in range(4)] == [ord("s"), ord("t"), 10, None]
        assert not port.waiting()
        os.close(w)                                    # the terminal is gone
        assert port.read_byte() is None and port.read_byte() is None


def test_the_same_on_micropython_reading_its_stdin():
    """On MicroPython (ipoll, sys.stdin.buffer), as on a board's USB console."""
    import subprocess

    import sim
    from scenario import ROOT

    code = ("import sys, time; sys.path.insert(0, '.'); from hal.console import Console; time.sleep(0.3); "
            "c = Console(); print([c.waiting()] + [c.read_byte() for _ in range(4)])")
    r = subprocess.run([sim.micropython_path(), "-c", code], cwd=ROOT, input=b"ok\n", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "[True, 111, 107, 10, None]"
