"""The offered current: the lowest of board, cable, card, thermal ladder and charging schedules."""
from check import raises
from configs import board
from firmware.charging.limits import Limits, from_settings
from firmware.core.clock import BASE

T0 = 1772438400  # 2026-03-02T08:00:00Z


def test_each_limit_can_bind():
    lim = Limits(32, cable_max_a=20, thermal=(60, 80, 10, 5))
    assert lim.offer_a(T0) == 20 and lim.reason == "cable"
    assert lim.offer_a(T0, card_max_a=16) == 16 and lim.reason == "card"
    assert lim.offer_a(T0, card_max_a=16, temp_c=65) == 10 and lim.reason == "thermal"
    lim = Limits(32, thermal=(60, 80, 10, 5))
    assert lim.offer_a(T0, card_max_a=40, temp_c=20) == 32 and lim.reason == "board"
    lim.set_profile("station_max", {"periods": [[0, 8]]})
    assert lim.offer_a(T0) == 8 and lim.reason == "schedule"


def test_ties_name_the_earlier_limit():
    lim = Limits(16, cable_max_a=16)
    assert lim.offer_a(T0, card_max_a=16) == 16 and lim.reason == "board"


def test_unknown_cable_uses_the_board_maximum():
    assert Limits(25).offer_a(T0) == 25
    assert Limits(25, cable_max_a=None).offer_a(T0) == 25


def test_below_six_amps_is_no_offer():
    lim = Limits(32)
    assert lim.offer_a(T0, card_max_a=5) == 0 and lim.reason == "card"
    lim.set_profile("station_max", {"periods": [[0, 6]]})
    assert lim.offer_a(T0) == 6


def test_thermal_ladder_with_hysteresis():
    lim = Limits(32, thermal=(60, 80, 10, 5))
    temps = (50, 59, 60, 70, 79, 80, 90, 76, 75, 74, 60, 56, 55, 54, 59, 60)
    got = [lim.offer_a(T0, temp_c=t) for t in temps]
    assert got == [32, 32, 10, 10, 10, 0, 0, 0, 0, 10, 10, 10, 10, 32, 32, 10]
    assert lim.thermal_step == 1


def test_thermal_steps_down_at_once_and_keeps_its_step_without_a_reading():
    lim = Limits(32, thermal=(60, 80, 0, 5))
    assert lim.offer_a(T0, temp_c=85) == 0 and lim.reason == "thermal"
    assert lim.offer_a(T0, temp_c=None) == 0
    assert lim.offer_a(T0, temp_c=40) == 32                       # below both thresholds
    assert lim.offer_a(T0, temp_c=65) == 0                        # reduced_a = 0: stop


def test_station_schedule_from_its_start():
    lim = Limits(32)
    lim.set_profile("station_max", {"start_schedule": T0, "periods": [[0, 16], [3600, 10]]})
    assert lim.offer_a(T0 - 1) == 32                              # not started yet
    assert lim.offer_a(T0) == 16
    assert lim.offer_a(T0 + 3599) == 16
    assert lim.offer_a(T0 + 3600) == 10 and lim.reason == "schedule"


def test_absolute_offsets_without_a_start():
    lim = Limits(32)
    lim.set_profile("station_max", {"periods": [[0, 20], [T0, 12]]})
    assert lim.offer_a(T0 - 1) == 20 and lim.offer_a(T0) == 12


def test_daily_recurrence():
    lim = Limits(32)
    midnight = T0 - 8 * 3600
    lim.set_profile("station_max", {"start_schedule": midnight, "recurrency": "Daily",
                                    "periods": [[0, 32], [7 * 3600, 6], [22 * 3600, 32]]})
    assert lim.offer_a(midnight + 86400 * 3 + 6 * 3600) == 32
    assert lim.offer_a(midnight + 86400 * 3 + 12 * 3600) == 6 and lim.reason == "schedule"   # 0 A: refused
    assert lim.offer_a(midnight + 86400 * 3 + 23 * 3600) == 32


def test_transaction_schedule_counts_from_the_session_start():
    lim = Limits(32)
    lim.set_profile("tx_default", {"periods": [[0, 6], [900, 24]]})
    assert lim.offer_a(T0) == 32                                  # no session: does not apply
    start = T0 + 100
    assert lim.offer_a(start + 10, session_start=start) == 6
    assert lim.offer_a(start + 900, session_start=start) == 24


def test_higher_stack_level_wins_within_a_kind_and_min_over_kinds():
    lim = Limits(32)
    lim.set_profile("station_max", {"stack_level": 0, "periods": [[0, 10]]})
    lim.set_profile("station_max", {"stack_level": 2, "periods": [[0, 20]],
                                    "valid_from": T0, "valid_to": T0 + 60})
    assert lim.offer_a(T0 - 1) == 10                              # level 2 not valid yet
    assert lim.offer_a(T0) == 20                                  # level 2 wins, though higher
    assert lim.offer_a(T0 + 60) == 10                             # expired: back to level 0
    lim.set_profile("tx_default", {"periods": [[0, 16]]})
    assert lim.offer_a(T0, session_start=T0) == 16            # min(20, 16)
    lim.set_profile("station_max", {"stack_level": 2, "periods": [[0, 12]]})   # replaces level 2
    assert lim.offer_a(T0 + 3600, session_start=T0) == 12


def test_duration_ends_a_schedule():
    lim = Limits(32)
    lim.set_profile("tx_default", {"duration": 600, "periods": [[0, 8]]})
    assert lim.offer_a(T0 + 599, session_start=T0) == 8
    assert lim.offer_a(T0 + 600, session_start=T0) == 32


def test_clear_profiles():
    lim = Limits(32)
    lim.set_profile("station_max", {"stack_level": 1, "periods": [[0, 10]]})
    lim.set_profile("station_max", {"stack_level": 3, "periods": [[0, 20]]})
    lim.clear_profile("station_max", 3)
    assert lim.offer_a(T0) == 10
    lim.clear_profile("station_max")
    assert lim.offer_a(T0) == 32 and lim.schedule_a(T0) is None


def test_invalid_profiles_name_the_field_and_keep_the_old_one():
    lim = Limits(32)
    lim.set_profile("station_max", {"periods": [[0, 10]]})
    bad = (
        ({"periods": []}, "periods"),
        ({"periods": [[5, 10]]}, "first period"),
        ({"periods": [[0, 10], [0, 12]]}, "periods[1]: start_offset_s"),
        ({"periods": [[0, 10], [60, -1]]}, "periods[1]: limit_a"),
        ({"periods": [[0, 10.5]]}, "limit_a"),
        ({"periods": [[0, 10, 3]]}, "periods[0]"),
        ({"periods": [[0, 10]], "stack_level": -1}, "stack_level"),
        ({"periods": [[0, 10]], "valid_from": T0, "valid_to": T0}, "valid_to"),
        ({"periods": [[0, 10]], "stacklevel": 1}, "stacklevel"),
        ({"periods": [[0, 10]], "recurrency": "Daily"}, "start_schedule"),
        ({"periods": [[0, 10]], "start_schedule": 0, "recurrency": "Monthly"}, "recurrency"),
        ({"periods": [[0, 10], [86400, 5]], "start_schedule": 0, "recurrency": "Daily"}, "start_offset_s"),
        ({"periods": [[0, 10]], "duration": 0}, "duration"),
        ("nope", "must be an object"),
    )
    for prof, field in bad:
        e = raises(ValueError, lim.set_profile, "station_max", prof)
        assert field in str(e) and "station_max" in str(e), (prof, str(e))
    e = raises(ValueError, lim.set_profile, "tx_default", {"periods": [[0, 10]], "start_schedule": T0})
    assert "start_schedule" in str(e)
    assert "kind" in str(raises(ValueError, lim.set_profile, "tx_max", {"periods": [[0, 10]]}))
    assert lim.offer_a(T0) == 10                                  # the good profile is still there


def test_a_station_max_below_the_minimum_offer_is_refused_a_tx_default_pause_is_not():
    lim = Limits(32)
    for low in (0, 5):   # station_max 0 A: nobody could charge, for good
        e = raises(ValueError, lim.set_profile, "station_max", {"periods": [[0, 16], [60, low]]})
        assert "periods[1]: limit_a must be an integer 6..999" in str(e) and "nobody could charge" in str(e)
    assert lim.offer_a(T0) == 32 and lim.schedule_a(T0) is None
    lim.set_profile("station_max", {"periods": [[0, 6]]})
    lim.set_profile("tx_default", {"periods": [[0, 0], [600, 16]]})   # one session's pause stays possible
    assert lim.offer_a(T0 + 10, session_start=T0) == 0


def test_stack_levels_are_bounded():
    lim = Limits(32)
    for level in range(4):
        lim.set_profile("station_max", {"stack_level": level, "periods": [[0, 30 - level]]})
    e = raises(ValueError, lim.set_profile, "station_max", {"stack_level": 9, "periods": [[0, 10]]})
    assert "stack levels" in str(e)
    lim.set_profile("station_max", {"stack_level": 3, "periods": [[0, 7]]})   # replacing is fine
    assert lim.offer_a(T0) == 7


def test_bad_construction():
    assert "max_current_a" in str(raises(ValueError, Limits, 5))
    assert "cable_max_a" in str(raises(ValueError, Limits, 32, cable_max_a=0))
    assert "thermal" in str(raises(ValueError, Limits, 32, thermal=(80, 60, 10, 5)))
    assert "thermal" in str(raises(ValueError, Limits, 32, thermal=(60, 80, 10)))


def _from_board(limits):
    return from_settings(board(limits=limits).limits)


def test_from_board_settings():
    lim = _from_board({"max_current_a": 32, "cable_max_a": 20,
                       "thermal": {"t1_c": 60, "t2_c": 80, "reduced_a": 10, "hyst_c": 5}})
    assert lim.offer_a(T0, temp_c=70) == 10 and lim.reason == "thermal"
    lim = _from_board({"max_current_a": 16, "cable_max_a": None})
    assert lim.offer_a(T0) == 16 and lim.reason == "board"
    # one default per thermal key (the safety checks use the same ones): t2_c defaults to 85
    lim = _from_board({"max_current_a": 32, "thermal": {"t1_c": 60}})
    assert lim.offer_a(T0, temp_c=70) == 16 and lim.offer_a(T0, temp_c=85) == 0
    e = raises(ValueError, _from_board, {"max_current_a": 32, "thermal": {"t1_c": 90}})   # t2_c must be above
    assert "limits.thermal.t2_c" in str(e)
    e = raises(ValueError, _from_board, {"max_current_a": 32, "cable_max_a": "20"})
    assert "limits.cable_max_a" in str(e)


def test_counted_from_the_clock_base_the_answers_are_the_same():
    # the firmware asks with clock.seconds() (UTC - BASE: small ints on 32 bits); profiles from
    # before BASE, absolute offsets, recurrences, durations and far validity give the same limits
    profiles = [("station_max", {"stack_level": 0, "periods": [[0, 20], [T0 + 7200, 10], [T0 + 9000, 16]]}),
                ("station_max", {"stack_level": 1, "periods": [[0, 12], [3 * 3600, 8]], "recurrency": "Daily",
                                 "start_schedule": BASE - 86400 * 400 + 3600, "duration": 86400 * 401,
                                 "valid_from": 0, "valid_to": 0xFFFFFFFF}),
                ("station_max", {"stack_level": 2, "periods": [[0, 7]], "start_schedule": BASE - 10,
                                 "duration": 5}),   # over before BASE: never runs from then on
                ("station_max", {"stack_level": 3, "periods": [[0, 6], [600, 30]], "recurrency": "Weekly",
                                 "start_schedule": T0 + 100, "valid_to": T0 + 86400 * 9}),
                ("tx_default", {"periods": [[0, 9], [1800, 32]], "valid_from": T0 - 5})]
    unix, based = Limits(32), Limits(32, base=BASE)
    for kind, prof in profiles:
        unix.set_profile(kind, prof)
        based.set_profile(kind, prof)
    for t in list(range(T0 - 50, T0 + 86400 * 10, 1711)) + [BASE, BASE + 1, T0 + 7200, T0 + 9000]:
        for start in (None, t - 1799, t - 1800):
            want = unix.offer_a(t, start), unix.reason
            assert (based.offer_a(t - BASE, None if start is None else start - BASE), based.reason) == want, t
