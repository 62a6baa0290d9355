"""UTC calendar arithmetic in integers, independent of the port's epoch and time zone support.

    iso(1772438100) == "2026-03-02T07:55:00Z"
    parse_iso("2026-03-02T07:55:00Z") == 1772438100
"""


def civil(days):
    """Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar."""
    days += 719468
    era = (days if days >= 0 else days - 146096) // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


def days_from_civil(y, m, d):
    """(year, month, day) → days since 1970-01-01."""
    y -= 1 if m <= 2 else 0
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def iso(t):
    """Unix seconds → "YYYY-MM-DDTHH:MM:SSZ"."""
    days, s = divmod(t, 86400)
    y, m, d = civil(days)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, s // 3600, s // 60 % 60, s % 60)


def parse_iso(text):
    """"YYYY-MM-DDTHH:MM:SS" with "Z" or "+HH:MM"/"-HH:MM" → Unix seconds; ValueError if malformed."""
    if not isinstance(text, str) or len(text) < 19 or text[4] != "-" or text[7] != "-" \
            or text[10] not in "Tt " or text[13] != ":" or text[16] != ":":
        raise ValueError("not an ISO 8601 date-time: %r" % (text,))
    try:
        y, mo, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
        h, mi, s = int(text[11:13]), int(text[14:16]), int(text[17:19])
    except ValueError:
        raise ValueError("not an ISO 8601 date-time: %r" % (text,))
    rest = text[19:]
    if rest.startswith("."):
        i = 1
        while i < len(rest) and rest[i].isdigit():
            i += 1
        rest = rest[i:]
    if rest in ("Z", "z"):
        off = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":" and (rest[1:3] + rest[4:]).isdigit():
        off = (int(rest[1:3]) * 60 + int(rest[4:6])) * 60 * (1 if rest[0] == "+" else -1)
    else:
        raise ValueError("ISO 8601 date-time needs a zone (Z or +HH:MM): %r" % (text,))
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise ValueError("date-time out of range: %r" % (text,))
    return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - off
