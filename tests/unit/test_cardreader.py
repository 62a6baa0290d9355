"""CardReader over the real MFRC522 driver on the simulated chip, in virtual time."""
import micropython

from firmware.auth.cardreader import COLLISION, CardReader
from hal.mfrc522 import MFRC522
from hal.sim import machine
from hal.sim.clock import VirtualClock
from hal.sim.mfrc522 import SimCard, SimMFRC522

A = b"\x3a\x4f\x12\x9c"
B = b"\x04\x1a\x2b\x3c\x4d\x5e\x6f"
C = b"\x71\x22\x33\x44"
POLL_MS = 250  # the controller polls four times a second


def _rig(ticks0=0, **kw):
    machine.reset()
    chip = SimMFRC522()
    machine.bus(1).attach(chip, cs=15)
    rfid = MFRC522(machine.SPI(1), machine.Pin(15, machine.Pin.OUT, value=1))
    clock = VirtualClock(ticks0=ticks0)
    reader = CardReader(rfid, clock, **kw)
    return chip, reader, clock


def _polls(reader, clock, n):
    """Results of n polls, POLL_MS apart."""
    out = []
    for _ in range(n):
        out.append(reader.poll())
        clock.sleep_ms(POLL_MS)
    return out


def _events(results):
    return [r for r in results if r is not None]


def _started(**kw):
    chip, reader, clock = _rig(**kw)
    assert _polls(reader, clock, 1) == [None]  # first poll: init, field on
    assert not reader.failed
    return chip, reader, clock


def test_first_poll_initialises_then_a_tap_is_reported():
    chip, reader, clock = _rig()
    assert not chip.field
    assert reader.poll() is None
    assert chip.field and not reader.failed and reader.error is None
    chip.place(SimCard(A))
    assert reader.poll() == A
    assert reader.present == A


def test_one_tap_one_event_while_the_card_is_held():
    chip, reader, clock = _started()
    card = SimCard(A)
    chip.place(card)
    assert _events(_polls(reader, clock, 40)) == [A]  # ten seconds on the reader
    assert card.state == "HALT"  # WUPA + select + HLTA every poll


def test_reqa_ping_pong_does_not_make_a_held_card_look_removed():
    chip, reader, clock = _started(misses_to_remove=1)
    chip.place(SimCard(B))
    assert _events(_polls(reader, clock, 20)) == [B]
    assert reader.present == B  # with REQA a single-miss policy would have lost it


def test_removal_after_consecutive_misses_then_the_field_is_cycled():
    chip, reader, clock = _started()
    card = SimCard(A)
    chip.place(card)
    assert reader.poll() == A
    chip.remove(card)
    assert _polls(reader, clock, 2) == [None, None]
    assert reader.present == A and chip.field  # two misses: still there
    assert reader.poll() is None
    assert reader.present is None and not chip.field  # third miss: removed, field off
    assert reader.poll() is None
    assert chip.field  # back on at the next poll


def test_same_card_again_needs_removal_plus_hold_off():
    chip, reader, clock = _started(hold_off_ms=2000)
    card = SimCard(A)
    chip.place(card)
    assert reader.poll() == A
    chip.remove(card)
    _polls(reader, clock, 4)  # three misses, field off, field on
    assert reader.present is None
    chip.place(card)  # put back at once: inside the hold-off
    assert _events(_polls(reader, clock, 20)) == []
    assert reader.present == A  # it bounced back into the same tap
    chip.remove(card)
    _polls(reader, clock, 4)
    clock.sleep_ms(2000)
    chip.place(card)
    assert _events(_polls(reader, clock, 4)) == [A]  # a new tap


def test_another_card_during_the_hold_off_is_reported_at_once():
    chip, reader, clock = _started()
    a = SimCard(A)
    chip.place(a)
    assert reader.poll() == A
    chip.remove(a)
    _polls(reader, clock, 4)
    chip.place(SimCard(C))
    assert _events(_polls(reader, clock, 2)) == [C]


def test_card_swapped_between_two_polls_is_a_new_tap():
    chip, reader, clock = _started()
    a, b = SimCard(A), SimCard(B)
    chip.place(a)
    assert reader.poll() == A
    chip.remove(a)
    chip.place(b)
    assert _events(_polls(reader, clock, 4)) == [B]


def test_two_cards_give_one_collision_event_then_the_remaining_card():
    chip, reader, clock = _started()
    a, b = SimCard(A), SimCard(C)  # equal ATQA: the collision shows in anticollision
    chip.place(a)
    chip.place(b)
    assert _events(_polls(reader, clock, 12)) == [COLLISION]
    assert reader.present is None
    chip.remove(b)
    assert _events(_polls(reader, clock, 4)) == [A]


def test_collision_while_a_card_is_held_does_not_remove_it():
    chip, reader, clock = _started()
    a, b = SimCard(A), SimCard(B)  # different ATQA: the collision shows in REQA/WUPA
    chip.place(a)
    assert reader.poll() == A
    chip.place(b)
    assert _events(_polls(reader, clock, 12)) == [COLLISION]  # no miss in between
    assert reader.present == A
    chip.remove(b)
    assert _events(_polls(reader, clock, 8)) == []  # A still held: no second event
    chip.place(b)
    chip.remove(b)
    assert _events(_polls(reader, clock, 8)) == []  # out again before a poll saw it


def test_new_collision_after_the_first_one_cleared_is_reported_again():
    chip, reader, clock = _started()
    a, b = SimCard(A), SimCard(C)
    chip.place(a)
    chip.place(b)
    assert reader.poll() == COLLISION
    chip.remove(a)
    chip.remove(b)
    _polls(reader, clock, 2)
    chip.place(a)
    chip.place(b)
    assert _events(_polls(reader, clock, 4)) == [COLLISION]


def test_crc_errors_are_no_tap_then_a_good_read_is():
    chip, reader, clock = _started()
    chip.crc_errors = 2
    chip.place(SimCard(A))
    assert _polls(reader, clock, 2) == [None, None]
    assert chip.crc_errors == 0
    assert reader.poll() == A


def test_protocol_errors_are_not_misses_for_a_held_card():
    chip, reader, clock = _started()
    card = SimCard(B)
    chip.place(card)
    assert reader.poll() == B
    chip.fault = "garbage"
    assert _events(_polls(reader, clock, 20)) == []
    assert reader.present == B  # garbage is not absence
    chip.crc_errors = 1000
    chip.fault = None
    assert _events(_polls(reader, clock, 20)) == []
    assert reader.present == B
    chip.crc_errors = 0
    chip.remove(card)
    _polls(reader, clock, 3)
    assert reader.present is None


def test_garbage_never_becomes_a_tap():
    chip, reader, clock = _started()
    chip.fault = "garbage"
    chip.place(SimCard(A))
    assert _events(_polls(reader, clock, 20)) == []
    assert not reader.failed
    chip.fault = None
    assert _events(_polls(reader, clock, 3)) == [A]


def test_dead_chip_at_start_marks_failed_and_retries_init():
    chip, reader, clock = _rig(retry_ms=5000)
    chip.fault = "silent"
    assert reader.poll() is None
    assert reader.failed
    assert reader.error == "MFRC522 not responding (VersionReg 0x00)"
    chip.fault = None
    chip.place(SimCard(A))
    assert _events(_polls(reader, clock, 19)) == []  # 4.75 s: no retry yet
    assert reader.failed
    soft_resets = chip.soft_resets
    clock.sleep_ms(5000 - 19 * POLL_MS)
    assert reader.poll() is None  # retry: init works, field on
    assert not reader.failed and reader.error is None
    assert chip.soft_resets == soft_resets + 1
    assert reader.poll() == A


def test_chip_dying_mid_operation_then_coming_back():
    chip, reader, clock = _started(retry_ms=1000)
    card = SimCard(A)
    chip.place(card)
    assert reader.poll() == A
    chip.fault = "silent"
    assert reader.poll() is None
    assert reader.failed and "never finished" in reader.error
    assert _polls(reader, clock, 4) == [None] * 4  # retried at 1 s, still dead
    assert reader.failed
    chip.fault = None
    assert _events(_polls(reader, clock, 12)) == []  # recovered; A held throughout: same tap
    assert not reader.failed and reader.present == A


def test_poll_never_raises_even_on_a_driver_bug():
    class _Broken:
        def init(self):
            pass

        def request(self, wakeup=False):
            raise IndexError("bug")

    reader = CardReader(_Broken(), VirtualClock())
    assert reader.poll() is None  # init
    assert reader.poll() is None
    assert reader.failed and reader.error == "IndexError: bug"


def test_hold_off_works_across_the_ticks_wrap():
    chip, reader, clock = _started(ticks0=(1 << 30) - 3000)
    card = SimCard(A)
    chip.place(card)
    assert reader.poll() == A
    chip.remove(card)
    _polls(reader, clock, 4)
    chip.place(card)
    assert _events(_polls(reader, clock, 8)) == []  # ticks wrapped meanwhile: still held off
    chip.remove(card)
    _polls(reader, clock, 4)
    clock.sleep_ms(2500)
    chip.place(card)
    assert _events(_polls(reader, clock, 2)) == [A]


def test_polls_with_no_card_allocate_nothing():
    chip, reader, clock = _started()
    card = SimCard(A)
    chip.place(card)
    assert reader.poll() == A
    chip.remove(card)
    seen = 0
    micropython.heap_lock()  # on MicroPython any allocation now raises MemoryError
    try:
        for _ in range(8):  # three misses, field off, field on, empty polls
            if reader.poll() is not None:
                seen += 1
            clock.sleep_ms(POLL_MS)
    finally:
        micropython.heap_unlock()
    assert seen == 0 and not reader.failed
    assert reader.present is None and chip.field


def test_a_card_arriving_after_a_collision_is_not_a_tap_while_the_others_stay():
    chip, reader, clock = _started(hold_off_ms=2000)
    a, b, c = SimCard(A), SimCard(B), SimCard(C)
    chip.place(a)
    assert reader.poll() == A
    chip.place(b)
    assert reader.poll() == COLLISION  # a and b both left mid-protocol (READY)
    chip.place(c)  # a third card arrives before the next poll
    assert _events(_polls(reader, clock, 12)) == []  # three cards: still a collision, never C
    assert reader.present == A
    chip.remove(b)
    chip.remove(c)
    clock.sleep_ms(3000)  # well past any hold-off
    assert _events(_polls(reader, clock, 12)) == []  # A never moved: no second tap
    assert reader.present == A


def test_after_a_collision_the_remaining_card_alone_is_one_tap():
    chip, reader, clock = _started()
    b, c = SimCard(B), SimCard(C)
    chip.place(b)
    chip.place(c)
    assert reader.poll() == COLLISION
    chip.remove(b)
    assert _events(_polls(reader, clock, 12)) == [C]
    assert reader.present == C
