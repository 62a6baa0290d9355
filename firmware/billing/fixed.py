"""Exact decimal numbers as scaled integers: prices and percentages never touch a float.

ESP32 floats are single precision, so "0.2575" must not become 0.2574999928. Values arrive
as decimal strings (or ints) and leave as integers in units of 10**-places.

    parse("0.30", 6) == 300000      # 0.30 currency units in micro-units
    text(300000, 6, 2) == "0.30"
"""


def parse(value, places, name="value"):
    """Decimal string or int → int in units of 10**-places; ValueError naming the setting."""
    if isinstance(value, bool):
        raise ValueError("%s must be a decimal number, not %r" % (name, value))
    if isinstance(value, int):
        return value * 10 ** places
    if not isinstance(value, str):
        raise ValueError("%s must be a decimal string like \"0.25\" (got %r)" % (name, value))
    s = value.strip()
    neg = s.startswith("-")
    if neg or s.startswith("+"):
        s = s[1:]
    whole, _, frac = s.partition(".")
    if not (whole or frac) or not (whole + frac).isdigit() or len(frac) > places:
        raise ValueError("%s: %r is not a decimal with at most %d decimals" % (name, value, places))
    n = int(whole or "0") * 10 ** places + int((frac + "0" * places)[:places] or "0")
    return -n if neg else n


def round_div(num, den):
    """num / den rounded half away from zero, in integers (den > 0)."""
    q, r = divmod(abs(num), den)
    if 2 * r >= den:
        q += 1
    return q if num >= 0 else -q


def text(n, places, digits=None):
    """Scaled int → decimal string with `digits` decimals (rounded half away from zero)."""
    if digits is None:
        digits = places
    if digits < places:
        n = round_div(n, 10 ** (places - digits))
    sign = "-" if n < 0 else ""
    n = abs(n)
    if digits == 0:
        return sign + str(n)
    s = str(n)
    s = "0" * (digits + 1 - len(s)) + s
    return sign + s[:-digits] + "." + s[-digits:]
