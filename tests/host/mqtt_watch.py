"""Collects everything published under cp/v1/# on a test broker (paho, in its own thread), logged in
with an observer account of its own (tools/broker.py: read-only). Sealed messages are kept opened
with the run's fleet secret (docs/mqtt.md "Authenticity"): what does not verify stays as it came."""
import json
import threading
import time

import paho.mqtt.client as mqtt

from downlink import B2D, D2B, DEVICE_TOPICS, derive, unseal


class Watch:
    def __init__(self, broker, topic="cp/v1/#"):
        self.messages = []   # (topic, payload bytes, retain)
        self._lock = threading.Lock()
        self.fleet_key = getattr(broker, "fleet_key", None)
        login = broker.login("observer")
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-watch-%d" % id(self))
        self._c.username_pw_set(login["username"], login["password"])
        self._c.on_message = self._on_message
        subscribed = threading.Event()
        self._c.on_subscribe = lambda client, userdata, mid, codes, props: subscribed.set()
        self._c.connect("127.0.0.1", broker.port)
        self._c.subscribe(topic, qos=1)
        self._c.loop_start()
        # the broker's SUBACK, not a guess: on a loaded machine 0.2 s missed a charger's first status
        if not subscribed.wait(15):
            raise RuntimeError("watch: no SUBACK for %s within 15 s" % topic)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, self.opened(msg.topic, bytes(msg.payload)), msg.retain))

    def records(self, suffix):
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/" + suffix)]

    def opened(self, topic, payload):
        """The payload without its MAC if it verifies under the run's keys, else as it came."""
        parts = topic.split("/", 3)
        if self.fleet_key is None or len(parts) != 4:
            return payload
        kind = parts[3]
        direction = B2D if kind in DEVICE_TOPICS or kind.startswith("cmd/") else D2B
        try:
            return unseal(derive(self.fleet_key, parts[2]), direction, parts[2], kind, payload)
        except ValueError:
            return payload

    def close(self):
        time.sleep(0.3)
        self._c.loop_stop()
        self._c.disconnect()
