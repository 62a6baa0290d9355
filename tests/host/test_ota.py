"""Over-the-air update end to end: bundles built and signed by tools/bundle.py with keys from its
`keygen`, served over HTTP on loopback, downloaded by the firmware on the MicroPython unix port into
a board's slots, then "reboots" (a new micropython process running boot.py) into the new version,
or back to the old one. Replays, downgrades, other targets and expired manifests are refused.

Each test has its own board root (what `/` is on a board): the base firmware (as `make deploy`
leaves it), boot.py and a small driver script standing in for main.py.
"""
import hashlib
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

import sim
from scenario import ROOT

from firmware.link.bundle import Reader

DEVICE = "cp-0001"
OTA = {"confirm_after_s": 0, "trial_s": 60, "max_boots": 3, "timeout_ms": 2000, "stall_s": 5}

DRIVER = r'''
import json, sys, time
exec(open("boot.py").read(), {"__name__": "__main__"})   # as at power-up on a board
from firmware.core.clock import Clock
from firmware.core.settings import ota_settings
from firmware.link.ota import from_settings


def out(tag, obj):
    print(tag, json.dumps(obj))


def updater():
    with open(sys.argv[2]) as f:
        cfg = json.load(f)
    return from_settings(ota_settings(cfg["device"], cfg["secrets"]), Clock(), lambda ack: out("ACK", ack))


mode = sys.argv[1]
if mode == "update":
    up = updater()
    with open(sys.argv[3]) as f:
        cmd = json.load(f)
    try:
        up.start(cmd)
    except ValueError as e:
        out("ACK", {"id": cmd.get("id"), "cmd": "update", "status": "rejected", "reason": str(e)})
    else:
        out("ACK", {"id": cmd["id"], "cmd": "update", "status": "accepted"})
        t0 = time.ticks_ms()
        longest = 0
        while up.working and time.ticks_diff(time.ticks_ms(), t0) < 60000:
            t = time.ticks_ms()
            up.tick()
            longest = max(longest, time.ticks_diff(time.ticks_ms(), t))
        up.tick()
        out("LONGEST_TICK_MS", longest)
        if up.ready_to_switch():
            out("SWITCH", up.switch())
else:
    try:
        from firmware.version import VERSION
    except ImportError:
        VERSION = None
    import firmware.app
    out("BOOT", {"version": VERSION, "path0": sys.path[0], "app": firmware.app.__file__})
    if mode == "confirm":
        up = updater()
        out("CONFIRMED", up.confirm())
        for _ in range(10000):     # deliver the outcome, remove a rolled-back slot
            up.tick()
            if not up.working:
                break
        up.tick()
'''


class Files(http.server.BaseHTTPRequestHandler):
    """Serves the test's bundles; `drop` closes the connection after that many body bytes."""

    routes = {}

    def do_GET(self):
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        data, drop = route
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data if drop is None else data[:drop])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


class Keys:
    """The operator's signing key and a stranger's, made by `tools/bundle.py keygen` (outside the repo)."""

    def __init__(self, folder):
        self.path, self.public = _keygen(folder / "cp-update.pem")
        self.other, _ = _keygen(folder / "other.pem")


def _keygen(path, *extra, env=None):
    r = _tool("keygen", "--out", str(path), *extra, env=env)
    assert r.returncode == 0, r.stderr
    return str(path), json.loads(r.stdout)["ota"]["public_key"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """The same files over HTTPS, with a self-signed certificate made by openssl."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / "cert.pem"), str(d / "key.pem"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


class Board:
    """A board root on disk with the base firmware, and the ways to run it."""

    def __init__(self, tmp, server, keys):
        self.tmp = tmp
        self.root = tmp / "board"
        self.server = server
        self.keys = keys
        _copy_tree(ROOT, self.root)
        (self.root / "firmware" / "version.py").write_text('VERSION = "1.0.0-base"\n')
        shutil.copy(os.path.join(ROOT, "boot.py"), self.root / "boot.py")
        (self.root / "ota_driver.py").write_text(DRIVER)
        self.cfg = tmp / "ota.json"
        self.configure()
        self.commands = []   # the cmd/update payloads installed, as an eavesdropper keeps them

    def configure(self, **ota):
        """The charger's config: its device id, the operator's public key, the ota settings."""
        cfg = {"device": {"device_id": DEVICE, "ota": dict(OTA, public_key=self.keys.public, **ota)},
               "secrets": {}}
        self.cfg.write_text(json.dumps(cfg))

    def bundle(self, version, mpy=None, key=None, breaks=None, name=None, scheme="http", server=None, cid=None,
               sign=("--fleet",)):
        """Build and sign a bundle of this project's firmware with tools/bundle.py; returns (payload, bytes).
        sign: the target and the other manifest options (--device ID, --rollback, --expires UTC)."""
        src = self.tmp / ("src-" + version)
        if not src.exists():
            _copy_tree(ROOT, src)
            if breaks:
                with open(src / "firmware" / "app.py", "a") as f:
                    f.write("\nraise RuntimeError(%r)\n" % breaks)
        path = "/" + (name or "cp-%s.bin" % version)
        out = self.tmp / path[1:]
        port = (server or self.server).server_address[1]
        cmd = [sys.executable, os.path.join(ROOT, "tools", "bundle.py"), "--version", version,
               "--key", key or self.keys.path, "--url", "%s://127.0.0.1:%d%s" % (scheme, port, path),
               "--src", str(src), "--out", str(out), "--id", cid or "u-" + version] + list(sign)
        if mpy:
            cmd += ["--mpy", mpy]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout), out.read_bytes()

    def serve(self, payload, data, drop=None):
        Files.routes["/" + payload["url"].split("/", 3)[3]] = (data, drop)

    def run(self, *args):
        """One process, as one power-up of the board: {tag: [values]} of what the driver printed."""
        env = dict(os.environ)
        env["MICROPYPATH"] = ".frozen:" + os.path.join(ROOT, "lib")   # script dir (board root) first
        r = subprocess.run([sim.micropython_path(), "ota_driver.py"] + list(args), cwd=self.root, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        seen = {}
        for line in r.stdout.splitlines():
            tag, _, rest = line.partition(" ")
            if tag in ("ACK", "SWITCH", "BOOT", "CONFIRMED", "LONGEST_TICK_MS"):
                seen.setdefault(tag, []).append(json.loads(rest))
        return seen

    def update(self, payload):
        cmd = self.tmp / "cmd.json"
        cmd.write_text(json.dumps(payload))
        return self.run("update", str(self.cfg), str(cmd))

    def boot(self, confirm=False):
        return self.run("confirm" if confirm else "boot", str(self.cfg))

    def state(self):
        p = self.root / "slots" / "state.json"
        return json.loads(p.read_text()) if p.exists() else None

    def tree(self, slot):
        """{path: sha256} of a slot's files: to prove it was not touched."""
        base = self.root / "slots" / slot
        return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(base.rglob("*")) if p.is_file()}

    def install(self, version, **kw):
        """Update, switch, boot the new version and confirm it: it is now the running version."""
        payload, data = self.bundle(version, **kw)
        self.serve(payload, data)
        seen = self.update(payload)
        assert seen["SWITCH"] == ["install"], seen
        self.commands.append(payload)
        seen = self.boot(confirm=True)
        assert seen["BOOT"][0]["version"] == version and seen["CONFIRMED"] == [True], seen
        st = self.state()
        assert st["trial"] is None and st["slots"][st["active"]]["version"] == version
        return seen


def _copy_tree(src_root, dst):
    """firmware/ and hal/ without the simulator, as on a board."""
    for top in ("firmware", "hal"):
        shutil.copytree(os.path.join(src_root, top), dst / top,
                        ignore=shutil.ignore_patterns("__pycache__", "sim") if top == "hal" else
                        shutil.ignore_patterns("__pycache__"))


@pytest.fixture
def board(tmp_path, server, keys):
    return Board(tmp_path, server, keys)


def _final(seen):
    return [a for a in seen.get("ACK", []) if a["status"] not in ("progress", "accepted")]


@pytest.mark.parametrize("mpy", [None, "bytecode"])
def test_update_switch_trial_boot_and_confirm(board, mpy):
    assert board.boot()["BOOT"][0]["version"] == "1.0.0-base"
    payload, data = board.bundle("2.0.0", mpy=mpy)
    board.serve(payload, data)
    seen = board.update(payload)
    percents = [a["percent"] for a in seen["ACK"] if a["status"] == "progress"]
    assert percents[0] == 0 and percents[-1] == 100, seen
    assert seen["SWITCH"] == ["install"]
    st = board.state()
    assert (st["active"], st["previous"], st["trial"]) == ("a", None, 0)
    assert st["slots"]["a"] == {"version": "2.0.0", "sha256": payload["sha256"], "id": "u-2.0.0"}
    suffix = ".mpy" if mpy else ".py"
    assert "firmware/app" + suffix in board.tree("a") and "hal/sim/world.py" not in board.tree("a")

    boot = board.boot()["BOOT"][0]                      # first boot of the new version: on trial
    assert boot["version"] == "2.0.0" and boot["path0"].endswith("/slots/a")
    assert boot["app"].endswith("slots/a/firmware/app" + suffix)
    assert board.state()["trial"] == 1

    seen = board.boot(confirm=True)
    assert seen["CONFIRMED"] == [True]
    assert _final(seen) == [{"id": "u-2.0.0", "cmd": "update", "status": "installed", "version": "2.0.0"}]
    st = board.state()
    assert st["trial"] is None and st["outcome"] is None
    assert board.boot()["BOOT"][0]["version"] == "2.0.0" and board.state() == st


class Silent:
    """A TCP server that accepts and then sends nothing (or only the response head)."""

    def __init__(self, head=None):
        self.head = head
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.head:
                c.sendall(self.head)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("head", [None, b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n"])
def test_a_silent_server_costs_one_bounded_step_then_a_stall(board, head):
    """A server that never answers blocks the loop at most one socket timeout (2 s, in the connect
    step); one that sends the head and then nothing is only polled, until the stall limit (5 s)."""
    payload, data = board.bundle("2.0.0")
    srv = Silent(head and head % len(data))
    try:
        payload["url"] = "http://127.0.0.1:%d/cp.bin" % srv.port   # the url is not signed: same manifest
        seen = board.update(payload)
    finally:
        srv.close()
    final = _final(seen)
    assert len(final) == 1 and final[0]["status"] == "rejected", seen
    longest = seen["LONGEST_TICK_MS"][0]
    if head is None:
        assert "download failed: OSError" in final[0]["reason"] and "110" in final[0]["reason"], final
        assert 1500 <= longest < 3500, longest
    else:
        assert "download stalled: no data for 5 s after 0 of %d bytes" % len(data) == final[0]["reason"]
        assert longest < 500, longest
    assert not (board.root / "slots" / "a").exists() and board.state() is None


def test_update_over_https(board, tls_server):
    """urequests 0.9.1 asks for `ussl`; the updater maps it to MicroPython's `ssl`. The signature, not
    TLS, is what makes the bundle trustworthy (urequests does not check the server's certificate)."""
    payload, data = board.bundle("2.0.0", scheme="https", server=tls_server)
    board.serve(payload, data)
    seen = board.update(payload)
    assert seen.get("SWITCH") == ["install"], seen
    assert board.boot()["BOOT"][0]["version"] == "2.0.0"


@pytest.mark.parametrize("case", ["corrupt", "bad_signature", "dropped", "oversized"])
def test_a_failed_update_leaves_the_running_version_untouched(board, case):
    board.install("2.0.0")
    before, st_before = board.tree("a"), board.state()
    payload, data = board.bundle("3.0.0")
    drop = None
    if case == "corrupt":
        data = bytearray(data)
        data[len(data) // 2] ^= 0x40
        data = bytes(data)
    elif case == "bad_signature":
        payload["sig"] = board.bundle("3.0.0", key=board.keys.other, name="other.bin")[0]["sig"]
    elif case == "dropped":
        drop = 50000
    else:
        board.configure(max_size=len(data) - 1)
    board.serve(payload, data, drop)
    seen = board.update(payload)
    reasons = {"corrupt": "sha256 mismatch", "bad_signature": "sig does not verify",
               "dropped": "connection closed after 50000 of %d bytes" % len(data),
               "oversized": "exceeds the maximum of %d bytes" % (len(data) - 1)}
    final = _final(seen)
    assert len(final) == 1 and final[0]["status"] == "rejected", seen
    assert reasons[case] in final[0]["reason"]
    assert "SWITCH" not in seen
    assert not (board.root / "slots" / "b").exists()     # the partial slot is discarded
    assert board.tree("a") == before and board.state() == st_before
    assert board.boot()["BOOT"][0]["version"] == "2.0.0"
    if case == "dropped":                                  # a later retry works
        board.serve(payload, data)
        assert board.update(payload)["SWITCH"] == ["install"]
        assert board.boot()["BOOT"][0]["version"] == "3.0.0" and board.tree("a") == before


def test_a_version_that_raises_at_import_is_rolled_back_at_its_first_boot(board):
    board.install("2.0.0")
    before = board.tree("a")
    payload, data = board.bundle("3.0.0", breaks="broken build")
    board.serve(payload, data)
    assert board.update(payload)["SWITCH"] == ["install"]
    assert board.state()["active"] == "b"
    boot = board.boot()["BOOT"][0]
    assert boot["version"] == "2.0.0" and boot["path0"].endswith("/slots/a")
    st = board.state()
    assert (st["active"], st["trial"], sorted(st["slots"])) == ("a", None, ["a"])
    assert st["outcome"]["status"] == "rolled_back" and st["outcome"]["id"] == "u-3.0.0"
    assert st["outcome"]["reason"] == "import failed: RuntimeError: broken build"
    assert board.tree("a") == before
    seen = board.boot(confirm=True)                        # the old version reports what happened
    assert _final(seen) == [{"id": "u-3.0.0", "cmd": "update", "status": "rolled_back", "version": "3.0.0",
                             "reason": "import failed: RuntimeError: broken build"}]
    assert board.state()["outcome"] is None and not (board.root / "slots" / "b").exists()


def test_a_first_update_that_fails_returns_to_the_base_firmware(board):
    payload, data = board.bundle("2.0.0", breaks="no hardware")
    board.serve(payload, data)
    assert board.update(payload)["SWITCH"] == ["install"]
    assert board.boot()["BOOT"][0]["version"] == "1.0.0-base"
    st = board.state()
    assert st["active"] is None and st["outcome"]["reason"] == "import failed: RuntimeError: no hardware"


def test_a_version_that_never_confirms_is_rolled_back_after_max_boots(board):
    board.install("2.0.0")
    payload, data = board.bundle("3.0.0")
    board.serve(payload, data)
    assert board.update(payload)["SWITCH"] == ["install"]
    for n in (1, 2, 3):
        assert board.boot()["BOOT"][0]["version"] == "3.0.0"
        assert board.state()["trial"] == n
    assert board.boot()["BOOT"][0]["version"] == "2.0.0"
    st = board.state()
    assert st["active"] == "a" and st["outcome"]["reason"] == "not confirmed after 3 boots"


def test_a_slot_shadows_frozen_modules(board):
    """boot.py puts the slot before '.frozen' on sys.path: a slot's package wins over a frozen one
    (shown with the unix port's frozen asyncio)."""
    slot = board.root / "slots" / "a"
    (slot / "asyncio").mkdir(parents=True)
    (slot / "asyncio" / "__init__.py").write_text('WHERE = "slot"\n')
    (board.root / "slots" / "state.json").write_text(json.dumps(
        {"active": "a", "previous": None, "trial": None, "slots": {"a": {"version": "x"}}, "outcome": None}))
    env = dict(os.environ, MICROPYPATH=".frozen")
    code = ('exec(open("boot.py").read(), {"__name__": "__main__"}); import sys; import asyncio; '
            'print(getattr(asyncio, "WHERE", "frozen"), sys.path.index(".frozen") > 0)')
    r = subprocess.run([sim.micropython_path(), "-c", code], cwd=board.root, env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.split() == ["slot", "True"], r.stdout + r.stderr
    r = subprocess.run([sim.micropython_path(), "-c", "import asyncio; print(getattr(asyncio, 'WHERE', 'frozen'))"],
                       cwd=board.root, env=env, capture_output=True, text=True, timeout=30)
    assert r.stdout.split() == ["frozen"], r.stdout + r.stderr


# -- signed manifests, end to end --------------------------------------------------------------
def _refusal(seen):
    acks = seen.get("ACK", [])
    assert len(acks) == 1 and acks[0]["status"] == "rejected" and "SWITCH" not in seen, seen
    return acks[0]["reason"]


def test_replays_downgrades_other_targets_and_expired_manifests_are_refused(board):
    """Each refusal is one cmd_ack `rejected` with the reason; the slots, the state and the remembered
    commands stay exactly as they were. A downgrade signed as a rollback installs."""
    board.install("2.0.0")
    board.install("3.0.0")
    old_payload = board.commands[0]                               # the command that installed 2.0.0
    assert board.state()["active"] == "b"
    cases = [
        (dict(old_payload, url="http://127.0.0.1:9/elsewhere.bin"), "update u-2.0.0 was accepted before"),
        (board.bundle("1.5.0")[0], "version 1.5.0 is not above the running 3.0.0"),
        (board.bundle("4.0.0", sign=("--device", "cp-0002"), name="other-device.bin")[0],
         "update is for device cp-0002, this charger is cp-0001"),
        (board.bundle("4.0.0", key=board.keys.other, name="stranger.bin")[0], "sig does not verify"),
    ]
    expiring = board.bundle("4.0.0", cid="u-4-soon", name="soon.bin",
                            sign=("--fleet", "--expires", time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                        time.gmtime(time.time() + 2))))[0]
    before = {s: board.tree(s) for s in ("a", "b")}
    st, seen_file = board.state(), (board.root / "slots" / "seen.json").read_text()
    time.sleep(max(0, _epoch(expiring["expires"]) - time.time() + 0.2))
    cases.append((expiring, "update expired at %s" % expiring["expires"]))
    for payload, words in cases:
        assert words in _refusal(board.update(payload)), words
        assert {s: board.tree(s) for s in ("a", "b")} == before and board.state() == st
        assert (board.root / "slots" / "seen.json").read_text() == seen_file
    payload, data = board.bundle("2.0.0", cid="u-back-2.0.0", sign=("--fleet", "--rollback"), name="back.bin")
    assert payload["rollback"] is True
    board.serve(payload, data)
    assert board.update(payload)["SWITCH"] == ["install"]
    assert board.boot(confirm=True)["BOOT"][0]["version"] == "2.0.0"
    board.install("3.1.0")                                        # the fix; then the rollback cannot be replayed
    assert "update u-back-2.0.0 was accepted before" in _refusal(board.update(payload))


def _epoch(utc):
    from firmware.core.timefmt import parse_iso
    return parse_iso(utc)


def test_a_charger_on_the_old_hmac_key_refuses_updates(board):
    board.cfg.write_text(json.dumps({"device": {"device_id": DEVICE, "ota": OTA},
                                     "secrets": {"update_key": bytes(range(40, 72)).hex()}}))
    payload, data = board.bundle("2.0.0")
    board.serve(payload, data)
    assert "the HMAC update_key is no longer accepted" in _refusal(board.update(payload))
    assert board.state() is None


# -- tools/bundle.py --------------------------------------------------------------------------
def _tool(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bundle.py")] + list(args),
                          capture_output=True, text=True, timeout=120, env=env)


def test_bundle_tool_help_has_an_example():
    r = _tool("--help")
    assert r.returncode == 0 and "example:" in r.stdout and "--key ~/keys/cp-update.pem" in r.stdout
    assert "keygen --out FILE" in r.stdout


def test_keygen_keeps_the_private_key_out_of_the_repo_and_prints_the_public_key(tmp_path, keys):
    from cryptography.hazmat.primitives import serialization

    from firmware.core.rsa import parse_public_key

    pem = open(keys.path, "rb").read()
    assert os.stat(keys.path).st_mode & 0o777 == 0o600 and b"PRIVATE KEY" in pem
    priv = serialization.load_pem_private_key(pem, password=None)
    assert priv.key_size == 2048 and parse_public_key(keys.public).n == priv.public_key().public_numbers().n
    r = _tool("pubkey", "--key", keys.path)
    assert r.returncode == 0 and json.loads(r.stdout) == {"ota": {"public_key": keys.public}}
    for path, words in ((os.path.join(ROOT, "update-key.pem"), "inside the project tree"),
                        (os.path.join(ROOT, "tools", "..", "build", "k.pem"), "inside the project tree"),
                        (keys.path, "exists")):
        r = _tool("keygen", "--out", path)
        assert r.returncode == 2 and words in r.stderr and "nothing written" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(ROOT, "update-key.pem")) and open(keys.path, "rb").read() == pem
    r = _tool("keygen", "--out", str(tmp_path / "k.pem"), "--bits", "1024")
    assert r.returncode == 2 and "--bits must be one of 2048, 3072" in r.stderr
    env = dict(os.environ, CP_UPDATE_KEY_PASSPHRASE="correct horse")
    path, pub = _keygen(tmp_path / "k3072.pem", "--bits", "3072", env=env)
    assert b"ENCRYPTED" in open(path, "rb").read() and parse_public_key(pub).k == 384
    base = ["--version", "1.0.0", "--url", "http://h/b.bin", "--fleet", "--key", path, "--out", str(tmp_path / "b.bin")]
    assert "encrypted keys need CP_UPDATE_KEY_PASSPHRASE" in _tool(*base).stderr
    r = _tool(*base, env=env)
    assert r.returncode == 0 and len(json.loads(r.stdout)["sig"]) == 768, r.stderr


def test_bundle_tool_refuses_bad_keys_and_versions(tmp_path, keys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    out = tmp_path / "b.bin"
    (tmp_path / "secrets.json").write_text(json.dumps({"update_key": "ab" * 32}))
    small = tmp_path / "small.pem"
    small.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key = ["--key", keys.path]
    for args, words in ((["--fleet", "--key", str(tmp_path / "none.pem")], "cannot read"),
                        (["--fleet", "--key", str(tmp_path / "secrets.json")], "not a usable PEM private key"),
                        (["--fleet", "--key", str(small)], "must be an RSA-2048 or RSA-3072 key"),
                        (["--fleet", "--keys", str(tmp_path / "secrets.json")], "HMAC update_key is no longer used"),
                        (["--fleet"], "give the private key: --key FILE.pem"), (key, "--fleet"),
                        (key + ["--fleet", "--device", "cp-1"], "--fleet"),
                        (key + ["--device", "cp/1"], "target must be"),
                        (key + ["--fleet", "--expires", "2020-01-01T00:00:00Z"], "is in the past"),
                        (key + ["--fleet", "--expires", "tomorrow"], "--expires must be a UTC time"),
                        (key + ["--fleet", "--version", "1.0/x"], "version must be"),
                        (key + ["--fleet", "--version", "dev"], "dot-separated numbers")):
        base = ["--version", "1.0.0", "--url", "http://h/b.bin", "--out", str(out)]
        r = _tool(*(base + args))
        assert r.returncode == 2 and words in r.stderr and "nothing written" in r.stderr, (args, r.stderr)
        assert not out.exists()


def test_bundle_tool_payload_matches_the_file(tmp_path, keys):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from firmware.link.ota import check_command

    out = tmp_path / "b.bin"
    r = _tool("--version", "4.1.0", "--url", "https://updates.example.org/b.bin", "--key", keys.path,
              "--device", DEVICE, "--valid-days", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    data = out.read_bytes()
    assert p["size"] == len(data) and p["sha256"] == hashlib.sha256(data).hexdigest()
    _, m, sig = check_command(p, 1 << 21)
    pub = serialization.load_pem_private_key(open(keys.path, "rb").read(), None).public_key()
    pub.verify(sig, m.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())   # raises if it does not verify
    assert abs(m.expires - (time.time() + 3 * 86400)) < 60 and (p["target"], p["rollback"]) == (DEVICE, False)
    assert (p["url"], p["version"]) == ("https://updates.example.org/b.bin", "4.1.0")
    assert p["id"].startswith("u-4.1.0-") and len(p["id"]) == len("u-4.1.0-") + 8

    class Names:
        def __init__(self):
            self.names, self.data = [], {}

        def begin(self, name, size):
            self.names.append(name)
            self.data[name] = b""

        def write(self, mv):
            self.data[self.names[-1]] += bytes(mv)

        def end(self):
            pass

    sink = Names()
    rd = Reader(sink, 1 << 21)
    rd.feed(data)
    rd.finish()
    assert "firmware/controller.py" in sink.names and "hal/board.py" in sink.names
    assert not [n for n in sink.names if n.startswith("hal/sim/") or "__pycache__" in n]
    assert sink.data["firmware/version.py"].endswith(b'VERSION = "4.1.0"\n')
