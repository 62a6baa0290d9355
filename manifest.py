"""Freezes the charger firmware into a custom MicroPython image for the ESP32 (docs/ota.md).

    cd micropython/ports/esp32
    make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/this/project/manifest.py

MicroPython's build runs this file (tools/manifestfile.py) with its folder as the current
directory. It freezes the port's usual modules, umqtt.simple and urequests as pinned in lib/
(run `make setup` first), and the firmware/ and hal/ packages without the simulator (hal/sim). boot.py,
main.py and the JSON settings stay on the filesystem. A slot installed over the air shadows the
frozen firmware/ and hal/ (boot.py puts it before ".frozen" on sys.path).
"""
import os

include("$(PORT_DIR)/boards/manifest.py")
# the very micropython-lib copies the tests ran against (lib/, sha256-pinned by tools/fetch_lib.py)
package("umqtt", base_path="lib")
package("urequests", base_path="lib")
package("firmware")
package("hal", files=sorted(n for n in os.listdir("hal") if n.endswith(".py")))
