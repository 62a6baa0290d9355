"""Over-the-air update: the signed manifest (RSA, bound to a target, an expiry and a version; replays
and downgrades refused), the streamed download into the inactive slot, every way it can fail (the
running version untouched), the switch, trial boots and rollback.

The HTTP side is a hand-written fake (scripted body pieces); files go to a temporary directory;
under MicroPython one test fills a real littlefs volume (a flash chip simulated in RAM). Manifests
are signed with the fixed test keys of testkeys.py, in plain integers (both interpreters).
"""
import binascii
import hashlib
import json
import os
import sys

import boot
from check import raises
from firmware.core.timefmt import iso
from firmware.link.bundle import pack
from configs import settings
from firmware.link import otacore
from firmware.link.ota import Manifest, Updater, check_command, from_settings, load_state, version_key
from hal.sim.clock import VirtualClock
from testkeys import KEY_A, KEY_B, KEY_C, sign

MP = sys.implementation.name == "micropython"
NOW = 1780000000            # 2026-05-28T20:26:40Z: a wall clock that is set
WEEK = 7 * 86400
DEVICE = "cp-0001"


def _files(version, extra=0):
    return [("firmware/__init__.py", b""), ("firmware/version.py", ('VERSION = "%s"\n' % version).encode()),
            ("firmware/app.py", b"# app\n" * 300), ("hal/__init__.py", b""),
            ("hal/board.py", bytes(range(256)) * 6 + b"x" * extra)]


def _hex(b):
    return binascii.hexlify(b).decode()


def _clock(utc=NOW):
    return VirtualClock(start_utc=utc)


def _cmd(blob, version="2.0.0", cid="u-1", key=KEY_A, target="*", expires=NOW + WEEK, rollback=False, **over):
    """A cmd/update as tools/bundle.py makes it, signed with key; `over` changes fields after signing."""
    sha = _hex(hashlib.sha256(blob).digest())
    m = Manifest(cid, version, target, expires, rollback, len(blob), sha)
    p = {"id": cid, "url": "http://10.0.0.2/cp.bin", "version": version, "target": target,
         "expires": iso(expires), "rollback": rollback, "size": len(blob), "sha256": sha,
         "sig": _hex(sign(key, m.signed_bytes()))}
    p.update(over)
    return p


class Body:
    """An HTTP body arriving in scripted pieces: bytes, None (nothing yet) or an exception; then EOF."""

    def __init__(self, pieces):
        self.pieces = list(pieces)
        self.closed = False

    def readinto(self, buf):
        if not self.pieces:
            return 0
        p = self.pieces[0]
        if p is None:
            self.pieces.pop(0)
            return None
        if isinstance(p, Exception):
            raise p
        n = min(len(buf), len(p))
        buf[:n] = p[:n]
        if n < len(p):
            self.pieces[0] = p[n:]
        else:
            self.pieces.pop(0)
        return n

    def close(self):
        self.closed = True


def body(blob, piece=700, stall_every=3):
    """The blob in pieces, with 'nothing yet' between some of them, as from a real socket."""
    out = []
    for i in range(0, len(blob), piece):
        out.append(blob[i:i + piece])
        if (i // piece) % stall_every == 0:
            out.append(None)
    return Body(out)


class Server:
    """The opener: records what was asked, answers with the next scripted (status, length, body)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, url, timeout_ms):
        self.calls.append((url, timeout_ms))
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a


def ok(blob, length=True, **kw):
    return (200, len(blob) if length else None, body(blob, **kw))


class Acks:
    """on_status: keeps every answer; `refuse` answers False (not delivered) that many times."""

    def __init__(self):
        self.got = []
        self.refuse = 0

    def __call__(self, ack):
        if self.refuse and ack["status"] != "progress":
            self.refuse -= 1
            return False
        self.got.append(ack)
        return True

    def final(self):
        return [a for a in self.got if a["status"] != "progress"]


def _tmp():
    path = "/tmp/ota_test_" + _hex(os.urandom(6))
    os.mkdir(path)
    return path


def _is_dir(p):
    return os.stat(p)[0] & 0x4000


def _rmtree(p):
    for n in os.listdir(p):
        q = p + "/" + n
        if _is_dir(q):
            _rmtree(q)
        else:
            os.remove(q)
    os.rmdir(p)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _tree(p):
    """{relative path: bytes} of every file under p."""
    out = {}
    for n in os.listdir(p):
        q = p + "/" + n
        if _is_dir(q):
            for k, v in _tree(q).items():
                out[n + "/" + k] = v
        else:
            with open(q, "rb") as f:
                out[n] = f.read()
    return out


def _updater(root, clock, acks, opener, **kw):
    params = {"max_size": 1 << 16, "trial_s": 600, "confirm_after_s": 60, "stall_s": 30, "chunk": 256,
              "root": root, "opener": opener, "device_id": DEVICE, "base_version": "1.0.0"}
    params.update(kw)
    return Updater(params.pop("key", KEY_A.public), clock, acks, **params)


def _run(up, clock, busy=False, limit=5000):
    """Tick (10 ms apart) until nothing is under way."""
    for _ in range(limit):
        up.tick(busy)
        clock.sleep_ms(10)
        if not up.working:
            up.tick(busy)  # deliver a final answer
            return
    raise AssertionError("updater still working after %d ticks" % limit)


def _install(root, clock, files, version, cid="u-1"):
    """A verified update switched in: the state a reset would boot from."""
    blob = pack(files)
    acks = Acks()
    up = _updater(root, clock, acks, Server(ok(blob)))
    up.start(_cmd(blob, version, cid))
    _run(up, clock)
    assert up.switch() == "install", acks.got
    return up


def _install_confirmed(root, files, version):
    """A version installed, booted and confirmed: what runs when the next update comes."""
    _install(root, _clock(), files, version)
    _reboot(root)
    st = _state(root)
    st["trial"] = None
    with open(root + "/slots/state.json", "w") as f:
        f.write(json.dumps(st))


def _state(root):
    with open(root + "/slots/state.json") as f:
        return json.load(f)


def _reboot(root):
    """What boot.py does at power-up, minus the import check (host tests cover it)."""
    path = root + "/slots/state.json"
    st = load_state(path)
    changed, trial = boot.plan(st)
    if changed:
        with open(path, "w") as f:
            f.write(json.dumps(st))
    return trial


# -- the signed manifest --------------------------------------------------------------------
def test_signed_bytes_cover_every_field_but_the_url():
    sha = "ab" * 32
    m = Manifest("u-7", "1.2.0", "*", NOW, False, 4096, sha)
    assert m.signed_bytes() == (b"cp-update/2\nid=u-7\nversion=1.2.0\ntarget=*\nexpires=2026-05-28T20:26:40Z\n"
                                b"rollback=0\nsize=4096\nsha256=" + sha.encode())
    variants = {m.signed_bytes()}
    for args in (("u-8", "1.2.0", "*", NOW, False, 4096, sha), ("u-7", "1.2.1", "*", NOW, False, 4096, sha),
                 ("u-7", "1.2.0", DEVICE, NOW, False, 4096, sha), ("u-7", "1.2.0", "*", NOW + 1, False, 4096, sha),
                 ("u-7", "1.2.0", "*", NOW, True, 4096, sha), ("u-7", "1.2.0", "*", NOW, False, 4097, sha),
                 ("u-7", "1.2.0", "*", NOW, False, 4096, "cd" * 32)):
        variants.add(Manifest(*args).signed_bytes())
    assert len(variants) == 8


def test_versions_are_ordered_by_their_numbers():
    order = ["0.9", "1.0.0-rc1", "1.0.0-rc2", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0-beta", "2.0.0", "2.0.0.1"]
    keys = [version_key(v) for v in order]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert version_key("1.4") == version_key("1.4.0") and version_key("1.4.0+b7") > version_key("1.4.0-rc9")
    for bad in ("dev", "v1.0", "1..2", "1.2.3.4.5", "1.0_x", ".1", "1234567.0"):
        assert "1 to 4 dot-separated numbers" in str(raises(ValueError, version_key, bad)), bad


def test_payload_validation_names_the_field():
    good = _cmd(b"x" * 100)
    url, m, sig = check_command(good, 1000)
    assert (url, m.id, m.version, m.target, m.expires, m.rollback, m.size, m.sha256) == (
        good["url"], "u-1", "2.0.0", "*", NOW + WEEK, False, 100, good["sha256"])
    assert sig == binascii.unhexlify(good["sig"]) and len(sig) == 256
    cases = [({"url": None}, "url must be a string"), ({"url": "ftp://h/x"}, "http:// or https://"),
             ({"url": "file:///etc/passwd"}, "http:// or https://"), ({"url": "http:///x"}, "no host"),
             ({"url": "http://h/a b"}, "spaces"), ({"url": "http://h/" + "a" * 300}, "1..256"),
             ({"version": ""}, "version must be"), ({"version": "1.0/../x"}, "version must be"),
             ({"version": 2}, "version must be"), ({"version": "dev"}, "dot-separated numbers"),
             ({"size": "100"}, "size must be a positive integer"),
             ({"size": True}, "size must be"), ({"size": 0}, "size must be"),
             ({"size": 1001}, "exceeds the maximum of 1000"), ({"sha256": "abc"}, "sha256 must be 64 hex"),
             ({"sha256": "zz" * 32}, "sha256 must be 64 hex"), ({"sig": None}, "sig must be 512 or 768 hex"),
             ({"sig": "ab" * 32}, "sig must be 512 or 768 hex"), ({"id": "u 1"}, "id must be"),
             ({"id": "u-1\nversion=9"}, "id must be"), ({"target": None}, "target must be"),
             ({"target": "cp/1"}, "target must be"), ({"target": "a\nb"}, "target must be"),
             ({"expires": NOW + WEEK}, "expires must be a UTC time"),
             ({"expires": "2026-06-04T20:26:40+00:00"}, "expires must be"), ({"expires": "soon"}, "expires must"),
             ({"rollback": None}, "rollback must be true or false"), ({"rollback": 0}, "rollback must be")]
    for change, words in cases:
        p = dict(good)
        p.update(change)
        e = raises(ValueError, check_command, p, 1000)
        assert words in str(e), (change, str(e))
    upper = dict(good, sha256=good["sha256"].upper())
    assert check_command(upper, 1000)[1].sha256 == good["sha256"]


def _start(up, p):
    """start() a second after the last one: the updater checks at most one signature per second."""
    up.clock.sleep_ms(1000)
    return up.start(p)


def _refused(up, root, p, words):
    """start() refuses p with words in the reason and changes nothing on flash or in the updater."""
    up.clock.sleep_ms(1000)
    before = _tree(root) if _exists(root) else {}
    working, ready = up.working, up.ready_to_switch()
    e = raises(ValueError, up.start, p)
    assert words in str(e), (words, str(e))
    assert (_tree(root) if _exists(root) else {}) == before
    assert (up.working, up.ready_to_switch()) == (working, ready)
    return str(e)


def test_bad_signature_or_altered_metadata_is_rejected_and_changes_nothing():
    root = _tmp()
    try:
        blob = pack(_files("2.0.0"))
        server = Server()
        up = _updater(root, _clock(), Acks(), server)
        good = _cmd(blob)
        for p in (_cmd(blob, key=KEY_B), dict(good, version="2.0.1"), dict(good, size=len(blob) + 1),
                  dict(good, sha256="0" * 64), dict(good, sig="0" * 512)):
            _refused(up, root, p, "sig does not verify")
        _refused(up, root, dict(good, sig="ab" * 384), "sig must be 512 hex digits for this RSA-2048 key")
        assert not up.working and server.calls == [] and os.listdir(root) == []
        nokey = Updater(None, _clock(), None, root=root)
        _refused(nokey, root, good, "no update public key configured")
    finally:
        _rmtree(root)


def test_one_flipped_bit_in_any_signed_field_or_the_signature_is_refused():
    """Under the HMAC scheme id, target, expiry and the rollback flag were not signed at all."""
    root = _tmp()
    try:
        blob = pack(_files("2.0.0"))
        up = _updater(root, _clock(), Acks(), Server())
        good = _cmd(blob, target=DEVICE, expires=NOW + WEEK)

        def flip(text, i):   # one bit of one hex digit
            return text[:i] + "0123456789abcdef"[int(text[i], 16) ^ 1] + text[i + 1:]

        sig = good["sig"]
        altered = [dict(good, id="u-0"), dict(good, version="3.0.0"), dict(good, target="cp-0000"),
                   dict(good, expires=iso(NOW + WEEK + 1)), dict(good, rollback=True), dict(good, size=good["size"] ^ 1),
                   dict(good, sha256=flip(good["sha256"], 0)), dict(good, sha256=flip(good["sha256"], 63))]
        altered += [dict(good, sig=flip(sig, i)) for i in (0, 1, 100, 255, 256, 400, 510, 511)]
        for p in altered:
            words = "is for device cp-0000" if p["target"] == "cp-0000" else "sig does not verify"
            _refused(up, root, p, words)
        _start(up, good)
        assert up.working
    finally:
        _rmtree(root)


def test_a_valid_signature_is_accepted_with_either_key_size():
    for key in (KEY_A, KEY_C):
        root = _tmp()
        try:
            blob = pack(_files("2.0.0"))
            clock = _clock()
            up = _updater(root, clock, Acks(), Server(ok(blob)), key=key.public)
            up.start(_cmd(blob, key=key))
            _run(up, clock)
            assert up.ready_to_switch()
        finally:
            _rmtree(root)


def test_at_most_one_signature_check_per_second():
    """Each check blocks the loop (tens of ms on an ESP32): a burst of commands cannot add them up."""
    root = _tmp()
    try:
        blob = pack(_files("2.0.0"))
        clock = _clock()
        up = _updater(root, clock, Acks(), Server())
        e = raises(ValueError, up.start, _cmd(blob, key=KEY_B))
        assert "sig does not verify" in str(e)
        clock.sleep_ms(999)
        before = _tree(root) if _exists(root) else {}
        e = raises(ValueError, up.start, _cmd(blob))
        assert str(e) == "another update signature was checked less than 1000 ms ago: send the command again"
        assert (_tree(root) if _exists(root) else {}) == before and not up.working
        clock.sleep_ms(1)
        up.start(_cmd(blob))
        assert up.working and up.start(_cmd(blob)) is None     # a duplicate is not checked again
    finally:
        _rmtree(root)


def test_a_manifest_for_another_device_is_refused():
    root = _tmp()
    try:
        blob = pack(_files("2.0.0"))
        up = _updater(root, _clock(), Acks(), Server())
        reason = _refused(up, root, _cmd(blob, target="cp-0002"), "is for device cp-0002")
        assert reason == "update is for device cp-0002, this charger is cp-0001"
        unnamed = _updater(root, _clock(), Acks(), Server(), device_id=None)
        _refused(unnamed, root, _cmd(blob, target=DEVICE), "this charger is unnamed")
        up.start(_cmd(blob, target=DEVICE))
        assert up.working
    finally:
        _rmtree(root)


def test_an_expired_manifest_or_an_unknown_clock_is_refused():
    root = _tmp()
    try:
        blob = pack(_files("2.0.0"))
        up = _updater(root, _clock(), Acks(), Server())
        reason = _refused(up, root, _cmd(blob, expires=NOW - 3600), "expired")
        assert reason == "update expired at 2026-05-28T19:26:40Z (now 2026-05-28T20:26:41Z)"
        _refused(up, root, _cmd(blob, expires=NOW), "expired at")
        unset = VirtualClock(start_utc=NOW, unset=True)          # an ESP32 before NTP: 2000-01-01
        early = _updater(root, unset, Acks(), Server())
        _refused(early, root, _cmd(blob, expires=NOW + WEEK), "wall clock is not set")
        unset.sync()
        early.start(_cmd(blob, expires=NOW + 60))
        assert early.working
    finally:
        _rmtree(root)


def test_a_downgrade_is_refused_unless_signed_as_a_rollback():
    root = _tmp()
    try:
        _install_confirmed(root, _files("2.0.0"), "2.0.0")
        clock = _clock()
        old = pack(_files("1.9.0"))
        up = _updater(root, clock, Acks(), Server(ok(old)))
        reason = _refused(up, root, _cmd(old, "1.9.0", "u-19"), "not above the running 2.0.0")
        assert "signed as a rollback" in reason
        _refused(up, root, _cmd(pack(_files("2.0.0-rc1")), "2.0.0-rc1", "u-20rc"), "not above the running 2.0.0")
        same = pack(_files("2.0.0", extra=1))                      # another bundle with the same number
        _refused(up, root, _cmd(same, "2.0.0", "u-20b"), "not above the running 2.0.0")
        up.start(_cmd(old, "1.9.0", "u-19", rollback=True))
        _run(up, clock)
        assert up.ready_to_switch() and _state(root)["slots"]["b"]["version"] == "1.9.0"
        up.switch()
        _reboot(root)
        assert _updater(root, _clock(), Acks(), Server()).version == "1.9.0"
    finally:
        _rmtree(root)


def test_the_base_firmware_version_is_a_floor_too():
    root = _tmp()
    try:
        blob = pack(_files("1.0.0"))
        up = _updater(root, _clock(), Acks(), Server(), base_version="1.0.0")
        _refused(up, root, _cmd(blob, "1.0.0"), "not above the running 1.0.0")
        dev = _updater(root, _clock(), Acks(), Server(), base_version="dev")   # a bench build: any version
        dev.start(_cmd(blob, "1.0.0"))
        assert dev.working
    finally:
        _rmtree(root)


def test_a_replayed_old_command_with_another_url_is_refused():
    root = _tmp()
    try:
        clock = _clock()
        b2 = pack(_files("2.0.0"))
        up = _updater(root, clock, Acks(), Server(ok(b2)))
        c2 = _cmd(b2, "2.0.0", "u-2")
        up.start(c2)
        _run(up, clock)
        up.switch()
        _reboot(root)
        clock = _clock()
        up = _updater(root, clock, Acks(), Server())
        clock.sleep_ms(60000)
        up.confirm()
        b3 = pack(_files("3.0.0"))
        up._opener = Server(ok(b3))
        up.start(_cmd(b3, "3.0.0", "u-3"))
        _run(up, clock)
        assert up.ready_to_switch()                              # 3.0.0 verified, waiting for its switch
        b25 = pack(_files("2.5.0"))                              # signed earlier, never sent, still valid
        c25 = _cmd(b25, "2.5.0", "u-25", url="http://evil.example/cp-2.5.0.bin")
        _refused(up, root, c25, "version 2.5.0 is not above 3.0.0, accepted before")
        assert _state(root)["slots"]["b"]["version"] == "3.0.0"  # the verified update is not replaced
        up.switch()
        _reboot(root)
        clock = _clock()
        up = _updater(root, clock, Acks(), Server())
        clock.sleep_ms(60000)
        assert up.confirm() and up.version == "3.0.0"
        evil = dict(c2, url="http://evil.example/cp-2.0.0.bin")
        _refused(up, root, evil, "update u-2 was accepted before: a replayed command is refused")
        _refused(up, root, c25, "not above the running 3.0.0")
        _refused(up, root, dict(c25, version="3.0.1"), "sig does not verify")   # a higher number is not signed
    finally:
        _rmtree(root)


def test_a_replayed_rollback_is_refused():
    root = _tmp()
    try:
        _install_confirmed(root, _files("2.0.0"), "2.0.0")
        clock = _clock()
        old = pack(_files("1.9.0"))
        up = _updater(root, clock, Acks(), Server(ok(old)))
        back = _cmd(old, "1.9.0", "u-back", rollback=True)
        up.start(back)
        _run(up, clock)
        assert up.ready_to_switch()
        newer = pack(_files("2.1.0"))
        up._opener = Server(ok(newer))
        _start(up, _cmd(newer, "2.1.0", "u-21"))                 # replaces the waiting rollback
        _run(up, clock)
        _refused(up, root, dict(back, url="http://elsewhere/x.bin"), "accepted before")
    finally:
        _rmtree(root)


# -- the download ---------------------------------------------------------------------------
def test_update_streams_into_slot_a_and_switches():
    root = _tmp()
    try:
        clock = _clock()
        files = _files("2.0.0")
        blob = pack(files)
        acks = Acks()
        server = Server(ok(blob))
        up = _updater(root, clock, acks, server, timeout_ms=1500)
        assert up.version is None and up.confirm()           # base firmware: nothing on trial
        assert up.start(_cmd(blob)) is None                   # Commands answers "accepted"
        assert not up.ready_to_switch()
        _run(up, clock)
        assert server.calls == [("http://10.0.0.2/cp.bin", 1500)]
        assert up.ready_to_switch()
        assert _tree(root + "/slots/a") == dict(files)
        st = _state(root)
        assert st["active"] is None and st["slots"]["a"]["version"] == "2.0.0"
        assert st["slots"]["a"]["sha256"] == _hex(hashlib.sha256(blob).digest()) and st["slots"]["a"]["id"] == "u-1"
        percents = [a["percent"] for a in acks.got if a["status"] == "progress"]
        assert percents[0] == 0 and percents[-1] == 100 and percents == sorted(percents) and len(percents) > 3
        assert all(a["id"] == "u-1" and a["cmd"] == "update" for a in acks.got)
        assert acks.final() == []
        assert up.switch() == "install"
        st = _state(root)
        assert (st["active"], st["previous"], st["trial"], st["max_boots"]) == ("a", None, 0, 3)
        assert "restart is pending" in str(raises(ValueError, up.start, _cmd(blob, "2.0.1", "u-2")))
    finally:
        _rmtree(root)


def _failed(root, answers, blob=None, cmd=None, **kw):
    """Run one update meant to fail; returns (rejection reason, updater, clock, acks)."""
    clock = _clock()
    acks = Acks()
    blob = blob or pack(_files("3.0.0"))
    up = _updater(root, clock, acks, Server(*answers), **kw)
    up.start(cmd or _cmd(blob, "3.0.0", "u-3"))
    _run(up, clock)
    final = acks.final()
    assert len(final) == 1 and final[0]["status"] == "rejected" and final[0]["id"] == "u-3", acks.got
    assert not up.ready_to_switch()
    return final[0]["reason"], up, clock, acks


def _untouched_after(root, answers, words, blob=None, cmd=None, **kw):
    """A failing update with version 2.0.0 running from slot a: slot b discarded, slot a and state intact."""
    _install_confirmed(root, _files("2.0.0"), "2.0.0")
    before = _tree(root + "/slots/a")
    reason, up, clock, acks = _failed(root, answers, blob, cmd, **kw)
    assert words in reason, reason
    assert not _exists(root + "/slots/b"), "partial slot kept"
    assert _tree(root + "/slots/a") == before
    after = _state(root)
    assert after["active"] == "a" and sorted(after["slots"]) == ["a"]
    return up, clock, acks


def test_wrong_hash_is_refused_and_the_slot_discarded():
    blob = pack(_files("3.0.0"))
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0x01
    root = _tmp()
    try:
        _untouched_after(root, [ok(bytes(bad))], "sha256 mismatch", blob=blob)
    finally:
        _rmtree(root)


def test_connection_dropped_midway_then_a_retry_works():
    blob = pack(_files("3.0.0"))
    root = _tmp()
    try:
        up, clock, acks = _untouched_after(root, [(200, len(blob), body(blob[:1000]))],
                                           "connection closed after 1000 of %d bytes" % len(blob), blob=blob)
        up.on_status = acks
        _start(up, _cmd(blob, "3.0.0", "u-3"))
        up._opener = Server(ok(blob))
        _run(up, clock)
        assert up.ready_to_switch() and acks.got[-1]["percent"] == 100
        assert _tree(root + "/slots/b")["firmware/version.py"] == b'VERSION = "3.0.0"\n'
    finally:
        _rmtree(root)


def test_socket_error_stall_http_error_and_wrong_length():
    blob = pack(_files("3.0.0"))
    for answers, words in (([(200, len(blob), Body([blob[:600], OSError(104)]))], "after 600 of"),
                           ([(200, len(blob), Body([blob[:300]] + [None] * 10000))], "stalled: no data for 30 s"),
                           ([(404, None, Body([]))], "HTTP 404"),
                           ([(200, len(blob) - 1, Body([]))], "sends %d bytes" % (len(blob) - 1)),
                           ([OSError(110)], "download failed: OSError"),
                           ([(200, None, body(blob + b"more"))], "more than the %d bytes" % len(blob))):
        root = _tmp()
        try:
            _untouched_after(root, answers, words, blob=blob)
        finally:
            _rmtree(root)


def test_a_malformed_bundle_is_refused_even_when_signed():
    evil = b"CPFW\x01\x00\x01\x0a../boot.py" + b"\x00\x00\x00\x04evil"
    root = _tmp()
    try:
        _untouched_after(root, [ok(evil)], "file name", blob=evil)
        assert not _exists(root + "/boot.py")
    finally:
        _rmtree(root)


class FullFlash:
    """open() for the updater: files whose writes fail with ENOSPC once `room` bytes are used."""

    def __init__(self, room):
        self.room = room

    def __call__(self, path, mode):
        return _Limited(open(path, mode), self)


class _Limited:
    def __init__(self, f, disk):
        self.f = f
        self.disk = disk

    def write(self, data):
        if len(data) > self.disk.room:
            raise OSError(28)
        self.disk.room -= len(data)
        return self.f.write(data)

    def close(self):
        self.f.close()


def test_full_flash_refuses_the_update_and_keeps_the_running_version():
    root = _tmp()
    try:
        _untouched_after(root, [ok(pack(_files("3.0.0")))], "flash full writing firmware/app.py",
                         open_file=FullFlash(1000))
    finally:
        _rmtree(root)


def test_real_littlefs_running_out_of_space():
    if not MP:
        return  # os.VfsLfs2 exists only on MicroPython; FullFlash covers CPython
    from firmware.storage.flashfs import RamFlash, mount

    at = "/ota" + _hex(os.urandom(3))
    mount(RamFlash(512, 48), at, fresh=True)
    try:
        _install_confirmed(at, _files("2.0.0"), "2.0.0")
        before = _tree(at + "/slots/a")
        big = pack(_files("3.0.0", extra=12000) + [("firmware/blob.py", os.urandom(8000))])
        reason, up, _, _ = _failed(at, [ok(big)], blob=big, cmd=_cmd(big, "3.0.0", "u-3"))
        assert "flash full" in reason, reason
        assert not _exists(at + "/slots/b") and _tree(at + "/slots/a") == before
        assert _state(at)["active"] == "a"
    finally:
        os.umount(at)


def test_download_during_a_session_waits_only_for_the_connect():
    root = _tmp()
    try:
        clock = _clock()
        blob = pack(_files("2.0.0"))
        server = Server(ok(blob))
        up = _updater(root, clock, Acks(), server)
        up.start(_cmd(blob))
        for _ in range(50):
            up.tick(busy=True)
        assert server.calls == [] and up.working          # the connect may block: not during a session
        up.tick(busy=False)
        assert len(server.calls) == 1
        _run(up, clock, busy=True)                          # streaming never blocks: goes on in a session
        assert up.ready_to_switch()
    finally:
        _rmtree(root)


def test_one_update_at_a_time_and_duplicates_are_harmless():
    root = _tmp()
    try:
        clock = _clock()
        blob = pack(_files("2.0.0"))
        server = Server(ok(blob, piece=100))
        up = _updater(root, clock, Acks(), server)
        up.start(_cmd(blob))
        for _ in range(5):
            up.tick()
        assert up.start(_cmd(blob)) is None                 # QoS 1 re-delivery: no restart
        e = raises(ValueError, up.start, _cmd(pack(_files("2.0.1")), "2.0.1", "u-2"))
        assert "u-1 (version 2.0.0) is still downloading" in str(e)
        _run(up, clock)
        assert len(server.calls) == 1 and up.ready_to_switch()
        blob2 = pack(_files("2.0.1"))                       # a newer one replaces the waiting one
        up._opener = Server(ok(blob2))
        _start(up, _cmd(blob2, "2.0.1", "u-2"))
        _run(up, clock)
        assert _state(root)["slots"]["a"]["version"] == "2.0.1"
        assert _tree(root + "/slots/a")["firmware/version.py"] == b'VERSION = "2.0.1"\n'
    finally:
        _rmtree(root)


# -- trial, confirmation, rollback -------------------------------------------------------------
def test_trial_boots_are_counted_then_the_previous_slot_comes_back():
    root = _tmp()
    try:
        _install_confirmed(root, _files("2.0.0"), "2.0.0")
        _install(root, _clock(), _files("3.0.0"), "3.0.0", "u-3")
        st = _state(root)
        assert (st["active"], st["previous"], st["trial"]) == ("b", "a", 0)
        for n in (1, 2, 3):
            assert _reboot(root) is True
            assert _state(root)["trial"] == n and _state(root)["active"] == "b"
        assert _reboot(root) is False                      # 4th boot: 3 were allowed
        st = _state(root)
        assert (st["active"], st["trial"], sorted(st["slots"])) == ("a", None, ["a"])
        assert st["outcome"] == {"id": "u-3", "status": "rolled_back", "version": "3.0.0",
                                 "reason": "not confirmed after 3 boots"}
        assert _reboot(root) is False and _state(root) == st  # no longer on trial: nothing written
        acks = Acks()
        up = _updater(root, _clock(), acks, Server())
        assert up.version == "2.0.0" and not up.trial
        for _ in range(300):
            up.tick()
        assert acks.final() == [{"id": "u-3", "cmd": "update", "status": "rolled_back", "version": "3.0.0",
                                 "reason": "not confirmed after 3 boots"}]
        assert not _exists(root + "/slots/b")              # the rolled-back version's files are removed
        assert _state(root)["outcome"] is None
    finally:
        _rmtree(root)


def test_boot_plan_leaves_base_and_unknown_states_alone():
    for st in ({}, {"active": None, "slots": {}}, {"active": "a", "slots": {}, "trial": 0},
               {"active": "a", "slots": {"a": {}}, "trial": None}, {"active": "a", "slots": [], "trial": 1}):
        before = json.dumps(st)
        assert boot.plan(st) == (False, False)
        assert json.dumps(st) == before
    st = {"active": "b", "previous": "a", "slots": {"a": {}, "b": {"id": "x"}}, "trial": 1, "max_boots": 1}
    assert boot.plan(st) == (True, False) and st["active"] == "a"


def test_confirm_ends_the_trial_and_installed_is_delivered_once():
    root = _tmp()
    try:
        _install(root, _clock(), _files("2.0.0"), "2.0.0")
        assert _reboot(root)
        clock = _clock()
        acks = Acks()
        acks.refuse = 1                                     # offline at first
        up = _updater(root, clock, acks, Server())
        assert up.trial and up.version == "2.0.0"
        e = raises(ValueError, up.start, _cmd(pack(_files("3.0.0")), "3.0.0", "u-3"))
        assert "on trial" in str(e)
        assert up.confirm() is False                        # too early: not proven yet
        clock.sleep_ms(60000)
        assert up.confirm() is True and not up.trial
        assert _state(root)["trial"] is None and _state(root)["outcome"]["status"] == "installed"
        up.tick()
        assert acks.final() == []                           # not delivered: kept
        clock.sleep_ms(1000)
        up.tick()
        assert acks.final() == []                           # retried only every few seconds
        clock.sleep_ms(5000)
        up.tick()
        up.tick()
        assert acks.final() == [{"id": "u-1", "cmd": "update", "status": "installed", "version": "2.0.0"}]
        assert _state(root)["outcome"] is None
        again = Acks()
        up2 = _updater(root, _clock(), again, Server())
        up2.tick()
        assert again.got == [] and not up2.trial and _reboot(root) is False
    finally:
        _rmtree(root)


def test_no_confirmation_within_trial_time_rolls_back_without_waiting_for_a_reboot():
    root = _tmp()
    try:
        _install(root, _clock(), _files("2.0.0"), "2.0.0")
        assert _reboot(root)
        clock = _clock()
        acks = Acks()
        up = _updater(root, clock, acks, Server())
        up.tick()
        assert not up.ready_to_switch()
        clock.sleep_ms(600001)
        up.tick()
        assert up.ready_to_switch() and up.switch() == "rollback"
        up.tick()
        st = _state(root)
        assert st["active"] is None and st["slots"] == {} and st["trial"] is None
        assert acks.final()[0]["status"] == "rolled_back" and "within 600 s" in acks.final()[0]["reason"]
        assert up.confirm() is False
        assert "restart is pending (rollback)" in str(raises(ValueError, up.start, _cmd(pack(_files("3.0.0")))))
    finally:
        _rmtree(root)


def test_the_running_bundle_is_not_installed_again():
    root = _tmp()
    try:
        files = _files("2.0.0")
        _install(root, _clock(), files, "2.0.0")
        _reboot(root)
        clock = _clock()
        up = _updater(root, clock, Acks(), Server())
        clock.sleep_ms(60000)
        up.confirm()
        e = raises(ValueError, up.start, _cmd(pack(files), "2.0.0", "u-9"))
        assert "already running" in str(e)
    finally:
        _rmtree(root)


def test_leftovers_of_an_interrupted_download_are_removed_at_startup():
    root = _tmp()
    try:
        _install(root, _clock(), _files("2.0.0"), "2.0.0")
        _reboot(root)
        os.mkdir(root + "/slots/b")
        os.mkdir(root + "/slots/b/firmware")
        with open(root + "/slots/b/firmware/app.py", "w") as f:
            f.write("half a file")
        before = _tree(root + "/slots/a")
        up = _updater(root, _clock(), Acks(), Server())
        assert up.working
        for _ in range(20):
            up.tick()
        assert not _exists(root + "/slots/b") and _tree(root + "/slots/a") == before and not up.working
    finally:
        _rmtree(root)


class Events:
    def __init__(self):
        self.got = []

    def event(self, ev, **fields):
        self.got.append((ev, fields))


def _from_settings(device, secrets, clock, **kw):
    return from_settings(settings(device, secrets).ota, clock, **kw)


def test_from_settings_reads_the_ota_section_and_the_key():
    clock = _clock()
    up = _from_settings({"device_id": DEVICE, "ota": {"public_key": KEY_A.hex}}, {}, clock)
    assert (up.key.n, up.key.k, up.device_id, up.max_size, up.max_boots, up.trial_ms, up.confirm_after_ms) == (
        KEY_A.n, 256, DEVICE, 1 << 20, 3, 600000, 60000)
    assert up.base_version == "dev"     # firmware/version.py of this tree
    up = _from_settings({"ota": {"max_size": 65536, "max_boots": 5, "trial_s": 120, "confirm_after_s": 10}}, {}, clock)
    assert (up.key, up.device_id, up.max_size, up.max_boots, up.trial_ms) == (None, "cp-test", 65536, 5, 120000)
    for device, secrets, words in (({"ota": {"public_key": KEY_A.hex[:64]}}, {}, "config: ota.public_key: public key "
                                     "must be an RSA-2048 or RSA-3072 modulus"),
                                   ({"ota": {"public_key": "xy" * 256}}, {}, "ota.public_key: public key must be hex"),
                                   ({"ota": {"public_key": 5}}, {}, "ota.public_key must be a str"),
                                   ({"ota": {"max_boots": 0}}, {}, "ota.max_boots must be within 1..10"),
                                   ({"ota": {"trial_s": 60, "confirm_after_s": 60}}, {}, "shorter than ota.trial_s")):
        e = raises(ValueError, _from_settings, device, secrets, clock)
        assert words in str(e), str(e)


def test_the_old_hmac_update_key_is_no_longer_accepted():
    """A charger configured the old way (secrets.json update_key, no public key) refuses every update,
    even one carrying an HMAC signature under that key, and says why at boot and in the answer."""
    root = _tmp()
    try:
        log = Events()
        ota = settings({"device_id": DEVICE}, {"update_key": "11" * 32}).ota
        otacore.from_settings(ota, _clock(), root=root, log=log)   # the boot (firmware/app.py)
        up = from_settings(ota, _clock(), root=root)
        assert up.key is None
        assert log.got == [("update", {"status": "config", "reason": "secrets: update_key (HMAC) is no longer "
                                                                     "accepted: updates need ota.public_key"})]
        blob = pack(_files("2.0.0"))
        _refused(up, root, _cmd(blob), "no update public key configured (config: ota.public_key); "
                                       "the HMAC update_key is no longer accepted")
    finally:
        _rmtree(root)


def test_the_bundle_is_never_held_in_ram():
    if not MP:
        return  # gc.mem_alloc() is MicroPython's
    import gc

    root = _tmp()
    try:
        clock = _clock()
        blob = pack(_files("2.0.0") + [("firmware/big.py", b"#" * 131072)])
        up = _updater(root, clock, Acks(), Server(ok(blob, piece=1024)), max_size=1 << 18, chunk=1024)
        up.start(_cmd(blob))
        gc.collect()
        base = gc.mem_alloc()
        peak = 0
        while up.working:
            up.tick()
            gc.collect()
            peak = max(peak, gc.mem_alloc() - base)
        assert up.ready_to_switch() and _tree(root + "/slots/a")["firmware/big.py"] == b"#" * 131072
        assert peak < 8192, peak   # one 1 KB chunk and small state, never the 130 KB bundle
    finally:
        _rmtree(root)


class _ShortFor:
    """builtins.__import__ that runs out of heap loading one module (a lazy import on a full heap)."""

    def __init__(self, name):
        import builtins

        self.builtins = builtins
        self.name = name
        self.real = builtins.__import__

    def __enter__(self):
        self.builtins.__import__ = self

    def __exit__(self, *exc):
        self.builtins.__import__ = self.real

    def __call__(self, name, *args):
        if name == self.name:
            raise MemoryError("memory allocation failed")
        return self.real(name, *args)


def test_the_bundle_reader_is_loaded_by_the_first_update_and_a_heap_too_short_for_it_changes_nothing():
    from firmware.link import ota

    assert not hasattr(ota, "Reader")   # no boot-time import: its module costs heap only once an update comes
    sys.modules.pop("firmware.link.bundle", None)
    root, clock, acks = _tmp(), _clock(), Acks()
    blob = pack(_files("2.0.0"))
    up = _updater(root, clock, acks, Server(ok(blob)))
    with _ShortFor("firmware.link.bundle"):
        raises(MemoryError, up.start, _cmd(blob))   # the command handler answers busy (test_lowmem.py)
    assert not up.working and not acks.got and "firmware.link.bundle" not in sys.modules
    up.start(_cmd(blob))   # sent again: no "signature checked a second ago", the reader loads
    assert "firmware.link.bundle" in sys.modules
    _run(up, clock)
    assert up.switch() == "install", acks.got
