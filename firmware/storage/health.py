"""Storage health: every flash writer's last error in one place, retried and reported once per change.

A full flash (ENOSPC) or another OSError never stops charging: each writer keeps what it could
not write in RAM and says so in its `error` attribute (0 after a good write). This module, run
from the controller's one-second housekeeping, asks those with a `retry()` to write again and
reports each change of condition on the console log and upstream (a `fault` notice that the
backend stores), so a technician learns of a full flash before anything is dropped.

    h = Health(log, notify, (("state", state), ("journal", journal), ("revenue", revenue)))
    h.check()   # every second; notify(file=..., error=..., state="full"|"error"|"ok")
"""
from micropython import const

_ENOSPC = const(28)


def condition(err):
    """'ok', 'full' (no space) or 'error' (another OSError) for an errno (0 is ok)."""
    return "ok" if not err else ("full" if err == _ENOSPC else "error")


class Health:
    def __init__(self, log, notify, parts):
        self.log = log
        self.notify = notify       # notify(**fields): queue the upstream notice (reactions.event)
        self.parts = parts         # (file name, writer with .error [and .retry()]) pairs
        self.told = [0] * len(parts)   # the errno last reported per writer

    def check(self):
        """Retry refused writes, then report each writer whose condition changed since the last check."""
        for i in range(len(self.parts)):
            name, part = self.parts[i]
            if part.error and hasattr(part, "retry"):
                part.retry()
            err = part.error
            if condition(err) != condition(self.told[i]):
                self.told[i] = err
                self.report(name, err, note="charging goes on; what waits is kept in RAM" if err else None)

    def report(self, name, err, **extra):
        """One storage condition, locally and upstream (err: an errno, 0 when it is over, or a text)."""
        state = condition(err) if isinstance(err, int) else "damaged"
        fields = {"file": name, "state": state, "error": err}
        for k in extra:
            if extra[k] is not None:
                fields[k] = extra[k]
        self.log.event("storage", **fields)
        self.notify(info="storage", **fields)
