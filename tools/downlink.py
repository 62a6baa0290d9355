"""The one way a backend-side program talks to a charger: `cmd/<name>`, `ack` and `auth/resp`.

tools/backend.py and tools/ocpp_bridge.py publish every backend -> device message through
to_device(), so a change to what such a message carries (a MAC, docs/mqtt.md) lands here once.

    to_device(client, "cp-0001", "ack", {"msg_ids": ["7-0"]})
"""
import argparse
import json

DEVICE_TOPICS = ("ack", "auth/resp")   # besides cmd/<name>


def to_device(client, device, suffix, payload):
    """Publish one JSON object to cp/v1/<device>/<suffix> (QoS 1); returns paho's MQTTMessageInfo."""
    if suffix not in DEVICE_TOPICS and not suffix.startswith("cmd/"):
        raise ValueError("%r is not a backend -> device topic" % suffix)
    return client.publish("cp/v1/%s/%s" % (device, suffix), json.dumps(payload), qos=1)


def broker_arg(text):
    """argparse type for --broker HOST:PORT -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("--broker must be HOST:PORT")
    return host, int(port)
