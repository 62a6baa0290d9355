"""Price an OCPI 2.2.1 CDR's charging periods with the charger's own tariff engine.

Runs under CPython and under the MicroPython unix port with byte-identical output:

    python3 tools/price.py TARIFF.json CDR.json [--tz-offset MINUTES] [--dst EU|US]
    MICROPYPATH=.frozen:. micropython tools/price.py TARIFF.json CDR.json --tz-offset 60 --dst EU

Prints one JSON object (OCPI Price objects rounded to the currency's minor unit, energy in
kWh, times in hours). Exit 2 with a message naming the field for an invalid tariff or CDR.
"""
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here + "/..")                  # the project root (no os.path on MicroPython)
if sys.implementation.name != "micropython":
    sys.path.insert(0, _here + "/compat")          # CPython: the `micropython` shim

from firmware.billing.fixed import round_div, text  # noqa: E402
from firmware.core.jsonx import loads  # noqa: E402
from firmware.billing.localtime import LocalTime  # noqa: E402
from firmware.billing.tariff import Tariff, periods_from_cdr  # noqa: E402
from firmware.core.timefmt import parse_iso  # noqa: E402

USAGE = """usage: price.py TARIFF.json CDR.json [--tz-offset MINUTES] [--dst EU|US]

Prices the CDR's charging_periods (with its start_date_time/end_date_time) with the
charger's tariff engine and prints total_cost, total_fixed_cost, total_energy_cost,
total_time_cost, total_parking_cost ({"excl_vat", "incl_vat"}), total_energy (kWh),
total_time and total_parking_time (hours) as one JSON object.

  --tz-offset MINUTES   local standard time offset from UTC for the tariff's restrictions
                        (default 0 = UTC)
  --dst EU|US           daylight saving rule on top of the offset (default: none)

example:
  python3 tools/price.py tests/data/tariffs/spec_start_fee.tariff.json \\
      tests/data/tariffs/spec_start_fee.cdr.json --tz-offset 60 --dst EU
"""


class UsageError(ValueError):
    pass


def parse_args(argv):
    files, offset, dst = [], 0, None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            return None
        if a in ("--tz-offset", "--dst"):
            if i + 1 >= len(argv):
                raise UsageError("%s needs a value" % a)
            v = argv[i + 1]
            if a == "--dst":
                if v not in ("EU", "US", "none"):
                    raise UsageError("--dst must be EU, US or none (got %r)" % v)
                dst = None if v == "none" else v
            else:
                try:
                    offset = int(v)
                except ValueError:
                    raise UsageError("--tz-offset must be whole minutes (got %r)" % v)
            i += 2
            continue
        if a.startswith("-") and a != "-":
            raise UsageError("unknown option %s" % a)
        files.append(a)
        i += 1
    if len(files) != 2:
        raise UsageError("expected TARIFF.json and CDR.json")
    return files[0], files[1], LocalTime(offset, dst)


def _read(path, what):
    try:
        with open(path) as f:
            body = f.read()
    except OSError as e:
        raise ValueError("%s: cannot read %s (%s)" % (what, path, e))
    try:
        return loads(body)
    except ValueError as e:
        raise ValueError("%s: %s is not JSON (%s)" % (what, path, e))


def _number(n, places):
    """Scaled int → shortest JSON decimal (no trailing zeros)."""
    s = text(n, places)
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def _price(part, digits):
    return '{"excl_vat": %s, "incl_vat": %s}' % (text(part["excl_vat_minor"], digits),
                                                text(part["incl_vat_minor"], digits))


def price(tariff_obj, cdr, tz):
    """The priced CDR as a JSON text with a fixed key order."""
    tariff = Tariff(tariff_obj)
    if not isinstance(cdr, dict):
        raise ValueError("cdr must be an OCPI CDR object")
    try:
        start = parse_iso(cdr.get("start_date_time"))
    except ValueError as e:
        raise ValueError("cdr.start_date_time: %s" % e)
    try:
        end = parse_iso(cdr.get("end_date_time"))
    except ValueError as e:
        raise ValueError("cdr.end_date_time: %s" % e)
    if end < start:
        raise ValueError("cdr.end_date_time is before cdr.start_date_time")
    currency = cdr.get("currency")
    if currency is not None and currency != tariff.currency:
        raise ValueError("cdr.currency: %r is not the tariff's currency %r" % (currency, tariff.currency))
    rows = periods_from_cdr(cdr.get("charging_periods"), start, end)
    cost = tariff.cost(rows, start, tz)
    d = tariff.minor_digits
    energy_mwh = parking_s = 0
    for r in rows:
        energy_mwh += r[1]
        parking_s += r[3]
    fields = (
        ('"currency"', '"%s"' % tariff.currency),
        ('"total_cost"', '{"excl_vat": %s, "incl_vat": %s}' % (text(cost["total_excl_vat_minor"], d),
                                                              text(cost["total_incl_vat_minor"], d))),
        ('"total_fixed_cost"', _price(cost["fixed"], d)),
        ('"total_energy_cost"', _price(cost["energy"], d)),
        ('"total_time_cost"', _price(cost["time"], d)),
        ('"total_parking_cost"', _price(cost["parking"], d)),
        ('"total_energy"', _number(energy_mwh, 6)),
        ('"total_time"', _number(round_div((end - start) * 1000000, 3600), 6)),
        ('"total_parking_time"', _number(round_div(parking_s * 1000000, 3600), 6)),
    )
    return "{" + ", ".join(k + ": " + v for k, v in fields) + "}"


def main(argv):
    try:
        args = parse_args(argv)
    except ValueError as e:   # UsageError, and LocalTime's own checks
        sys.stderr.write("price.py: %s\n\n%s" % (e, USAGE))
        return 2
    if args is None:
        sys.stdout.write(USAGE)
        return 0
    tariff_path, cdr_path, tz = args
    try:
        out = price(_read(tariff_path, "tariff"), _read(cdr_path, "cdr"), tz)
    except ValueError as e:
        sys.stderr.write("price.py: %s\n" % e)
        return 2
    sys.stdout.write(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
