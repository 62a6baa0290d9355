"""Reference backend: receives every charger's MQTT messages, stores them once, acknowledges them.

Subscribes to cp/v1/+/{session,fault,feedback,status,stats,meter,auth/req,cmd_ack} (docs/mqtt.md),
de-duplicates on (device, ep, tx_id, seq) and (device, ep, msg_id), stores everything through
tools/store.py (SQLite file or PostgreSQL URL), acknowledges stored and duplicate messages on
cp/v1/<device>/ack (naming their data epoch), flags sequence gaps, and answers auth/req from an
optional file. `ep` is the data epoch of the device's life (0 for firmware without one): a device
that lost both its state and its journal starts its ids again in a new epoch, stored as new
sessions; the backend reports such a re-initialisation of a known device (table `epochs`).
Every command answer (cmd_ack) is kept, so an operator sees whether a tariff was taken or an
update installed; --http serves the live fleet page over the same store (tools/fleetweb.py).

    python3 tools/backend.py --broker 127.0.0.1:1883 --db out/backend.sqlite --auth auth.json --fleet-key fleet.key
    python3 tools/backend.py --share backends --db postgresql://cp@db/cp --fleet-key fleet.key   # one of several
    python3 tools/backend.py --db out/backend.sqlite --fleet-key fleet.key --http 127.0.0.1:8080 --tz Europe/Berlin

In Python: `b = Backend("out/b.sqlite", "127.0.0.1", 1883, fleet_key=secret); b.start(); ...; b.stop()`.
A malformed message is kept in the `rejects` table (and acknowledged when it has a msg_id, so
one bad record cannot block a charger's outbox); it never stops the backend.

Every message must carry the charger's MAC (firmware/link/seal.py; each device's key derived from
the fleet secret, --fleet-key): one that does not is refused before it is read, kept in `rejects`
and never acknowledged, so a broker peer cannot have a charger's records deleted or replaced. A
second copy of a msg_id with different content is a conflict: kept in `rejects`, reported, and
acknowledged only because the first copy and this one are both kept (never as a duplicate).
"""
import argparse
import json
import os
import queue
import signal
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from packages import require  # noqa: E402

require("paho")
import paho.mqtt.client as mqtt  # noqa: E402

from downlink import Sealer, broker_arg, read_fleet_key, to_device  # noqa: E402
from store import Store, ep_of, money  # noqa: E402

TOPICS = ("session", "fault", "feedback", "status", "stats", "meter", "auth/req", "cmd_ack")
ACKED = ("session", "fault", "feedback")
AUTH_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")
MAX_PAYLOAD = 1 << 20    # bytes; anything larger is rejected unread
MAX_ACK_IDS = 32         # msg_ids per ack message, so the charger's parser stays bounded
MAX_ID_LEN = 64
MAX_EP = (1 << 31) - 1
_SESSION_INTS = ("energy_wh", "meter_start_wh", "meter_stop_wh", "key", "parking_s")


class Malformed(ValueError):
    """A message that breaks the contract: kept aside, never stored as data."""


def parse_topic(topic):
    """cp/v1/<device>/<kind> -> (device, kind), or None for anything else."""
    parts = topic.split("/", 3)
    if len(parts) != 4 or parts[0] != "cp" or parts[1] != "v1" or not parts[2] or parts[3] not in TOPICS:
        return None
    return parts[2], parts[3]


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _need(rec, name, check, what):
    if not check(rec.get(name)):
        raise Malformed("%s %s" % (name, what))


def _msg_id(rec):
    _need(rec, "msg_id", lambda v: isinstance(v, str) and 0 < len(v) <= MAX_ID_LEN,
          "must be a string of 1..%d characters" % MAX_ID_LEN)
    _ep(rec)


def _ep(rec):
    if "ep" in rec:
        _need(rec, "ep", lambda v: _is_int(v) and 0 <= v <= MAX_EP, "must be an integer 0..%d" % MAX_EP)


def check_session(rec):
    _need(rec, "tx_id", lambda v: _is_int(v) and 0 <= v < 1 << 53, "must be a non-negative integer")
    _need(rec, "seq", lambda v: _is_int(v) and 0 <= v < 1 << 31, "must be a non-negative integer")
    _need(rec, "event", lambda v: v in ("started", "updated", "ended"), "must be started, updated or ended")
    _ep(rec)
    if "msg_id" in rec:
        _msg_id(rec)
    for name in _SESSION_INTS:
        if rec.get(name) is not None and not _is_int(rec[name]):
            raise Malformed("%s must be an integer" % name)
    for name in ("token", "ts", "auth", "tariff_id", "started_at", "ended_at", "stop_reason"):
        if rec.get(name) is not None and not isinstance(rec[name], str):
            raise Malformed("%s must be a string" % name)
    cost = rec.get("cost")
    if cost is not None:
        if not isinstance(cost, dict) or not isinstance(cost.get("currency"), str):
            raise Malformed("cost must be an object with a currency")
        for name in ("total_excl_vat_minor", "total_incl_vat_minor"):
            if not _is_int(cost.get(name)):
                raise Malformed("cost.%s must be an integer" % name)


def check_fault(rec):
    _msg_id(rec)
    _need(rec, "event", lambda v: v in ("raised", "cleared", "notice"), "must be raised, cleared or notice")
    if rec["event"] == "notice":   # not a fault: something the operator should know (e.g. ev_not_charging)
        _need(rec, "info", lambda v: isinstance(v, str) and v, "must name the notice")
    else:
        _need(rec, "code", lambda v: isinstance(v, str) and v, "must be an OCPP error code")


def check_feedback(rec):
    _msg_id(rec)
    if rec.get("tx_id") is not None and not _is_int(rec["tx_id"]):
        raise Malformed("tx_id must be an integer or null")


def check_status(rec):
    _need(rec, "state", lambda v: v in ("online", "offline"), "must be online or offline")
    _ep(rec)


def check_stats(rec):
    _need(rec, "ts", lambda v: isinstance(v, str) and v, "must be an ISO 8601 time")


def check_auth_req(rec):
    _need(rec, "id", lambda v: isinstance(v, str) and 0 < len(v) <= MAX_ID_LEN, "must be a short string")
    _need(rec, "token", lambda v: isinstance(v, str) and v, "must be a pseudonym")


def check_cmd_ack(rec):
    # the charger answers a command without a usable id with "id": null (docs/mqtt.md)
    _need(rec, "id", lambda v: v is None or (isinstance(v, str) and len(v) <= MAX_ID_LEN),
          "must be null or a string of at most %d characters" % MAX_ID_LEN)
    _need(rec, "cmd", lambda v: isinstance(v, str) and 0 < len(v) <= MAX_ID_LEN, "must name the command")
    _need(rec, "status", lambda v: isinstance(v, str) and 0 < len(v) <= MAX_ID_LEN, "must be a short string")
    if rec.get("reason") is not None and not isinstance(rec["reason"], str):
        raise Malformed("reason must be a string")


CHECKS = {"session": check_session, "fault": check_fault, "feedback": check_feedback, "status": check_status,
          "stats": check_stats, "meter": lambda rec: None, "auth/req": check_auth_req, "cmd_ack": check_cmd_ack}


def load_auth(path):
    """The --auth file: {pseudonym: answer object}; ValueError naming the bad entry."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError("--auth %s: %s" % (path, e))
    if not isinstance(data, dict):
        raise ValueError("--auth %s: must hold a JSON object {pseudonym: answer}" % path)
    table = {}
    for token, answer in data.items():
        if len(token) != 32 or any(c not in "0123456789abcdefABCDEF" for c in token):
            raise ValueError("--auth %s: key %r is not a 32-hex-digit pseudonym" % (path, token[:40]))
        if not isinstance(answer, dict) or answer.get("status") not in AUTH_STATUSES:
            raise ValueError("--auth %s: %s… needs \"status\": one of %s"
                             % (path, token[:12], ", ".join(AUTH_STATUSES)))
        table[token.lower()] = answer
    return table


def describe(kind, rec):
    """One readable line for a stored record."""
    if kind == "session":
        text = "session tx %s seq %s %s" % (rec["tx_id"], rec["seq"], rec["event"])
        if rec["event"] == "ended":
            cost = rec.get("cost") or {}
            text += ": %s Wh, %s excl. / %s incl. VAT" % (
                rec.get("energy_wh"), money(cost.get("total_excl_vat_minor"), cost.get("currency")),
                money(cost.get("total_incl_vat_minor"), cost.get("currency")))
            if rec.get("stop_reason"):
                text += ", %s" % rec["stop_reason"]
            if rec.get("parking_s"):
                text += ", parked %d s" % rec["parking_s"]
        elif rec.get("energy_wh") is not None:
            text += ": %s Wh" % rec["energy_wh"]
        if rec.get("token"):
            text += ", token %s…" % rec["token"][:12]
    elif kind == "fault":
        text = "fault %s %s%s" % (rec["event"], rec.get("code") or rec.get("info"),
                                  " (latched)" if rec.get("latched") else "")
        if rec.get("tx_id") is not None:
            text += " tx %s" % rec["tx_id"]
        if rec.get("detail"):
            text += ": %s" % rec["detail"]
    elif kind == "feedback":
        text = "feedback %s via %s%s" % (rec["msg_id"], rec.get("source"),
                                         " on tx %s" % rec["tx_id"] if rec.get("tx_id") is not None else "")
    elif kind == "status":
        text = "status %s %s%s" % (rec["state"], rec.get("connector") or "",
                                   " (%s)" % rec["error"] if rec.get("error") else "")
    elif kind == "stats":
        day = rec.get("day") if isinstance(rec.get("day"), dict) else {}
        text = "stats day %s: %s sessions, %s Wh, %s incl. VAT; contactor cycles %s" % (
            day.get("date"), day.get("sessions"), day.get("energy_wh"),
            money(day.get("incl_vat_minor"), rec.get("currency")), rec.get("contactor_cycles"))
    elif kind == "cmd_ack":
        text = describe_cmd_ack(rec)
    else:
        text = "meter tx %s: %s Wh, %s W" % (rec.get("tx_id"), rec.get("energy_wh"), rec.get("p_w"))
    if rec.get("offline"):
        text += " (offline)"
    return text


def describe_cmd_ack(rec):
    """cmd_ack update u-7 progress 40 % / cmd_ack tariff t-3 rejected: version must grow."""
    text = "cmd_ack %s %s %s" % (rec["cmd"], rec["id"], rec["status"])
    if isinstance(rec.get("percent"), int):
        text += " %d %%" % rec["percent"]
    if rec.get("version") is not None:
        text += " version %s" % rec["version"]
    if rec.get("reason"):
        text += ": %s" % rec["reason"]
    return text


class Backend:
    """Subscriber + store + acknowledger, running in its own threads until stop()."""

    def __init__(self, db_url, host="127.0.0.1", port=1883, share=None, auth=None, client_id=None,
                 username=None, password=None, tls=None, ack_delay_s=0.2, verbose=False, out=None, fleet_key=None):
        """fleet_key: the operator's fleet secret (bytes): each charger's key is derived from it."""
        self.db_url = db_url
        self.host = host
        self.port = port
        self.share = share
        self.auth = load_auth(auth) if isinstance(auth, str) else auth
        self.ack_delay_s = ack_delay_s
        self.verbose = verbose
        self.out = out or (lambda line: print(line, flush=True))
        self.sealer = Sealer(fleet_key, self._next_ctr) if fleet_key is not None else None
        if self.sealer is None:
            raise ValueError("backend: a fleet key is needed (--fleet-key): chargers believe nothing unsealed")
        self.counts = {"stored": 0, "duplicates": 0, "malformed": 0, "acked": 0, "gaps": 0, "auth": 0,
                       "errors": 0, "unauthenticated": 0, "conflicts": 0, "reinitialised": 0}
        self.last_message = time.time()
        self.connected = threading.Event()
        self._q = queue.Queue(maxsize=10000)
        self._stop = threading.Event()
        self._acks = {}   # (device, ep) -> (first queued at, [msg_ids])
        self._eps = {}    # device -> its newest data epoch (the store's `epochs` table)
        self._worker = None
        self.store = None
        cid = client_id or "cp-backend-%d-%d" % (os.getpid(), id(self) % 100000)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=tls.get("ca"), certfile=tls.get("cert"), keyfile=tls.get("key"),
                                tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(1, 30)

    def topics(self):
        prefix = "$share/%s/" % self.share if self.share else ""
        return [(prefix + "cp/v1/+/" + t, 1) for t in TOPICS]

    def start(self):
        """Opens the store, connects (retrying in the background) and starts processing."""
        self.store = Store(self.db_url)
        self._worker = threading.Thread(target=self._work, name="backend-store", daemon=True)
        self._worker.start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self

    def wait_connected(self, timeout=10):
        return self.connected.wait(timeout)

    def stop(self):
        """Drains what was received, sends pending acks, disconnects, closes the store."""
        self._stop.set()
        if self._worker:
            self._worker.join(10)
        self._flush_acks(force=True)
        time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()
        if self.store:
            self.store.close()
            self.store = None

    def run(self, until_idle=None):
        """Blocks until SIGINT/SIGTERM, or until `until_idle` seconds passed without a message."""
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *a: done.set())
        while not done.wait(0.2):
            if until_idle is not None and self.idle_for() >= until_idle and self._drained():
                break

    def wait_idle(self, seconds, timeout=60.0):
        """True once nothing arrived for `seconds` and all that did is handled (tests, demo)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.idle_for() >= seconds and self._drained():
                return True
            time.sleep(0.05)
        return False

    def idle_for(self):
        return time.time() - self.last_message

    def _drained(self):
        return self._q.unfinished_tasks == 0 and not self._acks

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.out("backend: broker refused the connection: %s" % reason_code)
            return
        client.subscribe(self.topics())
        self.connected.set()
        self.out("backend: connected to %s:%d%s" % (self.host, self.port,
                                                   ", shared group %s" % self.share if self.share else ""))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self._stop.is_set():
            self.out("backend: disconnected (%s), reconnecting" % reason_code)

    def _on_message(self, client, userdata, msg):
        self.last_message = time.time()
        self._q.put((msg.topic, bytes(msg.payload)))

    def _work(self):
        while True:
            try:
                topic, payload = self._q.get(timeout=0.05)
            except queue.Empty:
                self._flush_acks()
                if self._stop.is_set():
                    return
                continue
            try:
                self.handle(topic, payload)
            except Exception as e:  # noqa: BLE001 - a bug on one message must not stop the backend
                self.counts["errors"] += 1
                self.out("backend: internal error on %s: %r (not acknowledged)" % (topic, e))
            self._flush_acks()
            self._q.task_done()

    def handle(self, topic, payload):
        """Validates, stores and queues the ack for one message; never raises."""
        now = int(time.time())
        where = parse_topic(topic)
        if where is None:
            return
        device, kind = where
        if len(payload) > MAX_PAYLOAD:
            self._reject(device, kind, topic, payload[:65536], "payload of %d bytes is over the %d limit"
                         % (len(payload), MAX_PAYLOAD), now)
            return
        try:
            body = self.sealer.open(device, kind, payload)
        except ValueError as e:
            self._refuse(device, kind, topic, payload, str(e), now)
            return
        try:
            rec = self._decode(body)
            CHECKS[kind](rec)
        except Malformed as e:
            self._reject(device, kind, topic, body, str(e), now)
            return
        try:
            self._store(device, kind, rec, now, topic)
        except self.store.errors as e:
            self.counts["errors"] += 1
            self.out("backend: store error on %s: %s (not acknowledged: the charger re-sends)" % (topic, e))
            self._recover()

    @staticmethod
    def _decode(payload):
        if len(payload) > MAX_PAYLOAD:
            raise Malformed("payload of %d bytes is over the %d limit" % (len(payload), MAX_PAYLOAD))
        try:
            rec = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Malformed("not JSON (UTF-8)")
        if not isinstance(rec, dict):
            raise Malformed("not a JSON object")
        return rec

    def _next_ctr(self, device):
        return self.store.next_ctr(device)

    def _refuse(self, device, kind, topic, payload, reason, now):
        """Not sealed by this charger: kept for a person to see, never stored as data, never acknowledged."""
        self.counts["unauthenticated"] += 1
        self.out("%s %s REFUSED %s: unauthenticated: %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                                                          device, kind, reason))
        try:
            self.store.add_reject(device, topic, payload, "unauthenticated: " + reason, now)
        except self.store.errors as e:
            self.out("backend: store error keeping a refused message: %s" % e)
            self._recover()

    def _conflict(self, device, kind, topic, rec, ts, now):
        """A second, different copy of a stored message: both kept, reported; True if it could be kept."""
        self.counts["conflicts"] += 1
        key = rec.get("msg_id") if kind != "session" else "%s-%s (%s)" % (rec["tx_id"], rec["seq"], rec.get("msg_id"))
        if ep_of(rec):
            key = "%s ep %d" % (key, ep_of(rec))
        self.out("%s %s CONFLICT %s %s: a different copy of a stored message (kept in rejects)" % (ts, device, kind, key))
        self.store.add_reject(device, topic, json.dumps(rec, sort_keys=True).encode(), "conflict: %s %s differs from "
                              "the stored copy" % (kind, key), now)
        return True

    def _reject(self, device, kind, topic, payload, reason, now):
        self.counts["malformed"] += 1
        self.out("%s %s malformed %s skipped: %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                                                     device, kind, reason))
        try:
            self.store.add_reject(device, topic, payload, reason, now)
        except self.store.errors as e:
            self.out("backend: store error keeping a rejected message: %s" % e)
            self._recover()
            return
        if kind in ACKED:
            try:
                rec = json.loads(payload.decode("utf-8"))
                msg_id, ep = rec.get("msg_id"), rec.get("ep", 0)
            except (UnicodeDecodeError, ValueError, AttributeError):
                msg_id = ep = None
            if isinstance(msg_id, str) and 0 < len(msg_id) <= MAX_ID_LEN and _is_int(ep) and 0 <= ep <= MAX_EP:
                self._queue_ack(device, msg_id, ep)

    def _store(self, device, kind, rec, now, topic=None):
        ts = rec.get("ts") if isinstance(rec.get("ts"), str) else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                 time.gmtime(now))
        if kind == "auth/req":
            self._answer(device, rec, ts)
            return
        # records without ep (older firmware, the safe mode's notice) are epoch 0 but start no epoch
        if "ep" in rec and kind in ACKED + ("status",):
            self._epoch(device, rec["ep"], ts, now)
        if kind == "meter":
            self.store.add_meter(device, rec, now, self._current_ep(device))
            if self.verbose:
                self.out("%s %s %s" % (ts, device, describe(kind, rec)))
            return
        gaps, closed = [], []
        if kind == "session":
            new, gaps, closed = self.store.add_session_event(device, rec, now)
        else:
            new = getattr(self.store, "add_" + kind)(device, rec, now)
        if new:
            self.counts["stored"] += 1
            self.out("%s %s %s" % (ts, device, describe(kind, rec)))
        elif kind in ACKED and self.store.stored_record(kind, device, rec) not in (None, _canonical(rec)):
            self._conflict(device, kind, topic, rec, ts, now)
        else:
            self.counts["duplicates"] += 1
            if self.verbose:
                self.out("%s %s duplicate ignored: %s %s" % (ts, device, kind, rec.get("msg_id", "")))
        for seq, what in gaps:
            self.counts["gaps"] += 1
            self.out("%s %s GAP tx %s: %s" % (ts, device, rec["tx_id"], what if seq < 0 else
                                              "seq %d missing%s" % (seq, " (no started event)" if seq == 0 else "")))
        for seq in closed:
            self.out("%s %s gap closed: tx %s seq %d arrived late" % (ts, device, rec["tx_id"], seq))
        if kind in ACKED and "msg_id" in rec:
            self._queue_ack(device, rec["msg_id"], ep_of(rec))

    def _current_ep(self, device):
        if device not in self._eps:
            self._eps[device] = self.store.current_epoch(device)
        return self._eps[device]

    def _epoch(self, device, ep, ts, now):
        """Notes a data epoch; a new one of a known device is a re-initialisation: said and kept."""
        if self._eps.get(device) == ep:
            return
        previous = self.store.note_epoch(device, ep, now)
        if previous is False:   # seen before (an older life's late record, or another instance noted it)
            self._eps[device] = self.store.current_epoch(device)
            return
        self._eps[device] = ep
        if previous is not None:
            self.counts["reinitialised"] += 1
            self.out("%s %s RE-INITIALISED: new data epoch %d after %d (the charger lost its state and journal; "
                     "its ids start again, kept apart by the epoch)" % (ts, device, ep, previous))

    def _answer(self, device, rec, ts):
        if self.auth is None:
            if self.verbose:
                self.out("%s %s auth %s not answered (no --auth file)" % (ts, device, rec["id"]))
            return
        answer = self.auth.get(rec["token"].lower(), {"status": "Invalid"})
        resp = dict(answer)
        resp["id"] = rec["id"]
        to_device(self.client, device, "auth/resp", resp, self.sealer)
        self.counts["auth"] += 1
        self.out("%s %s auth %s token %s… -> %s" % (ts, device, rec["id"], rec["token"][:12], resp["status"]))

    def _queue_ack(self, device, msg_id, ep):
        first, ids = self._acks.get((device, ep), (time.time(), []))
        if msg_id not in ids:
            ids.append(msg_id)
        self._acks[(device, ep)] = (first, ids)

    def _flush_acks(self, force=False):
        now = time.time()
        for key in list(self._acks):
            first, ids = self._acks[key]
            if not force and now - first < self.ack_delay_s and len(ids) < MAX_ACK_IDS:
                continue
            del self._acks[key]
            device, ep = key
            for i in range(0, len(ids), MAX_ACK_IDS):
                chunk = ids[i:i + MAX_ACK_IDS]
                to_device(self.client, device, "ack", {"msg_ids": chunk, "ep": ep}, self.sealer)
                self.counts["acked"] += len(chunk)

    def _recover(self):
        """After a database error: roll back, and reconnect when the connection itself is gone."""
        try:
            self.store.rollback()
            return
        except self.store.errors:
            pass
        try:
            self.store.close()
        except self.store.errors:
            pass
        try:
            self.store = Store(self.db_url)
            self.out("backend: store reconnected")
        except Exception as e:  # noqa: BLE001 - the next message retries
            self.out("backend: store still unreachable: %s" % e)


def _http(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("--http must be HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def start_web(args):
    """The live fleet page beside the backend (--http), or None; imported only when asked for."""
    if not args.http:
        return None
    from fleetweb import FleetWeb
    return FleetWeb(args.db, tz=args.tz).start(*args.http)


def _canonical(rec):
    """rec as the store keeps it (tools/store.py's _dumps), to compare copies."""
    return json.loads(json.dumps(rec, sort_keys=True, separators=(",", ":")))


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python3 tools/backend.py --broker 127.0.0.1:1883 --db out/backend.sqlite --fleet-key fleet.key\n"
               "  python3 tools/backend.py --broker mqtt.example.org:8883 --ca ca.pem --user backend \\\n"
               "      --db postgresql://cp@localhost/cp --share backends --auth auth.json --fleet-key fleet.key\n"
               "  (the MQTT password is read from the environment variable CP_BACKEND_PASSWORD)")
    ap.add_argument("--broker", type=broker_arg, default=("127.0.0.1", 1883), help="HOST:PORT (default 127.0.0.1:1883)")
    ap.add_argument("--db", default=os.path.join("out", "backend.sqlite"),
                    help="SQLite file or postgresql:// URL (default out/backend.sqlite)")
    ap.add_argument("--share", metavar="GROUP", help="subscribe as $share/GROUP/... to split load between instances")
    ap.add_argument("--auth", metavar="FILE",
                    help="JSON {pseudonym: auth/resp answer}; without it auth/req is not answered")
    ap.add_argument("--client-id", help="MQTT client id (default: unique per process; a broker with "
                                        "use_username_as_clientid uses --user instead)")
    ap.add_argument("--user", help="MQTT account, one per instance (password from $CP_BACKEND_PASSWORD); "
                                   "docs/security.md")
    ap.add_argument("--ca", help="CA certificate: connect with TLS")
    ap.add_argument("--cert", help="client certificate (TLS)")
    ap.add_argument("--key", help="client private key (TLS)")
    ap.add_argument("--fleet-key", metavar="FILE", required=True,
                    help="the fleet secret (hex): each charger's key is derived from it (docs/security.md)")
    ap.add_argument("--ack-delay-ms", type=int, default=200, help="batch acks per device this long (default 200)")
    ap.add_argument("--until-idle", type=float, metavar="SECONDS", help="exit after this long without messages")
    ap.add_argument("-v", "--verbose", action="store_true", help="also print duplicates and meter values")
    ap.add_argument("--http", type=_http, metavar="HOST:PORT",
                    help="also serve the live fleet page and its JSON API here (tools/fleetweb.py; no login: "
                         "keep it on 127.0.0.1 or behind a proxy that has one)")
    ap.add_argument("--tz", default="UTC", help="the site's time zone for the fleet page's \"today\", "
                                                "e.g. Europe/Berlin (default UTC)")
    args = ap.parse_args(argv)
    password = os.environ.get("CP_BACKEND_PASSWORD")
    if args.user and not password:   # a locked-down broker would refuse it, again and again
        print("backend: --user %s needs its password in $CP_BACKEND_PASSWORD" % args.user, file=sys.stderr)
        return 2
    try:
        fleet_key = read_fleet_key(args.fleet_key)
        backend = Backend(args.db, args.broker[0], args.broker[1], share=args.share, auth=args.auth,
                          client_id=args.client_id, username=args.user, password=password,
                          tls={"ca": args.ca, "cert": args.cert, "key": args.key} if args.ca else None,
                          ack_delay_s=args.ack_delay_ms / 1000, verbose=args.verbose, fleet_key=fleet_key)
        backend.start()
    except (ValueError, RuntimeError, OSError) as e:
        print("backend: %s" % e, file=sys.stderr)
        return 2
    try:
        web = start_web(args)
    except (ValueError, RuntimeError, OSError) as e:
        backend.stop()
        print("backend: %s" % e, file=sys.stderr)
        return 2
    try:
        backend.run(args.until_idle)
    finally:
        if web is not None:
            web.stop()
        backend.stop()
        c = backend.counts
        print("backend: %d stored, %d duplicates, %d malformed, %d acknowledged, %d gaps, %d auth answers, "
              "%d store errors, %d unauthenticated, %d conflicts, %d re-initialised"
              % (c["stored"], c["duplicates"], c["malformed"], c["acked"], c["gaps"], c["auth"], c["errors"],
                 c["unauthenticated"], c["conflicts"], c["reinitialised"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
