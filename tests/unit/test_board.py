"""The board built from parsed settings: configured values reach the chips, and the layers hold
(hal/ never imports firmware/, firmware/ never imports the simulator)."""
import os

from configs import board, board_config
from hal.board import Board
from hal.sim import machine
from hal.sim.world import World

_RF_CFG_REG = 0x26


def _built(hw):
    world = World(hw, {"start_utc": 1772438100, "end_ms": 60000, "events": []})
    return world, Board(hw, machine, world.clock.sleep_ms)


def test_the_configured_reader_gain_reaches_the_chip():
    for gain in (0, 6, 7):
        world, b = _built(board(reader=dict(board_config()["reader"], gain=gain)))
        b.rfid.init()
        assert (world.rfid.peek(_RF_CFG_REG) >> 4) & 7 == gain, gain    # RFCfgReg bits 6:4
        assert world.rfid.peek(_RF_CFG_REG) & 0x8F == 0x08               # the other bits as they were
    world, b = _built(board())   # sim.json sets no gain: the chip keeps its reset value
    b.rfid.init()
    assert world.rfid.peek(_RF_CFG_REG) == 0x48


def test_the_meter_calibration_reaches_the_chip():
    meter = dict(board_config()["meter"], phases=3, pga=2, ugain=[30000, 31000, 32000], igain=[40000, 41000, 42000],
                 uoffset=[-5, 0, 7], freq_lo_chz=4800, freq_hi_chz=5200)
    world, b = _built(board(meter=meter))
    b.meter.init()
    chip = world.meter
    assert [chip.peek(0x61 + 4 * ph) for ph in range(3)] == [30000, 31000, 32000]
    assert [chip.peek(0x62 + 4 * ph) for ph in range(3)] == [40000, 41000, 42000]
    assert chip.peek(0x63) == 0xFFFB and chip.peek(0x6B) == 7
    assert chip.peek(0x34) == 0x15 and (chip.peek(0x0C), chip.peek(0x0D)) == (4800, 5200)
    assert b.meter.phases == 3


def test_pins_and_parts_come_from_the_settings():
    world, b = _built(board(buzzer={"pin": 21, "active": 0}))
    assert b.buzzer is not None and machine.net(21).level == 1   # active low, off
    assert b.has_rcd and b.wdt is not None and b.button is not None and b.ev_sense == "pilot"
    b.contactor.close()
    assert world.coil and world.closed
    cfg = board_config(ev_sense="pin", plug={"pin": 34, "active": 1})
    for name in ("rcd", "watchdog", "button", "pilot"):
        del cfg[name]
    from firmware.core.settings import board_settings

    world, b = _built(board_settings(cfg))
    assert (b.buzzer, b.pilot, b.wdt, b.button, b.has_rcd) == (None, None, None, None, False)
    assert b.plug is not None and b.plug() == 0 and not b.button_pressed()
    world.plugged = True
    assert b.plug() == 1


def test_a_technicians_board_never_starts_the_watchdog():
    world, b = _built(board())
    assert b.wdt is not None
    b = Board(board(), machine, world.clock.sleep_ms, watchdog=False)   # firmware/ops/tech.py's
    assert b.wdt is None


def _imports(path):
    """The modules a source file imports (top-level names of `import` and `from` lines)."""
    out = []
    with open(path) as f:
        for line in f.read().split("\n"):
            words = line.strip().split()
            if len(words) > 1 and words[0] in ("import", "from"):
                out.append(words[1])
    return out


def py_files(top):
    """The .py files below top (os.walk is not on MicroPython)."""
    out = []
    for name in os.listdir(top):
        path = top + "/" + name
        if os.stat(path)[0] & 0x4000:
            out += py_files(path)
        elif name.endswith(".py"):
            out.append(path)
    return out


def test_hal_never_imports_firmware():
    bad = [(p, m) for p in py_files("hal") for m in _imports(p) if m == "firmware" or m.startswith("firmware.")]
    assert bad == [], bad


def test_firmware_never_imports_the_simulator():
    bad = [(p, m) for p in py_files("firmware") for m in _imports(p) if m.startswith("hal.sim")]
    assert bad == [], bad


def test_the_metering_rig_is_a_test_fixture():
    assert "rig.py" not in os.listdir("hal/sim") and "rig.py" in os.listdir("tests/unit")
