"""Freezes the charger firmware into a custom MicroPython image: the ESP32 (docs/ota.md) or the
board-like unix interpreter of `make mp32` (32-bit objects, float32).

    cd micropython/ports/esp32
    make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/this/project/manifest.py

MicroPython's build runs this file (tools/manifestfile.py) with its folder as the current
directory. It freezes the port's usual modules, umqtt.simple and urequests as pinned in lib/
(run `make setup` first), and the firmware/ and hal/ packages without the simulator (hal/sim). boot.py,
main.py and the JSON settings stay on the filesystem. A slot installed over the air shadows the
frozen firmware/ and hal/ (boot.py puts it before ".frozen" on sys.path).
On the unix port the simulator is frozen too: it is that port's board, and a frozen package cannot
take a subpackage from the filesystem.
"""
import os
import sys


def _port():
    """The port being built, from makemanifest.py's `-v PORT_DIR=...` (make and CMake builds alike)."""
    for arg in sys.argv:
        if arg.startswith("PORT_DIR=") or arg.startswith("-vPORT_DIR="):
            return os.path.basename(arg.split("=", 1)[1].rstrip("/"))
    return ""


_UNIX = _port() == "unix"
if _UNIX:
    include("$(PORT_DIR)/variants/standard/manifest.py")
else:
    include("$(PORT_DIR)/boards/manifest.py")
# the very micropython-lib copies the tests ran against (lib/, sha256-pinned by tools/fetch_lib.py)
package("umqtt", base_path="lib")
package("urequests", base_path="lib")
package("firmware")
if _UNIX:
    package("hal")
else:
    package("hal", files=sorted(n for n in os.listdir("hal") if n.endswith(".py")))
