"""UTC formatting agrees with known dates on both interpreters."""
from check import raises
from firmware.core.timefmt import civil, days_from_civil, iso, parse_iso


def test_known_instants():
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(951782400) == "2000-02-29T00:00:00Z"
    assert iso(1772438100) == "2026-03-02T07:55:00Z"


def test_round_trip_over_many_days():
    for days in range(-800, 40000, 37):
        y, m, d = civil(days)
        assert days_from_civil(y, m, d) == days


def test_parse_zones_and_fractions():
    assert parse_iso("2026-03-02T07:55:00Z") == 1772438100
    assert parse_iso("2026-03-02T08:55:00+01:00") == 1772438100
    assert parse_iso("2026-03-02T07:55:00.250Z") == 1772438100


def test_parse_rejects_bad_text():
    raises(ValueError, parse_iso, "2026-03-02 07:55")
    raises(ValueError, parse_iso, "2026-13-02T07:55:00Z")
    raises(ValueError, parse_iso, "2026-03-02T07:55:00")
    raises(ValueError, parse_iso, 12)
