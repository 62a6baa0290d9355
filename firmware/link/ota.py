"""Over-the-air update: a signed bundle streamed into the inactive slot, switched at a safe moment,
rolled back when the new version does not prove itself (docs/ota.md).

`cmd/update` carries `{"id", "url", "version", "size", "sha256", "sig"}`; `sig` is HMAC-SHA256
under the update key over `signed_bytes(version, size, sha256)`. The download runs one chunk
per `tick()`, hashing and unpacking as it goes into `slots/a` or `slots/b` (never the running
one); only a complete bundle whose sha256 matches is marked installable in `slots/state.json`,
the file boot.py reads to pick the slot and count trial boots.

    up = Updater(key, clock, on_status=publish_ack, root="/")
    up.start(cmd); up.tick(busy=session_running)              # cmd_update; every loop iteration
    if up.ready_to_switch() and idle: up.switch(); machine.reset()
"""
import binascii
import hashlib
import json
import os

from micropython import const

from firmware.link.bundle import Reader
from firmware.core.hmacsha256 import hmac_sha256
from firmware.storage.state import ensure_dir, write_atomic

SLOTS = ("a", "b")
MIN_KEY = 32             # update key bytes
MAX_URL = 256
MAX_VERSION = 32
_ENOSPC = const(28)
_RETRY_MS = const(5000)  # between attempts to deliver a final answer
_VERSION_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-"
_HEX = "0123456789abcdef"
_CONNECT = "connect"     # job phases
_DOWNLOAD = "download"
_READY = "ready"


def signed_bytes(version, size, sha256):
    """What the update key signs: binds the bundle's hash to its version and size."""
    return ("cp-update/1\n%s\n%d\n%s" % (version, size, sha256)).encode()


def sign(key, version, size, sha256):
    """The `sig` field (64 hex digits) for a bundle, as tools/bundle.py computes it."""
    return binascii.hexlify(hmac_sha256(key, signed_bytes(version, size, sha256))).decode()


def _same(a, b):
    """Constant-time comparison of two strings: the time does not tell how much of a guess matched."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= ord(a[i]) ^ ord(b[i])
    return d == 0


def _hex64(p, name):
    v = p.get(name)
    if not isinstance(v, str) or len(v) != 64 or [c for c in v.lower() if c not in _HEX]:
        raise ValueError("%s must be 64 hex digits" % name)
    return v.lower()


def check_command(p, max_size):
    """(url, version, size, sha256, sig) of a cmd/update payload, or ValueError naming the field."""
    url = p.get("url")
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL:
        raise ValueError("url must be a string of 1..%d characters" % MAX_URL)
    if not (url.startswith("http://") or url.startswith("https://")):
        raise ValueError("url must start with http:// or https://")
    if [c for c in url if c <= " " or c > "~"]:
        raise ValueError("url must not contain spaces, control or non-ASCII characters")
    if not url.split("/", 3)[2]:
        raise ValueError("url has no host")
    version = p.get("version")
    if (not isinstance(version, str) or not 0 < len(version) <= MAX_VERSION
            or [c for c in version if c not in _VERSION_CHARS]):
        raise ValueError("version must be 1..%d characters of A-Z a-z 0-9 . _ + -" % MAX_VERSION)
    size = p.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError("size must be a positive integer (bytes)")
    if size > max_size:
        raise ValueError("size %d exceeds the maximum of %d bytes" % (size, max_size))
    return url, version, size, _hex64(p, "sha256"), _hex64(p, "sig")


def parse_update_key(text):
    """The update key from hex (secrets.json `update_key`): at least MIN_KEY bytes."""
    try:
        key = binascii.unhexlify(text)
    except (ValueError, TypeError):
        raise ValueError("secrets: update_key must be hex")
    if len(key) < MIN_KEY:
        raise ValueError("secrets: update_key must be at least %d bytes (%d hex digits)" % (MIN_KEY, 2 * MIN_KEY))
    return key


def _join(root, name):
    return root.rstrip("/") + "/" + name if root else name


def _is_dir(path):
    return os.stat(path)[0] & 0x4000


def _errno(e):
    return e.args[0] if e.args and isinstance(e.args[0], int) else None


def _describe(e):
    return "%s: %s" % (type(e).__name__, e)


def load_state(path):
    """The slot state, with defaults for a first boot or an unreadable file (base firmware runs)."""
    st = {"active": None, "previous": None, "trial": None, "max_boots": 3, "slots": {}, "outcome": None}
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return st
    if isinstance(saved, dict):
        for k in st:
            if k in saved:
                st[k] = saved[k]
    if not isinstance(st["slots"], dict):
        st["slots"] = {}
    if st["active"] not in st["slots"]:
        st["active"] = None   # boot.py runs the base firmware then too
    return st


def rolled_back(st, reason):
    """The state after giving up the active slot: its predecessor runs, the reason is kept for the
    backend (boot.py applies the same rule)."""
    bad = st["active"]
    info = st["slots"].pop(bad, None) or {}
    prev = st["previous"]
    st["active"] = prev if prev in st["slots"] else None
    st["previous"] = None
    st["trial"] = None
    st["outcome"] = {"id": info.get("id"), "status": "rolled_back", "version": info.get("version"),
                     "reason": reason}
    return st


def http_get(url, timeout_ms):
    """GET with urequests, every socket step bounded by timeout_ms; the body stream is then made
    non-blocking. Returns (status, content length or None, stream)."""
    import urequests

    net = getattr(urequests, "usocket", None)
    if net is None:  # urequests as a front of micropython-lib `requests` (a newer frozen image)
        r = urequests.request("GET", url, timeout=timeout_ms / 1000, parse_headers=_content_length)
    else:            # urequests 0.9.1 (lib.lock.json) takes no timeout: its sockets get ours
        if url.startswith("https:"):
            _ussl_alias()
        urequests.usocket = _TimedNet(net, timeout_ms)
        try:
            r = urequests.request("GET", url, parse_headers=_content_length)
        finally:
            urequests.usocket = net
    try:
        r.raw.setblocking(False)
    except (AttributeError, OSError):
        pass  # a stream without it keeps the per-read timeout
    return r.status_code, r.headers.get("length"), r.raw


def _ussl_alias():
    """urequests 0.9.1 imports `ussl`, which MicroPython 1.23 and later only call `ssl`."""
    import sys

    if "ussl" in sys.modules:
        return
    try:
        import ussl  # noqa: F401  (older firmware)
    except ImportError:
        import ssl

        sys.modules["ussl"] = ssl


def _content_length(line, headers):
    """urequests header hook: keep only Content-Length (RAM)."""
    if line[:15].lower() == b"content-length:":
        headers["length"] = int(line[15:])


class _TimedNet:
    """Stands in for `usocket` inside urequests: every socket gets a timeout before connect()."""

    def __init__(self, net, timeout_ms):
        self._net = net
        self._timeout_s = timeout_ms / 1000
        self.SOCK_STREAM = net.SOCK_STREAM

    def getaddrinfo(self, *args):
        return self._net.getaddrinfo(*args)  # DNS blocks: see docs/ota.md

    def socket(self, *args):
        s = self._net.socket(*args)
        s.settimeout(self._timeout_s)
        return s


class _SlotWriter:
    """Bundle sink: writes each file under the slot directory, creating folders as needed."""

    def __init__(self, base, open_file):
        self.base = base
        self.name = None
        self._open = open_file
        self._f = None
        self._made = set()

    def begin(self, name, size):
        self.name = name
        parts = name.split("/")
        d = self.base
        for p in parts[:-1]:
            d = d + "/" + p
            if d not in self._made:
                try:
                    os.mkdir(d)
                except OSError:
                    pass  # exists; a real failure shows when the file is opened
                self._made.add(d)
        self._f = self._open(self.base + "/" + name, "wb")

    def write(self, mv):
        self._f.write(mv)

    def end(self):
        f = self._f
        self._f = None
        f.close()

    def close(self):
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None


class _Job:
    def __init__(self, cid, url, version, size, sha256, target):
        self.id = cid
        self.url = url
        self.version = version
        self.size = size
        self.sha256 = sha256
        self.target = target
        self.phase = _CONNECT
        self.stream = None
        self.hash = None
        self.reader = None
        self.writer = None
        self.got = 0
        self.last = 0      # ticks of the last data
        self.percent = -1  # last progress reported


class Updater:
    """One update at a time, and the running version's trial; all work is bounded steps of tick()."""

    def __init__(self, key, clock, on_status=None, root="", log=None, max_size=1 << 20, max_boots=3,
                 trial_s=600, confirm_after_s=60, timeout_ms=2000, stall_s=30, chunk=1024,
                 open_file=open, opener=http_get):
        if key is not None and len(key) < MIN_KEY:
            raise ValueError("update key must be at least %d bytes" % MIN_KEY)
        if confirm_after_s >= trial_s:
            raise ValueError("ota: confirm_after_s must be shorter than trial_s")
        self.key = key
        self.clock = clock
        self.on_status = on_status
        self.log = log
        self.max_size = max_size
        self.max_boots = max_boots
        self.trial_ms = trial_s * 1000
        self.confirm_after_ms = confirm_after_s * 1000
        self.timeout_ms = timeout_ms
        self.stall_ms = stall_s * 1000
        self.chunk = chunk
        self._open = open_file
        self._opener = opener
        self.dir = _join(root, "slots")
        self.path = self.dir + "/state.json"
        self.st = load_state(self.path)
        self.trial = self.st["active"] is not None and isinstance(self.st["trial"], int)
        self._t0 = clock.ticks_ms()
        self._job = None
        self._buf = None
        self._restart = None      # "install" or "rollback" once the state names another slot
        self._final = None        # a final answer not yet delivered: (ack, persisted in state)
        self._final_at = None
        # slots neither running nor installable hold leftovers (an interrupted download, a
        # rolled-back version): remove them, one entry per tick
        self._wipe = [self.slot_dir(s) for s in SLOTS
                      if s != self.st["active"] and s not in self.st["slots"] and self._exists(s)]
        if self.st["outcome"]:
            self._final = (self._ack(self.st["outcome"]), True)

    # -- what the controller calls ------------------------------------------------------------
    @property
    def version(self):
        """The running version: the active slot's, or None for the base firmware."""
        info = self.st["slots"].get(self.st["active"])
        return info.get("version") if info else None

    @property
    def working(self):
        """A download or a clean-up is under way: tick() has work to do."""
        return self._job is not None and self._job.phase != _READY or bool(self._wipe)

    def slot_dir(self, slot):
        return self.dir + "/" + slot

    def start(self, p):
        """cmd/update: validate and begin (answered `accepted`), or ValueError with the reason."""
        url, version, size, sha, sig = check_command(p, self.max_size)
        if self.key is None:
            raise ValueError("no update key configured (secrets: update_key)")
        if not _same(sign(self.key, version, size, sha), sig):
            raise ValueError("sig does not verify under the update key")
        cid = p.get("id")
        job = self._job
        if job is not None and job.id == cid and job.sha256 == sha:
            return None  # the same command delivered twice: it is already under way
        if job is not None and job.phase != _READY:
            raise ValueError("update %s (version %s) is still downloading" % (job.id, job.version))
        if self._restart is not None:
            raise ValueError("a restart is pending (%s): send the update after it" % self._restart)
        if self.trial:
            raise ValueError("version %s is on trial: it must be confirmed before the next update" % self.version)
        active = self.st["active"]
        info = self.st["slots"].get(active)
        if info and info.get("sha256") == sha:
            raise ValueError("version %s (this bundle) is already running" % info.get("version"))
        target = "b" if active == "a" else "a"
        if self._job is not None:
            self._close(self._job)  # a newer update replaces the verified one waiting for its switch
        if self.st["slots"].pop(target, None) is not None:
            self._save()  # no longer installable from here on
        self._job = _Job(cid, url, version, size, sha, target)
        self._wipe = [self.slot_dir(target)]
        self._event("accepted", version=version, slot=target)
        return None

    def tick(self, busy=False):
        """One bounded step: deliver an answer, remove one file, connect, or move one chunk.
        busy (a session runs): only non-blocking steps, the connect waits."""
        now = self.clock.ticks_ms()
        self._deliver(now)
        if self.trial and self._restart is None and self.clock.ticks_diff(now, self._t0) > self.trial_ms:
            self._roll_back("not confirmed within %d s" % (self.trial_ms // 1000))
        if self._wipe:
            self._wipe_step()
            return
        job = self._job
        if job is None:
            return
        if job.phase == _CONNECT and not busy:
            self._connect(job, now)
        elif job.phase == _DOWNLOAD:
            self._download(job, now)

    def ready_to_switch(self):
        """A verified update waits, or the running version was rolled back: reset when idle."""
        return self._restart is not None or (self._job is not None and self._job.phase == _READY)

    def switch(self):
        """Name the verified slot active (on trial) in the state file; the caller then resets.
        Returns "install" or "rollback" (what the reset brings)."""
        if self._restart is None:
            job = self._job
            if job is None or job.phase != _READY:
                raise ValueError("no verified update to switch to")
            st = self.st
            st["previous"] = st["active"]
            st["active"] = job.target
            st["trial"] = 0
            st["max_boots"] = self.max_boots
            self._save()
            self._job = None
            self._restart = "install"
            self._event("switch", version=job.version, slot=job.target)
        return self._restart

    def confirm(self):
        """The app is healthy (connected, loop running): after confirm_after_s on a new version,
        end its trial. True once the running version is confirmed."""
        if self._restart == "rollback":
            return False
        if not self.trial:
            return True
        if self.clock.ticks_diff(self.clock.ticks_ms(), self._t0) < self.confirm_after_ms:
            return False
        st = self.st
        info = st["slots"].get(st["active"]) or {}
        st["trial"] = None
        st["outcome"] = {"id": info.get("id"), "status": "installed", "version": info.get("version")}
        self._save()
        self.trial = False
        self._final = (self._ack(st["outcome"]), True)
        self._final_at = None
        self._event("installed", version=info.get("version"))
        return True

    # -- internals --------------------------------------------------------------------------
    def _exists(self, slot):
        try:
            os.stat(self.slot_dir(slot))
            return True
        except OSError:
            return False

    def _save(self):
        ensure_dir(self.dir)
        write_atomic(self.path, json.dumps(self.st))

    def _ack(self, rec):
        ack = {"id": rec.get("id"), "cmd": "update", "status": rec["status"]}
        for k in ("version", "reason"):
            if rec.get(k) is not None:
                ack[k] = rec[k]
        return ack

    def _event(self, status, **fields):
        if self.log is not None:
            self.log.event("update", status=status, **fields)

    def _progress(self, job, percent):
        if percent != job.percent:
            job.percent = percent
            if self.on_status is not None:
                self.on_status({"id": job.id, "cmd": "update", "status": "progress", "percent": percent})

    def _deliver(self, now):
        """Final answers (rejected, installed, rolled_back) are re-sent until on_status takes them."""
        if self._final is None or self.on_status is None:
            return
        if self._final_at is not None and self.clock.ticks_diff(now, self._final_at) < _RETRY_MS:
            return
        ack, persisted = self._final
        if self.on_status(ack) is False:
            self._final_at = now
            return
        self._final = None
        self._final_at = None
        if persisted:
            self.st["outcome"] = None
            self._save()

    def _roll_back(self, reason):
        rolled_back(self.st, reason)
        self._save()
        self.trial = False
        self._restart = "rollback"
        self._final = (self._ack(self.st["outcome"]), True)
        self._final_at = None
        self._event("rolled_back", reason=reason)

    def _wipe_step(self):
        top = self._wipe[-1]
        try:
            names = os.listdir(top)
        except OSError:
            self._wipe.pop()  # already gone
            return
        try:
            if not names:
                os.rmdir(top)
                self._wipe.pop()
                return
            path = top + "/" + names[0]
            if _is_dir(path):
                self._wipe.append(path)
            else:
                os.remove(path)
        except OSError as e:
            self._wipe = []  # the leftovers are never installable; the next update wipes again
            if self._job is not None:
                self._fail(self._job, "cannot clear slot %s: %s" % (self._job.target, _describe(e)))

    def _connect(self, job, now):
        try:
            status, length, stream = self._opener(job.url, self.timeout_ms)
        except Exception as e:  # urequests reports bad answers with ValueError/IndexError too
            return self._fail(job, "download failed: %s" % _describe(e))
        job.stream = stream
        if status != 200:
            return self._fail(job, "the server answered HTTP %d" % status)
        if length is not None and length != job.size:
            return self._fail(job, "the server sends %d bytes, the command says %d" % (length, job.size))
        job.hash = hashlib.sha256()
        job.writer = _SlotWriter(self.slot_dir(job.target), self._open)
        job.reader = Reader(job.writer, self.max_size)
        ensure_dir(self.slot_dir(job.target))   # a failure shows when the first file is opened
        self._buf = bytearray(self.chunk)
        job.phase = _DOWNLOAD
        job.last = now
        self._progress(job, 0)

    def _download(self, job, now):
        try:
            n = job.stream.readinto(self._buf)
        except OSError as e:
            return self._fail(job, "download failed after %d of %d bytes: %s" % (job.got, job.size, _describe(e)))
        if n is None:  # nothing arrived yet
            if self.clock.ticks_diff(now, job.last) > self.stall_ms:
                self._fail(job, "download stalled: no data for %d s after %d of %d bytes"
                           % (self.stall_ms // 1000, job.got, job.size))
            return
        if not n:
            return self._fail(job, "connection closed after %d of %d bytes" % (job.got, job.size))
        if job.got + n > job.size:
            return self._fail(job, "the server sent more than the %d bytes of the command" % job.size)
        mv = memoryview(self._buf)[:n]
        job.hash.update(mv)
        try:
            job.reader.feed(mv)
        except ValueError as e:
            return self._fail(job, str(e))
        except OSError as e:
            return self._fail(job, self._write_error(e, job))
        job.got += n
        job.last = now
        if job.got == job.size:
            return self._verify(job)
        self._progress(job, job.got * 100 // job.size // 10 * 10)  # every 10 %

    def _write_error(self, e, job):
        name = (job.writer and job.writer.name) or job.target
        if _errno(e) == _ENOSPC:
            return "flash full writing %s (%d of %d bytes): update discarded, running version untouched" % (
                name, job.got, job.size)
        return "cannot write %s: %s" % (name, _describe(e))

    def _verify(self, job):
        digest = binascii.hexlify(job.hash.digest()).decode()
        if digest != job.sha256:
            return self._fail(job, "sha256 mismatch: got %s, the signed bundle is %s" % (digest, job.sha256))
        try:
            job.reader.finish()
        except ValueError as e:
            return self._fail(job, str(e))
        self._close(job)
        self.st["slots"][job.target] = {"version": job.version, "sha256": job.sha256, "id": job.id}
        try:
            self._save()
        except OSError as e:
            del self.st["slots"][job.target]
            return self._fail(job, self._write_error(e, job))
        job.phase = _READY
        self._event("verified", version=job.version, slot=job.target)
        self._progress(job, 100)

    def _close(self, job):
        if job.writer is not None:
            job.writer.close()
        if job.stream is not None:
            try:
                job.stream.close()
            except OSError:
                pass
            job.stream = None
        job.hash = job.reader = job.writer = None
        self._buf = None

    def _fail(self, job, reason):
        self._close(job)
        self._job = None
        self._wipe = [self.slot_dir(job.target)]
        self._final = ({"id": job.id, "cmd": "update", "status": "rejected", "reason": reason}, False)
        self._final_at = None
        self._event("rejected", version=job.version, reason=reason)


def from_settings(ota, clock, on_status=None, root="", log=None):
    """An Updater from the device's ota record (firmware/core/settings.py), key included."""
    return Updater(ota.key, clock, on_status, root, log, max_size=ota.max_size, max_boots=ota.max_boots,
                   trial_s=ota.trial_s, confirm_after_s=ota.confirm_after_s, timeout_ms=ota.timeout_ms,
                   stall_s=ota.stall_s)
