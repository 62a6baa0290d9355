"""`make deploy` asks the board for its heap first and refuses one without room for .mpy files,
naming the frozen-image path; `make deploy-frozen` checks that the image holds the firmware.

The board is the MicroPython unix port with a chosen -X heapsize, reached through a stand-in for
`mpremote connect PORT exec CODE` (MPREMOTE): the heap figures are real MicroPython's."""
import os
import re
import stat
import subprocess
import sys

import pytest

from scenario import ROOT

MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MP32_FROZEN = os.path.join(ROOT, "out", "mp32", "build-f32-frozen", "micropython")
FAKE = """#!%s
import os, subprocess, sys
if sys.argv[1:2] != ["connect"] or sys.argv[3:4] != ["exec"]:
    sys.exit("fake mpremote: only `connect PORT exec CODE`")
if sys.argv[2] != "/dev/board":
    sys.exit("failed to access %%s (it may be in use by another program)" %% sys.argv[2])
os.chdir(os.environ["FAKE_BOARD_FS"])
cmd = [os.environ["FAKE_BOARD"], "-X", "heapsize=" + os.environ["FAKE_BOARD_HEAP"], "-c", sys.argv[4]]
sys.exit(subprocess.run(cmd, env=dict(os.environ, MICROPYPATH=".frozen")).returncode)
"""


def _board(tmp_path, heap, interp=MICROPYTHON):
    """Environment whose MPREMOTE reaches a unix-port 'board' with `heap` and a filesystem of its own."""
    fake = tmp_path / "mpremote"
    fake.write_text(FAKE % sys.executable)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    fs = tmp_path / "board-fs"
    fs.mkdir(exist_ok=True)
    return dict(os.environ, MPREMOTE=str(fake), FAKE_BOARD=interp, FAKE_BOARD_HEAP=heap, FAKE_BOARD_FS=str(fs))


def _check(env, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "deploy_check.py")] + list(args), env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_board_without_psram_is_refused_and_told_to_flash_the_frozen_image(tmp_path):
    r = _check(_board(tmp_path, "112K"), "/dev/board")
    assert r.returncode == 2, r.stderr
    assert re.search(r"has a 1[01]\d KB MicroPython heap", r.stderr), r.stderr   # 112 KB less the GC's tables
    assert "needs at least 512 KB" in r.stderr and "manifest.py" in r.stderr and "docs/deploy.md" in r.stderr


def test_a_board_with_psram_gets_the_mpy_files(tmp_path):
    r = _check(_board(tmp_path, "4M"), "/dev/board")
    assert r.returncode == 0, r.stderr
    assert ".mpy files fit" in r.stdout and re.search(r"has a 40\d\d KB heap", r.stdout), r.stdout


def test_a_board_that_does_not_answer_stops_the_deploy_with_the_reason(tmp_path):
    r = _check(_board(tmp_path, "4M"), "/dev/ttyUSB9")
    assert r.returncode == 1
    assert "cannot ask the board" in r.stderr and "failed to access /dev/ttyUSB9" in r.stderr


def test_make_deploy_copies_nothing_onto_a_small_board(tmp_path):
    env = _board(tmp_path, "112K")
    r = subprocess.run(["make", "--no-print-directory", "deploy", "PORT=/dev/board"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "deploy refused" in r.stderr and "mip install" not in r.stdout


def test_deploy_frozen_refuses_a_stock_image(tmp_path):
    r = _check(_board(tmp_path, "112K"), "--frozen", "/dev/board")
    assert r.returncode == 2 and "no firmware frozen in" in r.stderr, r.stderr


def test_deploy_frozen_accepts_the_frozen_image_unless_a_copy_on_flash_shadows_it(tmp_path):
    if not os.path.exists(MP32_FROZEN):
        pytest.skip("no frozen board-like interpreter: make mp32")
    env = _board(tmp_path, "112K", MP32_FROZEN)
    r = _check(env, "--frozen", "/dev/board")
    assert r.returncode == 0 and "holds the firmware" in r.stdout, r.stderr
    (tmp_path / "board-fs" / "firmware").mkdir()   # left by an earlier `make deploy`
    r = _check(env, "--frozen", "/dev/board")
    assert r.returncode == 2 and "fs rm -r :firmware :hal" in r.stderr, r.stderr


def test_make_mpy_keeps_other_build_outputs_and_compiles_the_pinned_lib():
    """`make mpy` (and so `make deploy`) rebuilds only build/esp32/: a bundle `make bundle` wrote stays."""
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    kept = os.path.join(ROOT, "build", "cp-test-keep.bin")
    with open(kept, "wb") as f:
        f.write(b"a bundle")
    try:
        r = subprocess.run(["make", "--no-print-directory", "mpy"], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        assert open(kept, "rb").read() == b"a bundle"
    finally:
        os.remove(kept)
    out = os.path.join(ROOT, "build", "esp32")
    for name in ("lib/umqtt/simple.mpy", "lib/urequests/__init__.mpy", "firmware/app.mpy", "hal/board.mpy",
                 "boot.py", "main.py"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "hal", "sim"))


def test_make_deploy_installs_the_pinned_lib_copies_not_the_network_ones():
    r = subprocess.run(["make", "--no-print-directory", "-n", "deploy", "PORT=/dev/board"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    plan = r.stdout
    assert "mip" not in plan and "build/esp32/lib" in plan
    assert plan.index("deploy_check.py") < plan.index("mpy-cross") < plan.index("fs cp -r build/esp32/firmware")
