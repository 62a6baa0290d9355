"""Local time with a fixed offset and EU/US daylight saving, in integers, without a tz database."""
from check import raises
from firmware.billing.localtime import LocalTime, weekday
from firmware.core.timefmt import days_from_civil, parse_iso


def test_eu_transitions_are_last_sundays_at_0100_utc():
    tz = LocalTime(60, "EU")
    assert tz.transitions(2026) == (parse_iso("2026-03-29T01:00:00Z"), parse_iso("2026-10-25T01:00:00Z"))
    assert tz.transitions(2027) == (parse_iso("2027-03-28T01:00:00Z"), parse_iso("2027-10-31T01:00:00Z"))


def test_us_transitions_follow_local_clock_at_0200():
    tz = LocalTime(-300, "US")   # New York: EST, EDT
    assert tz.transitions(2026) == (parse_iso("2026-03-08T07:00:00Z"), parse_iso("2026-11-01T06:00:00Z"))
    assert tz.local(parse_iso("2026-07-04T16:00:00Z"))[:5] == (2026, 7, 4, 12, 0)
    assert tz.local(parse_iso("2026-12-24T16:00:00Z"))[:5] == (2026, 12, 24, 11, 0)


def test_spring_forward_skips_an_hour_of_local_clock():
    tz = LocalTime(60, "EU")
    before = parse_iso("2026-03-29T00:59:59Z")
    assert tz.local(before) == (2026, 3, 29, 1, 59, 59, 6)
    assert tz.local(before + 1) == (2026, 3, 29, 3, 0, 0, 6)


def test_fall_back_repeats_an_hour_of_local_clock():
    tz = LocalTime(60, "EU")
    before = parse_iso("2026-10-25T00:59:59Z")
    assert tz.local(before)[3:6] == (2, 59, 59)
    assert tz.local(before + 1)[3:6] == (2, 0, 0)
    assert tz.offset(before) == 7200 and tz.offset(before + 1) == 3600


def test_weekday_is_monday_zero():
    assert weekday(days_from_civil(2026, 3, 2)) == 0     # a Monday
    assert weekday(0) == 3                                # 1970-01-01 was a Thursday
    assert LocalTime(0).local(parse_iso("2026-03-08T12:00:00Z"))[6] == 6


def test_next_clock_finds_local_boundaries_and_dst_jumps():
    tz = LocalTime(60, "EU")
    night = (6 * 60, 22 * 60)                       # 06:00 and 22:00 local
    t = parse_iso("2026-03-28T20:00:00Z")           # 21:00 CET
    t = tz.next_clock(t, night)
    assert t == parse_iso("2026-03-28T21:00:00Z")    # 22:00 CET
    t = tz.next_clock(t, night)
    assert t == parse_iso("2026-03-29T01:00:00Z")    # the clock jumps 02:00 -> 03:00 first
    t = tz.next_clock(t, night)
    assert t == parse_iso("2026-03-29T04:00:00Z")    # 06:00 CEST
    assert tz.next_midnight(parse_iso("2026-03-28T12:00:00Z")) == parse_iso("2026-03-28T23:00:00Z")
    assert tz.next_midnight(parse_iso("2026-07-01T12:00:00Z")) == parse_iso("2026-07-01T22:00:00Z")


def test_next_clock_is_strictly_after_and_wraps_to_the_next_day():
    tz = LocalTime(0)
    t = parse_iso("2026-05-05T17:00:00Z")
    assert tz.next_clock(t, (17 * 60,)) == parse_iso("2026-05-06T17:00:00Z")
    assert tz.next_clock(t - 1, (17 * 60,)) == t


def test_fixed_offsets_without_dst():
    assert LocalTime(330).local(parse_iso("2026-01-01T00:00:00Z"))[:5] == (2026, 1, 1, 5, 30)
    assert LocalTime(-600).local(parse_iso("2026-01-01T05:00:00Z"))[:4] == (2025, 12, 31, 19)
    assert LocalTime(60).next_change(0) is None


def test_bad_settings_are_refused():
    raises(ValueError, LocalTime, 900)
    raises(ValueError, LocalTime, "60")
    raises(ValueError, LocalTime, 60, "CET")
