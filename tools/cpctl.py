"""Operator commands from the command line: seal each one, publish it, wait for every charger's cmd_ack.

One program with a subcommand per command (docs/mqtt.md "Commands"): a tariff, a card added,
blocked, expired or removed by its raw UID (hashed here with the site key of the operator's
secrets.json, never printed, sent or written raw), a full or diff local list, a remote start or
stop, clearing latched faults, a charging profile, an over-the-air update; `acks` lists what the
backend stored. Targets: --device ID (repeatable), --devices FILE (one id a line), --all (every
device the backend's store knows).

Every command is sealed under the charger's key (derived from --fleet-key) with the next
message counter from the backend's store (--db, the same database tools/backend.py uses): the
charger refuses a counter that is not above the last it accepted, so the CLI and the backend
must draw from one `counters` table. The CLI subscribes to cp/v1/+/cmd_ack itself and believes an
answer only under the charger's seal; the backend records it in the store. An answer the backend
has not recorded within 2 s (not running?) is written by the CLI, as the same row, and said so.

    export CP_CTL_PASSWORD=...     # with --user: an account of the backend role of its own
    .venv/bin/python tools/cpctl.py tariff tariff.json --all --fleet-key fleet.key --db out/backend.sqlite
    .venv/bin/python tools/cpctl.py card block 04A1B2C3D4E5F6 --keys secrets.json --device cp-0001 --fleet-key fleet.key

One line per device: `<device> ok|refused|timeout <command> ...`. Exit status: 0 every device
accepted; 1 some refused (none timed out); 2 nothing sent (bad input, unreadable key or store,
broker unreachable or refusing the login); 3 some device did not answer within --timeout.
"""
import argparse
import json
import os
import re
import ssl
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "tools", "compat"), os.path.join(ROOT, "tools"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from firmware.auth.pseudonym import parse_key, pseudonym  # noqa: E402
from firmware.billing.tariff import Tariff  # noqa: E402
from firmware.charging.limits import KINDS, Limits  # noqa: E402
from firmware.link.ota import FLEET, check_command  # noqa: E402
from downlink import B2D, CTR_MAX, Sealer, broker_arg, read_fleet_key, seal, to_device  # noqa: E402
from provision import ProvisionError, card_entry, local_list, parse_uid, read_cards  # noqa: E402
from store import Store  # noqa: E402

OK, REFUSED, BAD_INPUT, TIMEOUT = 0, 1, 2, 3
PASSWORD_ENV = "CP_CTL_PASSWORD"
MAX_CMD_BYTES = 8192      # the charger drains a larger message unread (docs/mqtt.md)
MAX_DEVICES = 10000
BACKEND_WAIT_S = 2.0      # how long the backend may take to record an answer before the CLI does
MAX_OTA_SIZE = 1 << 30    # the charger checks its own ota.max_size; this only bounds the input
DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ACK_FIELDS = ("id", "cmd", "status", "reason")


class InputError(ValueError):
    """Input the CLI refuses before anything is sent."""


class Command:
    """What to send: the command name, its payload without id and ctr, and where a version comes from
    (None, "list": one above the charger's local list, "tariff": one above the last tariff it took)."""

    def __init__(self, name, payload, version=None, cid=None):
        self.name = name
        self.payload = payload
        self.version = version
        self.cid = cid or "ctl-%s" % os.urandom(6).hex()

    def for_device(self, version=None):
        p = dict(self.payload, id=self.cid)
        if version is not None:
            p["version"] = version
        return p


# --- input ------------------------------------------------------------------------------------

def _load_json(path, what):
    """A JSON input file, or InputError naming it (nothing is sent on a bad file)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, parse_float=str)   # decimals stay exact (prices, VAT), as the charger reads them
    except (OSError, ValueError) as e:
        raise InputError("%s %s: %s" % (what, path, e))


def site_keys(path):
    """The operator's secrets.json: ({version: key}, current version, accepted versions)."""
    if not path:
        raise InputError("cards are hashed with the site key: give --keys secrets.json")
    data = _load_json(path, "--keys")
    given = data.get("site_keys") if isinstance(data, dict) else None
    if not isinstance(given, dict) or not given:
        raise InputError("--keys %s: needs \"site_keys\": {version: hex}" % path)
    keys = {}
    for v, text in given.items():
        if not str(v).isdigit() or not 1 <= int(v) <= 255:
            raise InputError("--keys %s: site key version %r must be a number 1..255" % (path, v))
        try:
            keys[int(v)] = parse_key(text if isinstance(text, str) else "", "site_keys[%s]" % v)
        except ValueError as e:
            raise InputError("--keys %s: %s" % (path, e))
    current = data.get("site_key_current", max(keys))
    accept = data.get("site_key_accept", sorted(keys))
    if current not in keys:
        raise InputError("--keys %s: site_key_current %r has no key" % (path, current))
    if not isinstance(accept, list) or current not in accept or any(v not in keys for v in accept):
        raise InputError("--keys %s: site_key_accept must list versions that have a key, the current one too" % path)
    return keys, current, sorted(set(accept))


def read_devices(path):
    """--devices FILE: one device id a line; blank lines and # comments skipped."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError("--devices %s: %s" % (path, e))
    out = []
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(check_device(line, "--devices %s line %d" % (path, n)))
    return out


def check_device(text, where="--device"):
    """A device id that can be a topic level: no wildcards, separators or spaces reach the broker."""
    if not DEVICE_ID.fullmatch(text):
        raise InputError("%s: %r is not a device id (1..64 of A-Z a-z 0-9 . _ : -)" % (where, text[:70]))
    return text


def targets(args, store):
    """The devices to command, in the order given, each once."""
    chosen = [check_device(d) for d in args.device or []]
    if args.devices:
        chosen += read_devices(args.devices)
    if args.all:
        chosen += store.devices()
    if not chosen:
        raise InputError("no device: give --device ID, --devices FILE or --all%s"
                         % (" (the store knows none)" if args.all else ""))
    out = list(dict.fromkeys(chosen))
    if len(out) > MAX_DEVICES:
        raise InputError("%d devices, more than %d at once" % (len(out), MAX_DEVICES))
    return out


def _version(text):
    """argparse type for a version the charger can accept (1..2^30-1)."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 1 <= v < 1 << 30:
        raise argparse.ArgumentTypeError("a version is a whole number 1..%d" % ((1 << 30) - 1))
    return v


def _card_row(args, uid):
    """The options as a card row, so tools/provision.py's own checks apply to them."""
    row = {"uid": uid}
    for name in ("status", "expiry", "group", "max_current_a", "max_kwh"):
        value = getattr(args, name, None)
        if value is not None:
            row[name] = value
    if getattr(args, "offpeak_only", False):
        row["offpeak_only"] = True
    return row


def build(args):
    """The Command of the parsed arguments; InputError says what is wrong (nothing is sent)."""
    try:
        return _BUILD[args.cmd](args)
    except ProvisionError as e:   # its messages never show a UID
        raise InputError(str(e))


def _tariff(args):
    """cmd/tariff: the version per device unless --version fixes it."""
    tariff = _load_json(args.file, "tariff")
    try:
        Tariff(tariff)   # the charger's own check
    except (ValueError, TypeError, KeyError) as e:
        raise InputError("tariff %s: %s" % (args.file, e))
    if args.version:
        return Command("tariff", {"tariff": tariff, "version": args.version})
    return Command("tariff", {"tariff": tariff}, "tariff")


def _card(args):
    """cmd/list_update diff for one card, by pseudonym only."""
    keys, current, accept = site_keys(args.keys)
    action = args.action
    if action == "add":
        uid, entry, _ = card_entry(_card_row(args, args.uid), "card")
        entries = [dict({"token": pseudonym(keys[current], uid), "key": current},
                        **{k: v for k, v in entry.items() if v is not None and v is not False})]
    else:   # under every key version the chargers accept: a rotation must not let the card through
        uid = parse_uid(args.uid, "card")
        change = {"remove": True} if action == "remove" else {"status": {"block": "Blocked",
                                                                          "expire": "Expired"}[action]}
        entries = [dict({"token": pseudonym(keys[v], uid), "key": v}, **change) for v in accept]
    return _list_command("diff", entries, args.list_version)


def _list(args):
    """cmd/list_update from a cards file, pseudonyms under the current site key."""
    keys, current, _ = site_keys(args.keys)
    cards = read_cards(args.file)
    if args.kind == "full" and not cards:
        raise InputError("list full %s: no card: an empty full list would refuse every card" % args.file)
    entries = local_list(cards, keys[current], current, 0)["entries"]
    for e in entries:
        for k in [k for k, v in e.items() if v is None or v is False]:
            del e[k]
    return _list_command(args.kind, entries, args.list_version)


def _list_command(kind, entries, version):
    payload = {"type": kind, "entries": entries}
    if version:
        payload["version"] = version
    return Command("list_update", payload, None if version else "list")


def _start(args):
    """cmd/remote_start for a card's pseudonym under the current site key."""
    keys, current, _ = site_keys(args.keys)
    uid, entry, _ = card_entry(_card_row(args, args.uid), "start")
    payload = {"token": pseudonym(keys[current], uid), "key": current}
    payload.update((k, entry[k]) for k in ("max_current_a", "max_kwh") if entry[k] is not None)
    return Command("remote_start", payload)


def _stop(args):
    return Command("remote_stop", {} if args.tx_id is None else {"tx_id": args.tx_id})


def _clear_fault(args):
    return Command("clear_fault", {})


def _profile(args):
    if args.clear == (args.file is not None):
        raise InputError("profile: give a profile FILE or --clear")
    if args.clear:
        payload = {"kind": args.kind, "profile": None}
        if args.stack_level is not None:
            payload["stack_level"] = args.stack_level
        return Command("charging_profile", payload)
    profile = _load_json(args.file, "profile")
    try:
        Limits(80).set_profile(args.kind, profile)   # the charger's own check, in RAM
    except ValueError as e:
        raise InputError("profile %s: %s" % (args.file, e))
    return Command("charging_profile", {"kind": args.kind, "profile": profile})


def _update(args):
    manifest = _load_json(args.file, "update")
    if not isinstance(manifest, dict):
        raise InputError("update %s: must hold the JSON object tools/bundle.py printed" % args.file)
    try:
        check_command(manifest, MAX_OTA_SIZE)   # the charger's own check of the fields
    except (ValueError, TypeError) as e:
        raise InputError("update %s: %s" % (args.file, e))
    payload = {k: v for k, v in manifest.items() if k != "id"}
    return Command("update", payload, cid=manifest["id"])


_BUILD = {"tariff": _tariff, "card": _card, "list": _list, "start": _start, "stop": _stop,
          "clear-fault": _clear_fault, "profile": _profile, "update": _update}


def sealed_size(device, cmd, version):
    """Bytes the charger receives for this command (a seal under any key has the same length)."""
    body = json.dumps(dict(cmd.for_device(version), ctr=CTR_MAX), separators=(",", ":")).encode()
    return len(seal(bytes(32), B2D, device, "cmd/" + cmd.name, body))


def tariff_version(store, device):
    """One above the newest tariff version the device acknowledged in the store; 1 if none."""
    best = 0
    for row in store.cmd_acks_of(device, "tariff"):
        try:
            v = json.loads(row["extra"] or "{}").get("version")
        except ValueError:
            v = None
        if row["status"] == "accepted" and isinstance(v, int) and v > best:
            best = v
    return best + 1


# --- the broker ---------------------------------------------------------------------------------

class Link:
    """One MQTT connection: publishes sealed commands and collects the sealed answers to them."""

    def __init__(self, host, port, sealer, username=None, password=None, tls=None):
        import paho.mqtt.client as mqtt

        self.sealer = sealer
        self.ready = threading.Event()   # subscribed, or refused
        self.refused = None
        self._cv = threading.Condition()
        self._waiting = {}   # (device, command id) -> None until its cmd_ack arrives
        self.ignored = 0     # answers without a valid seal
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=username or "cpctl-%d" % os.getpid(),
                                  clean_session=True)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls.get("cert"), keyfile=tls.get("key"),
                                tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def open(self, timeout):
        """Connected and subscribed, or RuntimeError naming why not."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as e:
            raise RuntimeError("cannot reach the broker %s:%d: %s" % (self.host, self.port, e))
        self.client.loop_start()
        if not self.ready.wait(timeout) or self.refused:
            self.close()
            raise RuntimeError("the broker %s:%d %s" % (self.host, self.port, "refused the login: %s" % self.refused
                                                       if self.refused else "did not answer in %g s" % timeout))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = str(reason_code)
            client.disconnect()
            self.ready.set()
            return
        client.subscribe("cp/v1/+/cmd_ack", qos=1)

    def _on_message(self, client, userdata, msg):
        parts = msg.topic.split("/")
        if len(parts) != 4:
            return
        device = parts[2]
        try:
            ack = json.loads(self.sealer.open(device, "cmd_ack", bytes(msg.payload)))
        except ValueError:
            self.ignored += 1
            return
        if not isinstance(ack, dict):
            return
        with self._cv:
            key = (device, ack.get("id"))
            if key in self._waiting and self._waiting[key] is None:
                self._waiting[key] = ack
                self._cv.notify_all()

    def send(self, device, cmd, version=None):
        """Publish one sealed command; its answer is awaited by collect()."""
        with self._cv:
            self._waiting[(device, cmd.cid)] = None
        to_device(self.client, device, "cmd/" + cmd.name, cmd.for_device(version), self.sealer)

    def collect(self, devices, cid, timeout):
        """{device: its cmd_ack, or None when none came within timeout}."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while any(self._waiting[(d, cid)] is None for d in devices):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            return {d: self._waiting.pop((d, cid)) for d in devices}


# --- running a command over the fleet -----------------------------------------------------------

def describe(device, name, ack, timeout):
    """One line per device: ok / refused: reason / timeout."""
    if ack is None:
        return "%s timeout %s: no cmd_ack within %g s" % (device, name, timeout)
    extra = {k: v for k, v in ack.items() if k not in _ACK_FIELDS}
    more = " " + json.dumps(extra, sort_keys=True, separators=(", ", ": ")) if extra else ""
    if ack.get("status") == "accepted":
        return "%s ok %s%s" % (device, name, more)
    reason = ack.get("reason") or ack.get("status")
    if "replayed or out of order" in str(reason):
        reason += " (is --db the backend's own database?)"
    return "%s refused %s: %s%s" % (device, name, reason, more)


def run(cmd, devices, link, store, versions, timeout, out):
    """Send cmd to every device (asking each for its list version first when needed); exit status."""
    answers = {}
    if cmd.version == "list" and not versions:
        ask = Command("list_version", {})
        for d in devices:
            link.send(d, ask)
        got = link.collect(devices, ask.cid, timeout)
        for d, ack in got.items():
            if ack is not None and ack.get("status") == "accepted" and isinstance(ack.get("version"), int):
                versions[d] = ack["version"] + 1
            else:
                answers[d] = (ask.name, ack)
    ready = [d for d in devices if d not in answers]
    for d in ready:
        link.send(d, cmd, versions.get(d))
    for d, ack in link.collect(ready, cmd.cid, timeout).items():
        answers[d] = (cmd.name, ack)
    worst = OK
    for d in devices:
        name, ack = answers[d]
        out(describe(d, name, ack, timeout))
        if ack is None:
            worst = TIMEOUT
        elif ack.get("status") != "accepted" and worst == OK:
            worst = REFUSED
    keep([(d, ack) for d, (_, ack) in answers.items() if ack is not None], store, out)
    return worst


def keep(answered, store, out, wait_s=BACKEND_WAIT_S):
    """Every answer in the store: the backend records it (and logs it); those it has not within
    wait_s are written here, the same row, so the next tariff version is right even without it."""
    deadline = time.monotonic() + wait_s
    missing = answered
    while missing:
        missing = [(d, a) for d, a in missing
                   if not any(r["cmd_id"] == a.get("id") and r["status"] == a.get("status")
                              for r in store.cmd_acks_of(d, a.get("cmd"), limit=50))]
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if missing:
        out("cpctl: the backend has not recorded %d answer(s) within %g s (is it running on this --db?); "
            "kept here" % (len(missing), wait_s))
    for d, a in missing:
        try:
            store.add_cmd_ack(d, a, int(time.time()))
        except store.errors as e:
            out("cpctl: could not keep %s's answer in the store: %s" % (d, e))


def list_acks(store, devices, limit, out):
    """The answers the store holds, newest first: what a late or earlier command did."""
    for d in devices:
        rows = store.cmd_acks_of(d, limit=limit)
        if not rows:
            out("%s: no cmd_ack stored" % d)
        for r in rows:
            out("%s %s %s %s %s%s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["received_s"])), d,
                                      r["cmd"], r["cmd_id"], r["status"], ": " + r["reason"] if r["reason"] else ""))
    return OK


# --- the command line ---------------------------------------------------------------------------

def parser():
    """Every subcommand takes the targets and connection options, before or after its arguments."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("targets and connection")
    g.add_argument("--device", action="append", metavar="ID", help="a charger (repeatable)")
    g.add_argument("--devices", metavar="FILE", help="chargers, one device id a line")
    g.add_argument("--all", action="store_true", help="every device the backend's store knows")
    g.add_argument("--db", default=os.path.join("out", "backend.sqlite"),
                   help="the backend's store (SQLite file or postgresql:// URL): message counters, acks "
                        "(default out/backend.sqlite)")
    g.add_argument("--fleet-key", metavar="FILE", help="the fleet secret (hex), as tools/backend.py's --fleet-key")
    g.add_argument("--broker", type=broker_arg, default=("127.0.0.1", 1883), help="HOST:PORT (default 127.0.0.1:1883)")
    g.add_argument("--user", help="MQTT account of the backend role, its own (password from $%s)" % PASSWORD_ENV)
    g.add_argument("--ca", help="CA certificate: connect with TLS")
    g.add_argument("--cert", help="client certificate (TLS)")
    g.add_argument("--key", help="client private key (TLS)")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answers (default 30)")
    cards = argparse.ArgumentParser(add_help=False)
    cards.add_argument("--keys", metavar="FILE", help="the operator's secrets.json with the site keys")
    entry = argparse.ArgumentParser(add_help=False)
    entry.add_argument("--expiry", help="ISO 8601 time with a zone, e.g. 2027-01-01T00:00:00Z")
    entry.add_argument("--group", help="the card's group (at most 36 characters)")
    entry.add_argument("--max-current-a", help="whole amperes 6..80")
    entry.add_argument("--max-kwh", help="energy cap per session, e.g. 20 or 7.5")
    entry.add_argument("--offpeak-only", action="store_true", help="charges only off-peak")
    listv = argparse.ArgumentParser(add_help=False)
    listv.add_argument("--list-version", type=_version,
                       help="the list version to send (default: one above the charger's, asked first)")

    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="exit status: 0 all accepted, 1 some refused, 2 nothing sent (bad input), "
                                        "3 some did not answer in time")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    kw = dict(allow_abbrev=False)
    p = sub.add_parser("tariff", parents=[common], help="a new OCPI tariff for new sessions", **kw)
    p.add_argument("file", help="OCPI 2.2.1 tariff (JSON)")
    p.add_argument("--version", type=_version,
                   help="default: one above the newest the device acknowledged (the store), else 1")
    p = sub.add_parser("card", parents=[common, cards, entry, listv], help="add, block, expire or remove one card",
                       **kw)
    p.add_argument("action", choices=("add", "block", "expire", "remove"))
    p.add_argument("uid", help="the card's UID in hex (hashed here with the site key; never sent)")
    p = sub.add_parser("list", parents=[common, cards, listv], help="send a full or diff local list", **kw)
    p.add_argument("kind", choices=("full", "diff"))
    p.add_argument("file", help="cards with raw UIDs, CSV or JSON, as tools/provision.py --cards reads them")
    p = sub.add_parser("start", parents=[common, cards], help="remote start for a card", **kw)
    p.add_argument("uid", help="the card's UID in hex (hashed here)")
    p.add_argument("--max-current-a", help="whole amperes 6..80")
    p.add_argument("--max-kwh", help="energy cap, e.g. 20 or 7.5")
    p = sub.add_parser("stop", parents=[common], help="remote stop of the running session", **kw)
    p.add_argument("--tx-id", type=int, help="only if this transaction is the one running")
    sub.add_parser("clear-fault", parents=[common], help="clear the latched faults faults.remote_clear lists", **kw)
    p = sub.add_parser("profile", parents=[common], help="set or clear a charging profile", **kw)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("file", nargs="?", help="the profile (JSON): periods [[start_offset_s, limit_a], ...], ...")
    p.add_argument("--clear", action="store_true", help="remove the kind's profiles (or one --stack-level)")
    p.add_argument("--stack-level", type=int, help="with --clear: only this stack level")
    p = sub.add_parser("update", parents=[common], help="start an over-the-air update", **kw)
    p.add_argument("file", help="the cmd/update payload tools/bundle.py printed (JSON)")
    p = sub.add_parser("acks", parents=[common], help="list the answers the store holds (nothing is sent)", **kw)
    p.add_argument("--limit", type=int, default=10, help="per device (default 10)")
    return ap


def main(argv=None, out=None):
    out = out or (lambda line: print(line, flush=True))
    args = parser().parse_args(argv)

    def fail(msg):
        print("cpctl: %s; nothing sent" % msg, file=sys.stderr)
        return BAD_INPUT

    if not 0 < args.timeout <= 3600:
        return fail("--timeout must be within 0..3600 s")
    password = os.environ.get(PASSWORD_ENV)
    if args.user and not password:
        return fail("--user %s needs its password in $%s" % (args.user, PASSWORD_ENV))
    try:
        cmd = build(args) if args.cmd != "acks" else None
        if cmd is not None and not args.fleet_key:
            raise InputError("--fleet-key FILE is needed: commands are sealed under each charger's key")
        fleet = read_fleet_key(args.fleet_key) if cmd is not None else None
        store = Store(args.db, create=False)   # a mistyped --db must not start new counters
    except InputError as e:
        return fail(str(e))
    except (ValueError, RuntimeError, OSError) as e:
        return fail(str(e))
    try:
        devices = targets(args, store)
        if cmd is None:
            return list_acks(store, devices, args.limit, out)
        target = cmd.payload.get("target") if cmd.name == "update" else None
        if target not in (None, FLEET) and devices != [target]:
            raise InputError("the update manifest is signed for %s only: the charger would refuse it" % target)
        versions = {d: tariff_version(store, d) for d in devices} if cmd.version == "tariff" else {}
        for d in devices:
            size = sealed_size(d, cmd, versions.get(d, 1 << 29))
            if size > MAX_CMD_BYTES:
                raise InputError("the command is %d bytes for %s, over the charger's %d: send a full list of "
                                 "fewer cards, then the rest as diffs" % (size, d, MAX_CMD_BYTES))
        link = Link(args.broker[0], args.broker[1], Sealer(fleet, store.next_ctr), args.user, password,
                    {"ca": args.ca, "cert": args.cert, "key": args.key} if args.ca else None)
        try:
            link.open(min(args.timeout, 10.0))
        except RuntimeError as e:
            return fail(str(e))
        try:
            rc = run(cmd, devices, link, store, versions, args.timeout, out)
        except KeyboardInterrupt:   # sent, perhaps applied: like a timeout, `acks` shows what came
            print("cpctl: interrupted before every answer came", file=sys.stderr)
            rc = TIMEOUT
        finally:
            link.close()
        if link.ignored:
            out("cpctl: %d cmd_ack message(s) without a valid seal ignored" % link.ignored)
        return rc
    except InputError as e:
        return fail(str(e))
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
