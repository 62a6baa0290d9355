"""Scenario files for the simulator: validation with errors that name the event and field.

A scenario is the simulator's public input (README, "Scenario contract"). `normalise()` checks
it and returns what the MicroPython side needs: the world's timeline (times in ms, card
aliases resolved to UID hex), the device config and secrets in the provisioning format (local
list of pseudonyms, tariff, broker, site key), the board config's path, and pseudonym -> alias.

    world, device, secrets, board_path, names = normalise(json.load(open("demo/two_drivers.json")), key)

Adding an event kind: one entry in EVENTS here, one `_on_<kind>` method in hal/sim/world.py.
A `power_cut` is the runner's as much as the world's: see docs/simulator.md.
"""
import datetime
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "tools", "compat"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from firmware.billing import fixed  # noqa: E402  (after the path set-up above)
from firmware.auth.pseudonym import pseudonym  # noqa: E402
from firmware.billing.localtime import LocalTime  # noqa: E402
from firmware.billing.tariff import Tariff, flat  # noqa: E402
from firmware.core import jsonx  # noqa: E402
from firmware.core.rsa import parse_public_key  # noqa: E402
from firmware.link.ota import check_command  # noqa: E402
from firmware.core.timefmt import iso  # noqa: E402
from firmware.core.timesync import VALID_AFTER, synced  # noqa: E402

MAX_END_S = 30 * 24 * 3600
MAX_OFF_S = 7 * 24 * 3600


class ScenarioError(ValueError):
    pass


class Exact(float):
    """A JSON number with a fraction that remembers how it was written, so a price stays exact."""

    def __new__(cls, text):
        number = float.__new__(cls, text)
        number.text = text
        return number


def load(path):
    """A scenario file parsed so that numbers with a fraction keep their text (see Exact)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_float=Exact)


def _exact(value):
    """value with every Exact number turned into its plain decimal string (a plain float stays one:
    its exact value is already lost, and the tariff check refuses it)."""
    if isinstance(value, Exact):
        return jsonx.plain(value.text)
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value


def _ocpi_tariff(value, base_dir, where):
    """An OCPI 2.2.1 tariff given inline or as a path (relative to the scenario's folder), checked
    as the firmware checks it."""
    if isinstance(value, str):
        path = os.path.join(base_dir or "", value)
        try:
            with open(path, encoding="utf-8") as f:
                value = jsonx.loads(f.read())
        except OSError as e:
            raise ScenarioError("%s: cannot read %s (%s)" % (where, path, e.strerror))
        except ValueError as e:
            raise ScenarioError("%s: %s is not valid JSON (%s)" % (where, path, e))
    elif isinstance(value, dict):
        value = _exact(value)
    else:
        raise ScenarioError("%s: an OCPI 2.2.1 tariff object, or the path of a JSON file holding one (got %r)"
                            % (where, value))
    try:
        Tariff(value)
    except ValueError as e:
        raise ScenarioError("%s: %s" % (where, e))
    return value


def _uid_hex(text, where):
    if not isinstance(text, str) or not re.fullmatch(r"[0-9A-Fa-f]+", text) or len(text) not in (8, 14, 20):
        raise ScenarioError("%s: a card UID is 4, 7 or 10 bytes of hex (got %r)" % (where, text))
    return text.upper()


def _card(ref, ctx, where):
    if isinstance(ref, str) and ref in ctx["cards"]:
        return ctx["cards"][ref]
    if isinstance(ref, str) and re.fullmatch(r"[0-9A-Fa-f]+", ref) and len(ref) in (8, 14, 20):
        return ref.upper()
    raise ScenarioError("%s: %r is neither a card alias from \"cards\" nor a UID in hex" % (where, ref))


def _bool(value, ctx, where):
    if not isinstance(value, bool):
        raise ScenarioError("%s must be true or false (got %r)" % (where, value))
    return value


def _tap(value, ctx, where):
    refs = value if isinstance(value, list) else [value]
    if not refs or len(refs) > 2:
        raise ScenarioError("%s: one card, or a list of two cards held together" % where)
    return [_card(r, ctx, where) for r in refs]


def _number(lo, hi):
    def check(value, ctx, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ScenarioError("%s must be a number within %s..%s (got %r)" % (where, lo, hi, value))
        return value
    return check


def _remote_start(value, ctx, where):
    if not isinstance(value, dict) or "token" not in value:
        raise ScenarioError("%s: an object like {\"token\": \"alice\"} (group/prefs optional)" % where)
    args = dict(value)
    args["token"] = _card(value["token"], ctx, where + ".token")
    return args


def _remote_stop(value, ctx, where):
    if value is True:
        return {}
    if isinstance(value, dict) and set(value) <= {"tx_id"}:
        return value
    raise ScenarioError("%s: true, or {\"tx_id\": n}" % where)


def _choice(*allowed):
    def check(value, ctx, where):
        if value not in allowed:
            raise ScenarioError("%s must be one of %s (got %r)" % (where, ", ".join(map(repr, allowed)), value))
        return value
    return check


def _true(value, ctx, where):
    if value is not True:
        raise ScenarioError("%s must be true (got %r)" % (where, value))
    return value


def _power_cut(value, ctx, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_OFF_S:
        raise ScenarioError("%s: seconds without power, a number within 0..%d (got %r)" % (where, MAX_OFF_S, value))
    return {"off_ms": int(round(value * 1000)), "meter_kept": False}


def _json_file(value, base_dir, where):
    """value, or when it is a path (relative to the scenario's folder) the JSON object in that file."""
    if not isinstance(value, str):
        return value
    path = os.path.join(base_dir or "", value)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ScenarioError("%s: cannot read %s (%s)" % (where, path, e.strerror))
    except ValueError as e:
        raise ScenarioError("%s: %s is not valid JSON (%s)" % (where, path, e))


def _update_key(value, base_dir):
    """ota.public_key from "update_key": the hex tools/bundle.py keygen/pubkey prints, or the path of
    a file holding what they print ({"ota": {"public_key": hex}})."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9a-fA-F]{256,}", value):
        value = _json_file(value, base_dir, "update_key")
        value = value.get("ota", {}).get("public_key") if isinstance(value, dict) else None
    try:
        parse_public_key(value)
    except (ValueError, TypeError) as e:
        raise ScenarioError("update_key: the public key hex, or a file with what `tools/bundle.py keygen` "
                            "prints (%s)" % e)
    return value.lower()


def _update_event(value, ctx, where):
    """{"command": cmd/update payload or its file, "bundle": the bundle file}: the runner serves the
    bundle on loopback and points the (unsigned) url at it; the charger checks everything else."""
    if not isinstance(value, dict) or set(value) != {"command", "bundle"} or not isinstance(value["bundle"], str):
        raise ScenarioError("%s: {\"command\": the JSON tools/bundle.py prints (or its file), \"bundle\": the "
                            "bundle file it wrote} (got %r)" % (where, value))
    if "update_key" not in ctx:
        raise ScenarioError("%s: needs the top-level \"update_key\" the charger checks the signature with" % where)
    cmd = _json_file(value["command"], ctx["base_dir"], where + ".command")
    try:
        check_command(cmd if isinstance(cmd, dict) else {}, 4 << 20)
    except ValueError as e:
        raise ScenarioError("%s.command: %s" % (where, e))
    bundle = os.path.abspath(os.path.join(ctx["base_dir"] or "", value["bundle"]))
    if not os.path.isfile(bundle):
        raise ScenarioError("%s.bundle: no file %s" % (where, bundle))
    return {"manifest": cmd, "bundle": bundle}


def _tariff_event(value, ctx, where):
    return {"tariff": _ocpi_tariff(value, ctx["base_dir"], where)}   # the version is set in time order


# event kind -> (validator, what it means)
EVENTS = {
    "plug": (_bool, "EV cable plugged in (true) or out (false)"),
    "tap": (_tap, "card alias or UID held to the reader for ~1 s; a list of two = both at once"),
    "ev_current_a": (_number(0, 80), "current the EV wants to draw per phase, A"),
    "ev_phases": (_choice(1, 3), "phases the EV draws on"),
    "broker": (_choice("up", "down", "silent"), "the broker: reachable, refusing, or accepting TCP and never answering"),
    "reader": (_choice("offline", "online"), "the RFID reader chip stops answering / answers again"),
    "remote_start": (_remote_start, "the backend starts a session for a card: {\"token\": \"alice\"}"),
    "remote_stop": (_remote_stop, "the backend stops the running session: true or {\"tx_id\": n}"),
    "button": (_choice("report_problem"), "the driver presses the \"report a problem\" button"),
    "ev_fault": (_choice("no_diode", "state_e", "ignore_offer", None),
                 "an EV-side fault (ignore_offer: draws above the pilot's offer), null clears it"),
    "grid_v": (_number(0, 400), "grid voltage on every wired phase, V"),
    "grid_hz": (_number(40, 70), "grid frequency, Hz"),
    "phase_loss": (_choice("L1", "L2", "L3", "none"), "a phase loses its voltage; none restores all"),
    "temp_c": (_number(-40, 150), "temperature at the meter chip, °C"),
    "rcd": (_choice("trip", "ok", "broken"), "residual current (trip) / gone (ok) / the module fails its self-test"),
    "contactor": (_choice("welded", "stuck_open", "ok"), "the contactor's poles weld, stick open, or work"),
    "clear_fault": (_choice(True), "a technician clears latched faults from the backend (cmd/clear_fault)"),
    "meter": (_choice("silent", "stuck_ffff", "brownout", "ok"), "the ATM90E32 stops answering, reads 0xFFFF, resets itself"),
    "power_cut": (_power_cut, "the board loses power for this many seconds: the firmware is killed hard and "
                              "started again; with \"meter_kept\": true the meter chip keeps its supply"),
    "tariff": (_tariff_event, "the backend sends a new OCPI tariff for new sessions (cmd/tariff, sealed), "
                              "an object or a file path; versions count 1, 2, ... in time order"),
    "update": (_update_event, "the backend starts an over-the-air update (cmd/update, sealed): "
                              "{\"command\": file or object, \"bundle\": file} as tools/bundle.py makes them"),
    "ntp": (_true, "NTP answers: the board's wall clock, unset since power-on (\"clock_unset\": true), "
                           "is the real UTC from now on; after a power cut it is unset again"),
}
# options that ride along with an event kind in the same event: option -> (kind, validator)
OPTIONS = {"meter_kept": ("power_cut", _bool)}

ENTRY_FIELDS = ("card", "status", "expiry", "group", "max_current_a", "max_kwh", "offpeak_only")


def _list_entry(item, ctx, site_key, where):
    """An "allow" item (alias, UID, or an object with preferences) as a local-list entry."""
    entry = {"status": "Accepted"}
    if isinstance(item, dict):
        for k in item:
            if k not in ENTRY_FIELDS:
                raise ScenarioError("%s: unknown field %r (known: %s)" % (where, k, ", ".join(ENTRY_FIELDS)))
        entry.update((k, v) for k, v in item.items() if k != "card")
        item = item.get("card")
    entry["token"] = pseudonym(site_key, bytes.fromhex(_card(item, ctx, where)))
    entry["key"] = 1
    return entry


def _parse_start(value):
    if not isinstance(value, str):
        raise ScenarioError("start: an ISO 8601 UTC time like \"2026-03-02T07:55:00Z\" (got %r)" % (value,))
    try:
        dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ScenarioError("start: %r is not an ISO 8601 time" % value)
    if dt.tzinfo is None:
        raise ScenarioError("start: %r needs a zone, e.g. a trailing Z" % value)
    return int(dt.timestamp())


def _check_power_cuts(events, end):
    """Power comes back before the scenario ends, and a cut does not start while the power is off."""
    back = -1
    for n, ev in sorted(enumerate(events), key=lambda item: item[1]["t"]):
        cut = ev.get("power_cut")
        if cut is None:
            continue
        where = "events[%d] (t=%s).power_cut" % (n, ev["t"] / 1000)
        if ev["t"] < back:
            raise ScenarioError("%s: the power is still off then (back at t=%s)" % (where, back / 1000))
        back = ev["t"] + cut["off_ms"]
        if back >= end * 1000:
            raise ScenarioError("%s: power returns at t=%s, not before the scenario's end (%s)" % (where, back / 1000, end))


def _clock_unset(value, world):
    """"clock_unset": true: the board's wall clock starts at 2000-01-01 until an `ntp` event."""
    if not isinstance(value, bool):
        raise ScenarioError("clock_unset: true (the board boots without the date, until an \"ntp\" event) "
                            "or false (got %r)" % (value,))
    ntp = [n for n, ev in enumerate(world["events"]) if "ntp" in ev]
    if ntp and not value:
        raise ScenarioError("events[%d].ntp: only with \"clock_unset\": true (the clock is set already)" % ntp[0])
    if value:
        if not synced(world["start_utc"]):
            raise ScenarioError("start: with \"clock_unset\" the real time NTP brings must be a known wall "
                                "clock, %s or later (got %s)" % (iso(VALID_AFTER), iso(world["start_utc"])))
        world["clock_unset"] = True


def _zone_rule(name, start_utc, end_s):
    """{"utc_offset_min", "dst"} that gives the IANA zone `name`'s local time at every hour of the
    years the scenario spans, or ScenarioError: the firmware knows a fixed offset plus the EU or
    US rule only (firmware/billing/localtime.py)."""
    import zoneinfo
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScenarioError("tz: %r is not a time zone name like \"Europe/Berlin\"" % name)
    utc = datetime.timezone.utc
    years = range(datetime.datetime.fromtimestamp(start_utc, utc).year,
                  datetime.datetime.fromtimestamp(start_utc + end_s, utc).year + 1)
    first = int(datetime.datetime(years[0], 1, 1, tzinfo=utc).timestamp())
    last = int(datetime.datetime(years[-1] + 1, 1, 1, tzinfo=utc).timestamp())
    hours = range(first, last, 3600)
    wanted = [int(datetime.datetime.fromtimestamp(t, zone).utcoffset().total_seconds()) for t in hours]
    std = min(wanted)
    if std % 60 == 0 and -720 * 60 <= std <= 840 * 60:
        for rule in ("none", "EU", "US"):
            lt = LocalTime(std // 60, rule)
            if all(lt.offset(t) == w for t, w in zip(hours, wanted)):
                return {"utc_offset_min": std // 60, "dst": rule}
    raise ScenarioError("tz: %s's local time in %s is not a fixed offset plus the EU or US daylight-saving "
                        "rule, which is all the firmware knows; give {\"utc_offset_min\": n, \"dst\": "
                        "\"none\"} and check the tariff's times" % (name, "/".join(map(str, years))))


def _site(value, start_utc, end_s):
    """The device config's site record from "tz": a zone name or {"utc_offset_min", "dst"}."""
    if isinstance(value, str):
        return _zone_rule(value, start_utc, end_s)
    if not isinstance(value, dict) or any(k not in ("utc_offset_min", "dst") for k in value):
        raise ScenarioError("tz: a zone name like \"Europe/Berlin\" or {\"utc_offset_min\": 60, \"dst\": \"EU\"} "
                            "(got %r)" % (value,))
    site = {"utc_offset_min": value.get("utc_offset_min", 0), "dst": value.get("dst", "none")}
    try:
        LocalTime(site["utc_offset_min"], site["dst"])
    except ValueError as e:
        raise ScenarioError("tz: %s" % e)
    return site


def normalise(sc, site_key, broker=None, board_dir=os.path.join(ROOT, "board_configs"), base_dir=None):
    """(world scenario, device config) from a parsed scenario; ScenarioError on bad input.
    base_dir: where the scenario's file paths (tariffs, the update key and bundle) are relative to
    (default: the current folder)."""
    if not isinstance(sc, dict):
        raise ScenarioError("a scenario is a JSON object")
    known = {"name", "board", "start", "device_id", "cards", "allow", "price_per_kwh", "currency",
             "vat_percent", "events", "end", "comment", "realtime", "auth", "retap_after_cut", "journal",
             "clock_unset", "faults", "tariff", "tz", "update_key"}
    for key in sc:
        if key not in known:
            raise ScenarioError("unknown top-level field %r (known: %s)" % (key, ", ".join(sorted(known))))
    board = sc.get("board", "sim")
    board_path = os.path.join(board_dir, "%s.json" % board)
    if not isinstance(board, str) or not os.path.exists(board_path):
        raise ScenarioError("board: no board config %r in %s" % (board, board_dir))
    cards = sc.get("cards", {})
    if not isinstance(cards, dict):
        raise ScenarioError("cards: an object of alias -> UID hex")
    ctx = {"cards": {a: _uid_hex(u, "cards.%s" % a) for a, u in cards.items()}, "base_dir": base_dir}
    if "update_key" in sc:
        ctx["update_key"] = _update_key(sc["update_key"], base_dir)
    allow = sc.get("allow", [])
    if not isinstance(allow, list):
        raise ScenarioError("allow: a list of card aliases or UIDs")
    entries = [_list_entry(a, ctx, site_key, "allow[%d]" % i) for i, a in enumerate(allow)]
    if "tariff" in sc:
        flat_fields = [k for k in ("price_per_kwh", "currency", "vat_percent") if k in sc]
        if flat_fields:
            raise ScenarioError("tariff: the OCPI tariff holds the prices, currency and VAT; drop %s"
                                % ", ".join(flat_fields))
        tariff = _ocpi_tariff(sc["tariff"], base_dir, "tariff")
    else:
        price = sc.get("price_per_kwh", "0.30")
        try:
            fixed.parse(price, 6, "price_per_kwh")
            tariff = flat(price, sc.get("currency", "EUR"), sc.get("vat_percent", "0"))
            Tariff(tariff)
        except ValueError as e:
            raise ScenarioError(str(e))
    end = sc.get("end")
    if isinstance(end, bool) or not isinstance(end, (int, float)) or not 0 < end <= MAX_END_S:
        raise ScenarioError("end: virtual seconds, a number within 1..%d (got %r)" % (MAX_END_S, end))
    events = sc.get("events")
    if not isinstance(events, list):
        raise ScenarioError("events: a list of {\"t\": seconds, \"<kind>\": value}")
    out = []
    for n, ev in enumerate(events):
        where = "events[%d]" % n
        if not isinstance(ev, dict):
            raise ScenarioError("%s: an object like {\"t\": 10, \"plug\": true}" % where)
        t = ev.get("t")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= end:
            raise ScenarioError("%s.t: virtual seconds within 0..end (%s) (got %r)" % (where, end, t))
        kinds = [k for k in ev if k != "t" and k not in OPTIONS]
        if len(kinds) != 1:
            raise ScenarioError("%s: exactly one event kind besides \"t\" (got %s)" % (where, kinds or "none"))
        kind = kinds[0]
        if kind not in EVENTS:
            raise ScenarioError("%s: unknown event %r (known: %s)" % (where, kind, ", ".join(sorted(EVENTS))))
        value = EVENTS[kind][0](ev[kind], ctx, "%s (t=%s).%s" % (where, t, kind))
        for opt in ev:
            if opt in OPTIONS:
                owner, check = OPTIONS[opt]
                if owner != kind:
                    raise ScenarioError("%s: %r goes only with %r events" % (where, opt, owner))
                value[opt] = check(ev[opt], ctx, "%s (t=%s).%s" % (where, t, opt))
        out.append({"t": int(round(t * 1000)), kind: value})
    _check_power_cuts(out, end)
    for version, ev in enumerate(sorted((ev for ev in out if "tariff" in ev), key=lambda ev: ev["t"]), 1):
        ev["tariff"]["version"] = version   # each must be above the one the charger holds
    realtime = sc.get("realtime", False)
    if not isinstance(realtime, bool):
        raise ScenarioError("realtime: true (virtual time follows the wall clock, for benchmarks) or false")
    world = {"start_utc": _parse_start(sc.get("start", "2026-01-01T00:00:00Z")), "end_ms": int(end * 1000),
             "events": out, "realtime": realtime}
    _clock_unset(sc.get("clock_unset", False), world)
    retap = sc.get("retap_after_cut")
    if retap is not None:
        if isinstance(retap, bool) or not isinstance(retap, (int, float)) or not 1 <= retap <= 3600:
            raise ScenarioError("retap_after_cut: seconds after power returns until a driver whose EV still "
                                "wants current taps the last card again, 1..3600 (got %r)" % (retap,))
        world["retap_after_cut_ms"] = int(retap * 1000)
    auth = {"LocalAuthorizeOffline": True, "LocalPreAuthorize": True, "AllowOfflineTxForUnknownId": False,
            "AuthorizeRemoteTxRequests": False}
    if not isinstance(sc.get("auth", {}), dict):
        raise ScenarioError("auth: an object of OCPP switches, e.g. {\"LocalPreAuthorize\": false}")
    auth.update(sc.get("auth", {}))
    device = {"device_id": sc.get("device_id", "cp-sim-0001"), "tariff": tariff, "auth": auth,
              "local_list": {"version": 1, "entries": entries}}
    journal = sc.get("journal", {})
    if not isinstance(journal, dict) or any(k not in ("every_wh", "min_s", "every_s") or isinstance(v, bool)
                                            or not isinstance(v, int) for k, v in journal.items()):
        raise ScenarioError("journal: the checkpoint policy, integers among every_wh, min_s, every_s (got %r)"
                            % (journal,))
    if journal:
        device["journal"] = journal
    if "tz" in sc:
        device["site"] = _site(sc["tz"], world["start_utc"], end)
    if "update_key" in ctx:
        device["ota"] = {"public_key": ctx["update_key"]}
    faults = sc.get("faults", {})
    if not isinstance(faults, dict) or any(k != "remote_clear" for k in faults):
        raise ScenarioError("faults: {\"remote_clear\": [fault kinds cmd/clear_fault may clear]} (got %r)" % (faults,))
    if faults:
        device["faults"] = faults   # the firmware's settings check the kinds
    if not isinstance(device["device_id"], str) or not device["device_id"]:
        raise ScenarioError("device_id: a non-empty string")
    if broker:
        host, _, port = broker.rpartition(":")
        device["mqtt"] = {"host": host, "port": int(port)}
    secrets = {"site_keys": {"1": site_key.hex()}, "site_key_current": 1}
    names = {pseudonym(site_key, bytes.fromhex(u)): a for a, u in ctx["cards"].items()}
    return world, device, secrets, board_path, names
