"""The technician's console commands (firmware/ops/console.py): typed while the charger runs,
read-only, bounded, never waiting; a bad line or a failing helper is reported, never raised."""
from firmware.ops import tech
from firmware.ops.console import HELP, Console
from hal.sim.clock import VirtualClock
from hal.sim.world import Typed


def _rig():
    port, clock, out = Typed(), VirtualClock(), []
    return port, clock, out, Console(port, clock, out.append)


def _type(port, text):
    for b in text.encode():
        port.typed(b)


def _ticks(c, clock, n=1):
    for _ in range(n):
        assert c.tick() is None   # the loop's stop test: never asks the loop to end
        clock.ms += 100


def test_help_and_unknown_commands_answer_and_run_nothing():
    port, clock, out, c = _rig()
    _type(port, "help\r\nreboot now\n")
    _ticks(c, clock, 3)
    assert out == ["> help", HELP, "> reboot now", "console: unknown command 'reboot'; " + HELP[9:]]


def test_bad_arguments_and_long_lines_are_refused_whole():
    port, clock, out, c = _rig()
    _type(port, "log 0\nsessions x\nfaults 3\nlog 101\n" + "s" * 41 + "\n\n")
    _ticks(c, clock, 8)
    assert out == ["> log 0", "console: log takes one count, 1..100",
                   "> sessions x", "console: sessions takes one count, 1..100",
                   "> faults 3", "console: faults takes no argument",
                   "> log 101", "console: log takes one count, 1..100",
                   "console: a line over 40 characters, ignored"]


def test_one_command_per_look_and_a_flood_is_taken_in_bounded_bites():
    port, clock, out, c = _rig()
    _type(port, "help\nhelp\n")
    c.tick()
    assert out == ["> help", HELP]
    c.tick()                      # the same moment: the port is not looked at again yet
    assert len(out) == 2
    clock.ms += 100
    c.tick()
    assert len(out) == 4
    _type(port, "x" * 300)        # the receive buffer keeps 256 of them
    taken = 0
    while port.read_byte() is not None:
        taken += 1
    assert taken == 256
    _type(port, "y" * 200)
    clock.ms += 100
    c.tick()
    left = 0
    while port.read_byte() is not None:
        left += 1
    assert left == 200 - 48       # one look takes at most 48 bytes


def test_the_helpers_run_and_a_failing_one_is_reported():
    port, clock, out, c = _rig()
    said = []
    saved = tech.say, tech.faults
    tech.say = said.append

    def broken(data=None):
        raise ValueError("journal unreadable")

    try:
        _type(port, "sessions 2\nfaults\n")
        tech.faults = broken
        _ticks(c, clock, 2)
    finally:
        tech.say, tech.faults = saved
    assert out[0] == "> sessions 2" and said, (out, said)   # the helper printed (whatever the data holds)
    assert out[1:] == ["> faults", "console: faults failed: ValueError: journal unreadable"]


def test_no_port_no_console():
    c = Console(None, VirtualClock(), [].append)
    assert c.tick() is None
