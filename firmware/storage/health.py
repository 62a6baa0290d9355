"""Storage health: every flash writer's last error in one place, retried and reported once per change.

A full flash (ENOSPC) or another OSError never stops charging: each writer keeps what it could
not write in RAM and says so in its `error` attribute (0 after a good write). This module, run
from the controller's one-second housekeeping, asks those with a `retry()` to write again and
reports each change of condition on the console log and upstream: one `fault` notice per change
(`info` "storage"), which the backend stores, so an operator learns of a full flash in time.

    h = Health(log, notify, (("state", state), ("journal", journal), ("revenue", revenue)))
    h.check()   # every second; notify(info="storage", file=..., state="full"|"error"|"ok"|"damaged", ...)
"""
from micropython import const

_ENOSPC = const(28)


def condition(err):
    """'ok', 'full' (no space) or 'error' (another OSError) for an errno (0 is ok); 'damaged' for a text."""
    if not isinstance(err, int):
        return "damaged"
    return "ok" if not err else ("full" if err == _ENOSPC else "error")


class Health:
    def __init__(self, log, notify, parts):
        self.log = log
        self.notify = notify       # notify(**fields): queue the upstream notice (reactions.event)
        self.parts = parts         # (file name, writer with .error [and .retry()]) pairs
        self.told = [0] * len(parts)   # the errno last reported per writer

    def check(self):
        """Retry refused writes, then report the writers whose condition changed, in one notice."""
        changed = None   # made only when something changed: this runs every second
        for i in range(len(self.parts)):
            name, part = self.parts[i]
            if part.error and hasattr(part, "retry"):
                part.retry()
            err = part.error
            if condition(err) != condition(self.told[i]):
                self.told[i] = err
                if changed is None:
                    changed = []
                changed.append((name, err))
        if changed:
            self.report(changed)

    def report(self, items, **extra):
        """(file, errno or text) conditions, each on the console, upstream in one notice (a full flash
        keeps one notice of a kind: the latest says everything)."""
        worst = None
        for name, err in items:
            state = condition(err)
            self.log.event("storage", file=name, state=state, error=err)
            if worst is None or state != "ok":
                worst = (name, state, err)
        fields = {"file": worst[0], "state": worst[1], "error": worst[2],
                  "items": [[n, condition(e), e] for n, e in items]}
        if worst[1] != "ok":
            fields["note"] = "charging goes on; what flash refused waits in RAM"
        fields.update(extra)
        self.notify(info="storage", **fields)
