"""Upstream sync: keeps the MQTT link up, publishes the outbox in order and the retained status.

One supervisor owns the connection: connect with a retained Last Will, announce `online`,
then deliver queued messages; any failure closes the link and retries with exponential
backoff. Charging never waits for any of this.

    sync = Sync(link, clock, log, outbox, "cp/v1/cp-0001/")
    sync.set_connector("Charging"); sync.tick()     # every loop iteration
"""
import json

from micropython import const

from firmware.timefmt import iso

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_PUBLISH_PER_TICK = const(4)
_INBOX_MAX = const(8)
MAX_MESSAGE = const(8192)   # larger incoming messages are refused unread
SUBSCRIPTIONS = ("cmd/+", "auth/resp", "ack")


class Sync:
    def __init__(self, link, clock, log, outbox, prefix):
        self.link = link
        self.clock = clock
        self.log = log
        self.outbox = outbox
        self.prefix = prefix
        self.connector = "Unavailable"
        self.error_code = None
        self.published = 0
        self.inbox = []   # (topic suffix, raw bytes) received, for the controller to handle
        self._status_sent = None
        self._backoff = _BACKOFF_MIN_MS
        self._retry_at = clock.ticks_ms()

    @property
    def connected(self):
        return self.link is not None and self.link.connected

    def set_connector(self, status, error_code=None):
        self.connector = status
        self.error_code = error_code

    def _status(self, state):
        st = {"state": state, "connector": self.connector, "ts": iso(self.clock.time())}
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
            for _ in range(_PUBLISH_PER_TICK):
                item = self.outbox.peek()
                if item is None:
                    break
                self.link.publish(self.prefix + item[0], item[1], False, 1)
                self.outbox.pop()
                self.published += 1
        except OSError as e:
            self._lost(e)

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
        self.log.event("mqtt", state="connected", queued=len(self.outbox))
        return True

    def _lost(self, err):
        self.link.close()
        self._retry_at = self.clock.ticks_add(self.clock.ticks_ms(), self._backoff)
        self.log.event("mqtt", state="unreachable", error=str(err), retry_s=self._backoff // 1000,
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
        """At shutdown: deliver what is queued now, ignoring the backoff, with a few attempts."""
        if self.link is None:
            return
        for _ in range(attempts):
            self._retry_at = self.clock.ticks_ms()
            self.tick()
            while self.link.connected and len(self.outbox):
                self.tick()
            if self.link.connected:
                return
