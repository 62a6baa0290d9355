"""Card taps from the RFID reader: one event per tap, robust to how ISO 14443 A cards behave.

Hardware-free: it drives any reader with the MFRC522 driver's methods (init, request, select,
halt, antenna) and reads time from the firmware clock, so the same code runs on the board and
in the simulator. The controller calls poll() a few times per second; poll() never raises.

    reader = CardReader(MFRC522(spi, cs), clock)
    tap = reader.poll()   # None, the UID (bytes) of a new tap, or COLLISION

Each poll wakes the card with WUPA, selects it and halts it again (a selected card would ignore
the next REQA: the "ping-pong" that makes a held card look removed every other poll). A poll that
left cards mid-protocol (collision, CRC error, failed HLTA) makes the next one start with HLTA, which
puts every card back to sleep, so the WUPA after it wakes all cards in the field at once: after a
collision no card is ever read alone while another is still in the field. Only a
clean timeout counts as a miss; after `misses_to_remove` misses in a row the card is removed and
the field is cycled (off for one poll, on the next; cards get a poll interval to power up). The
same card comes back as a new tap only after it was removed and `hold_off_ms` passed; back
sooner, it continues the tap it bounced out of. Collisions, CRC and BCC errors are neither a tap
nor a miss. A driver that raises (OSError from a dead chip, or anything unexpected) marks the
reader failed (`failed`, `error`); init() is retried every `retry_ms` until it works again.
"""
from hal.mfrc522 import CardError, CollisionError

COLLISION = "collision"  # two or more cards in the field: ask for one card

_READ = 0  # field on, reading cards
_INIT = 1  # the driver needs init() (at start and after a failure)
_FIELD_OFF = 2  # field cycle: switch it back on at the next poll


class CardReader:
    def __init__(self, driver, clock, hold_off_ms=2000, misses_to_remove=3, retry_ms=5000):
        if misses_to_remove < 1:
            raise ValueError("misses_to_remove must be at least 1")
        self._driver = driver
        self._clock = clock
        self._hold_off_ms = hold_off_ms
        self._misses_to_remove = misses_to_remove
        self._retry_ms = retry_ms
        self.failed = False
        self.error = None
        self.present = None  # UID of the card in the field now (already reported), or None
        self._phase = _INIT
        self._failed_at = 0
        self._misses = 0
        self._collided = False  # a collision was reported and has not cleared yet
        self._gone_uid = None  # last card removed, ignored until its hold-off ends
        self._gone_at = 0
        self._stirred = False  # last poll left a card mid-protocol (READY or ACTIVE)

    def poll(self):
        """None, the UID bytes of a new tap, or COLLISION. Never raises."""
        try:
            if self._phase == _READ:
                return self._read()
            if self._phase == _FIELD_OFF:
                self._driver.antenna(True)
                self._phase = _READ
                return None
            self._init()
        except Exception as e:  # a dead bus or a driver bug must not stop the controller
            self._fail(e)
        return None

    def _init(self):
        clock = self._clock
        if self.failed and clock.ticks_diff(clock.ticks_ms(), self._failed_at) < self._retry_ms:
            return
        self._driver.init()
        self.failed = False
        self.error = None
        self._gone_at = clock.ticks_ms()  # a card held through the outage is still the same tap
        self._stirred = False
        self._misses = 0
        self._phase = _READ  # the field just came on: read at the next poll

    def _fail(self, e):
        self.failed = True
        self.error = str(e) if isinstance(e, OSError) else "%s: %s" % (type(e).__name__, e)
        self._failed_at = self._clock.ticks_ms()
        self._phase = _INIT
        if self.present is not None:
            self._gone_uid = self.present
            self.present = None

    def _read(self):
        clock = self._clock
        now = clock.ticks_ms()
        if self._gone_uid is not None and clock.ticks_diff(now, self._gone_at) >= self._hold_off_ms:
            self._gone_uid = None  # hold-off over (forgotten now, so tick wrap cannot revive it)
        d = self._driver
        try:
            if self._stirred:
                self._settle()
            atqa = d.request(True)
            if atqa is None:
                return self._miss(now)
            self._answered()
            uid = d.select()
            if uid is None:
                return None
        except CollisionError:
            self._answered()
            if self._collided:
                return None
            self._collided = True
            return COLLISION
        except CardError:  # CRC, BCC, length: no valid card this time
            self._answered()
            return None
        try:
            d.halt()  # asleep until the next WUPA: no REQA ping-pong
            self._stirred = False
        except CardError:
            pass  # the UID was read cleanly; the card stays ACTIVE until the next poll's HLTA
        return self._seen(uid, now)

    def _settle(self):
        """HLTA sends every READY/ACTIVE card back to IDLE/HALT, so one WUPA wakes all cards
        together: a card arriving after a collision cannot answer alone while others stay silent."""
        try:
            self._driver.halt()
        except CardError:
            pass  # something answered HLTA: the WUPA below still wakes every card
        self._stirred = False

    def _answered(self):
        """Something answered: not a miss, and it may be left READY/ACTIVE until halted."""
        self._misses = 0
        self._stirred = True

    def _miss(self, now):
        self._collided = False
        if self.present is None:
            return None
        self._misses += 1
        if self._misses < self._misses_to_remove:
            return None
        self._gone_uid = self.present
        self._gone_at = now
        self.present = None
        self._misses = 0
        self._driver.antenna(False)  # every card in the field restarts from power-off
        self._phase = _FIELD_OFF
        return None

    def _seen(self, uid, now):
        self._collided = False
        if uid == self.present:
            return None
        if self.present is not None:  # another card took its place between two polls
            self._gone_uid = self.present
            self._gone_at = now
        self.present = uid
        if uid == self._gone_uid:  # back within its hold-off: the same tap
            self._gone_uid = None
            return None
        return uid
