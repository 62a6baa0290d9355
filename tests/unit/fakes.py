"""Hand-written stand-ins used by unit tests on both interpreters (no mocks)."""


class FakeLink:
    """An MQTT link whose broker is reachable or not, recording what was published."""

    def __init__(self):
        self.up = True
        self.connected = False
        self.published = []   # (topic, payload, retain, qos)
        self.will = None
        self.fail_publish_after = None
        self.subscribed = []
        self.on_publish = None   # a backend's reaction to what the charger publishes

    def connect(self, will_topic, will_payload, on_message):
        if not self.up:
            raise OSError(111)
        self.will = (will_topic, will_payload)
        self.connected = True

    def subscribe(self, topic):
        self.subscribed.append(topic)

    def poll(self):
        if not self.up:
            self.connected = False
            raise OSError(104)

    def publish(self, topic, payload, retain=False, qos=1):
        if not self.up or self.fail_publish_after == 0:
            raise OSError(104)
        if self.fail_publish_after:
            self.fail_publish_after -= 1
        payload = bytes(payload) if isinstance(payload, memoryview) else payload  # a view of a reused buffer
        self.published.append((topic, payload, retain, qos))
        if self.on_publish is not None:
            self.on_publish(topic, payload)

    def close(self):
        self.connected = False


class ListLog:
    """Collects event-log entries instead of printing them."""

    def __init__(self):
        self.events = []

    def event(self, ev, **fields):
        fields["ev"] = ev
        self.events.append(fields)

    def kinds(self):
        return [e["ev"] for e in self.events]
