"""The one way a backend-side program talks to a charger: `cmd/<name>`, `ack` and `auth/resp`.

tools/backend.py and tools/ocpp_bridge.py publish every backend -> device message through
to_device(), which seals it (firmware/link/seal.py, docs/mqtt.md "Authenticity"): a counter
`ctr` above the last one this operator sent that charger, then a MAC under the charger's own
key, derived from the fleet secret. The charger believes nothing else.

    sealer = Sealer(fleet_secret, store.next_ctr)      # or MemoryCounter() for a test injector
    to_device(client, "cp-0001", "ack", {"msg_ids": ["7-0"]}, sealer)
"""
import argparse
import json
import os
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "tools", "compat"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from firmware.link.seal import B2D, CTR_MAX, D2B, derive, seal, unseal  # noqa: E402,F401  (re-exported)

DEVICE_TOPICS = ("ack", "auth/resp")   # besides cmd/<name>


class MemoryCounter:
    """Per-device counters in this process only (a test's injector, the simulator's runner)."""

    def __init__(self):
        self._last = {}
        self._lock = threading.Lock()

    def __call__(self, device):
        with self._lock:
            n = self._last.get(device, 0) + 1
            self._last[device] = n
            return n


SHARED = MemoryCounter()   # every in-process sender without a store: they never reuse a counter


class Sealer:
    """Seals backend -> device payloads: fleet secret -> device key, counter(device) -> next ctr."""

    def __init__(self, fleet_secret, counter=None):
        if not isinstance(fleet_secret, bytes) or len(fleet_secret) < 16:
            raise ValueError("fleet secret: at least 16 bytes")
        self.fleet_secret = fleet_secret
        self.counter = counter or SHARED
        self._keys = {}

    def key(self, device):
        k = self._keys.get(device)
        if k is None:
            k = self._keys[device] = derive(self.fleet_secret, device)
        return k

    def seal(self, device, suffix, payload):
        """The bytes to publish: payload (a dict) with the next `ctr` and its MAC."""
        ctr = self.counter(device)
        if not 0 < ctr <= CTR_MAX:
            raise ValueError("%s: the message counter is exhausted (%d)" % (device, ctr))
        body = json.dumps(dict(payload, ctr=ctr), separators=(",", ":")).encode()
        return seal(self.key(device), B2D, device, suffix, body)

    def open(self, device, suffix, payload):
        """A charger's record as it signed it (bytes without `mac`); ValueError with the reason."""
        return unseal(self.key(device), D2B, device, suffix, payload)


def read_fleet_key(path):
    """--fleet-key FILE: the fleet secret in hex (at least 32 digits), kept by the operator only."""
    try:
        with open(path) as f:
            key = bytes.fromhex(f.read().strip())
    except (OSError, ValueError) as e:
        raise ValueError("--fleet-key %s: %s" % (path, e))
    if len(key) < 16:
        raise ValueError("--fleet-key %s: at least 16 bytes (32 hex digits)" % path)
    return key


def to_device(client, device, suffix, payload, sealer):
    """Publish one JSON object, sealed, to cp/v1/<device>/<suffix> (QoS 1); returns paho's MQTTMessageInfo."""
    if suffix not in DEVICE_TOPICS and not suffix.startswith("cmd/"):
        raise ValueError("%r is not a backend -> device topic" % suffix)
    return client.publish("cp/v1/%s/%s" % (device, suffix), sealer.seal(device, suffix, payload), qos=1)


def broker_arg(text):
    """argparse type for --broker HOST:PORT -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("--broker must be HOST:PORT")
    return host, int(port)
