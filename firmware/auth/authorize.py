"""Card authorization with OCPP semantics: local list, authorization cache, online check, policies.

A tap's pseudonyms (firmware/auth/keys.py) go to the provisioned local list first, then to the cache
of earlier online answers, then to the backend; the offline switches decide without it. Only
pseudonyms are held; both stores are bounded and written to flash atomically.

    auth = Authorizer(keys, LocalList("data/auth_list.jsonl"), AuthCache("data/auth_cache.jsonl"), clock)
    d = auth.tap(keys.tap(uid), online=True)   # d.status, or d.pending: publish d.request()
"""
import binascii
import json
import os
import struct

from micropython import const

from firmware.billing import fixed
from firmware.auth.keys import check_version
from firmware.core.timefmt import iso, parse_iso

ACCEPTED = "Accepted"
LIST_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid")
STATUSES = LIST_STATUSES + ("ConcurrentTx",)

_KEY = const(17)        # packed key: key version byte + the 16 bytes of the pseudonym
_REC = "<BBHII"         # flags, max_current_a, group index, expiry (Unix s), max_wh
_REC_SIZE = const(12)
_F_STATUS = const(0x03)  # index into LIST_STATUSES
_F_OFFPEAK = const(0x04)
_F_EXPIRY = const(0x08)
_F_CURRENT = const(0x10)
_F_WH = const(0x20)
_F_GROUP = const(0x40)
_GROUP_MAX = const(36)          # an OCPP 2.0.1 IdToken
_MAX_WH = const(1000000000)     # 1 GWh: any sane limit, and a small int on the ESP32
_MAX_LIST_VERSION = const(0x3FFFFFFF)
_MAX_LIST_STEP = const(1000)    # a diff is at most this far above the current version; a full list resets it
_ENTRY_FIELDS = ("token", "key", "status", "expiry", "group", "max_current_a", "max_kwh",
                 "offpeak_only", "remove")
_NO_GRANT = (None, None, None, None, None, False)


# -- validation: every field checked before anything changes ------------------------------------
def _one_of(values):
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def _token(value, name):
    """A 32-hex pseudonym → its 16 bytes."""
    if isinstance(value, str) and len(value) == 32:
        try:
            return binascii.unhexlify(value)
        except ValueError:
            pass
    raise ValueError("%s: must be a pseudonym of 32 hex digits" % name)


def _key(ver, token):
    return bytes((ver,)) + binascii.unhexlify(token)


def _hex(raw):
    return binascii.hexlify(raw).decode()


def _grant(obj, p, statuses):
    """The authorization fields of an entry or answer → (status, expiry, group, max_current_a,
    max_wh, offpeak_only); p prefixes field names in errors."""
    status = obj.get("status", ACCEPTED)
    if status not in statuses:
        raise ValueError("%sstatus: must be %s" % (p, _one_of(statuses)))
    expiry = obj.get("expiry")
    if expiry is not None:
        try:
            expiry = parse_iso(expiry)
        except ValueError:
            expiry = -1
        if not 0 <= expiry <= 0xFFFFFFFF:
            raise ValueError("%sexpiry: must be a date-time like 2027-01-01T00:00:00Z (1970..2106)"
                             " or null" % p)
    group = obj.get("group")
    if group is not None and (not isinstance(group, str) or not 0 < len(group) <= _GROUP_MAX):
        raise ValueError("%sgroup: must be a string of 1..%d characters or null" % (p, _GROUP_MAX))
    amps = obj.get("max_current_a")
    if amps is not None and (not isinstance(amps, int) or isinstance(amps, bool) or not 6 <= amps <= 80):
        raise ValueError("%smax_current_a: must be an integer 6..80 or null" % p)
    wh = obj.get("max_kwh")
    if wh is not None:
        wh = fixed.parse(wh, 3, p + "max_kwh")  # kWh with 3 decimals is Wh
        if not 0 < wh <= _MAX_WH:
            raise ValueError("%smax_kwh: must be above 0 and at most %d" % (p, _MAX_WH // 1000))
    offpeak = obj.get("offpeak_only", False)
    if not isinstance(offpeak, bool):
        raise ValueError("%soffpeak_only: must be true or false" % p)
    return (status, expiry, group, amps, wh, offpeak)


def _entry(obj, p, allow_remove):
    """One local-list entry → (packed key, grant), grant None for a removal."""
    if not isinstance(obj, dict):
        raise ValueError("%s: must be an object" % p[:-1])
    for f in obj:
        if f not in _ENTRY_FIELDS:
            raise ValueError("%s%s: unknown field" % (p, f))
    raw = _token(obj.get("token"), p + "token")
    ver = check_version(obj.get("key", 1), p + "key")
    key = bytes((ver,)) + raw
    if "remove" in obj:
        if obj["remove"] is not True or not allow_remove:
            raise ValueError("%sremove: only true, and only in a diff update" % p)
        return key, None
    return key, _grant(obj, p, LIST_STATUSES)


def _kwh_text(wh):
    s = fixed.text(wh, 3)
    while s.endswith("0"):
        s = s[:-1]
    return s[:-1] if s.endswith(".") else s


def _entry_dict(key, grant):
    """The JSON shape of an entry (the provisioning format), defaults left out."""
    d = {"token": _hex(key[1:]), "key": key[0], "status": grant[0]}
    if grant[1] is not None:
        d["expiry"] = iso(grant[1])
    if grant[2] is not None:
        d["group"] = grant[2]
    if grant[3] is not None:
        d["max_current_a"] = grant[3]
    if grant[4] is not None:
        d["max_kwh"] = _kwh_text(grant[4])
    if grant[5]:
        d["offpeak_only"] = True
    return d


def _effective(grant, now):
    """Accepted turns Expired once the expiry date has passed (UTC seconds)."""
    if grant[0] == ACCEPTED and grant[1] is not None and now >= grant[1]:
        return "Expired"
    return grant[0]


def _write_lines(path, lines):
    """Atomic like state.write_atomic, line by line: a full list never exists as one string."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for line in lines:
            f.write(line)
            f.write("\n")
    os.rename(tmp, path)


# -- the local authorization list ---------------------------------------------------------------
def _find(keys, key):
    """Index of a 17-byte key in packed keys, or -1; a search in C, not a Python loop."""
    i = keys.find(key)
    while i > 0 and i % _KEY:
        i = keys.find(key, i + 1)
    return i // _KEY if i >= 0 else -1


class _Table:
    """Entries packed in two bytearrays, 29 bytes each: 1000 dicts would not fit an ESP32 heap."""

    def __init__(self):
        self.keys = bytearray()
        self.recs = bytearray()
        self.groups = []
        self._gindex = {}

    def __len__(self):
        return len(self.keys) // _KEY

    def find(self, key):
        """Index of a packed key, or -1."""
        return _find(self.keys, key)

    def add(self, key, grant):
        status, expiry, group, amps, wh, offpeak = grant
        flags = LIST_STATUSES.index(status)
        gi = 0
        if offpeak:
            flags |= _F_OFFPEAK
        if expiry is not None:
            flags |= _F_EXPIRY
        if amps is not None:
            flags |= _F_CURRENT
        if wh is not None:
            flags |= _F_WH
        if group is not None:
            flags |= _F_GROUP
            gi = self._gindex.get(group)
            if gi is None:
                gi = len(self.groups)
                self.groups.append(group)
                self._gindex[group] = gi
        self.keys.extend(key)
        self.recs.extend(struct.pack(_REC, flags, amps or 0, gi, expiry or 0, wh or 0))

    def key(self, i):
        return bytes(self.keys[i * _KEY:(i + 1) * _KEY])

    def grant(self, i):
        flags, amps, gi, expiry, wh = struct.unpack_from(_REC, self.recs, i * _REC_SIZE)
        return (LIST_STATUSES[flags & _F_STATUS],
                expiry if flags & _F_EXPIRY else None,
                self.groups[gi] if flags & _F_GROUP else None,
                amps if flags & _F_CURRENT else None,
                wh if flags & _F_WH else None,
                bool(flags & _F_OFFPEAK))


class LocalList:
    """The provisioned local authorization list (OCPP SendLocalList semantics); version 0 = none."""

    def __init__(self, path=None, max_entries=1000):
        self.path = path
        self.max_entries = max_entries
        self.version = 0
        self.load_error = None   # why a stored list was unusable (the list then starts empty)
        self._t = _Table()
        if path:
            self._load()

    def __len__(self):
        return len(self._t)

    def get(self, pairs):
        """The grant of the first (key version, pseudonym) pair listed, or None."""
        for ver, token in pairs:
            i = self._t.find(_key(ver, token))
            if i >= 0:
                return self._t.grant(i)
        return None

    def update(self, msg):
        """Apply {"version", "type": "full"|"diff", "entries"}: validated whole, persisted, then
        swapped in; ValueError naming the field (or OSError from flash) keeps the old list."""
        if not isinstance(msg, dict):
            raise ValueError("update: must be an object")
        for f in msg:
            if f not in ("id", "version", "type", "entries"):  # a misspelt "entries" must not wipe the list
                raise ValueError("%s: unknown field" % f)
        version = msg.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 0 < version <= _MAX_LIST_VERSION:
            raise ValueError("version: must be an integer 1..%d" % _MAX_LIST_VERSION)
        kind = msg.get("type")
        if kind not in ("full", "diff"):
            raise ValueError("type: must be \"full\" or \"diff\"")
        if kind == "diff" and not self.version < version <= self.version + _MAX_LIST_STEP:
            raise ValueError("version: a diff must be %d..%d, above the current version %d by at most %d "
                             "(got %d; a full list sets any version)"
                             % (self.version + 1, min(self.version + _MAX_LIST_STEP, _MAX_LIST_VERSION),
                                self.version, _MAX_LIST_STEP, version))
        entries = msg.get("entries", [])
        if not isinstance(entries, list):
            raise ValueError("entries: must be a list")
        if len(entries) > self.max_entries:
            raise ValueError("entries: %d entries, more than the maximum of %d"
                             % (len(entries), self.max_entries))
        t = _Table()          # full: the new list; diff: the entries it adds or replaces
        gone = bytearray()    # diff: the packed keys it removes
        for n, obj in enumerate(entries):
            p = "entries[%d]." % n
            key, grant = _entry(obj, p, kind == "diff")
            if t.find(key) >= 0 or _find(gone, key) >= 0:
                raise ValueError("%stoken: listed twice under key %d" % (p, key[0]))
            if grant is None:
                gone.extend(key)
            else:
                t.add(key, grant)
        if kind == "diff":
            merged = _Table()
            for i in range(len(self._t)):
                key = self._t.key(i)
                if t.find(key) < 0 and _find(gone, key) < 0:
                    merged.add(key, self._t.grant(i))
            for i in range(len(t)):
                merged.add(t.key(i), t.grant(i))
            t = merged
        if len(t) > self.max_entries:
            raise ValueError("entries: the list would hold %d entries, more than the maximum of %d"
                             % (len(t), self.max_entries))
        self._commit(version, t)
        return {"version": version, "entries": len(t)}

    def remove(self, token, key=None):
        """Drop a pseudonym under every key version (or one); the number of entries removed. An
        unreadable stored list (the list started empty) is overwritten too: it may still name it."""
        raw = _token(token, "token")
        if self._t.keys.find(raw) < 0:
            if self.load_error is not None:
                self._commit(self.version, self._t)
                self.load_error = None
            return 0
        t = _Table()
        for i in range(len(self._t)):
            k = self._t.key(i)
            if k[1:] != raw or key is not None and k[0] != key:
                t.add(k, self._t.grant(i))
        removed = len(self._t) - len(t)
        if removed:
            self._commit(self.version, t)
        return removed

    def entries(self):
        """Every entry in its JSON shape."""
        for i in range(len(self._t)):
            yield _entry_dict(self._t.key(i), self._t.grant(i))

    def _commit(self, version, table):
        if self.path:
            head = json.dumps({"version": version, "entries": len(table)})
            _write_lines(self.path, _lines(head, table))
        self.version, self._t = version, table

    def _load(self):
        try:
            f = open(self.path)
        except OSError:
            return  # first boot: no list yet
        try:
            with f:
                head = json.loads(f.readline())
                version, n = head["version"], head["entries"]
                if not isinstance(version, int) or not 0 <= version <= _MAX_LIST_VERSION:
                    raise ValueError("version: %r" % (version,))
                if not isinstance(n, int) or not 0 <= n <= self.max_entries:
                    raise ValueError("%r entries (at most %d)" % (n, self.max_entries))
                t = _Table()
                for i in range(n):
                    key, grant = _entry(json.loads(f.readline()), "entries[%d]." % i, False)
                    t.add(key, grant)
                if f.readline().strip():
                    raise ValueError("more entries than announced")
        except (ValueError, KeyError, TypeError, OSError) as e:
            self.load_error = "%s: %s; the local list starts empty" % (self.path, e)
            return
        self.version, self._t = version, t


def _lines(head, table):
    yield head
    for i in range(len(table)):
        yield json.dumps(_entry_dict(table.key(i), table.grant(i)))


# -- the authorization cache --------------------------------------------------------------------
class AuthCache:
    """Online answers kept for later taps (OCPP authorization cache): bounded LRU, maximum age."""

    def __init__(self, path=None, max_entries=64, max_age_s=604800):
        self.path = path
        self.max_entries = max_entries   # 0 disables the cache
        self.max_age_s = max_age_s
        self.load_error = None   # why the stored cache was unusable (it then starts empty)
        self.save_error = None   # the last failed flash write (the RAM copy is still used)
        self._stale = False      # the file may hold entries RAM dropped (too old, unreadable file)
        self._d = {}             # packed key -> [grant, cached_at, last use]
        self._uses = 0
        if path:
            self._load()

    def __len__(self):
        return len(self._d)

    def get(self, pairs, now):
        """The grant cached for the first pair present and younger than max_age_s, or None."""
        for ver, token in pairs:
            k = _key(ver, token)
            e = self._d.get(k)
            if e is None:
                continue
            age = now - e[1]
            if age < 0 or age > self.max_age_s:  # too old, or the clock went back: not trusted
                del self._d[k]
                self._stale = True
                continue
            self._uses += 1
            e[2] = self._uses
            return e[0]
        return None

    def put(self, ver, token, grant, now):
        """Remember an answer, evicting the least recently used; a flash failure is kept in
        save_error (the cache only saves round trips)."""
        if not self.max_entries:
            return
        k = _key(ver, token)
        if k not in self._d and len(self._d) >= self.max_entries:
            oldest = None
            for key, e in self._d.items():
                if oldest is None or e[2] < self._d[oldest][2]:
                    oldest = key
            del self._d[oldest]
        self._uses += 1
        self._d[k] = [grant, now, self._uses]
        try:
            self._save()
            self.save_error = None
            self._stale = False
        except OSError as e:
            self.save_error = str(e)

    def remove(self, token, key=None):
        """Drop a pseudonym under every key version (or one), saved at once; the number removed.
        The file is rewritten also when it may hold entries RAM no longer has (a purge must reach them)."""
        raw = _token(token, "token")
        gone = [k for k in self._d if k[1:] == raw and (key is None or k[0] == key)]
        for k in gone:
            del self._d[k]
        if gone or self._stale:
            self._save()
            self._stale = False
        return len(gone)

    def clear(self):
        """Forget every cached answer (OCPP ClearCache), saved at once; the number dropped."""
        n = len(self._d)
        self._d = {}
        self._save()
        self._stale = False
        return n

    def entries(self):
        """Entries in their JSON shape plus cached_at, least recently used first."""
        items = sorted(self._d.items(), key=lambda kv: kv[1][2])
        for k, e in items:
            d = _entry_dict(k, e[0])
            d["cached_at"] = iso(e[1])
            yield d

    def _save(self):
        if self.path:
            _write_lines(self.path, _cache_lines(self))

    def _load(self):
        try:
            f = open(self.path)
        except OSError:
            return
        d = {}
        try:
            with f:
                n = json.loads(f.readline())["cache"]
                if not isinstance(n, int) or not 0 <= n <= self.max_entries:
                    raise ValueError("%r entries (at most %d)" % (n, self.max_entries))
                for i in range(n):
                    obj = json.loads(f.readline())
                    at = parse_iso(obj.pop("cached_at"))
                    key, grant = _entry(obj, "entries[%d]." % i, False)
                    d[key] = [grant, at, i + 1]
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
            self.load_error = "%s: %s; the cache starts empty" % (self.path, e)
            self._stale = True
            return
        self._d, self._uses = d, len(d)


def _cache_lines(cache):
    yield json.dumps({"cache": len(cache)})
    for d in cache.entries():
        yield json.dumps(d)


# -- decisions ----------------------------------------------------------------------------------
class Decision:
    """The outcome of a tap or remote start; `pending` until the backend answers or times out."""

    def __init__(self, status, method, token, key, grant=_NO_GRANT, corr=None, reason=None):
        self.status = status        # None while pending, else one of STATUSES
        self.method = method        # local_list, cache, online, remote or offline_unknown
        self.token = token          # pseudonym under `key` (the current version for taps)
        self.key = key
        self.group = grant[2]
        self.max_current_a = grant[3]
        self.max_wh = grant[4]      # energy limit in Wh (max_kwh on the wire)
        self.offpeak_only = grant[5]
        self.corr = corr            # correlation id of the online request
        self.reason = reason        # None (decided with the backend reachable), offline, timeout
        self.remote = False         # from a remote start
        self.checked_by = None      # remote starts: the path that authorized them, if checked
        self.conflict = False       # the backend and the local list disagree (LocalListConflict)

    @property
    def pending(self):
        return self.status is None

    @property
    def accepted(self):
        return self.status == ACCEPTED

    def request(self):
        """The payload of cp/v1/<id>/auth/req for a pending decision."""
        return {"id": self.corr, "token": self.token, "key": self.key}

    def as_dict(self):
        d = {"status": self.status, "method": self.method, "token": self.token, "key": self.key,
             "group": self.group, "max_current_a": self.max_current_a, "max_wh": self.max_wh,
             "offpeak_only": self.offpeak_only}
        for name in ("corr", "reason", "checked_by"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if self.remote:
            d["remote"] = True
        if self.conflict:
            d["conflict"] = True
        return d


def may_stop(session_token, session_group, tap_token, tap_group):
    """The same card or a card of the same group (parent id) may stop a session; tap_token is a
    pseudonym or a tap's (version, pseudonym) pairs, so rotation mid-session keeps working."""
    if isinstance(tap_token, str):
        if tap_token == session_token:
            return True
    else:
        for _, token in tap_token:
            if token == session_token:
                return True
    return session_group is not None and session_group == tap_group


_SWITCHES = {"LocalAuthorizeOffline": "local_authorize_offline", "LocalPreAuthorize": "local_pre_authorize",
             "AllowOfflineTxForUnknownId": "allow_offline_unknown", "AuthorizeRemoteTxRequests": "authorize_remote"}


class Authorizer:
    """The decision pipeline: local list, cache, backend, offline policies (OCPP switches)."""

    def __init__(self, keys, local_list, cache, clock, local_authorize_offline=True,
                 local_pre_authorize=False, allow_offline_unknown=False, authorize_remote=True,
                 timeout_ms=3000, max_pending=4):
        self.keys = keys
        self.local_list = local_list
        self.cache = cache
        self.clock = clock
        self.local_authorize_offline = local_authorize_offline
        self.local_pre_authorize = local_pre_authorize
        self.allow_offline_unknown = allow_offline_unknown
        self.authorize_remote = authorize_remote
        self.timeout_ms = timeout_ms
        self.max_pending = max_pending
        self._pending = {}   # corr -> (pairs, deadline ticks, remote overrides or None)

    def set_switch(self, name, value):
        """An OCPP switch (its config name, e.g. "LocalPreAuthorize") changed at run time."""
        setattr(self, _SWITCHES[name], value)

    def tap(self, pairs, online):
        """Decide for a tap's (version, pseudonym) pairs, current version first."""
        return self._decide(pairs, online, None, None)

    def remote_start(self, payload, online=True):
        """A remote start {"id", "token", "key", group/prefs…}: checked like a tap (local list, cache,
        online) unless the config turns AuthorizeRemoteTxRequests off; payload group/prefs win."""
        if not isinstance(payload, dict):
            raise ValueError("remote_start: must be an object")
        raw = _token(payload.get("token"), "token")
        ver = check_version(payload.get("key", self.keys.current), "key")
        if ver not in self.keys.accept:
            raise ValueError("key: version %d is not an accepted key version" % ver)
        given = _grant(payload, "", (ACCEPTED,))
        token = _hex(raw)
        if not self.authorize_remote:
            d = Decision(ACCEPTED, "remote", token, ver, given)
            d.remote = True
            return d
        return self._decide([(ver, token)], online, None, (given, payload))

    def online_answer(self, corr, payload):
        """The backend's answer to request corr; ValueError (state unchanged) if unknown or malformed."""
        p = self._pending.get(corr) if isinstance(corr, str) else None  # a list/dict id is unhashable
        if p is None:
            raise ValueError("id: no authorization request %r is waiting (answered or timed out)" % (corr,))
        if not isinstance(payload, dict):
            raise ValueError("answer: must be an object")
        if payload.get("id", corr) != corr:
            raise ValueError("id: %r does not match the request %r" % (payload.get("id"), corr))
        if "status" not in payload:
            raise ValueError("status: missing")
        grant = _grant(payload, "", STATUSES)
        del self._pending[corr]
        pairs, _, remote = p
        now = self.clock.time()
        status = _effective(grant, now)
        listed = self.local_list.get(pairs)
        if listed is None and status != "ConcurrentTx":  # listed cards are never cached (OCPP)
            self.cache.put(pairs[0][0], pairs[0][1], grant, now)
        d = Decision(status, "online", pairs[0][1], pairs[0][0], grant)
        d.conflict = listed is not None and _effective(listed, now) != status
        return self._finish(d, remote)

    def online_timeout(self, corr):
        """No answer in time: decide as offline; ValueError if corr is not waiting."""
        p = self._pending.pop(corr, None)
        if p is None:
            raise ValueError("id: no authorization request %r is waiting" % (corr,))
        d = self._decide(p[0], False, "timeout", p[2])
        d.corr = corr  # the request it answers
        return d

    def timeouts(self):
        """Decisions for every request older than timeout_ms; call from the loop (nothing waits: ())."""
        if not self._pending:
            return ()
        now = self.clock.ticks_ms()
        out = []   # loops, not comprehensions: a closure over self and now costs heap on every call
        for c in list(self._pending):
            if self.clock.ticks_diff(now, self._pending[c][1]) >= 0:
                out.append(self.online_timeout(c))
        return out

    def group_of(self, pairs):
        """The group a card has in the list or cache (to stop a group member's session), or None."""
        grant = self.local_list.get(pairs) or self.cache.get(pairs, self.clock.time())
        return grant[2] if grant else None

    def purge(self, token, key=None):
        """Forget a pseudonym everywhere here (list, cache, waiting requests); the counts removed."""
        _token(token, "token")
        if key is not None:
            check_version(key, "key")
        token = token.lower()
        waiting = [c for c, p in self._pending.items() if any(t == token for _, t in p[0])]
        for c in waiting:
            del self._pending[c]
        return {"token": token, "list": self.local_list.remove(token, key),
                "cache": self.cache.remove(token, key), "pending": len(waiting)}

    def _decide(self, pairs, online, reason, remote):
        now = self.clock.time()
        ver, token = pairs[0]
        if not online and reason is None:
            reason = "offline"
        local_ok = self.local_pre_authorize if online else self.local_authorize_offline
        method = "local_list"
        grant = self.local_list.get(pairs)
        if grant is None:
            method = "cache"
            grant = self.cache.get(pairs, now)
        if grant is not None:
            status = _effective(grant, now)
            if status == ACCEPTED:
                if local_ok:
                    return self._finish(Decision(ACCEPTED, method, token, ver, grant, None, reason), remote)
            elif method == "local_list" or not online:  # a cached refusal is re-checked online
                return self._finish(Decision(status, method, token, ver, grant, None, reason), remote)
        if online:
            return self._ask(pairs, remote)
        # offline and not authorized locally: the unknown-identifier rule (OCPP)
        status = ACCEPTED if self.allow_offline_unknown else "Invalid"
        return self._finish(Decision(status, "offline_unknown", token, ver, _NO_GRANT, None, reason), remote)

    def _ask(self, pairs, remote):
        if len(self._pending) >= self.max_pending:
            oldest = None
            for c, p in self._pending.items():
                if oldest is None or self.clock.ticks_diff(p[1], self._pending[oldest][1]) < 0:
                    oldest = c
            del self._pending[oldest]   # its answer, if any, is then refused as unknown
        corr = _hex(os.urandom(4))
        while corr in self._pending:
            corr = _hex(os.urandom(4))
        deadline = self.clock.ticks_add(self.clock.ticks_ms(), self.timeout_ms)
        self._pending[corr] = (pairs, deadline, remote)
        d = Decision(None, "online", pairs[0][1], pairs[0][0], _NO_GRANT, corr)
        d.remote = remote is not None
        return d

    def _finish(self, d, remote):
        """Remote starts that were checked: method remote, the payload's group/prefs win."""
        if remote is None:
            return d
        given, payload = remote
        d.remote = True
        d.checked_by, d.method = d.method, "remote"
        if "group" in payload:
            d.group = given[2]
        if "max_current_a" in payload:
            d.max_current_a = given[3]
        if "max_kwh" in payload:
            d.max_wh = given[4]
        if "offpeak_only" in payload:
            d.offpeak_only = given[5]
        return d


def from_settings(auth, clock, keys, data_dir=None):
    """The Authorizer the device config's auth record describes; data_dir None keeps list and cache in RAM."""
    lst = LocalList(data_dir and data_dir + "/auth_list.jsonl", auth.list_max_entries)
    cache = AuthCache(data_dir and data_dir + "/auth_cache.jsonl", auth.cache_entries, auth.cache_max_age_s)
    return Authorizer(keys, lst, cache, clock, auth.LocalAuthorizeOffline, auth.LocalPreAuthorize,
                      auth.AllowOfflineTxForUnknownId, auth.AuthorizeRemoteTxRequests, auth.timeout_s * 1000)
