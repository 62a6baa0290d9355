"""The site's time zone for the report: local display, ISO 8601 with offset, and the tariff clock.

The page, the CSV files and the plots show every time in the site's zone (--tz). Tariffs are
priced with the firmware's LocalTime (a fixed offset plus an EU/US daylight-saving rule), so
the zone is matched to one over the report's years, or refused with a clear message.

    zone = site_zone("Europe/Berlin"); local_iso(1772438100, zone) == "2026-03-02T08:55:00+01:00"
    tariff_clock(zone, [2026])        # LocalTime(60, "EU")
"""
import datetime

from firmware.billing.localtime import LocalTime

UTC = datetime.timezone.utc


def site_zone(name):
    """IANA zone name -> tzinfo ("UTC" and None mean UTC); ValueError for an unknown name."""
    if name in ("UTC", "Z", None):
        return UTC
    import zoneinfo
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("--tz %r is not a known time zone (e.g. Europe/Berlin or UTC)" % name)


def local(t, zone):
    return datetime.datetime.fromtimestamp(t, zone)


def local_iso(t, zone):
    """Unix seconds -> ISO 8601 in the site's zone: ...Z in UTC, else with its offset."""
    d = local(t, zone)
    if zone is UTC:
        return d.strftime("%Y-%m-%dT%H:%M:%SZ")
    return d.isoformat()


def local_text(t, zone):
    """Unix seconds -> "YYYY-MM-DD HH:MM" in the site's zone (the page names the zone once)."""
    return local(t, zone).strftime("%Y-%m-%d %H:%M")


def utc_iso(t):
    """OCPI DateTime: UTC with Z (CDRs are exchanged in UTC whatever the site's zone)."""
    return datetime.datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _offset_s(zone, t):
    return int(local(t, zone).utcoffset().total_seconds())


def tariff_clock(zone, years):
    """The firmware's LocalTime equal to `zone` at every hour of `years`, else ValueError."""
    if zone is UTC:
        return LocalTime(0)
    years = sorted(set(years)) or [datetime.date.today().year]
    first = int(datetime.datetime(years[0], 1, 1, tzinfo=UTC).timestamp())
    std = min(_offset_s(zone, first + d * 86400) for d in range(0, 366, 30))
    if std % 60 or not -720 * 60 <= std <= 840 * 60:
        raise ValueError("--tz %s: offset %d s is not whole minutes within -12:00..+14:00" % (zone, std))
    for rule in (None, "EU", "US"):
        clock = LocalTime(std // 60, rule)
        if all(_same_year(zone, clock, y) for y in years):
            return clock
    raise ValueError("--tz %s follows no fixed offset with EU or US daylight saving, as the tariff engine "
                     "needs; use the charger's site zone" % zone)


def _same_year(zone, clock, year):
    t = int(datetime.datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime.datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    while t < end:
        if clock.offset(t) != _offset_s(zone, t):
            return False
        t += 3600
    return True
