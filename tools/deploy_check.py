"""Before `make deploy` copies the firmware as .mpy files: ask the board for its heap and refuse one
too small to hold the firmware's bytecode in RAM (an ESP32 without PSRAM), naming the path that
fits it: a firmware image with the firmware frozen from manifest.py (docs/deploy.md).

    .venv/bin/python tools/deploy_check.py /dev/ttyUSB0            # exit 0: deploy; 2: refused; 1: no answer
    .venv/bin/python tools/deploy_check.py --frozen /dev/ttyUSB0   # `make deploy-frozen`: the image holds it

MPREMOTE names the mpremote to run (default: the venv's).
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Measured on the board-like 32-bit build (docs/deploy.md): importing the firmware, drivers, umqtt and
# urequests from .mpy keeps 206 KB on the heap; a charger running from .mpy has 320 KB live after
# boot and ran a one-hour session in a 384 KB heap, not in 352 KB. 512 KB adds a third for longer
# runs and fragmentation. An ESP32 without PSRAM reports at most about 112 KB; one with PSRAM, megabytes.
MIN_HEAP_KB = 512
_ASK = "import gc\ngc.collect()\nprint('heap', gc.mem_free() + gc.mem_alloc(), gc.mem_free())"
# frozen: the image holds firmware.version; shadowed: a copy on the filesystem would run instead
_ASK_FROZEN = ("import os, sys\nsys.path[:] = ['.frozen']\ntry:\n import firmware.version\n f = 1\n"
               "except ImportError:\n f = 0\ntry:\n os.stat('firmware')\n s = 1\nexcept OSError:\n s = 0\n"
               "print('heap', f, s)")
_TIMEOUT_S = 30


def ask(port, mpremote, code):
    """The two numbers the board prints after `heap`; RuntimeError with the reason if it does not answer."""
    try:
        out = subprocess.run([mpremote, "connect", port, "exec", code], capture_output=True, text=True,
                             timeout=_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError("%s did not run: %s" % (mpremote, e))
    for line in out.stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "heap" and words[1].isdigit() and words[2].isdigit():
            return int(words[1]), int(words[2])
    raise RuntimeError("no answer from the board on %s (exit %d): %s"
                       % (port, out.returncode, (out.stderr or out.stdout).strip()[-300:]))


def verdict(total, min_kb=MIN_HEAP_KB):
    """None if .mpy files fit a heap of `total` bytes, else the refusal that says which path to take."""
    if total >= min_kb * 1024:
        return None
    return ("refused: the board has a %d KB MicroPython heap; the firmware copied as .mpy files needs "
            "at least %d KB (its bytecode alone takes about 206 KB of heap once imported). This is an "
            "ESP32 without PSRAM: flash a firmware image with the firmware frozen in, built from "
            "manifest.py (docs/deploy.md, \"ESP32 without PSRAM\"), or use a board with PSRAM running "
            "the stock ESP32_GENERIC-SPIRAM firmware." % (total // 1024, min_kb))


def frozen_verdict(frozen, shadowed, port):
    """None if the image holds the firmware and nothing on the filesystem shadows it, else why not."""
    if not frozen:
        return ("refused: the MicroPython on this board has no firmware frozen in. Build and flash the image "
                "first (docs/deploy.md, \"ESP32 without PSRAM\"), or on a board with PSRAM use `make deploy`.")
    if shadowed:
        return ("refused: firmware/ on the board's filesystem (an earlier `make deploy`) would run instead of "
                "the frozen image; remove it: .venv/bin/mpremote connect %s fs rm -r :firmware :hal" % port)
    return None


def main(argv):
    frozen = argv[:1] == ["--frozen"]
    if frozen:
        argv = argv[1:]
    if len(argv) != 1:
        print("usage: deploy_check.py [--frozen] PORT", file=sys.stderr)
        return 1
    mpremote = os.environ.get("MPREMOTE") or os.path.join(ROOT, ".venv", "bin", "mpremote")
    try:
        a, b = ask(argv[0], mpremote, _ASK_FROZEN if frozen else _ASK)
    except RuntimeError as e:
        print("deploy: cannot ask the board: %s" % e, file=sys.stderr)
        return 1
    if frozen:
        refusal = frozen_verdict(a, b, argv[0])
        if refusal:
            print("deploy-frozen " + refusal, file=sys.stderr)
            return 2
        print("deploy-frozen: the board's image holds the firmware")
        return 0
    total, free = a, b
    refusal = verdict(total)
    if refusal:
        print("deploy " + refusal, file=sys.stderr)
        return 2
    print("deploy: the board has a %d KB heap (%d KB free): .mpy files fit" % (total // 1024, free // 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
