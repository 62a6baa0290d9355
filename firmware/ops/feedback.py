"""What the driver sees: LED patterns for ready, accepted, refused, charging, finished, fault.

A pattern is a list of (lit, ms) steps; one-shot patterns fall back to the steady state.

    fb = Feedback(led, clock, buzzer=None); fb.steady("charging"); fb.flash("refused"); fb.tick()
"""

PATTERNS = {
    "ready": ((True, 100), (False, 2900)),      # short blip: alive, free
    "waiting": ((True, 500), (False, 500)),     # authorized, plug in the EV
    "charging": ((True, 1500), (False, 500)),   # mostly on
    "finished": ((True, 3000),),                # solid: unplug
    "fault": ((True, 100), (False, 100)),       # fast blink
    "off": ((False, 3000),),
    "accepted": ((True, 1000),),                # one long flash
    "refused": ((True, 100), (False, 100), (True, 100), (False, 100), (True, 100), (False, 400)),
}


class Feedback:
    def __init__(self, led, clock, buzzer=None):
        self._led = led
        self._buzzer = buzzer   # sounds the one-shot patterns only (accepted, refused)
        self._clock = clock
        self._steady = "ready"
        self._flash = None
        self._steps = PATTERNS["ready"]
        self._i = 0
        self._due = clock.ticks_ms()
        self.shown = "ready"  # the pattern on show, for the log and tests

    def steady(self, name):
        if name != self._steady:
            self._steady = name
            if self._flash is None:
                self._start(name)

    def flash(self, name):
        """Show a one-shot pattern (accepted, refused) then return to the steady one."""
        self._flash = name
        self._start(name)

    def _start(self, name):
        self.shown = name
        self._steps = PATTERNS[name]
        self._i = 0
        self._due = self._clock.ticks_ms()
        self.tick()

    def tick(self):
        now = self._clock.ticks_ms()
        if self._clock.ticks_diff(now, self._due) < 0:
            return
        if self._i >= len(self._steps):
            if self._flash is not None:
                self._flash = None
                self._start(self._steady)
                return
            self._i = 0
        lit, ms = self._steps[self._i]
        self._led.set(lit)
        if self._buzzer is not None:
            self._buzzer.set(lit and self._flash is not None)
        self._i += 1
        self._due = self._clock.ticks_add(now, ms)
