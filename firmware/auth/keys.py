"""Versioned site keys: a card's pseudonyms under every key version the site still accepts.

Rotation: add the new key, make it current, keep the old one accepted while the local list
and cache are re-provisioned under the new version, then drop it. The raw UID is only used
to compute the pseudonyms and is never kept.

    keys = Keys({1: old_key, 2: new_key}, current=2, accept=(1, 2))
    pairs = keys.tap(uid)        # [(2, "3f2a…"), (1, "9c0d…")], current version first
"""
from firmware.core.config import setting
from firmware.auth.pseudonym import parse_key, pseudonym

MAX_VERSION = 255  # versions fit in one byte of the packed local list


def check_version(v, name):
    """A key version 1..255 or a ValueError naming the field."""
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_VERSION:
        raise ValueError("%s: key version must be an integer 1..%d (got %r)" % (name, MAX_VERSION, v))
    return v


class Keys:
    def __init__(self, keys, current, accept=None):
        if not isinstance(keys, dict) or not keys:
            raise ValueError("keys: must map key versions to keys of at least 16 bytes")
        for v, key in keys.items():
            check_version(v, "keys")
            if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
                raise ValueError("keys[%r]: must be at least 16 bytes" % (v,))
        check_version(current, "current")
        if current not in keys:
            raise ValueError("current: key version %d has no key" % current)
        if accept is None:
            accept = (current,)
        if not isinstance(accept, (list, tuple)) or current not in accept:
            raise ValueError("accept: must list the accepted key versions including current (%d)" % current)
        for v in accept:
            check_version(v, "accept")
            if v not in keys:
                raise ValueError("accept: key version %d has no key" % v)
        self._keys = dict((v, bytes(keys[v])) for v in accept)
        self.current = current
        # current first, so a tap's first pair is the token every record uses
        self.accept = tuple([current] + sorted(v for v in set(accept) if v != current))

    def tap(self, uid):
        """(version, pseudonym) for each accepted version, current first; uid is not kept."""
        return [(v, pseudonym(self._keys[v], uid)) for v in self.accept]

    def token(self, uid):
        """The current-version pseudonym: what records and online requests carry."""
        return pseudonym(self._keys[self.current], uid)


def keys_from_config(cfg):
    """Keys from the device config: `site_keys` {"1": hex, …} with `site_key_current` and
    `site_key_accept`, or a single `site_key` (hex) as version 1."""
    if "site_keys" not in cfg:
        return Keys({1: parse_key(setting(cfg, "site_key", str))}, 1)
    raw = setting(cfg, "site_keys", dict)
    if not raw:
        raise ValueError("config: site_keys must hold at least one key")
    keys = {}
    for name, text in raw.items():
        try:
            v = int(name)
        except ValueError:
            v = None
        check_version(v, "config: site_keys.%s" % name)
        if not isinstance(text, str):
            raise ValueError("config: site_keys.%s must be a hex string" % name)
        keys[v] = parse_key(text, "config: site_keys.%s" % name)
    current = setting(cfg, "site_key_current", int, lo=1, hi=MAX_VERSION)
    accept = setting(cfg, "site_key_accept", list, [current])
    try:
        return Keys(keys, current, accept)
    except ValueError as e:
        raise ValueError("config: site_key_%s" % e)
