"""A simulated fleet for the backend: N chargers speaking the MQTT contract (docs/mqtt.md), fast.

Each charger has its own broker account and connection (the ACL lets it publish only its own
topics, as a real one), and an outbox of session records (`started`, `updated` …, `ended`) with
msg_id, seq, energy and cost, sealed under its key derived from the fleet secret; `ended` records
carry the tamper-evident chain (firmware/billing/signing.py), as the firmware's do. Like the
firmware it publishes in order, keeps a record until the backend's `ack` names it, and re-sends
unacknowledged ones with backoff. All connections run in one thread on one selector, so a
thousand chargers cost a thousand sockets, not a thousand threads. Every record's first publish
and first ack time are kept: the backend acks only after its commit, so that is publish → stored.

    gen = LoadGen("127.0.0.1", 1883, fleet_accounts(broker, 100), broker.fleet_key, sessions=3)
    result = gen.run(timeout=60)     # {"messages", "acked", "latency_ms": [...], "seconds", ...}

    .venv/bin/python tools/loadgen.py --broker 127.0.0.1:1883 --fleet-key fleet.key --accounts fleet.json
"""
import argparse
import json
import selectors
import sys
import time

import paho.mqtt.client as mqtt

from downlink import B2D, D2B, broker_arg, derive, read_fleet_key, seal, unseal
from firmware.billing.signing import Chain

TOKEN = "6f1c0e5d8a2b4c7e9f0a1b2c3d4e5f60"
PRICE_MINOR_PER_KWH = 30   # the simulated flat tariff, excl. VAT
VAT_PERCENT = 19
BASE_S = 1772438400        # 2026-03-02T08:00:00Z: the first simulated session's start
RESEND_MAX_S = 60.0
SWEEP_S = 0.02             # how often every charger is looked at; one that got an ack at once


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def energy_of(device, tx):
    """The session's energy (Wh): distinct per charger and session, so a mix-up shows."""
    return 1000 + (sum(device.encode()) * 37 + tx * 101) % 9000


def cost_of(energy_wh):
    """The flat tariff's cost in integers, rounded half up once, as the firmware's engine does."""
    excl = (energy_wh * PRICE_MINOR_PER_KWH + 500) // 1000
    incl = (excl * (100 + VAT_PERCENT) + 50) // 100
    part = {"excl_vat_minor": excl, "incl_vat_minor": incl}
    zero = {"excl_vat_minor": 0, "incl_vat_minor": 0}
    return {"currency": "EUR", "total_excl_vat_minor": excl, "total_incl_vat_minor": incl, "energy": part,
            "time": zero, "parking": zero, "fixed": zero, "price_limit": None}


def session_records(device, tx, updates, meter_start_wh, chain):
    """The records of one session: started, `updates` x updated, ended (signed into chain)."""
    energy = energy_of(device, tx)
    start = BASE_S + tx * 3600
    end = start + 1800
    common = {"tx_id": tx, "token": TOKEN, "key": 1, "auth": "local_list", "tariff_id": "flat",
              "meter_start_wh": meter_start_wh}
    recs = [dict(common, msg_id="%d-0" % tx, seq=0, event="started", ts=iso(start), group=None, max_wh=None,
                 start_utc=start)]
    for i in range(1, updates + 1):
        recs.append(dict(common, msg_id="%d-%d" % (tx, i), seq=i, event="updated",
                         ts=iso(start + 1800 * i // (updates + 1)), energy_wh=energy * i // (updates + 1)))
    last = updates + 1
    recs.append(chain.sign(dict(common, msg_id="%d-%d" % (tx, last), seq=last, event="ended", ts=iso(end),
                                started_at=iso(start), ended_at=iso(end), meter_stop_wh=meter_start_wh + energy,
                                energy_wh=energy, stop_reason="EVDisconnected", cost=cost_of(energy),
                                parking_s=0)))
    return recs, energy


class Charger:
    """One simulated charger: its connection, its outbox in order, and when each record went and came back."""

    def __init__(self, device, password, fleet_key, sessions, updates):
        self.device = device
        self.key = derive(fleet_key, device)
        self.outbox = []          # [msg_id, sealed payload, tries, next due (monotonic s), n], oldest first
        self.first_sent = {}      # msg_id -> monotonic s of its first publish
        self.acked = {}           # msg_id -> monotonic s of its first ack
        self.energy = {}          # tx_id -> Wh, what the store must end up with
        self.sent = 0             # publications, re-sends included
        self.refused = 0
        self.ready = False
        chain = Chain(self.key)
        register = 0
        for tx in range(1, sessions + 1):
            recs, energy = session_records(device, tx, updates, register, chain)
            register += energy
            self.energy[tx] = energy
            for r in recs:
                body = json.dumps(r, separators=(",", ":")).encode()
                self.outbox.append([r["msg_id"], seal(self.key, D2B, device, "session", body), 0, 0.0,
                                    len(self.outbox)])
        self.t0 = 0.0             # when its first record happens (run() staggers the chargers)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device, clean_session=True)
        self.client.username_pw_set(device, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            raise RuntimeError("loadgen: broker refused %s: %s" % (self.device, reason_code))
        client.subscribe("cp/v1/%s/ack" % self.device, 1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.ready = True

    def _on_message(self, client, userdata, msg):
        """An `ack`, believed only with this charger's MAC, as the firmware does."""
        try:
            body = json.loads(unseal(self.key, B2D, self.device, "ack", msg.payload))
            ids = body["msg_ids"]
        except (ValueError, KeyError, TypeError):
            self.refused += 1
            return
        now = time.monotonic()
        gone = set(i for i in ids if isinstance(i, str))
        for i in gone:
            self.acked.setdefault(i, now)
        self.outbox = [e for e in self.outbox if e[0] not in gone]

    def pump(self, now, window, resend_s, interval_s):
        """Publishes what is due among the oldest `window` unacknowledged records; record n happens
        at t0 + n * interval_s (0: all at once, a backlog)."""
        for e in self.outbox[:window]:
            if not e[2] and now < self.t0 + e[4] * interval_s:
                break   # not happened yet, nor have the later ones
            if e[2] and now < e[3]:
                continue
            self.client.publish("cp/v1/%s/session" % self.device, e[1], qos=1)
            self.first_sent.setdefault(e[0], now)
            e[3] = now + min(resend_s * (1 << min(e[2], 8)), RESEND_MAX_S)
            e[2] += 1
            self.sent += 1

    @property
    def done(self):
        return not self.outbox


class LoadGen:
    """N chargers on one selector; run() returns the figures once every record is acked (or at the timeout)."""

    def __init__(self, host, port, accounts, fleet_key, sessions=3, updates=1, window=4, resend_s=5.0,
                 interval_s=0.0):
        """accounts: {device id: password}; window: unacked records in flight per charger; interval_s:
        a charger's records happen this far apart (the chargers staggered), 0: all at once."""
        self.host, self.port = host, port
        self.window, self.resend_s, self.interval_s = window, resend_s, interval_s
        self.chargers = [Charger(d, p, fleet_key, sessions, updates) for d, p in sorted(accounts.items())]
        self.sel = selectors.DefaultSelector()

    def expected(self):
        """{(device, tx_id): energy_wh} of every session the backend must store."""
        return {(c.device, tx): wh for c in self.chargers for tx, wh in c.energy.items()}

    def _watch(self, ch):
        sock = ch.client.socket()
        self.sel.register(sock, selectors.EVENT_READ, ch)
        ch.client.on_socket_register_write = lambda c, u, s: self.sel.modify(s, selectors.EVENT_READ
                                                                              | selectors.EVENT_WRITE, ch)
        ch.client.on_socket_unregister_write = lambda c, u, s: self.sel.modify(s, selectors.EVENT_READ, ch)
        ch.client.on_socket_close = lambda c, u, s: self.sel.unregister(s)   # not re-opened: it shows as unacked
        if ch.client.want_write():
            self.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ch)

    def connect(self, timeout=60.0):
        """Every charger connected and subscribed to its `ack`; RuntimeError naming the missing ones."""
        for ch in self.chargers:
            ch.client.connect(self.host, self.port, keepalive=60)
            self._watch(ch)
        deadline = time.monotonic() + timeout
        while not all(ch.ready for ch in self.chargers):
            if time.monotonic() > deadline:
                raise RuntimeError("loadgen: %d chargers did not connect"
                                   % sum(1 for ch in self.chargers if not ch.ready))
            self._io(0.05)

    def _io(self, wait):
        """One select: reads and writes what is ready; the chargers that read something (an ack, perhaps)."""
        woke = []
        for key, events in self.sel.select(wait):
            c = key.data.client
            if events & selectors.EVENT_READ:
                c.loop_read()
                woke.append(key.data)
            if events & selectors.EVENT_WRITE and c.socket() is not None:
                c.loop_write()
        return woke

    def run(self, timeout=120.0, on_tick=None):
        """Connects, publishes until every record is acked or `timeout`; on_tick(gen) once per pass."""
        self.connect()
        start = time.monotonic()
        deadline = start + timeout
        misc = start
        for i, ch in enumerate(self.chargers):
            ch.t0 = start + self.interval_s * i / len(self.chargers)
        pending, woke, sweep = list(self.chargers), [], 0.0
        while pending and time.monotonic() < deadline:
            now = time.monotonic()
            if now - sweep >= SWEEP_S:   # re-sends due, records that happened meanwhile
                sweep = now
                pending = [ch for ch in pending if not ch.done]
                woke = pending
            for ch in woke:   # an ack frees a place in the window at once
                ch.pump(now, self.window, self.resend_s, self.interval_s)
            woke = self._io(SWEEP_S)
            if now - misc > 1.0:
                misc = now
                for ch in self.chargers:
                    ch.client.loop_misc()
            if on_tick:
                on_tick(self)
        end = time.monotonic()
        self.close()
        return self.result(start, end)

    def result(self, start, end):
        lat = sorted((ch.acked[m] - t) * 1000 for ch in self.chargers for m, t in ch.first_sent.items()
                     if m in ch.acked)
        messages = sum(len(ch.first_sent) for ch in self.chargers)
        last_ack = max((t for ch in self.chargers for t in ch.acked.values()), default=end)
        return {"chargers": len(self.chargers), "messages": messages, "acked": len(lat),
                "unacked": sum(len(ch.outbox) for ch in self.chargers),
                "publishes": sum(ch.sent for ch in self.chargers),
                "refused_acks": sum(ch.refused for ch in self.chargers),
                "seconds": max(last_ack - start, 1e-6), "latency_ms": lat}

    def close(self):
        for ch in self.chargers:
            ch.client.disconnect()
            if ch.client.socket() is not None:
                ch.client.loop_write()
        self.sel.close()


def percentile(sorted_values, p):
    """The p-th percentile (nearest rank) of an ascending list, or None when empty."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, int(len(sorted_values) * p / 100 + 0.5) - 1))]


def fleet_accounts(broker, n, prefix="lg-"):
    """n charger accounts on a tools/broker.py Broker, added with one reload (as an operator appends
    tools/provision.py's lines): {device id: password}."""
    from broker import new_password, password_line
    accounts = {"%s%04d" % (prefix, i): new_password() for i in range(1, n + 1)}
    broker.append("".join(password_line(d, p) for d, p in accounts.items()), "")
    return accounts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", type=broker_arg, default=("127.0.0.1", 1883), help="HOST:PORT")
    ap.add_argument("--fleet-key", metavar="FILE", required=True, help="the fleet secret (hex), as the backend's")
    ap.add_argument("--accounts", metavar="FILE", required=True, help="JSON {device id: MQTT password}")
    ap.add_argument("--sessions", type=int, default=3, help="sessions per charger (default 3)")
    ap.add_argument("--updates", type=int, default=1, help="`updated` records per session (default 1)")
    ap.add_argument("--window", type=int, default=4, help="unacked records in flight per charger (default 4)")
    ap.add_argument("--resend-s", type=float, default=5.0, help="first re-send after this, doubling (default 5)")
    ap.add_argument("--interval-s", type=float, default=0.0,
                    help="a charger's records this far apart (default 0: all at once, a backlog)")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    args = ap.parse_args(argv)
    try:
        key = read_fleet_key(args.fleet_key)
        with open(args.accounts) as f:
            accounts = json.load(f)
    except (OSError, ValueError) as e:
        print("loadgen: %s" % e, file=sys.stderr)
        return 2
    r = LoadGen(args.broker[0], args.broker[1], accounts, key, args.sessions, args.updates, args.window,
                args.resend_s, args.interval_s).run(args.timeout)
    lat = r["latency_ms"]
    print("loadgen: %d chargers, %d records, %d acked in %.1f s (%.0f/s), %d publications; publish -> ack "
          "median %s ms, p95 %s ms" % (r["chargers"], r["messages"], r["acked"], r["seconds"],
                                       r["acked"] / r["seconds"], r["publishes"], _ms(percentile(lat, 50)),
                                       _ms(percentile(lat, 95))))
    return 0 if r["unacked"] == 0 else 1


def _ms(v):
    return "-" if v is None else "%.0f" % v


if __name__ == "__main__":
    sys.exit(main())
