"""Over-the-air updates at boot, without their code: firmware/link/ota.py and its Updater (about
3 KB of heap on a 32-bit board) load only when the slots hold work for them at boot, or with the
first cmd/update. A charger that never took an update keeps that heap (docs/ota.md).

    updater = from_settings(settings.ota, clock, on_status=publish_ack, root="/", log=log)
    updater.tick(busy); updater.confirm(); updater.start(cmd)   # as firmware/link/ota.py's Updater
"""
from firmware.storage.state import exists

SLOTS = ("a", "b")


def slots_dir(root):
    """Where the slots and their state file live: under the board's root ("/"), or a run's folder."""
    return root.rstrip("/") + "/slots" if root else "slots"


def from_settings(ota, clock, on_status=None, root="", log=None):
    """The Updater at once when the slots hold its work (a version running or on trial, an outcome
    to deliver, leftovers to remove); otherwise Idle, which builds it with the first update."""
    if log is not None and ota.old_hmac_key:
        log.event("update", status="config", reason="secrets: update_key (HMAC) is no longer accepted: "
                                                    "updates need ota.public_key")
    d = slots_dir(root)
    if exists(d + "/state.json") or [s for s in SLOTS if exists(d + "/" + s)]:
        from firmware.link.ota import from_settings as updater

        return updater(ota, clock, on_status, root, log)
    return Idle((ota, clock, on_status, root, log))


class Idle:
    """The base firmware with empty slots: nothing to tick, switch or confirm until the first
    cmd/update, which loads the Updater; from then on everything goes to it."""

    def __init__(self, args):
        self._args = args   # from_settings' arguments, for the Updater
        self._up = None

    @property
    def version(self):
        return self._up.version if self._up is not None else None

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
