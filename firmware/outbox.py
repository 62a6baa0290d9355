"""Bounded queue of messages waiting for the broker, oldest first.

    ob = Outbox(64); ob.put("session", payload); ob.peek(); ob.pop()
"""


class Outbox:
    def __init__(self, capacity):
        self.capacity = capacity
        self._items = []
        self.dropped = 0

    def __len__(self):
        return len(self._items)

    def put(self, topic, payload):
        """Queue a message; when full, the oldest is dropped and counted."""
        if len(self._items) >= self.capacity:
            self._items.pop(0)
            self.dropped += 1
        self._items.append((topic, payload))

    def peek(self):
        return self._items[0] if self._items else None

    def pop(self):
        self._items.pop(0)
