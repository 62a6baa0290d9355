"""Status LED on one GPIO, active high or low.

    led = Led(Pin(2, Pin.OUT), active=1); led.set(True)
"""


class Led:
    def __init__(self, pin, active=1):
        self._pin = pin
        self._active = active
        self.lit = False
        pin(1 - active)

    def set(self, lit):
        self.lit = bool(lit)
        self._pin(self._active if lit else 1 - self._active)
