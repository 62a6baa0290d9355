"""Contactor: a coil output and an auxiliary (mirror) contact that reports what the poles did.

    k = Contactor(Pin(26, Pin.OUT, value=0), Pin(27, Pin.IN), aux_closed=1)
    k.close(); ...; if not k.confirmed(): ...   # the aux contact disagrees with the command
"""


class Contactor:
    def __init__(self, coil, aux=None, aux_closed=1):
        self._coil = coil
        self._aux = aux
        self._aux_closed = aux_closed
        self.commanded = False
        self.cycles = 0  # close operations since boot: contactor wear
        coil(0)

    def restore(self, cycles):
        """Continue counting from the persisted lifetime count."""
        self.cycles = cycles

    def close(self):
        if not self.commanded:
            self.cycles += 1
        self.commanded = True
        self._coil(1)

    def open(self):
        self.commanded = False
        self._coil(0)

    def feedback(self):
        """True if the auxiliary contact reports closed poles, None without an aux contact."""
        if self._aux is None:
            return None
        return self._aux() == self._aux_closed

    def confirmed(self):
        """The poles are where they were commanded (always True without an aux contact)."""
        fb = self.feedback()
        return fb is None or fb == self.commanded
