"""Collects everything published under cp/v1/# on a test broker (paho, in its own thread), logged in
with an observer account of its own (tools/broker.py: read-only)."""
import json
import threading
import time

import paho.mqtt.client as mqtt


class Watch:
    def __init__(self, broker, topic="cp/v1/#"):
        self.messages = []   # (topic, payload bytes, retain)
        self._lock = threading.Lock()
        login = broker.login("observer")
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-watch-%d" % id(self))
        self._c.username_pw_set(login["username"], login["password"])
        self._c.on_message = self._on_message
        self._c.connect("127.0.0.1", broker.port)
        self._c.subscribe(topic, qos=1)
        self._c.loop_start()
        time.sleep(0.2)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.retain))

    def records(self, suffix):
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/" + suffix)]

    def close(self):
        time.sleep(0.3)
        self._c.loop_stop()
        self._c.disconnect()
