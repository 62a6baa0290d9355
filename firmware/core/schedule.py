"""Periodic tasks of the cooperative loop, in clock ticks (wrap-safe).

    every = Every(clock, 100)
    if every.due(now): sample()      # at most once per period; a late loop does not bunch up
"""


class Every:
    def __init__(self, clock, period_ms):
        self.clock = clock
        self.period_ms = period_ms
        self.next = clock.ticks_ms()

    def due(self, now):
        c = self.clock
        late = c.ticks_diff(now, self.next)
        if late < 0:
            return False
        # keep the cadence, but after a long stall restart from now instead of catching up
        self.next = c.ticks_add(self.next if late < self.period_ms else now, self.period_ms)
        return True

    def restart(self, now):
        """Count the period from now (e.g. from the start of a session)."""
        self.next = self.clock.ticks_add(now, self.period_ms)

    def wait_ms(self, now):
        """Milliseconds until due (0 if already due)."""
        return max(0, self.clock.ticks_diff(self.next, now))
