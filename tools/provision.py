"""Provisioning: builds a charger's config.json, secrets.json and board.json from operator inputs.

Cards are given with their RAW UIDs (CSV or JSON); each UID is turned into its pseudonym
HMAC-SHA256(site key, UID) here, on the operator's machine, and never written anywhere.
Everything is checked before anything is written: a missing or unsafe input stops with a
message naming the field, and no file is created or changed (locally or on the board).

The charger's MQTT user name is its device id; its password is random (or $CP_MQTT_PASSWORD).
With --out, the operator's side is written next to the charger's files, never onto the board:
DIR/broker/ `passwd` (one password_file line) and `acl` (its ACL lines), to append to
mosquitto's files (docs/security.md); DIR/backend/ `auth.json` (tools/backend.py --auth: the
cards' answers under every accepted key version) and `labels.csv` (pseudonym -> the card's
`name`, for people only). Provisioning again into the same DIR keeps what was generated there
for the device (device key, MQTT password) and moves the local list's version on when it changed.

    python3 tools/provision.py --board esp32_devkit --device-id cp-0001 --keys secrets.json \\
        --broker mqtt.example.org:8883 --ca ca.pem --fleet-key fleet.key --update-keyfile cp-update.pub.pem \\
        --tariff tariff.json --cards cards.csv --out out/cp-0001
    python3 tools/provision.py ... --port /dev/ttyUSB0     # straight onto the board (mpremote)

Functions: build(args) -> {file name: bytes}; write_dir(files, dir); write_board(files, port).
File names under broker/ and backend/ are the operator's, not the charger's.
"""
import argparse
import binascii
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "tools", "compat"), os.path.join(ROOT, "tools"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from firmware.billing.fixed import parse  # noqa: E402
from firmware.auth.pseudonym import parse_key, pseudonym  # noqa: E402
from firmware.billing.tariff import Tariff  # noqa: E402
from firmware.core.rsa import E, parse_public_key  # noqa: E402
from firmware.core.timefmt import parse_iso  # noqa: E402
from firmware.link.seal import derive  # noqa: E402
from broker import device_acl, new_password, password_line  # noqa: E402
from downlink import read_fleet_key  # noqa: E402

BOARDS = os.path.join(ROOT, "board_configs")
MAX_CARDS = 1000          # the charger loads the whole list at boot: keep it bounded
CARD_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid")
UID_BYTES = (4, 7, 10)    # ISO 14443-3 single, double, triple size
AUTH_POLICY = {"LocalAuthorizeOffline": True, "LocalPreAuthorize": True, "AllowOfflineTxForUnknownId": False,
               "AuthorizeRemoteTxRequests": True}   # a remote start is checked like a tap
DST_RULES = ("EU", "US", "none")
PASSPHRASE_ENV = "CP_UPDATE_KEY_PASSPHRASE"   # as tools/bundle.py: an encrypted private key file
CARD_FIELDS = ("uid", "status", "expiry", "group", "max_current_a", "max_kwh", "offpeak_only", "name")
MAX_NAME = 100            # a card's label: operator side only (backend/labels.csv), never on the charger


class ProvisionError(ValueError):
    """An input that cannot be provisioned; the message names the field."""


def _hex_key(text, name, min_bytes=16):
    """A secret key from hex: at least min_bytes bytes and not a placeholder."""
    if not isinstance(text, str):
        raise ProvisionError("%s is missing" % name)
    try:
        key = parse_key(text.strip(), name)
    except ValueError as e:
        raise ProvisionError(str(e))
    if len(key) < min_bytes:
        raise ProvisionError("%s must be at least %d bytes (%d hex digits)" % (name, min_bytes, 2 * min_bytes))
    if len(set(key)) < 4:
        raise ProvisionError("%s looks like a placeholder (almost all bytes equal): use a random key" % name)
    return key


def load_json(path, name):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, parse_float=str)   # decimals stay exact (prices, VAT): no floats
    except OSError as e:
        raise ProvisionError("%s: cannot read %s (%s)" % (name, path, e.strerror))
    except ValueError as e:
        raise ProvisionError("%s: %s is not valid JSON (%s)" % (name, path, e))


def load_board(name):
    """board_configs/<name>.json as bytes, after checking it is a JSON object."""
    boards = sorted(f[:-5] for f in os.listdir(BOARDS) if f.endswith(".json"))
    if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name not in boards:
        raise ProvisionError("board: unknown board %r (known: %s)" % (name, ", ".join(boards)))
    path = os.path.join(BOARDS, name + ".json")
    if not isinstance(load_json(path, "board"), dict):
        raise ProvisionError("board: %s must hold a JSON object" % path)
    with open(path, "rb") as f:
        return f.read()


def parse_uid(text, where):
    """Raw UID bytes from hex (separators ':', '-' or ' ' allowed); the error never shows the UID."""
    if not isinstance(text, str):
        raise ProvisionError("%s: uid is missing" % where)
    h = re.sub(r"[\s:-]", "", text)
    if not re.fullmatch(r"[0-9A-Fa-f]*", h) or len(h) % 2 or len(h) // 2 not in UID_BYTES:
        raise ProvisionError("%s: uid must be 4, 7 or 10 bytes of hex (%d characters given)" % (where, len(h)))
    return binascii.unhexlify(h)


def _optional(value):
    """Empty CSV cells and JSON nulls both mean `not set`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


def card_entry(row, where):
    """One card row -> (raw uid bytes, local-list entry without its token, name or None)."""
    uid = parse_uid(row.get("uid"), where)
    unknown = sorted(set(row) - set(CARD_FIELDS))
    if unknown:
        raise ProvisionError("%s: unknown column(s) %s (allowed: %s)"
                             % (where, ", ".join(unknown), ", ".join(CARD_FIELDS)))
    status = _optional(row.get("status")) or "Accepted"
    if status not in CARD_STATUSES:
        raise ProvisionError("%s: status must be one of %s" % (where, ", ".join(CARD_STATUSES)))
    expiry = _optional(row.get("expiry"))
    if expiry is not None:
        try:
            parse_iso(expiry)
        except ValueError:
            raise ProvisionError("%s: expiry must be an ISO 8601 time with a zone, e.g. 2027-01-01T00:00:00Z" % where)
    group = _optional(row.get("group"))
    if group is not None and (not isinstance(group, str) or len(group) > 36):
        raise ProvisionError("%s: group must be text of at most 36 characters" % where)
    amps = _optional(row.get("max_current_a"))
    if amps is not None:
        try:
            amps = int(amps) if not isinstance(amps, bool) else None
        except (TypeError, ValueError):
            amps = None
        if amps is None or not 6 <= amps <= 80:
            raise ProvisionError("%s: max_current_a must be a whole number of amperes within 6..80" % where)
    kwh = _optional(row.get("max_kwh"))
    if kwh is not None:
        kwh = str(kwh) if isinstance(kwh, int) and not isinstance(kwh, bool) else kwh
        try:
            if parse(kwh, 3, "max_kwh") <= 0:
                raise ValueError()
        except ValueError:
            raise ProvisionError("%s: max_kwh must be a positive decimal like \"20\" or \"7.5\"" % where)
    off = _optional(row.get("offpeak_only"))
    if off is None:
        off = False
    elif not isinstance(off, bool):
        low = str(off).lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ProvisionError("%s: offpeak_only must be true or false" % where)
        off = low in ("true", "1", "yes")
    name = _optional(row.get("name"))
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable()):
        raise ProvisionError("%s: name must be text of at most %d characters" % (where, MAX_NAME))
    return uid, {"status": status, "expiry": expiry, "group": group, "max_current_a": amps, "max_kwh": kwh,
                 "offpeak_only": off}, name


def read_cards(path):
    """Cards from CSV (header row, only uid required) or JSON (list, or {"cards": [...]})."""
    name = os.path.basename(path)
    if path.lower().endswith(".json"):
        data = load_json(path, "cards")
        rows = data.get("cards") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ProvisionError("cards: %s must hold a list of card objects (or {\"cards\": [...]})" % name)
        numbered = [("%s card %d" % (name, i + 1), r) for i, r in enumerate(rows)]
    else:
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or "uid" not in [h.strip() for h in reader.fieldnames]:
                    raise ProvisionError("cards: %s needs a header row with a uid column" % name)
                numbered = []
                for i, r in enumerate(reader):
                    if None in r:
                        raise ProvisionError("cards: %s line %d has more cells than the header" % (name, i + 2))
                    row = {k.strip(): v for k, v in r.items()}
                    if any(_optional(v) is not None for v in row.values()):
                        numbered.append(("%s line %d" % (name, i + 2), row))
        except OSError as e:
            raise ProvisionError("cards: cannot read %s (%s)" % (path, e.strerror))
        except UnicodeDecodeError:
            raise ProvisionError("cards: %s is not UTF-8 text" % name)
    if len(numbered) > MAX_CARDS:
        raise ProvisionError("cards: %d cards is more than the %d a charger keeps" % (len(numbered), MAX_CARDS))
    return [card_entry(r, where) for where, r in numbered]


def local_list(cards, key, key_version, version):
    """The local list of pseudonyms, sorted by token (the input order is not kept)."""
    entries = {}
    for uid, entry, _ in cards:
        token = pseudonym(key, uid)
        if token in entries:
            raise ProvisionError("cards: the same card UID is listed twice")
        e = {"token": token, "key": key_version}
        e.update(entry)
        entries[token] = e
    return {"version": version, "entries": [entries[t] for t in sorted(entries)]}


def backend_auth(cards, keys, accept):
    """tools/backend.py's --auth table: each card's answer under every accepted key version, so
    chargers still on an older current key are answered during a rotation (docs/privacy.md)."""
    table = {}
    for uid, entry, _ in cards:
        answer = dict((k, v) for k, v in entry.items() if v is not None and v is not False)
        for v in accept:
            table[pseudonym(keys[v], uid)] = answer
    return (json.dumps(table, sort_keys=True, indent=1) + "\n").encode()


def labels(cards, keys, accept):
    """labels.csv: pseudonym, key version, name of each named card under every accepted version."""
    rows = sorted((pseudonym(keys[v], uid), v, name) for uid, _, name in cards if name for v in accept)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("token", "key", "name"))
    w.writerows(rows)
    return buf.getvalue().encode()


def _site_keys(args):
    """({version: key bytes} from --keys then --site-key, the current version, the accepted versions:
    by default every version given)."""
    given = {}
    base = args.keys_data.get("site_keys") or {}
    if not isinstance(base, dict):
        raise ProvisionError("site_keys in %s must be an object {version: hex}" % args.keys)
    given.update(base)
    for item in args.site_key or []:
        v, sep, h = item.partition(":")
        if not sep:
            raise ProvisionError("--site-key must be VERSION:HEX")
        given[v] = h
    if not given:
        raise ProvisionError("site_keys: no site key given (--site-key 1:HEX or --keys FILE)")
    keys = {}
    for v, h in given.items():
        try:
            n = int(v)
        except ValueError:
            n = 0
        if not 1 <= n <= 255:
            raise ProvisionError("site_keys: version %r must be a number within 1..255" % v)
        keys[n] = _hex_key(h, "site_keys[%d]" % n)
    current = args.site_key_current if args.site_key_current is not None else \
        args.keys_data.get("site_key_current", max(keys))
    if current not in keys:
        raise ProvisionError("site_key_current: version %r has no key" % current)
    accept = args.site_key_accept if args.site_key_accept is not None else \
        args.keys_data.get("site_key_accept", sorted(keys))
    if isinstance(accept, str):
        try:
            accept = [int(v) for v in accept.split(",")]
        except ValueError:
            accept = None
    if not isinstance(accept, list) or not accept or \
            any(isinstance(v, bool) or not isinstance(v, int) or v not in keys for v in accept):
        raise ProvisionError("site_key_accept: give versions that have a key, e.g. [1, 2] (or --site-key-accept 1,2)")
    if current not in accept:
        raise ProvisionError("site_key_accept: must include the current version %d" % current)
    return keys, current, sorted(set(accept))


def _public_pem(path):
    """The RSA modulus (hex) of a PEM public key, or of the public part of a PEM private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ProvisionError("ota.public_key: cannot read %s (%s)" % (path, e.strerror))
    try:
        if b"PRIVATE KEY-----" in data:
            pw = os.environ.get(PASSPHRASE_ENV) if b"ENCRYPTED" in data else None
            key = serialization.load_pem_private_key(data, password=pw.encode() if pw else None).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise ProvisionError("ota.public_key: %s is not a usable PEM key (%s; an encrypted private key needs $%s)"
                             % (path, e, PASSPHRASE_ENV))
    if not isinstance(key, rsa.RSAPublicKey) or key.public_numbers().e != E:
        raise ProvisionError("ota.public_key: %s must hold an RSA key with e = 65537 (tools/bundle.py keygen)" % path)
    n = key.public_numbers().n
    return "%0*x" % (2 * ((n.bit_length() + 7) // 8), n)


def _update_pubkey(args):
    """ota.public_key, as the charger checks update signatures with it (docs/ota.md)."""
    if "update_key" in args.keys_data:
        raise ProvisionError("update_key: the HMAC update key is no longer used (docs/ota.md): delete it from %s; "
                             "chargers get the update public key (--update-pubkey or --update-keyfile)" % args.keys)
    if bool(args.update_pubkey) == bool(args.update_keyfile):
        raise ProvisionError("ota.public_key: give the firmware update public key once: --update-pubkey HEX or "
                             "--update-keyfile PEM (tools/bundle.py keygen and pubkey print the hex)")
    text = _public_pem(args.update_keyfile) if args.update_keyfile else args.update_pubkey.strip().lower()
    try:
        parse_public_key(text)
    except ValueError as e:
        raise ProvisionError("ota.public_key: %s" % e)
    return text


def _pem(path, name, kind):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ProvisionError("%s: cannot read %s (%s)" % (name, path, e.strerror))
    if b"-----BEGIN " + kind not in data:
        raise ProvisionError("%s: %s is not a PEM %s" % (name, path, kind.decode().lower()))
    return data


def build(args):
    """Every output file as {name: bytes}, or a ProvisionError naming the first bad input."""
    files = {"board.json": load_board(args.board)}
    dev = args.device_id
    if not dev or len(dev) > 64 or not re.fullmatch(r"[A-Za-z0-9_.:-]+", dev):
        raise ProvisionError("device_id: give 1..64 characters of A-Z a-z 0-9 _ . : - (it is part of MQTT topics)")
    args.keys_data = {}
    if args.keys:
        args.keys_data = load_json(args.keys, "keys")
        if not isinstance(args.keys_data, dict):
            raise ProvisionError("keys: %s must hold a JSON object like secrets.example.json" % args.keys)
    keys, current, accept = _site_keys(args)
    config_before, secrets_before = earlier(args.out, dev) if args.out else ({}, {})
    device_key = args.device_key or args.keys_data.get("device_key") or secrets_before.get("device_key")
    if getattr(args, "fleet_key", None):   # the backend derives the same key (docs/security.md "End to end")
        try:
            fleet = read_fleet_key(args.fleet_key)
        except ValueError as e:
            raise ProvisionError("fleet key: %s" % e)
        derived = binascii.hexlify(derive(fleet, dev)).decode()
        if device_key is not None and device_key.strip().lower() != derived:
            raise ProvisionError("device_key: differs from the one --fleet-key derives; give one of them")
        device_key = derived
    if device_key is None:
        if not args.out:
            raise ProvisionError("device_key: no key given; a new one is generated only with --out DIR, to keep it")
        device_key = binascii.hexlify(os.urandom(32)).decode()
        print("provision: warning: device_key generated at random (no --fleet-key): a backend or bridge that "
              "derives keys from the fleet secret refuses every message of %s" % dev, file=sys.stderr)
    _hex_key(device_key, "device_key")
    public_key = _update_pubkey(args)
    user = args.keys_data.get("mqtt_user")
    if user is not None and user != dev:   # the broker's ACL gives each account cp/v1/<its user name>/
        raise ProvisionError("mqtt_user: the MQTT user name is the device id (%s), not %r: remove it from %s"
                             % (dev, user, args.keys))
    password = os.environ.get("CP_MQTT_PASSWORD") or args.keys_data.get("mqtt_password")
    if password is not None and (not isinstance(password, str) or not 8 <= len(password) <= 256
                                 or any(c.isspace() or not c.isprintable() for c in password)):
        raise ProvisionError("mqtt_password: give 8..256 printable characters without spaces")

    if not args.broker:
        raise ProvisionError("mqtt.host: --broker HOST[:PORT] is missing")
    host, sep, port = args.broker.rpartition(":") if ":" in args.broker else (args.broker, "", "")
    if not host or not re.fullmatch(r"[A-Za-z0-9_.-]+", host):
        raise ProvisionError("mqtt.host: %r is not a host name or IPv4 address" % args.broker)
    tls = not args.no_tls
    if not sep:
        port = 8883 if tls else 1883
    elif port.isdigit():
        port = int(port)
    else:
        port = 0
    if not 1 <= port <= 65535:
        raise ProvisionError("mqtt.port: must be within 1..65535")
    if not 10 <= args.keepalive <= 3600:
        raise ProvisionError("mqtt.keepalive_s: must be within 10..3600")
    mqtt = {"host": host, "port": port, "tls": tls, "keepalive_s": args.keepalive}
    if tls:
        if not args.ca:
            raise ProvisionError("mqtt.ca: TLS needs the broker's CA certificate (--ca FILE), "
                                 "or --no-tls on a closed network")
        files["ca.pem"] = _pem(args.ca, "mqtt.ca", b"CERTIFICATE")
        mqtt["ca"] = "ca.pem"
    elif password:
        raise ProvisionError("mqtt_password: sending a password over plain TCP is unsafe: use TLS (--ca)")
    if tls and password is None:
        if not args.out:
            raise ProvisionError("mqtt_password: no password given; a new one is generated only with --out DIR, "
                                 "where the broker's entry for it is written")
        kept = None if args.new_mqtt_password else secrets_before.get("mqtt_password")   # the broker has it
        password = kept if isinstance(kept, str) and kept else new_password()
    if bool(args.cert) != bool(args.key):
        raise ProvisionError("tls_cert/tls_key: give both the client certificate and its key, or neither")
    if args.cert and not tls:
        raise ProvisionError("tls_cert: a client certificate needs TLS (remove --no-tls)")
    if args.cert:
        files["cert.pem"] = _pem(args.cert, "tls_cert", b"CERTIFICATE")
        files["key.pem"] = _pem(args.key, "tls_key", b"")
        if b"PRIVATE KEY-----" not in files["key.pem"]:
            raise ProvisionError("tls_key: %s is not a PEM private key" % args.key)

    tariff = load_json(args.tariff, "tariff")
    try:
        Tariff(tariff)
    except ValueError as e:
        raise ProvisionError("tariff: %s" % e)
    cards = read_cards(args.cards) if args.cards else []
    llist = local_list(cards, keys[current], current, 1)
    llist["version"] = _list_version(args, config_before, llist["entries"])

    policy = dict(AUTH_POLICY)
    for item in args.auth_policy or []:
        name, sep, value = item.partition("=")
        if name not in AUTH_POLICY or value not in ("true", "false"):
            raise ProvisionError("auth: --auth-policy NAME=true|false with NAME one of %s" % ", ".join(AUTH_POLICY))
        policy[name] = value == "true"
    if not -720 <= args.utc_offset_min <= 840:
        raise ProvisionError("site.utc_offset_min: must be within -720..840 minutes")
    if args.dst not in DST_RULES:
        raise ProvisionError("site.dst: must be one of %s" % ", ".join(DST_RULES))

    config = {"device_id": dev, "mqtt": mqtt, "tariff": tariff, "local_list": llist, "auth": policy,
              "site": {"utc_offset_min": args.utc_offset_min, "dst": args.dst}, "ota": {"public_key": public_key}}
    # the charger holds only the keys it accepts: a dropped key is gone from it at the next provisioning
    secrets = {"site_keys": {str(v): binascii.hexlify(keys[v]).decode() for v in accept},
               "site_key_current": current, "site_key_accept": accept, "device_key": device_key.strip().lower(),
               "mqtt_user": dev}
    if password is not None:   # optional secrets are left out, never written as null
        secrets["mqtt_password"] = password
        files[BROKER_DIR + "passwd"] = password_line(dev, password).encode()
        files[BROKER_DIR + "acl"] = device_acl(dev).encode()
    if args.cert:
        secrets.update(tls_cert="cert.pem", tls_key="key.pem")
    files[BACKEND_DIR + "auth.json"] = backend_auth(cards, keys, accept)
    files[BACKEND_DIR + "labels.csv"] = labels(cards, keys, accept)
    files["config.json"] = (json.dumps(config, sort_keys=True, separators=(",", ":")) + "\n").encode()
    files["secrets.json"] = (json.dumps(secrets, sort_keys=True, indent=1) + "\n").encode()
    return files


BROKER_DIR = "broker/"   # the broker's entries for the charger: written with --out, never onto the board
BACKEND_DIR = "backend/"  # the backend's --auth table and the cards' labels: --out only, never onto the board
SECRET_FILES = ("secrets.json", "key.pem", BROKER_DIR + "passwd", BACKEND_DIR + "labels.csv")


def board_files(files):
    """The files that go onto the charger (not the operator's: broker and backend entries)."""
    return dict((n, d) for n, d in files.items() if not n.startswith((BROKER_DIR, BACKEND_DIR)))


def earlier(out, dev):
    """(config, secrets) an earlier run wrote into out for this device, else ({}, {}): provisioning
    again keeps what was generated (device key, MQTT password) and moves the list version on."""
    found = []
    for name in ("config.json", "secrets.json"):
        try:
            with open(os.path.join(out, name), encoding="utf-8") as f:
                found.append(json.load(f, parse_float=str))
        except (OSError, ValueError):   # none, or not readable: start afresh
            return {}, {}
    config, secrets = found
    if not isinstance(config, dict) or not isinstance(secrets, dict) or config.get("device_id") != dev \
            or secrets.get("mqtt_user") != dev:
        return {}, {}
    return config, secrets


def _list_version(args, before, entries):
    """--list-version, else the earlier run's, plus one when the list changed (a charger takes a
    provisioned list only above the version it holds), else 1."""
    if args.list_version is not None:
        if args.list_version < 1:
            raise ProvisionError("local_list.version: must be 1 or more")
        return args.list_version
    old = before.get("local_list")
    version = old.get("version") if isinstance(old, dict) else None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return 1
    return version if old.get("entries") == entries else version + 1


def ocpp_ids(entries):
    """The local list as a CSMS's authorization list (OCPP 1.6 idTag = the pseudonym's first 20 hex
    digits, as tools/ocpp_bridge.py sends it) with the pseudonym beside it for the bridge's --cards."""
    cards = []
    for e in entries:
        info = {"status": e["status"]}
        if e.get("expiry"):
            info["expiryDate"] = e["expiry"]
        if e.get("group"):
            if len(e["group"]) > 20:
                raise ProvisionError("cards: group %r is longer than OCPP's 20-character parentIdTag" % e["group"])
            info["parentIdTag"] = e["group"]
        cards.append({"idTag": e["token"][:20], "idTagInfo": info, "token": e["token"], "key": e["key"]})
    return {"cards": cards}


def write_dir(files, out_dir):
    """Writes the files into out_dir, each replaced whole (secrets readable by the owner only)."""
    os.makedirs(out_dir, exist_ok=True)
    for name, data in sorted(files.items()):
        path = os.path.join(out_dir, name)
        folder, base = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + base)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600 if name in SECRET_FILES else 0o644)
        os.replace(tmp, path)


def mpremote_path():
    venv = os.path.join(ROOT, ".venv", "bin", "mpremote")
    return venv if os.path.exists(venv) else (shutil.which("mpremote") or "mpremote")


def _mpremote(cmd, what, timeout):
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except FileNotFoundError:
        raise ProvisionError("board: mpremote not found (%s): run `make setup`" % cmd[0])
    except subprocess.TimeoutExpired:
        raise ProvisionError("board: %s timed out after %d s" % (what, timeout))
    if r.returncode:
        tail = r.stdout.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise ProvisionError("board: %s failed: %s" % (what, " / ".join(tail) or "exit %d" % r.returncode))
    return r.stdout.decode("utf-8", "replace")


def board_commands(files, port, staging, mpremote=None):
    """The mpremote command lines: probe, copy as NAME.new, then rename all into place."""
    exe = mpremote or mpremote_path()
    probe = [exe, "connect", port, "exec", "import os; print('cp-provision', len(os.listdir()))"]
    copy = [exe, "connect", port]
    names = sorted(files)
    for i, name in enumerate(names):
        copy += (["+"] if i else []) + ["fs", "cp", os.path.join(staging, name), ":%s.new" % name]
    swap = [exe, "connect", port, "exec",
            "import os\nfor n in %r:\n try:\n  os.remove(n)\n except OSError:\n  pass\n os.rename(n + '.new', n)\n"
            "print('cp-provision done')" % (names,)]
    return probe, copy, swap


def write_board(files, port, mpremote=None, timeout=60):
    """Copies the files to the board's filesystem root; an unreachable board changes nothing."""
    files = board_files(files)
    staging = tempfile.mkdtemp(prefix="cp-provision-")
    try:
        probe, copy, swap = board_commands(files, port, staging, mpremote)
        if "cp-provision" not in _mpremote(probe, "reaching the board at %s" % port, timeout):
            raise ProvisionError("board: %s did not answer like a MicroPython board" % port)
        write_dir(files, staging)
        _mpremote(copy, "copying the files", timeout)
        _mpremote(swap, "putting the files in place", timeout)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n"
               "  cp secrets.example.json secrets.json   # fill in the keys (git ignores secrets.json)\n"
               "  python3 tools/provision.py --board esp32_devkit --device-id cp-0001 --keys secrets.json \\\n"
               "      --broker mqtt.example.org:8883 --ca ca.pem --cert cp-0001.crt --key cp-0001.key \\\n"
               "      --fleet-key fleet.key --update-keyfile cp-update.pub.pem --tariff tariff.json \\\n"
               "      --cards cards.csv --utc-offset-min 60 --dst EU --out out/cp-0001\n"
               "cards.csv: header uid,status,expiry,group,max_current_a,max_kwh,offpeak_only,name (only uid\n"
               "required; name stays on your side: OUT/backend/labels.csv).\n"
               "MQTT: the user name is the device id; the password is random (with --out), or from\n"
               "$CP_MQTT_PASSWORD or --keys (mqtt_password). OUT/broker/passwd and OUT/broker/acl are the\n"
               "broker's entries for it: append them to mosquitto's password_file and acl_file, then reload\n"
               "mosquitto (kill -HUP); see docs/security.md. OUT/backend/auth.json is tools/backend.py's --auth.\n"
               "Key rotation (docs/privacy.md): add the new site key, make it current, provision again.")
    ap.add_argument("--board", required=True, help="name of board_configs/<board>.json")
    ap.add_argument("--device-id", required=True, help="charger id, part of its MQTT topics (e.g. cp-0001)")
    ap.add_argument("--tariff", required=True, metavar="FILE",
                    help="OCPI 2.2.1 tariff (JSON) the charger prices sessions with until the backend sends another")
    ap.add_argument("--keys", metavar="FILE", help="secrets in the format of secrets.example.json")
    ap.add_argument("--site-key", action="append", metavar="VERSION:HEX", help="site key (repeatable)")
    ap.add_argument("--site-key-current", type=int, metavar="VERSION",
                    help="version used for pseudonyms (default: highest)")
    ap.add_argument("--site-key-accept", metavar="V,V",
                    help="key versions the charger accepts, with the current one (default: every version given)")
    ap.add_argument("--device-key", metavar="HEX", help="this charger's own key (generated when absent, needs --out)")
    ap.add_argument("--update-pubkey", metavar="HEX",
                    help="firmware update public key: the RSA modulus as tools/bundle.py keygen/pubkey print it")
    ap.add_argument("--update-keyfile", metavar="PEM",
                    help="firmware update public key from a PEM file (a private key file: only its public part "
                         "is read)")
    ap.add_argument("--fleet-key", metavar="FILE",
                    help="fleet secret (hex): the device key is derived from it and the device id, as the backend's "
                         "--fleet-key does (docs/security.md)")
    ap.add_argument("--broker", metavar="HOST[:PORT]", help="MQTT broker (port 8883 with TLS, 1883 without)")
    ap.add_argument("--new-mqtt-password", action="store_true",
                    help="a new random MQTT password even where OUT/secrets.json has one (password rotation)")
    ap.add_argument("--no-tls", action="store_true", help="plain MQTT (closed networks only; refused with a password)")
    ap.add_argument("--ca", metavar="FILE", help="CA certificate of the broker (PEM)")
    ap.add_argument("--cert", metavar="FILE", help="client certificate (PEM)")
    ap.add_argument("--key", metavar="FILE", help="client private key (PEM)")
    ap.add_argument("--keepalive", type=int, default=60, help="MQTT keepalive, seconds (default 60)")
    ap.add_argument("--cards", metavar="FILE", help="cards with raw UIDs, CSV or JSON (hashed here, never copied)")
    ap.add_argument("--list-version", type=int,
                    help="local list version (default: 1, or one above OUT/config.json's when the list changed)")
    ap.add_argument("--auth-policy", action="append", metavar="NAME=true|false",
                    help="override: %s" % ", ".join("%s=%s" % (k, str(v).lower()) for k, v in AUTH_POLICY.items()))
    ap.add_argument("--utc-offset-min", type=int, default=0, help="site's standard-time offset from UTC, minutes")
    ap.add_argument("--dst", default="none", help="daylight-saving rule: EU, US or none (default none)")
    ap.add_argument("--out", metavar="DIR", help="write the files into DIR")
    ap.add_argument("--ocpp-ids", metavar="FILE",
                    help="also write the cards' OCPP idTags (for the CSMS) and pseudonyms (for tools/ocpp_bridge.py)")
    ap.add_argument("--port", metavar="DEVICE", help="write the files onto the board at DEVICE with mpremote")
    ap.add_argument("--mpremote", metavar="PATH", help="mpremote to use (default: the .venv one)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    written = None
    try:
        if not args.out and not args.port:
            raise ProvisionError("output: give --out DIR, --port DEVICE or both")
        files = build(args)
        ids = ocpp_ids(json.loads(files["config.json"])["local_list"]["entries"]) if args.ocpp_ids else None
        if args.port:  # reach the board before anything is written anywhere
            _mpremote(board_commands(files, args.port, "", args.mpremote)[0],
                      "reaching the board at %s" % args.port, 60)
        if args.out:
            kept = earlier(args.out, args.device_id)[1].get("mqtt_password")
            write_dir(files, args.out)
            written = args.out
            print("provision: wrote %s into %s" % (", ".join(sorted(board_files(files))), args.out))
            print("provision: %s is tools/backend.py's --auth table for these cards and %s names them "
                  "(both stay on your side)" % (os.path.join(args.out, BACKEND_DIR, "auth.json"),
                                                os.path.join(args.out, BACKEND_DIR, "labels.csv")))
            password = json.loads(files["secrets.json"]).get("mqtt_password")
            if password is not None and password == kept:
                print("provision: %s keeps the MQTT password it had: the broker's entries for it need no change"
                      % args.device_id)
            elif password is not None:
                print("provision: the broker's entries for %s are in %s: append passwd to mosquitto's password_file "
                      "and acl to its acl_file (replacing an older line of %s), then reload mosquitto "
                      "(docs/security.md)" % (args.device_id, os.path.join(args.out, BROKER_DIR), args.device_id))
        if args.port:
            write_board(files, args.port, args.mpremote)
            print("provision: wrote %s onto the board at %s" % (", ".join(sorted(board_files(files))), args.port))
        if ids is not None:
            with open(args.ocpp_ids, "w") as f:
                json.dump(ids, f, indent=1)
            print("provision: wrote %d OCPP idTags into %s" % (len(ids["cards"]), args.ocpp_ids))
    except ProvisionError as e:
        print("provision: %s; %s" % (e, "the board was left as it was (files are in %s)" % written if written
                                     else "nothing written"), file=sys.stderr)
        return 2
    config = json.loads(files["config.json"])
    print("provision: device %s, %d cards in local list v%d (pseudonyms only, key version %d), tariff %s" % (
        args.device_id, len(config["local_list"]["entries"]), config["local_list"]["version"],
        json.loads(files["secrets.json"])["site_key_current"], config["tariff"].get("id")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
