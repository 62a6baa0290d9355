"""Hand-written stand-ins used by unit tests on both interpreters (no mocks)."""


class FakeLink:
    """An MQTT link (firmware/link/mqtt.py's interface) whose broker is reachable or not,
    recording what was published; it connects at the first tick the broker is up."""

    def __init__(self):
        self.up = True
        self.connected = False
        self.published = []   # (topic, payload, retain, qos)
        self.will = None
        self.fail_publish_after = None
        self.subscribed = []
        self.on_publish = None   # a backend's reaction to what the charger publishes
        self.error = None
        self.retry_ms = 1000
        self._topics = ()
        self._told = False       # this outage was reported
        self._dropped = False    # a publish found the connection gone

    @property
    def ready(self):
        return self.connected

    def start(self, will_topic, will_payload, topics, on_message, max_message):
        self.will = (will_topic, will_payload)
        self._topics = topics

    def hurry(self):
        pass

    def drained(self):
        return True

    def tick(self):
        if self.connected and self.up:
            return None
        if self._dropped:
            self._dropped = False
            self.connected = False
            self.error = "[Errno 104] ECONNRESET"
            return "down"
        if self.up:
            self.connected = True
            self._told = False
            self.subscribed = list(self._topics)
            return "up"
        self.connected = False
        if self._told:
            return None
        self._told = True
        self.error = "[Errno 111] ECONNREFUSED"
        return "down"

    def publish(self, topic, payload, retain=False, qos=0):
        if not self.connected:
            return False
        if not self.up or self.fail_publish_after == 0:
            self.connected = False   # the connection dropped: the next tick reports it
            self._dropped = True
            return False
        if self.fail_publish_after:
            self.fail_publish_after -= 1
        payload = bytes(payload) if isinstance(payload, memoryview) else payload  # a view of a reused buffer
        self.published.append((topic, payload, retain, qos))
        if self.on_publish is not None:
            self.on_publish(topic, payload)
        return True


class ListLog:
    """Collects event-log entries instead of printing them."""

    def __init__(self):
        self.events = []

    def event(self, ev, **fields):
        fields["ev"] = ev
        self.events.append(fields)

    def kinds(self):
        return [e["ev"] for e in self.events]


def journal_stack(path, outbox_size=16):
    """A record log at path with its outbox and journal wired as firmware/app.py wires them
    (not recovered yet): (log, outbox, journal)."""
    from firmware.storage.journal import Journal
    from firmware.storage.outbox import Outbox
    from firmware.storage.recordlog import RecordLog
    from hal.sim.clock import VirtualClock

    log = RecordLog(path)
    ob = Outbox(outbox_size, log, VirtualClock())
    j = Journal(log, ob)
    log.attach(j, ob)
    return log, ob, j
