"""Over-the-air update: a bundle named by a manifest signed with the operator's RSA key, streamed
into the inactive slot, switched at a safe moment, rolled back when the new version does not prove
itself (docs/ota.md).

`cmd/update` carries `{"id", "url", "version", "target", "expires", "rollback", "size", "sha256",
"sig"}`; `sig` is RSASSA-PKCS1-v1_5/SHA-256 (firmware/core/rsa.py) over `Manifest.signed_bytes()`,
every field but the url (the signed sha256 is what makes the downloaded bytes trustworthy). The
charger holds only the public key. A manifest for another device, an expired one, an id already
used, or a version not above the running and the last accepted one (unless signed as a rollback)
is refused before anything changes. The download runs one chunk per `tick()`, hashing and unpacking
as it goes into `slots/a` or `slots/b` (never the running one); only a complete bundle whose sha256
matches is marked installable in `slots/state.json`, the file boot.py reads to pick the slot and
count trial boots.

    up = from_settings(settings.ota, clock, on_status=publish_ack, root="/")   # or otacore's, at boot
    up.start(cmd); up.tick(busy=session_running)              # cmd_update; every loop iteration
    if up.ready_to_switch() and idle: up.switch(); machine.reset()
"""
import binascii
import hashlib
import json
import os

from micropython import const

from firmware.core.rsa import verify
from firmware.core.timefmt import iso, parse_iso
from firmware.core.timesync import synced
from firmware.link.otacore import SLOTS, load_state, read_saved, slots_dir
from firmware.storage.state import ensure_dir, write_atomic
from firmware.version import VERSION

MANIFEST = "cp-update/2"  # first line of the signed bytes; /1 was the HMAC scheme, no longer accepted
FLEET = "*"               # target: every charger holding the public key
MAX_URL = 256
MAX_VERSION = 32
MAX_ID = 64
_MAX_IDS = const(16)      # accepted command ids remembered against replays
_ENOSPC = const(28)
_RETRY_MS = const(5000)   # between attempts to deliver a final answer
_CHECK_GAP_MS = const(1000)  # between signature checks: each blocks the loop for tens of ms on an ESP32
_VERSION_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-"
_HEX = "0123456789abcdef"
_DIGITS = "0123456789."
_CONNECT = "connect"      # job phases
_DOWNLOAD = "download"
_READY = "ready"


def version_key(v):
    """Order of versions: up to 4 numbers ("1.4.0"), then a release above its pre-releases
    ("1.4.0-rc2"; a "+label" counts as a release), then the label; ValueError if it has no numbers."""
    i = 0
    while i < len(v) and v[i] in _DIGITS:
        i += 1
    parts = v[:i].split(".")
    label = v[i:]
    if len(parts) > 4 or [x for x in parts if not 0 < len(x) <= 6] or label and label[0] not in "-+":
        raise ValueError("version must be 1 to 4 dot-separated numbers (1.4.0), optionally then -label or +label")
    nums = [int(x) for x in parts] + [0] * (4 - len(parts))
    return (nums[0], nums[1], nums[2], nums[3], 0 if label[:1] == "-" else 1, label)


def _above(version, other):
    """version sorts strictly above other; also when other has no order (a development build, "dev")."""
    try:
        low = version_key(other)
    except ValueError:
        return True
    return version_key(version) > low


class Manifest:
    """The signed part of a cmd/update: what the bundle is, which chargers may take it, until when."""

    def __init__(self, cid, version, target, expires, rollback, size, sha256):
        self.id = cid
        self.version = version
        self.target = target      # FLEET or one device id
        self.expires = expires    # Unix seconds (UTC)
        self.rollback = rollback  # True: may be lower than the running version
        self.size = size
        self.sha256 = sha256

    def signed_bytes(self):
        """What the operator's key signs: one name=value line per field, in this order, no url."""
        return ("%s\nid=%s\nversion=%s\ntarget=%s\nexpires=%s\nrollback=%d\nsize=%d\nsha256=%s"
                % (MANIFEST, self.id, self.version, self.target, iso(self.expires), 1 if self.rollback else 0,
                   self.size, self.sha256)).encode()


def _hex(v, name, lengths):
    if not isinstance(v, str) or len(v) not in lengths or [c for c in v.lower() if c not in _HEX]:
        raise ValueError("%s must be %s hex digits" % (name, " or ".join(str(n) for n in lengths)))
    return v.lower()


def _token(v, name):
    """A field of the signed bytes: 1..MAX_ID printable ASCII characters, no space (no line break)."""
    if not isinstance(v, str) or not 0 < len(v) <= MAX_ID or [c for c in v if c <= " " or c > "~"]:
        raise ValueError("%s must be 1..%d printable ASCII characters without spaces" % (name, MAX_ID))
    return v


def check_command(p, max_size):
    """(url, Manifest, sig bytes) of a cmd/update payload, or ValueError naming the field."""
    cid = _token(p.get("id"), "id")
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
    version_key(version)
    target = _token(p.get("target"), "target")
    if target != FLEET and [c for c in target if c in "/+#"]:
        raise ValueError("target must be %s (the fleet) or a device id" % FLEET)
    expires = p.get("expires")
    try:
        t = parse_iso(expires)
    except (ValueError, TypeError):
        t = None
    if t is None or iso(t) != expires:
        raise ValueError("expires must be a UTC time as YYYY-MM-DDTHH:MM:SSZ")
    rollback = p.get("rollback")
    if not isinstance(rollback, bool):
        raise ValueError("rollback must be true or false")
    size = p.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError("size must be a positive integer (bytes)")
    if size > max_size:
        raise ValueError("size %d exceeds the maximum of %d bytes" % (size, max_size))
    sha = _hex(p.get("sha256"), "sha256", (64,))
    sig = binascii.unhexlify(_hex(p.get("sig"), "sig", (512, 768)))
    return url, Manifest(cid, version, target, t, rollback, size, sha), sig


def load_seen(path):
    """What earlier commands leave against replays: the highest version accepted (`floor`), the
    last accepted bundle until it is verified (`pending`, so that command may be sent again) and
    the last accepted ids. Defaults for a first update or an unreadable file."""
    seen = {"floor": None, "pending": None, "ids": []}
    saved = read_saved(path)
    if saved is not None:
        if isinstance(saved.get("floor"), str):
            seen["floor"] = saved["floor"]
        if isinstance(saved.get("pending"), list) and len(saved["pending"]) == 2:
            seen["pending"] = saved["pending"]
        if isinstance(saved.get("ids"), list):
            seen["ids"] = [i for i in saved["ids"] if isinstance(i, str)][-_MAX_IDS:]
    return seen


def _is_dir(path):
    return os.stat(path)[0] & 0x4000


def _errno(e):
    return e.args[0] if e.args and isinstance(e.args[0], int) else None


def _describe(e):
    return "%s: %s" % (type(e).__name__, e)


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
    def __init__(self, m, url, digest, sig, target):
        self.id = m.id
        self.url = url
        self.version = m.version
        self.size = m.size
        self.sha256 = m.sha256
        self.digest = digest   # SHA-256 of the signed bytes, with sig: what a duplicate repeats
        self.sig = sig
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

    def __init__(self, key, clock, on_status=None, root="", log=None, device_id=None, base_version=None,
                 max_size=1 << 20, max_boots=3, trial_s=600, confirm_after_s=60, timeout_ms=2000, stall_s=30,
                 chunk=1024, open_file=open, opener=http_get):
        self.key = key                    # rsa.PublicKey, or None: every update is refused
        self.device_id = device_id        # what a manifest's target must name (or the fleet)
        self.base_version = base_version  # the version running when no slot is active
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
        self.dir = slots_dir(root)
        self.path = self.dir + "/state.json"
        self.st = load_state(self.path)
        self.seen_path = self.dir + "/seen.json"
        self.seen = load_seen(self.seen_path)
        self.trial = self.st["active"] is not None and isinstance(self.st["trial"], int)
        self._t0 = clock.ticks_ms()
        self._job = None
        self._buf = None
        self._restart = None      # "install" or "rollback" once the state names another slot
        self._final = None        # a final answer not yet delivered: (ack, persisted in state)
        self._final_at = None
        self._checked = None      # ticks of the last signature check (at most one per _CHECK_GAP_MS)
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
        """cmd/update: check and begin (answered `accepted`), or ValueError with the reason; a refusal
        changes nothing. The cheap checks come first, the signature (the one slow step) last."""
        url, m, sig = check_command(p, self.max_size)
        if self.key is None:
            raise ValueError("no update public key configured (config: ota.public_key); "
                             "the HMAC update_key is no longer accepted")
        digest = hashlib.sha256(m.signed_bytes()).digest()
        job = self._job
        if job is not None and job.digest == digest and job.sig == sig:
            return None  # the same command delivered twice: it is already under way
        self._check_bound(m)
        if job is not None and job.phase != _READY:
            raise ValueError("update %s (version %s) is still downloading" % (job.id, job.version))
        if self._restart is not None:
            raise ValueError("a restart is pending (%s): send the update after it" % self._restart)
        if self.trial:
            raise ValueError("version %s is on trial: it must be confirmed before the next update" % self.version)
        active = self.st["active"]
        info = self.st["slots"].get(active)
        if info and info.get("sha256") == m.sha256:
            raise ValueError("version %s (this bundle) is already running" % info.get("version"))
        self._check_fresh(m)
        if len(sig) != self.key.k:
            raise ValueError("sig must be %d hex digits for this RSA-%d key" % (2 * self.key.k, 8 * self.key.k))
        load_reader()   # short of heap here: MemoryError, answered busy, nothing changed
        now = self.clock.ticks_ms()
        if self._checked is not None and self.clock.ticks_diff(now, self._checked) < _CHECK_GAP_MS:
            raise ValueError("another update signature was checked less than %d ms ago: send the command again"
                             % _CHECK_GAP_MS)
        self._checked = now
        if not verify(self.key, digest, sig):
            raise ValueError("sig does not verify under the update public key")
        self._remember(m)   # first: if the flash fails here, nothing else has changed
        target = "b" if active == "a" else "a"
        if self._job is not None:
            self._close(self._job)  # a newer update replaces the verified one waiting for its switch
        if self.st["slots"].pop(target, None) is not None:
            self._save()  # no longer installable from here on
        self._job = _Job(m, url, digest, sig, target)
        self._wipe = [self.slot_dir(target)]
        self._event("accepted", version=m.version, slot=target, rollback=m.rollback)
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
    def _check_bound(self, m):
        """The manifest names this charger (or the fleet) and has not expired by the wall clock."""
        if m.target != FLEET and m.target != self.device_id:
            raise ValueError("update is for device %s, this charger is %s" % (m.target, self.device_id or "unnamed"))
        now = self.clock.time()
        if not synced(now):
            raise ValueError("the wall clock is not set yet (no time sync): the expiry cannot be checked, "
                             "send the update again later")
        if now >= m.expires:
            raise ValueError("update expired at %s (now %s)" % (iso(m.expires), iso(now)))

    def _check_fresh(self, m):
        """Not a replay, not a downgrade: the id was never accepted (unless it is the last accepted
        bundle, not yet verified: that command may come again), and the version is above the running
        one and the last accepted one, unless the manifest is signed as a rollback."""
        seen = self.seen
        again = seen["pending"] == [m.version, m.sha256]
        if m.id in seen["ids"] and not again:
            raise ValueError("update %s was accepted before: a replayed command is refused" % m.id)
        if m.rollback:
            return
        running = self.version or self.base_version
        if running is not None and not _above(m.version, running):
            raise ValueError("version %s is not above the running %s: a downgrade needs a manifest signed as a "
                             "rollback" % (m.version, running))
        if seen["floor"] is not None and not again and not _above(m.version, seen["floor"]):
            raise ValueError("version %s is not above %s, accepted before: a downgrade needs a manifest signed "
                             "as a rollback" % (m.version, seen["floor"]))

    def _remember(self, m):
        """Persist the accepted manifest against replays before anything else changes."""
        seen = self.seen
        floor = seen["floor"]
        if not m.rollback and (floor is None or _above(m.version, floor)):
            floor = m.version
        ids = [i for i in seen["ids"] if i != m.id] + [m.id]
        new = {"floor": floor, "pending": [m.version, m.sha256], "ids": ids[-_MAX_IDS:]}
        ensure_dir(self.dir)
        write_atomic(self.seen_path, json.dumps(new))
        self.seen = new

    def _verified(self):
        """The pending bundle is verified: its command is used up for good."""
        self.seen["pending"] = None
        try:
            write_atomic(self.seen_path, json.dumps(self.seen))
        except OSError as e:   # the same signed bundle could be downloaded once more: harmless
            self._event("seen_not_saved", reason=_describe(e))

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
        reader = load_reader()   # loaded by start(); short of heap here, the step waits for the next tick
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
        job.reader = reader(job.writer, self.max_size)
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
        self._verified()
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


def load_reader():
    """The bundle reader, loaded by the first update (its module is no boot-time heap)."""
    from firmware.link.bundle import Reader

    return Reader


def from_settings(ota, clock, on_status=None, root="", log=None):
    """An Updater from the device's ota record (firmware/core/settings.py): public key, device id, limits.
    The boot goes through firmware/link/otacore.py, which builds it only when there is work for it."""
    return Updater(ota.key, clock, on_status, root, log, device_id=ota.device_id, base_version=VERSION,
                   max_size=ota.max_size, max_boots=ota.max_boots, trial_s=ota.trial_s,
                   confirm_after_s=ota.confirm_after_s, timeout_ms=ota.timeout_ms, stall_s=ota.stall_s)
