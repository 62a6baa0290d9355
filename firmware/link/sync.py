"""Upstream sync: publishes the retained status, the operator stats and the outbox in order.

The link (firmware/link/mqtt.py) owns the connection, its deadlines and its backoff; the sync
ticks it once per loop pass and hands it what is due. A message leaves the outbox only when the
backend acknowledges it on `ack` (a broker PUBACK is not enough); unacknowledged ones are
re-sent with backoff. Nothing here waits: a full out-buffer means "try at the next tick".
Incoming messages are only queued on `inbox` (bounded), for the controller to handle.
Every payload is sealed under the device key as it is handed to the link (firmware/link/seal.py),
so the backend can tell this charger's records from a broker peer's; the flash copies stay
unsealed (a re-stamped or purged record needs no re-signing, the outbox does not grow).

    sync = Sync(link, clock, log, outbox, "cp/v1/cp-0001/", key, "cp-0001")
    sync.set_connector("Charging"); sync.tick()     # every loop iteration
"""
import json

from micropython import const

from firmware.core.timefmt import iso
from firmware.link.seal import D2B, seal

_PUBLISH_PER_TICK = const(4)
_INBOX_MAX = const(8)
_INBOX_BYTES = const(16384)   # queued payload bytes at most
_ACK_WAIT_MS = const(500)    # a backend acknowledges within this (real time)
_FLUSH_MS = const(3000)      # at shutdown: at most this long to connect and hand over what is due
MAX_MESSAGE = const(8192)   # larger incoming messages are drained unread and refused
SUBSCRIPTIONS = ("cmd/+", "auth/resp", "ack")


def parse_ack(payload, ep=None):
    """The msg_ids of a backend `ack` message ({"msg_ids": [str, ...], "ep": int}); ValueError if it
    is not one, or if it names another data epoch than ep (a stale ack from an earlier life of this
    device must not delete a new record that reuses the msg_id). An ack without ep: older backends."""
    ids = payload.get("msg_ids") if isinstance(payload, dict) else None
    if not isinstance(ids, list) or len(ids) > 256 or [i for i in ids if not isinstance(i, str) or len(i) > 64]:
        raise ValueError('ack must be {"msg_ids": [up to 256 strings]}')
    got = payload.get("ep", ep)
    if ep is not None and (got != ep or isinstance(got, bool)):
        raise ValueError("ack names data epoch %r, this charger's is %d: ignored" % (got, ep))
    return ids


class Sync:
    def __init__(self, link, clock, log, outbox, prefix, key=None, device_id=None):
        """key, device_id: what seals each payload (no key: sent unsealed, the backend refuses them)."""
        self.link = link
        self.key = key
        self.device_id = device_id
        self.clock = clock
        self.log = log
        self.outbox = outbox
        self.prefix = prefix
        self.connector = "Unavailable"
        self.error_code = None
        self.identity = None   # {"firmware", "vendor", "model"} shown in every online status
        self.ep = None         # the data epoch of the device's records (firmware/link/records.py): also shown
        self.published = 0
        self.inbox = []   # (topic suffix, raw bytes) received, for the controller to handle
        self.stats = None      # the retained stats payload, re-sent after every connect
        self._stats_sent = True
        self._status_sent = None
        if link is not None:
            will = self._sealed("status", json.dumps({"state": "offline"}))
            link.start(prefix + "status", will, [prefix + t for t in SUBSCRIPTIONS], self._on_message, MAX_MESSAGE)

    @property
    def connected(self):
        return self.link is not None and self.link.ready

    def set_connector(self, status, error_code=None):
        self.connector = status
        self.error_code = error_code

    def set_identity(self, ident):
        """What the charger is ({"firmware", "vendor", "model"}): part of every online status."""
        self.identity = ident
        self._status_sent = None

    def republish(self):
        """Send the retained status again at the next tick, changed or not."""
        self._status_sent = None

    def _status(self, state):
        st = {"state": state, "connector": self.connector, "ts": iso(self.clock.time())}
        if self.identity:
            st.update(self.identity)
        if self.ep is not None:
            st["ep"] = self.ep
        if self.error_code:
            st["error"] = self.error_code
        return json.dumps(st)

    def tick(self):
        """One pass: the link's own work, then what is due goes into its out-buffer."""
        link = self.link
        if link is None:
            return
        news = link.tick()
        if news == "up":
            self._status_sent = None
            self._stats_sent = False
            self.log.event("mqtt", state="connected", queued=len(self.outbox))
        elif news == "down":
            self.log.event("mqtt", state="unreachable", error=link.error, retry_s=link.retry_ms // 1000,
                           queued=len(self.outbox))
        if not link.ready:
            return
        sent = self._status_sent   # compared field by field: a tuple each pass would be garbage
        if sent is None or sent[0] != self.connector or sent[1] != self.error_code:
            shown = (self.connector, self.error_code)
            if not link.publish(self.prefix + "status", self._sealed("status", self._status("online")), True, 1):
                return
            self._status_sent = shown
        if not self._stats_sent and self.stats is not None:
            if not link.publish(self.prefix + "stats", self._sealed("stats", self.stats), True, 1):
                return
            self._stats_sent = True
        now = self.clock.ticks_ms()
        for _ in range(_PUBLISH_PER_TICK):
            item = self.outbox.next_due(now)
            if item is None:
                break
            topic, payload, msg_id = item
            if not link.publish(self.prefix + topic, self._sealed(topic, payload), False, 1):
                break   # the out-buffer is full: this one is still due at the next tick
            self.outbox.sent(msg_id, now)
            self.published += 1
            self.clock.outside(_ACK_WAIT_MS)

    def set_stats(self, payload):
        """New revenue/usage totals: published retained now or after the next connect."""
        self.stats = payload
        self._stats_sent = False

    def publish_now(self, suffix, payload, qos=0):
        """Best effort, not queued (meter values, answers): True if handed over (never waits)."""
        return self.connected and self.link.publish(self.prefix + suffix, self._sealed(suffix, payload), False, qos)

    def _sealed(self, suffix, payload):
        """The payload as it goes out: with its MAC under the device key (flash copies stay bare)."""
        if self.key is None:
            return payload
        if isinstance(payload, str):
            payload = payload.encode()
        elif not isinstance(payload, bytes):
            payload = bytes(payload)   # a view of the outbox's reused read buffer
        return seal(self.key, D2B, self.device_id, suffix, payload)

    def _on_message(self, topic, msg):
        """The link delivers here; messages are only queued, never acted on inside the network code."""
        topic = topic.decode() if isinstance(topic, (bytes, bytearray)) else topic
        suffix = topic[len(self.prefix):] if topic.startswith(self.prefix) else topic
        if msg is None or len(msg) > MAX_MESSAGE:   # None: the link drained it unread
            self.log.event("command", topic=suffix, result="refused", reason="larger than %d bytes" % MAX_MESSAGE)
        elif len(self.inbox) >= _INBOX_MAX or sum(len(m) for _, m in self.inbox) + len(msg) > _INBOX_BYTES:
            self.log.event("command", topic=suffix, result="refused", reason="inbox full")
        else:
            self.inbox.append((suffix, msg))

    def flush(self, budget_ms=_FLUSH_MS):
        """At shutdown: connect now if need be and hand over what is due, for at most budget_ms."""
        link = self.link
        if link is None:
            return
        c = self.clock
        c.outside(budget_ms)   # a simulator waits for the broker in real time here
        link.hurry()
        end = c.ticks_add(c.ticks_ms(), budget_ms)
        while c.ticks_diff(end, c.ticks_ms()) > 0:
            self.tick()
            if link.ready and link.drained() and self.outbox.next_due(c.ticks_ms()) is None:
                break
            c.sleep_ms(5)
        c.outside(0)
