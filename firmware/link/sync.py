"""Upstream sync: keeps the MQTT link up, publishes the outbox in order and the retained status.

One supervisor owns the connection: connect with a retained Last Will, announce `online`,
subscribe to commands, then deliver the persistent outbox in order; a message leaves the
outbox only when the backend acknowledges it on `ack` (a broker PUBACK is not enough), and
unacknowledged ones are re-sent with backoff. Any failure closes the link and retries with
exponential backoff and jitter. Charging never waits for any of this.

    sync = Sync(link, clock, log, outbox, "cp/v1/cp-0001/")
    sync.set_connector("Charging"); sync.tick()     # every loop iteration
"""
import json
import os

from micropython import const

from firmware.core.timefmt import iso

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_PUBLISH_PER_TICK = const(4)
_INBOX_MAX = const(8)
_ACK_WAIT_MS = const(500)    # a backend acknowledges within this (real time)
MAX_MESSAGE = const(8192)   # larger incoming messages are refused unread
SUBSCRIPTIONS = ("cmd/+", "auth/resp", "ack")


def _jitter(span):
    """0..span ms at random: chargers that lost the broker together do not all retry together."""
    return int.from_bytes(os.urandom(2), "big") * span // 65536 if span > 0 else 0


def parse_ack(payload):
    """The msg_ids of a backend `ack` message; ValueError if it is not {"msg_ids": [str, ...]}."""
    ids = payload.get("msg_ids") if isinstance(payload, dict) else None
    if not isinstance(ids, list) or len(ids) > 256 or [i for i in ids if not isinstance(i, str) or len(i) > 64]:
        raise ValueError('ack must be {"msg_ids": [up to 256 strings]}')
    return ids


class Sync:
    def __init__(self, link, clock, log, outbox, prefix):
        self.link = link
        self.clock = clock
        self.log = log
        self.outbox = outbox
        self.prefix = prefix
        self.connector = "Unavailable"
        self.error_code = None
        self.identity = None   # {"firmware", "vendor", "model"} shown in every online status
        self.published = 0
        self.inbox = []   # (topic suffix, raw bytes) received, for the controller to handle
        self.stats = None      # the retained stats payload, re-sent after every connect
        self._stats_sent = True
        self._status_sent = None
        self._backoff = _BACKOFF_MIN_MS
        self._retry_at = clock.ticks_ms()

    @property
    def connected(self):
        return self.link is not None and self.link.connected

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
        if self.error_code:
            st["error"] = self.error_code
        return json.dumps(st)

    def tick(self):
        if self.link is None:
            return
        if not self.link.connected:
            if self.clock.ticks_diff(self.clock.ticks_ms(), self._retry_at) < 0:
                return
            if not self._connect():
                return
        try:
            self.link.poll()
            shown = (self.connector, self.error_code)
            if self._status_sent != shown:
                self.link.publish(self.prefix + "status", self._status("online"), True, 1)
                self._status_sent = shown
            if not self._stats_sent and self.stats is not None:
                self.link.publish(self.prefix + "stats", self.stats, True, 1)
                self._stats_sent = True
            now = self.clock.ticks_ms()
            for _ in range(_PUBLISH_PER_TICK):
                item = self.outbox.next_due(now)
                if item is None:
                    break
                topic, payload, msg_id = item
                self.link.publish(self.prefix + topic, payload, False, 1)
                self.outbox.sent(msg_id, now)
                self.published += 1
                self.clock.outside(_ACK_WAIT_MS)
        except OSError as e:
            self._lost(e)

    def set_stats(self, payload):
        """New revenue/usage totals: published retained now or after the next connect."""
        self.stats = payload
        self._stats_sent = False

    def publish_now(self, suffix, payload, qos=0):
        """Best effort, not queued (meter values, answers): True if handed to the broker."""
        if self.link is None or not self.link.connected:
            return False
        try:
            self.link.publish(self.prefix + suffix, payload, False, qos)
        except OSError as e:
            self._lost(e)
            return False
        return True

    def _connect(self):
        try:
            self.link.connect(self.prefix + "status", json.dumps({"state": "offline"}), self._on_message)
            for sub in SUBSCRIPTIONS:
                self.link.subscribe(self.prefix + sub)
        except OSError as e:
            self._lost(e)
            return False
        self._backoff = _BACKOFF_MIN_MS
        self._status_sent = None
        self._stats_sent = False
        self.log.event("mqtt", state="connected", queued=len(self.outbox))
        return True

    def _lost(self, err):
        self.link.close()
        wait = self._backoff + _jitter(self._backoff // 4)
        self._retry_at = self.clock.ticks_add(self.clock.ticks_ms(), wait)
        self.log.event("mqtt", state="unreachable", error=str(err), retry_s=wait // 1000,
                       queued=len(self.outbox))
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_MS)

    def _on_message(self, topic, msg):
        """Commands arrive here; they are only queued, never acted on inside the network call."""
        topic = topic.decode() if isinstance(topic, bytes) else topic
        suffix = topic[len(self.prefix):] if topic.startswith(self.prefix) else topic
        if len(msg) > MAX_MESSAGE:
            self.log.event("command", topic=suffix, result="refused", reason="larger than %d bytes" % MAX_MESSAGE)
        elif len(self.inbox) >= _INBOX_MAX:
            self.log.event("command", topic=suffix, result="refused", reason="inbox full")
        else:
            self.inbox.append((suffix, msg))

    def flush(self, attempts=3):
        """At shutdown: send what is due now, ignoring the backoff, with a few attempts."""
        if self.link is None:
            return
        for _ in range(attempts):
            self._retry_at = self.clock.ticks_ms()
            self.tick()
            while self.link.connected and self.outbox.next_due(self.clock.ticks_ms()) is not None:
                self.tick()
            if self.link.connected:
                return
