"""Session exports: one CSV row per session, and OCPI 2.2.1 CDRs priced exactly like tools/price.py.

A CDR is built from the charger's `ended` record (its own charging_periods) and priced by
tools/price.py's price() — the firmware's tariff engine with the site's tariff clock — so
`price.py TARIFF CDR` gives the same totals. Times in a CDR are UTC (OCPI DateTime); the
token is the card's pseudonym, never a UID.

    tariffs = load_tariffs(["tariff.json"])
    rec = cdr(session, tariffs["flat"], LocalTime(60, "EU"), ("DE", "CPO"), {"id": "cp-1"})
    open("cdrs.json", "w").write(dump([rec]))
"""
import json

import price as price_tool
from firmware.billing.tariff import Tariff
from firmware.core.jsonx import loads
from reportlib.sitetime import local_iso, utc_iso

SESSION_HEADER = ("station", "tx_id", "driver", "label", "auth", "start", "end", "duration_s", "energy_wh",
                  "stop_reason", "uncertain_wh", "recovered_wh", "currency", "total_excl_vat_minor",
                  "total_incl_vat_minor", "parking_s", "parking_excl_vat_minor", "parking_incl_vat_minor",
                  "offline", "tariff_id", "meter_start_wh", "meter_stop_wh")
AUTH_METHOD = {"online": "AUTH_REQUEST", "remote": "COMMAND"}   # local_list, cache, offline_unknown: WHITELIST
TOTALS = ("total_cost", "total_fixed_cost", "total_energy", "total_energy_cost", "total_time", "total_time_cost",
          "total_parking_time", "total_parking_cost")


class Num(str):
    """A JSON number kept as its exact decimal text (never a float)."""


def dump(obj, indent=""):
    """JSON text with Num values written as bare numbers, one CDR per line in a list."""
    if isinstance(obj, Num):
        return str(obj)
    if isinstance(obj, dict):
        return "{%s}" % ", ".join("%s: %s" % (json.dumps(k), dump(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        if indent:
            return "[\n%s\n]\n" % ",\n".join(indent + dump(v) for v in obj) if obj else "[]\n"
        return "[%s]" % ", ".join(dump(v) for v in obj)
    return json.dumps(obj)


def session_row(s, zone, label):
    rec = s["rec"]
    return (s["device"], s["tx_id"], s["token"] or "", label or "", s["auth"] or "", local_iso(s["started_s"], zone),
            local_iso(s["ended_s"], zone), s["ended_s"] - s["started_s"], s["energy_wh"], s["stop_reason"] or "",
            _blank(rec.get("uncertain_wh")), _blank(rec.get("recovered_wh")), s["currency"], s["total_excl_minor"],
            s["total_incl_minor"], s["parking_s"] or 0, s["parking_excl_minor"] or 0, s["parking_incl_minor"] or 0,
            int(bool(s["offline"])), s["tariff_id"] or "", _blank(s["meter_start_wh"]), _blank(s["meter_stop_wh"]))


def _blank(v):
    return "" if v is None else v


def load_tariffs(paths):
    """{tariff id: OCPI tariff (decimals as exact strings)} from tariff files or provisioned config.json files."""
    out = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                obj = loads(f.read())
        except OSError as e:
            raise ValueError("--tariff: cannot read %s (%s)" % (path, e.strerror))
        except ValueError as e:
            raise ValueError("--tariff: %s is not JSON (%s)" % (path, e))
        if isinstance(obj, dict) and "elements" not in obj and isinstance(obj.get("tariff"), dict):
            obj = obj["tariff"]        # a provisioned config.json
        try:
            t = Tariff(obj)
        except ValueError as e:
            raise ValueError("--tariff %s: %s" % (path, e))
        if t.id in out and out[t.id] != obj:
            raise ValueError("--tariff %s: a second, different tariff with id %r" % (path, t.id))
        out[t.id] = obj
    return out


def _periods(periods, tariff_id):
    out = []
    for p in periods:
        dims = [{"type": d.get("type"), "volume": Num(d["volume"]) if isinstance(d.get("volume"), str)
                 else d.get("volume")} for d in p.get("dimensions") or () if isinstance(d, dict)]
        out.append({"start_date_time": p.get("start_date_time"), "dimensions": dims, "tariff_id": tariff_id})
    return out


def session_id(s):
    """A session's id across the fleet: device-tx, device-ep-tx after the device's data epoch 0 (a
    charger that lost its state and journal numbers its transactions from 1 again, in a new epoch)."""
    if s.get("ep"):
        return "%s-%d-%d" % (s["device"], s["ep"], s["tx_id"])
    return "%s-%d" % (s["device"], s["tx_id"])


def cdr(s, tariff, clock, party, location):
    """One OCPI 2.2.1 CDR for a finished session; ValueError when its record cannot be priced."""
    rec = s["rec"]
    periods = rec.get("charging_periods")
    if not isinstance(periods, list) or not periods:
        raise ValueError("no charging_periods in the ended record")
    start, end = utc_iso(s["started_s"]), utc_iso(s["ended_s"])
    core = {"start_date_time": start, "end_date_time": end, "currency": tariff["currency"],
            "charging_periods": _periods(periods, tariff["id"])}
    totals = json.loads(price_tool.price(tariff, core, clock), parse_float=Num)
    sid = session_id(s)
    remote = s["auth"] == "remote"
    out = {"country_code": party[0], "party_id": party[1], "id": sid, "start_date_time": start,
           "end_date_time": end, "session_id": sid,
           "cdr_token": {"country_code": party[0], "party_id": party[1], "uid": s["token"] or "",
                         "type": "APP_USER" if remote else "RFID", "contract_id": s["token"] or ""},
           "auth_method": AUTH_METHOD.get(s["auth"], "WHITELIST"),
           "cdr_location": dict({"id": s["device"], "evse_uid": s["device"], "evse_id": s["device"],
                                 "connector_id": "1"}, **location),
           "meter_id": s["device"], "currency": tariff["currency"], "charging_periods": core["charging_periods"]}
    for k in TOTALS:
        out[k] = totals[k]
    if s["stop_reason"] == "PowerLoss" and rec.get("uncertain_wh"):
        out["remark"] = "PowerLoss: up to %d Wh drawn after the last checkpoint may be missing" % rec["uncertain_wh"]
    out["last_updated"] = end
    return out
