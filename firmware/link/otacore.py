"""Over-the-air updates at boot, without their code: firmware/link/ota.py and its Updater (about
3 KB of heap on a 32-bit board) load only when the slots hold work for them at boot (a version
on trial, an outcome to deliver, leftovers to remove), or with the first cmd/update. A charger
running a confirmed version keeps that heap (docs/ota.md). The slot state file is read here.

    updater = from_settings(settings.ota, clock, on_status=publish_ack, root="/", log=log)
    updater.tick(busy); updater.confirm(); updater.start(cmd)   # as firmware/link/ota.py's Updater
"""
import json

from firmware.storage.state import exists

SLOTS = ("a", "b")


def slots_dir(root):
    """Where the slots and their state file live: under the board's root ("/"), or a run's folder."""
    return root.rstrip("/") + "/slots" if root else "slots"


def read_saved(path):
    """The JSON object a slot file holds, or None when it is missing, unreadable or not an object
    (its reader then uses its defaults)."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def load_state(path):
    """The slot state, with defaults for a first boot or an unreadable file (base firmware runs)."""
    st = {"active": None, "previous": None, "trial": None, "max_boots": 3, "slots": {}, "outcome": None}
    saved = read_saved(path)
    if saved is not None:
        for k in st:
            if k in saved:
                st[k] = saved[k]
    if not isinstance(st["slots"], dict):
        st["slots"] = {}
    if st["active"] not in st["slots"]:
        st["active"] = None   # boot.py runs the base firmware then too
    return st


def from_settings(ota, clock, on_status=None, root="", log=None):
    """The Updater at once when the slots hold its work (a version on trial, an outcome to
    deliver, leftovers to remove); otherwise Idle with the running version, which builds it with
    the first update."""
    if log is not None and ota.old_hmac_key:
        log.event("update", status="config", reason="secrets: update_key (HMAC) is no longer accepted: "
                                                    "updates need ota.public_key")
    d = slots_dir(root)
    st = load_state(d + "/state.json")
    if st["active"] is not None and isinstance(st["trial"], int) or st["outcome"] or \
            [s for s in SLOTS if s != st["active"] and s not in st["slots"] and exists(d + "/" + s)]:
        from firmware.link.ota import from_settings as updater

        return updater(ota, clock, on_status, root, log)
    info = st["slots"].get(st["active"])
    return Idle((ota, clock, on_status, root, log), info.get("version") if isinstance(info, dict) else None)


class Idle:
    """A version that runs confirmed (the base firmware, or an installed slot): nothing to tick,
    switch or confirm until the first cmd/update, which loads the Updater; from then on
    everything goes to it."""

    def __init__(self, args, version=None):
        self._args = args        # from_settings' arguments, for the Updater
        self._version = version  # the running slot's, None for the base firmware
        self._up = None

    @property
    def version(self):
        return self._up.version if self._up is not None else self._version

    @property
    def working(self):
        return self._up is not None and self._up.working

    def start(self, p):
        """cmd/update. Short of heap to load the Updater: MemoryError, answered busy, nothing changed."""
        if self._up is None:
            from firmware.link.ota import from_settings as updater

            self._up = updater(*self._args)
        return self._up.start(p)

    def tick(self, busy=False):
        if self._up is not None:
            self._up.tick(busy)

    def ready_to_switch(self):
        return self._up is not None and self._up.ready_to_switch()

    def switch(self):
        """Only after ready_to_switch(), so the Updater is there."""
        return self._up.switch()

    def confirm(self):
        return self._up is None or self._up.confirm()
