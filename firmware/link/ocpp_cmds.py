"""The commands an OCPP central system needs beyond the charger's own (docs/ocpp.md, tools/ocpp_bridge.py):
availability, reset, trigger, configuration, cache and local list version.

Availability and changed settings persist in one small file in the data directory, applied again at
boot. A change that would disturb a running session (Inoperative, a soft reset) waits for its end:
`tick()` carries it out then.

    oc = OcppCommands(ctl, auth, settings, status, data_dir + "/ocpp.json", log)
    routes.update(oc.routes()); oc.tick()     # every control step
"""
import json

from micropython import const

from firmware.core.settings import CHANGEABLE
from firmware.storage.state import write_atomic

_MAX_KEYS = const(16)
_TYPES = ("Operative", "Inoperative")


class OcppCommands:
    def __init__(self, ctl, auth, settings, status, path, log):
        self.ctl = ctl
        self.auth = auth
        self.s = settings
        self.status = status
        self.path = path
        self.log = log
        self.operative = True       # False: no new sessions (OCPP Inoperative), persisted
        self.scheduled = False      # Inoperative waits for the running session to end
        self.reset_after = None     # "soft": restart once the running session ended
        self.changed = {}           # settings changed by the backend: key -> value, persisted
        self.load_error = None      # why the saved file was unusable (defaults then apply)
        self._load()

    def routes(self):
        """Command name -> handler, for the route table (firmware/link/handlers.py)."""
        return {"availability": self.availability, "clear_cache": self.clear_cache,
                "list_version": self.list_version, "reset": self.reset, "trigger": self.trigger,
                "get_config": self.get_config, "set_config": self.set_config}

    def _load(self):
        try:
            with open(self.path) as f:
                saved = json.load(f)
        except OSError:
            saved = None    # nothing changed yet
        except ValueError as e:
            saved = None
            self.load_error = "%s: %s" % (self.path, e)
        if not isinstance(saved, dict):
            self._apply_operative(True)
            return
        config = saved.get("config")
        for key in config if isinstance(config, dict) else ():
            try:
                self._apply(key, config[key])
            except ValueError as e:   # a key or bound of an older firmware: the config file's value stays
                self.load_error = "%s; %s" % (self.load_error or self.path, e)
        self._apply_operative(saved.get("operative") is not False)

    def _save(self, operative, changed):
        write_atomic(self.path, json.dumps({"operative": operative, "config": changed}))

    def _apply_operative(self, operative):
        self.operative = operative
        self.status.set_operative(operative)

    def _apply(self, key, value):
        """Set one setting and hand it to its owner, live."""
        v = self.s.change(key, value)
        if key.startswith("auth."):
            self.auth.set_switch(key[5:], v)
        elif key in ("meter_values_s", "meter_aligned_s"):
            self.status.set_intervals(self.s.meter_values_s, self.s.meter_aligned_s)
        self.changed[key] = v   # auth_timeout_s: the controller reads it from settings each time
        return v

    def availability(self, p):
        """{connector: 0|1, type: Operative|Inoperative}; Inoperative during a session: after it."""
        if p.get("connector") not in (0, 1) or isinstance(p.get("connector"), bool):
            raise ValueError("connector must be 0 or 1")
        kind = p.get("type")
        if kind not in _TYPES:
            raise ValueError("type must be Operative or Inoperative")
        operative = kind == "Operative"
        if not operative and self.ctl.session is not None:
            self.scheduled = True
            self.log.event("availability", type=kind, scheduled=True)
            return {"scheduled": True}
        self._save(operative, self.changed)
        self.scheduled = False
        self._apply_operative(operative)
        self.log.event("availability", type=kind)
        return None

    def clear_cache(self, p):
        return {"entries": self.auth.cache.clear()}

    def list_version(self, p):
        return {"version": self.auth.local_list.version}

    def reset(self, p):
        """{type: soft|hard}: soft ends the session in order (SoftReset), hard at once (ImmediateReset)."""
        kind = p.get("type")
        if kind not in ("soft", "hard"):
            raise ValueError("type must be soft or hard")
        s = self.ctl.session
        self.log.event("reset_asked", type=kind, tx_id=s.tx_id if s is not None else None)
        if s is None:
            self.ctl.restart("reset_" + kind)
        elif kind == "hard":
            self.ctl.stop("ImmediateReset", emergency=True)
            self.ctl.restart("reset_hard")
        else:
            self.ctl.stop("SoftReset")
            self.reset_after = "soft"
        return None

    def accepting(self):
        """New sessions may start: operative and no reset waiting for the session's end."""
        return self.operative and self.reset_after is None

    def tick(self):
        """What waited for the running session's end: a scheduled Inoperative, a soft reset."""
        if self.ctl.session is not None:
            return
        if self.scheduled:
            self.scheduled = False
            self._apply_operative(False)   # in force even if the flash fails: the safe direction
            self.log.event("availability", type="Inoperative")
            try:
                self._save(False, self.changed)
            except OSError as e:
                self.log.event("storage", file=self.path, error=str(e))
        if self.reset_after is not None:
            self.ctl.restart("reset_" + self.reset_after)
            self.reset_after = None

    def trigger(self, p):
        """{message: status|meter}: the retained status again, or a meter value of the running session now."""
        what = p.get("message")
        if what == "status":
            self.status.republish()
        elif what == "meter":
            s = self.ctl.session
            if s is None:
                raise ValueError("no session running: meter values belong to a session")
            self.status.report_meter(self.ctl.clock.ticks_ms(), s, now_asked=True)
        else:
            raise ValueError("message must be status or meter")
        return None

    def get_config(self, p):
        """{keys: [name, ...]} (all changeable settings when absent): their values; unknown names left out."""
        keys = p.get("keys")
        if keys is None:
            keys = CHANGEABLE
        elif not isinstance(keys, list) or len(keys) > _MAX_KEYS:
            raise ValueError("keys must be a list of at most %d setting names" % _MAX_KEYS)
        values = {}
        for k in keys:
            if k in CHANGEABLE:
                values[k] = self.s.value(k)
        return {"values": values}

    def set_config(self, p):
        """{key, value}: checked like the config file, saved, applied at once."""
        key = p.get("key")
        if key not in CHANGEABLE:
            raise ValueError("key: %r is not a setting the backend can change" % (key if isinstance(key, str) else None,))
        old = self.s.value(key)
        had = key in self.changed
        v = self._apply(key, p.get("value"))   # ValueError: nothing changed
        try:
            self._save(self.operative, self.changed)
        except OSError:
            self._apply(key, old)   # not saved: not in force either
            if not had:
                del self.changed[key]
            raise
        self.log.event("config", key=key, value=v)
        return None
