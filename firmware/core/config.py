"""Reading settings with clear errors: a bad or missing value names its key, nothing is guessed.

    port = setting(cfg, "mqtt.port", int, lo=1, hi=65535)
    rate = setting(cfg, "sampling.rate_hz", int, 10, lo=1, hi=50)     # with a default
"""
from firmware.core import jsonx

REQUIRED = object()   # the default of a key that has none


def load(path):
    """A JSON file as a dict (decimals kept exact as strings); ValueError naming the file when it is
    unreadable or not an object."""
    try:
        with open(path) as f:
            data = jsonx.loads(f.read())
    except OSError:
        raise ValueError("%s: cannot read the file" % path)
    except ValueError as e:
        raise ValueError("%s: not valid JSON (%s)" % (path, e))
    if not isinstance(data, dict):
        raise ValueError("%s: must hold a JSON object" % path)
    return data


def setting(cfg, key, kind, default=REQUIRED, lo=None, hi=None, choices=None):
    """cfg["a"]["b"] for key "a.b", checked against type, range and choices."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is REQUIRED:
                raise ValueError("config: %s is missing" % key)
            return default
        node = node[part]
    if node is None and default is None:   # null: an optional value left out on purpose
        return None
    if kind is int and (not isinstance(node, int) or isinstance(node, bool)):
        raise ValueError("config: %s must be an integer (got %r)" % (key, node))
    if kind is bool and not isinstance(node, bool):
        raise ValueError("config: %s must be true or false (got %r)" % (key, node))
    if kind in (str, list, dict) and not isinstance(node, kind):
        raise ValueError("config: %s must be a %s (got %r)" % (key, kind.__name__, node))
    if choices is not None and node not in choices:
        raise ValueError("config: %s must be one of %s (got %r)" % (key, ", ".join(str(c) for c in choices), node))
    if lo is not None and node < lo or hi is not None and node > hi:
        raise ValueError("config: %s must be within %s..%s (got %r)" % (key, lo, hi, node))
    return node
