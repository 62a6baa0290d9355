"""The tariff for new sessions: the config's, or a newer one received over MQTT (kept on flash).

A running session keeps the tariff it started with (firmware/charging/session.py); a new one
applies from the next session. Versions only grow, by 1..MAX_STEP at a time and below 2^30 (a
version of 10^30 must not refuse every later tariff); a bad tariff is rejected and the old one stays.

    tariffs = Tariffs(data_dir + "/tariff.json", settings.tariff, log)
    tariffs.replace({"version": 2, "tariff": {...OCPI Tariff...}}); tariffs.current.id
"""
import json

from micropython import const

from firmware.billing.tariff import Tariff
from firmware.core import jsonx
from firmware.storage.state import errno_of, write_atomic

MAX_STEP = const(1000)        # a new version is at most this far above the current one
_MAX_VERSION = const(0x3FFFFFFF)


def _version(v):
    """A stored or received version: an int 0..2^30-1, else ValueError."""
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _MAX_VERSION:
        raise ValueError("version must be an integer 0..%d" % _MAX_VERSION)
    return v


class Tariffs:
    def __init__(self, path, default, log):
        self.path = path
        self.error = 0          # errno of the last refused save (full flash), 0 after a good one
        self._unsaved = None    # the OCPI tariff a full flash refused, written by retry()
        self.current, self.version = self._load(default, log)

    def _load(self, default, log):
        """The newest tariff: one received over MQTT (persisted) if any, else the config's."""
        try:
            with open(self.path) as f:
                saved = jsonx.loads(f.read())
            version = _version(saved["version"])   # "9" or 10^30 on flash: the config's tariff
            return Tariff(saved["tariff"]), version
        except OSError:
            return default, 0
        except (ValueError, KeyError, TypeError) as e:
            log.event("storage", file="tariff", error="unusable, config tariff used (%s)" % e)
            return default, 0

    def replace(self, p):
        """A new tariff for new sessions: {"version", "tariff": {OCPI Tariff}}; ValueError names what
        is wrong and changes nothing."""
        version = p.get("version")
        top = min(self.version + MAX_STEP, _MAX_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or not self.version < version <= top:
            raise ValueError("version must be an integer %d..%d (the current %d plus at most %d)"
                             % (self.version + 1, top, self.version, MAX_STEP))
        t = Tariff(p.get("tariff"))   # ValueError names the field: the old tariff stays
        self.current, self.version = t, version
        self._unsaved = p["tariff"]
        self.retry()
        return t

    def retry(self):
        """Persist the current tariff if a full flash refused it (it applies from RAM meanwhile)."""
        if self._unsaved is None:
            return True
        try:
            write_atomic(self.path, json.dumps({"version": self.version, "tariff": self._unsaved}))
        except OSError as e:
            self.error = errno_of(e)
            return False
        self.error = 0
        self._unsaved = None
        return True

    def price_text(self):
        """The tariff's driver-facing text (OCPI tariff_alt_text), for the display and the REPL."""
        alt = self.current.alt_text or []
        return alt[0].get("text") if alt and isinstance(alt[0], dict) else None
