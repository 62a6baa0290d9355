"""Charger firmware entry point: runs on the board at boot, and as `micropython main.py ...` on a PC.

The one place that chooses the platform: the board's own `machine`, or, when the board config
says "platform": "sim", the simulated world (hal/sim/, never frozen into a board's image).
"""
from firmware import app


def platform(hw, scenario):
    """(machine module, clock, stop condition, console input) for the parsed board settings `hw`."""
    if hw.platform == "sim":
        from hal.sim import machine
        from hal.sim.world import World

        if scenario is None:
            raise ValueError("the sim board needs --scenario (see tools/sim.py)")
        world = World(hw, scenario)
        return machine, world.clock, world.finished, world.console
    import machine

    from firmware.core.clock import Clock
    from hal.console import Console

    return machine, Clock(), lambda: False, Console()


app.run(platform)
