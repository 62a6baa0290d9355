"""Provisioning: round trip, every refusal writes nothing, raw UIDs never reach a file or a board."""
import base64
import csv
import hashlib
import hmac
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
import tty

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import provision
import sim
from backend import Backend, load_auth
from broker import Broker, mqtt_connect
from bundle import public_hex
from firmware.billing.tariff import Tariff
from firmware.core.rsa import parse_public_key
from firmware.core.settings import Settings, board_settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITE_KEY = "5a1f0c3e9b7d2468ace13579bdf02468" "13579bdf02468ace5a1f0c3e9b7d2468"
OLD_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0" "00112233445566778899aabbccddeeff"
UPDATE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)   # the operator's signing key
UPDATE_PUBKEY = public_hex(UPDATE_KEY)   # what tools/bundle.py keygen prints
DEVICE_KEY = "d00dfeed" * 8
# raw UIDs as an operator might type them: 4, 7 and 10 bytes, mixed case and separators
CARDS = [("DEADBEEF", "deadbeef"), ("04:a1:b2:C3:d4:E5:f6", "04a1b2c3d4e5f6"),
         ("0a 0b 0c 0d 0e 0f 10 11 12 13", "0a0b0c0d0e0f10111213")]
TARIFF = {"id": "day-rate", "currency": "EUR", "elements": [{"price_components": [
    {"type": "ENERGY", "price": "0.3120", "vat": "19", "step_size": 1}]}]}
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n"


def boot_settings(folder):
    """The firmware's settings from a provisioned folder, parsed as the charger parses them at boot."""
    board, config, secrets = (json.loads((folder / n).read_text()) for n in ("board.json", "config.json", "secrets.json"))
    return Settings(board_settings(board), config, secrets)



def token(uid_hex, key=SITE_KEY):
    """HMAC-SHA256(site key, UID) computed here independently of firmware.auth.pseudonym."""
    return hmac.new(bytes.fromhex(key), bytes.fromhex(uid_hex), hashlib.sha256).hexdigest()[:32]


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "tariff.json").write_text(json.dumps(TARIFF))
    (d / "cards.csv").write_text(
        "uid,status,expiry,group,max_current_a,max_kwh,offpeak_only\n"
        "%s,,,,,,\n%s,Blocked,2027-01-01T00:00:00Z,fleet-a,16,20,true\n\n%s,Accepted,,,,7.5,no\n"
        % tuple(c[0] for c in CARDS))
    (d / "ca.pem").write_text(PEM_CERT)
    (d / "cert.pem").write_text(PEM_CERT)
    (d / "key.pem").write_text(PEM_KEY)
    (d / "keys.json").write_text(json.dumps({"site_keys": {"1": OLD_KEY, "2": SITE_KEY}, "site_key_current": 2,
                                             "device_key": DEVICE_KEY,
                                             "mqtt_user": "cp-0001", "mqtt_password": "s3cret-pw"}))
    ser = serialization
    (d / "update.pem").write_bytes(UPDATE_KEY.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                                            ser.NoEncryption()))
    pub = UPDATE_KEY.public_key()
    (d / "update.pub.pem").write_bytes(pub.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    (d / "update.rsapub.pem").write_bytes(pub.public_bytes(ser.Encoding.PEM, ser.PublicFormat.PKCS1))
    return d


def args(d, out_dir, *extra, **replace):
    """A complete, valid command line; replace={flag: value or None to drop it}."""
    opts = {"--board": "esp32_devkit", "--device-id": "cp-0001", "--keys": str(d / "keys.json"),
            "--broker": "mqtt.example.org", "--ca": str(d / "ca.pem"), "--cert": str(d / "cert.pem"),
            "--key": str(d / "key.pem"), "--tariff": str(d / "tariff.json"), "--cards": str(d / "cards.csv"),
            "--utc-offset-min": "60", "--dst": "EU", "--out": str(out_dir), "--update-pubkey": UPDATE_PUBKEY}
    for k, v in replace.items():
        opts["--" + k.replace("_", "-")] = v
    argv = []
    for k, v in opts.items():
        if v is not None:
            argv += [k, v]
    return argv + list(extra)


def run(argv, capsys):
    rc = provision.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_no_raw_uid(texts):
    """No raw UID in any case, with or without separators."""
    for text in texts:
        flat = "".join(ch for ch in text.lower() if ch not in ": -\n")
        for _, uid in CARDS:
            assert uid not in flat


def test_round_trip(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = run(args(inputs, out), capsys)
    assert rc == 0, err
    assert sorted(os.listdir(out)) == ["backend", "board.json", "broker", "ca.pem", "cert.pem", "config.json",
                                       "key.pem", "secrets.json"]
    assert sorted(os.listdir(out / "broker")) == ["acl", "passwd"]
    assert sorted(os.listdir(out / "backend")) == ["auth.json", "labels.csv"]
    cfg = json.loads((out / "config.json").read_text())
    sec = json.loads((out / "secrets.json").read_text())
    assert cfg["device_id"] == "cp-0001"
    assert cfg["mqtt"] == {"host": "mqtt.example.org", "port": 8883, "tls": True, "keepalive_s": 60, "ca": "ca.pem"}
    assert cfg["site"] == {"utc_offset_min": 60, "dst": "EU"}
    assert cfg["ota"] == {"public_key": UPDATE_PUBKEY}
    assert cfg["auth"] == {"LocalAuthorizeOffline": True, "LocalPreAuthorize": True,
                           "AllowOfflineTxForUnknownId": False, "AuthorizeRemoteTxRequests": True}   # remote starts checked
    Tariff(cfg["tariff"])
    assert cfg["tariff"] == TARIFF
    entries = {e["token"]: e for e in cfg["local_list"]["entries"]}
    assert cfg["local_list"]["version"] == 1
    assert sorted(entries) == sorted(token(uid) for _, uid in CARDS)   # current key: version 2
    assert [e["token"] for e in cfg["local_list"]["entries"]] == sorted(entries)
    assert entries[token(CARDS[0][1])] == {"token": token(CARDS[0][1]), "key": 2, "status": "Accepted",
                                           "expiry": None, "group": None, "max_current_a": None, "max_kwh": None,
                                           "offpeak_only": False}
    assert entries[token(CARDS[1][1])] == {"token": token(CARDS[1][1]), "key": 2, "status": "Blocked",
                                           "expiry": "2027-01-01T00:00:00Z", "group": "fleet-a", "max_current_a": 16,
                                           "max_kwh": "20", "offpeak_only": True}
    assert entries[token(CARDS[2][1])]["max_kwh"] == "7.5"
    assert sec == {"site_keys": {"1": OLD_KEY, "2": SITE_KEY}, "site_key_current": 2, "site_key_accept": [1, 2],
                   "device_key": DEVICE_KEY, "mqtt_user": "cp-0001", "mqtt_password": "s3cret-pw",
                   "tls_cert": "cert.pem", "tls_key": "key.pem"}
    with open(os.path.join(ROOT, "board_configs", "esp32_devkit.json"), "rb") as f:
        assert (out / "board.json").read_bytes() == f.read()
    assert (out / "ca.pem").read_text() == PEM_CERT and (out / "key.pem").read_text() == PEM_KEY
    assert os.stat(out / "secrets.json").st_mode & 0o077 == 0 and os.stat(out / "key.pem").st_mode & 0o077 == 0
    assert "3 cards" in stdout
    assert_no_raw_uid([p.read_text() for p in out.rglob("*") if p.is_file()] + [stdout, err])


def test_json_cards_give_the_same_list(inputs, tmp_path, capsys):
    (inputs / "cards.json").write_text(json.dumps({"cards": [
        {"uid": CARDS[0][0]}, {"uid": CARDS[1][0], "status": "Blocked", "expiry": "2027-01-01T00:00:00Z",
                               "group": "fleet-a", "max_current_a": 16, "max_kwh": "20", "offpeak_only": True},
        {"uid": CARDS[2][0], "max_kwh": "7.5"}]}))
    assert run(args(inputs, tmp_path / "csv"), capsys)[0] == 0
    assert run(args(inputs, tmp_path / "json", cards=str(inputs / "cards.json")), capsys)[0] == 0
    a = json.loads((tmp_path / "csv" / "config.json").read_text())["local_list"]
    b = json.loads((tmp_path / "json" / "config.json").read_text())["local_list"]
    assert a == b


def test_plain_network_and_site_key_on_the_command_line(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = run(args(inputs, out, "--no-tls", "--site-key", "1:" + SITE_KEY,
                          "--update-keyfile", str(inputs / "update.pem"),   # a private key: its public part
                          "--auth-policy", "AllowOfflineTxForUnknownId=true", keys=None, ca=None, cert=None, key=None,
                          broker="10.0.0.5:1884", update_pubkey=None), capsys)
    assert rc == 0, err
    cfg = json.loads((out / "config.json").read_text())
    sec = json.loads((out / "secrets.json").read_text())
    assert cfg["mqtt"] == {"host": "10.0.0.5", "port": 1884, "tls": False, "keepalive_s": 60}
    assert cfg["auth"]["AllowOfflineTxForUnknownId"] is True
    assert sec["site_keys"] == {"1": SITE_KEY} and "tls_cert" not in sec and "mqtt_password" not in sec
    assert "tls_key" not in sec and sec["mqtt_user"] == "cp-0001"
    assert None not in sec.values()   # settings.py refuses a present null
    assert len(sec["device_key"]) == 64 and sec["device_key"] != DEVICE_KEY   # generated, kept in --out
    assert sorted(os.listdir(out)) == ["backend", "board.json", "config.json", "secrets.json"]
    assert {e["key"] for e in cfg["local_list"]["entries"]} == {1}
    assert cfg["ota"] == {"public_key": UPDATE_PUBKEY} and sec["site_key_accept"] == [1]
    assert "PRIVATE" not in json.dumps(cfg) + json.dumps(sec)


def _pbkdf2_ok(line, user, password):
    """A mosquitto 2 password_file line checked here independently of tools/broker.py."""
    name, _, rest = line.rstrip("\n").partition(":")
    _, kind, rounds, salt, digest = rest.split("$")
    return name == user and kind == "7" and base64.b64decode(digest) == hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(rounds))


def test_the_mqtt_password_is_random_and_the_broker_gets_its_entry(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CP_MQTT_PASSWORD", raising=False)
    keys = json.loads((inputs / "keys.json").read_text())
    del keys["mqtt_password"]
    (inputs / "keys.json").write_text(json.dumps(keys))
    got = []
    for name in ("a", "b"):
        rc, stdout, err = run(args(inputs, tmp_path / name), capsys)
        assert rc == 0, err
        sec = json.loads((tmp_path / name / "secrets.json").read_text())
        assert sec["mqtt_user"] == "cp-0001" and len(sec["mqtt_password"]) >= 20
        passwd = (tmp_path / name / "broker" / "passwd").read_text()
        assert passwd.count("\n") == 1 and _pbkdf2_ok(passwd, "cp-0001", sec["mqtt_password"])
        assert os.stat(tmp_path / name / "broker" / "passwd").st_mode & 0o077 == 0
        assert sec["mqtt_password"] not in stdout + err + passwd
        acl = (tmp_path / name / "broker" / "acl").read_text().splitlines()
        assert acl[0] == "user cp-0001"
        assert sorted(acl[1:]) == sorted(["topic write cp/v1/cp-0001/%s" % t for t in (
            "status", "session", "fault", "feedback", "meter", "stats", "auth/req", "cmd_ack")] + [
            "topic read cp/v1/cp-0001/%s" % t for t in ("cmd/+", "ack", "auth/resp")])
        assert "broker/" in stdout and "docs/security.md" in stdout
        got.append(sec["mqtt_password"])
    assert got[0] != got[1]
    monkeypatch.setenv("CP_MQTT_PASSWORD", "from-the-environment")
    assert run(args(inputs, tmp_path / "env"), capsys)[0] == 0
    assert json.loads((tmp_path / "env" / "secrets.json").read_text())["mqtt_password"] == "from-the-environment"


def test_the_secrets_never_hold_a_null(inputs, tmp_path, capsys):
    """firmware/core/settings.py refuses `"mqtt_user": null` (the charger did not boot)."""
    keys = json.loads((inputs / "keys.json").read_text())
    keys.update(mqtt_user=None, mqtt_password=None, device_key=None)   # as in secrets.example.json
    (inputs / "keys.json").write_text(json.dumps(keys))
    for name, extra, change in (("tls", (), {"cert": None, "key": None}),
                                ("plain", ("--no-tls",), {"ca": None, "cert": None, "key": None})):
        rc, _, err = run(args(inputs, tmp_path / name, *extra, **change), capsys)
        assert rc == 0, err
        sec = json.loads((tmp_path / name / "secrets.json").read_text())
        assert None not in sec.values() and sec["mqtt_user"] == "cp-0001", sec
        s = boot_settings(tmp_path / name)   # the charger boots on them
        assert s.mqtt.user == "cp-0001" and (s.mqtt.password is None) == (name == "plain")
    with open(os.path.join(ROOT, "secrets.example.json")) as f:
        assert None not in json.load(f).values()


def test_another_mqtt_user_is_refused(inputs, tmp_path, capsys):
    keys = json.loads((inputs / "keys.json").read_text())
    keys["mqtt_user"] = "backend"
    (inputs / "keys.json").write_text(json.dumps(keys))
    rc, _, err = run(args(inputs, tmp_path / "out"), capsys)
    assert rc == 2 and "mqtt_user: the MQTT user name is the device id (cp-0001)" in err
    assert not (tmp_path / "out").exists()


def test_the_broker_entry_lets_the_charger_in_and_a_wrong_password_is_refused(inputs, tmp_path, capsys):
    """The files as an operator appends them to a locked-down mosquitto; the firmware connects with
    the secrets provision wrote; a wrong password, or the password under another name, is refused."""
    keys = json.loads((inputs / "keys.json").read_text())
    del keys["mqtt_password"], keys["mqtt_user"]
    (inputs / "keys.json").write_text(json.dumps(keys))
    out = tmp_path / "out"
    assert run(args(inputs, out, device_id="cp-prov-0001"), capsys)[0] == 0
    password = json.loads((out / "secrets.json").read_text())["mqtt_password"]
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"board": "sim", "start": "2026-03-02T07:00:00Z", "device_id": "cp-prov-0001",
                                    "cards": {}, "allow": [], "events": [{"t": 10, "plug": True}], "end": 60}))
    lines = []
    with Broker() as broker:
        broker.append((out / "broker" / "passwd").read_text(), (out / "broker" / "acl").read_text())
        assert mqtt_connect("127.0.0.1", broker.port, "cp-prov-0001", password) == 0
        assert mqtt_connect("127.0.0.1", broker.port, "cp-prov-0001", password[:-1] + "!") == 5
        assert mqtt_connect("127.0.0.1", broker.port, "cp-prov-0002", password) == 5
        assert mqtt_connect("127.0.0.1", broker.port, "cp-prov-0001") == 5
        db = str(tmp_path / "backend.sqlite")
        backend = Backend(db, **broker.client_args("backend"), auth={}, out=lambda line: None).start()
        assert backend.wait_connected()
        runner = broker.login("backend")
        rc = sim.run(str(scenario), sim.Logins(broker.address, password, runner["username"], runner["password"],
                                           broker.fleet_key),
                     raw=True, out=lines.append)
        assert backend.wait_idle(0.5, timeout=20)
        backend.stop()
        assert backend.counts["stored"] >= 1   # the charger's retained online status, at least
    events = [json.loads(line[2:]) for line in lines if line.startswith("@ ")]
    assert rc == 0, "\n".join(lines[-20:])
    assert [e["state"] for e in events if e["ev"] == "mqtt"][:1] == ["connected"]


def _write(path, text):
    path.write_text(text)
    return str(path)


REFUSALS = [
    ("no site key", lambda d: {"keys": None}, "site_keys: no site key given"),
    ("short key", lambda d: {"keys": None, "site_key": "1:" + SITE_KEY[:30]},
     "site_keys[1] must be at least 16 bytes"),
    ("placeholder key", lambda d: {"keys": None, "site_key": "1:" + "00" * 32},
     "site_keys[1] looks like a placeholder"),
    ("template keys", lambda d: {"keys": os.path.join(ROOT, "secrets.example.json")}, "site_keys[1] must be hex"),
    ("no update key", lambda d: {"keys": None, "site_key": "1:" + SITE_KEY, "update_pubkey": None},
     "ota.public_key: give the firmware update public key"),
    ("two update keys", lambda d: {"update_keyfile": str(d / "update.pub.pem")},
     "ota.public_key: give the firmware update public key once"),
    ("update key too short", lambda d: {"update_pubkey": UPDATE_PUBKEY[:-2]},
     "ota.public_key: public key must be an RSA-2048 or RSA-3072 modulus"),
    ("update key not hex", lambda d: {"update_pubkey": "x" * 512}, "ota.public_key: public key must be hex digits"),
    ("update keyfile not a key", lambda d: {"update_pubkey": None, "update_keyfile": _write(d / "u.pem", PEM_CERT)},
     "ota.public_key: "),
    ("update keyfile missing", lambda d: {"update_pubkey": None, "update_keyfile": str(d / "none.pem")},
     "ota.public_key: cannot read"),
    ("hmac update key", lambda d: {"keys": _write(d / "k.json", json.dumps(
        {"site_keys": {"1": SITE_KEY}, "update_key": "c0ffee00" * 8}))},
     "update_key: the HMAC update key is no longer used"),
    ("accept without current", lambda d: {"site_key_accept": "1"},
     "site_key_accept: must include the current version 2"),
    ("accept unknown version", lambda d: {"site_key_accept": "2,3"}, "site_key_accept: give versions that have a key"),
    ("long name", lambda d: {"cards": _write(d / "c.csv", "uid,name\nDEADBEEF,%s\n" % ("x" * 101))},
     "line 2: name must be text of at most 100 characters"),
    ("invalid tariff", lambda d: {"tariff": _write(d / "t.json", json.dumps(dict(TARIFF, currency="EURO")))},
     "tariff: tariff.currency must be an ISO 4217 code"),
    ("tariff not json", lambda d: {"tariff": _write(d / "t.json", "{nope")}, "tariff:"),
    ("5-byte uid", lambda d: {"cards": _write(d / "c.csv", "uid\nDEADBEEF\n0102030405\n")},
     "c.csv line 3: uid must be 4, 7 or 10 bytes of hex"),
    ("non-hex uid", lambda d: {"cards": _write(d / "c.csv", "uid\nDEADBEEG\n")}, "c.csv line 2: uid must be"),
    ("duplicate card", lambda d: {"cards": _write(d / "c.csv", "uid\nDEADBEEF\nde:ad:be:ef\n")}, "listed twice"),
    ("bad status", lambda d: {"cards": _write(d / "c.csv", "uid,status\nDEADBEEF,Maybe\n")}, "line 2: status must be"),
    ("bad current", lambda d: {"cards": _write(d / "c.csv", "uid,max_current_a\nDEADBEEF,100\n")},
     "line 2: max_current_a must be"),
    ("unknown column", lambda d: {"cards": _write(d / "c.csv", "uid,email\nDEADBEEF,alice@example.org\n")},
     "unknown column(s) email"),
    ("unknown board", lambda d: {"board": "esp32_nonexistent"}, "board: unknown board 'esp32_nonexistent'"),
    ("bad device id", lambda d: {"device_id": "cp/0001"}, "device_id:"),
    ("password without tls", lambda d: {"ca": None, "cert": None, "key": None, "broker": "10.0.0.5"},
     "mqtt.ca: TLS needs"),
    ("cert without key", lambda d: {"key": None}, "tls_cert/tls_key: give both"),
    ("ca not pem", lambda d: {"ca": _write(d / "x.pem", "hello")}, "mqtt.ca: "),
    ("no broker", lambda d: {"broker": None}, "mqtt.host: --broker"),
]


@pytest.mark.parametrize("name,change,message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_field_and_write_nothing(inputs, tmp_path, capsys, name, change, message):
    out = tmp_path / "out"
    rc, stdout, err = run(args(inputs, out, **change(inputs)), capsys)
    assert rc == 2
    assert message in err and "nothing written" in err
    assert not out.exists()
    assert_no_raw_uid([stdout, err])


def test_password_over_plain_tcp_is_refused(inputs, tmp_path, capsys):
    rc, _, err = run(args(inputs, tmp_path / "out", "--no-tls", ca=None, cert=None, key=None), capsys)
    assert rc == 2 and "mqtt_password: sending a password over plain TCP is unsafe" in err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_board_writes_nothing(inputs, tmp_path, capsys):
    rc, _, err = run(args(inputs, tmp_path / "out", port="/dev/cp-no-such-tty"), capsys)
    assert rc == 2 and "board: reaching the board at /dev/cp-no-such-tty failed" in err and "nothing written" in err
    assert not (tmp_path / "out").exists()


def test_a_generated_device_key_needs_out(inputs, tmp_path, capsys):
    rc, _, err = run(args(inputs, None, "--site-key", "1:" + SITE_KEY, keys=None,
                          out=None, port="/dev/cp-no-such-tty"), capsys)
    assert rc == 2 and "device_key: no key given" in err


def test_board_command_lines(tmp_path):
    files = {"config.json": b"{}", "secrets.json": b"{}", "board.json": b"{}"}
    probe, copy, swap = provision.board_commands(files, "/dev/ttyUSB0", "/stage", mpremote="mpremote")
    assert probe[:4] == ["mpremote", "connect", "/dev/ttyUSB0", "exec"]
    assert copy == ["mpremote", "connect", "/dev/ttyUSB0", "fs", "cp", "/stage/board.json", ":board.json.new", "+",
                    "fs", "cp", "/stage/config.json", ":config.json.new", "+",
                    "fs", "cp", "/stage/secrets.json", ":secrets.json.new"]
    assert swap[:4] == ["mpremote", "connect", "/dev/ttyUSB0", "exec"]
    assert "os.rename(n + '.new', n)" in swap[4] and "'secrets.json'" in swap[4]


class FakeBoard:
    """The MicroPython unix port's REPL on a pseudo-terminal, for mpremote to talk to.

    A bridge copies bytes between mpremote's terminal and MicroPython's. The unix port has
    the raw REPL but no soft reset, so the bridge answers mpremote's soft-reset request the
    way a board does; everything else is the real interpreter writing real files in `root`.
    """

    BANNER = b"raw REPL; CTRL-B to exit\r\n>"

    def __init__(self, root, micropython):
        self.mp_master, mp_slave = pty.openpty()
        self.master, self.slave = pty.openpty()
        tty.setraw(mp_slave)
        tty.setraw(self.slave)
        self.proc = subprocess.Popen([micropython], stdin=mp_slave, stdout=mp_slave, stderr=mp_slave, cwd=root)
        os.close(mp_slave)
        self.port = os.ttyname(self.slave)
        self._tail = b""
        self._fresh = False
        self._stop = False
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()
        time.sleep(0.3)

    def _pump(self):
        while not self._stop:
            ready, _, _ = select.select([self.mp_master, self.master], [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if fd == self.mp_master:
                    self._tail = (self._tail + data)[-64:]
                    self._fresh = self._fresh or self._tail.endswith(self.BANNER)
                    os.write(self.master, data)
                elif data == b"\x04" and self._fresh:
                    self._fresh = False
                    os.write(self.master, b"OK\r\nMPY: soft reboot\r\n" + self.BANNER)
                else:
                    self._fresh = False
                    os.write(self.mp_master, data)

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.proc.kill()
        self.proc.wait()
        for fd in (self.master, self.slave, self.mp_master):
            os.close(fd)


def test_port_writes_the_files_onto_a_micropython_filesystem(inputs, tmp_path, capsys):
    micropython = os.path.join(ROOT, ".venv", "bin", "micropython")
    if not os.path.exists(micropython):
        pytest.skip("the MicroPython unix port is not in .venv (make setup)")
    root = tmp_path / "board"
    root.mkdir()
    (root / "config.json").write_text("old")
    board = FakeBoard(str(root), micropython)
    try:
        rc, stdout, err = run(args(inputs, tmp_path / "out", port=board.port), capsys)
    finally:
        board.close()
    assert rc == 0, err
    assert "onto the board at %s" % board.port in stdout
    assert sorted(os.listdir(root)) == ["board.json", "ca.pem", "cert.pem", "config.json", "key.pem", "secrets.json"]
    for name in os.listdir(root):
        assert (root / name).read_bytes() == (tmp_path / "out" / name).read_bytes(), name
    assert_no_raw_uid([(root / n).read_text() for n in os.listdir(root)])


def test_help_shows_an_example():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "provision.py"), "--help"],
                       stdout=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0 and "example:" in r.stdout and "--cards" in r.stdout


def test_the_tariff_is_required_and_help_says_so(inputs, tmp_path, capsys):
    """Issue 14: --help showed [--tariff FILE] as optional while provisioning refused to go on without
    it. A charger prices every session and a guessed default would bill wrong: it is required."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "provision.py"), "--help"],
                       stdout=subprocess.PIPE, text=True, timeout=30)
    usage = " ".join(r.stdout.split("\n\n")[0].split())
    assert "--tariff FILE" in usage and "[--tariff FILE]" not in usage
    assert "--board BOARD" in usage and "[--board BOARD]" not in usage
    with pytest.raises(SystemExit) as e:
        provision.main(args(inputs, tmp_path / "out", tariff=None))
    assert e.value.code == 2
    assert "the following arguments are required: --tariff" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_card_names_and_the_backend_table_stay_on_the_operator_side(inputs, tmp_path, capsys):
    """A `name` column labels cards for people: it goes into backend/labels.csv (pseudonym -> name,
    every accepted key version), never into a file for the charger; backend/auth.json answers
    each card under every accepted version in tools/backend.py's --auth format."""
    (inputs / "named.csv").write_text("uid,status,max_current_a,name\n%s,,16,Alice Example\n"
                                      "%s,Blocked,,\"Bob, the Example\"\n%s,,,\n" % tuple(c[0] for c in CARDS))
    out = tmp_path / "out"
    rc, stdout, err = run(args(inputs, out, cards=str(inputs / "named.csv")), capsys)
    assert rc == 0, err
    with open(out / "backend" / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["token", "key", "name"]
    assert sorted(rows[1:]) == sorted([[token(CARDS[0][1], k), str(v), "Alice Example"]
                                       for v, k in ((1, OLD_KEY), (2, SITE_KEY))] +
                                      [[token(CARDS[1][1], k), str(v), "Bob, the Example"]
                                       for v, k in ((1, OLD_KEY), (2, SITE_KEY))])
    assert os.stat(out / "backend" / "labels.csv").st_mode & 0o077 == 0   # names are personal data
    table = load_auth(str(out / "backend" / "auth.json"))   # the backend takes it as it is
    assert sorted(table) == sorted(token(uid, k) for _, uid in CARDS for k in (OLD_KEY, SITE_KEY))
    assert table[token(CARDS[0][1], OLD_KEY)] == table[token(CARDS[0][1])] == {"status": "Accepted",
                                                                                "max_current_a": 16}
    assert table[token(CARDS[1][1])] == {"status": "Blocked"}
    board = provision.board_files(provision.build(provision.parse_args(args(inputs, out,
                                                                              cards=str(inputs / "named.csv")))))
    assert sorted(board) == ["board.json", "ca.pem", "cert.pem", "config.json", "key.pem", "secrets.json"]
    for name, data in board.items():
        assert b"Alice" not in data and b"Example" not in data, name
    for entry in json.loads(board["config.json"])["local_list"]["entries"]:
        assert "name" not in entry
    assert "Alice" not in stdout + err
    assert_no_raw_uid([p.read_text() for p in out.rglob("*") if p.is_file()] + [stdout, err])


def test_the_update_public_key_from_any_pem_form(inputs, tmp_path, capsys, monkeypatch):
    """--update-keyfile reads a public key (SPKI or PKCS#1) or the public part of the private key,
    encrypted too with $CP_UPDATE_KEY_PASSPHRASE; the charger's own parser takes the result."""
    ser = serialization
    (inputs / "update.enc.pem").write_bytes(UPDATE_KEY.private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.BestAvailableEncryption(b"open sesame")))
    monkeypatch.setenv("CP_UPDATE_KEY_PASSPHRASE", "open sesame")
    for name in ("update.pub.pem", "update.rsapub.pem", "update.pem", "update.enc.pem"):
        out = tmp_path / name
        rc, _, err = run(args(inputs, out, update_pubkey=None, update_keyfile=str(inputs / name)), capsys)
        assert rc == 0, err
        text = json.loads((out / "config.json").read_text())["ota"]["public_key"]
        assert text == UPDATE_PUBKEY and parse_public_key(text).n == UPDATE_KEY.public_key().public_numbers().n
        written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
        for pem in ("update.pem", "update.enc.pem"):   # nothing of the private key file is copied
            assert all(line not in written for line in (inputs / pem).read_bytes().splitlines()[1:-1])
    monkeypatch.delenv("CP_UPDATE_KEY_PASSPHRASE")
    rc, _, err = run(args(inputs, tmp_path / "x", update_pubkey=None, update_keyfile=str(inputs / "update.enc.pem")),
                     capsys)
    assert rc == 2 and "CP_UPDATE_KEY_PASSPHRASE" in err and "nothing written" in err
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    _write(inputs / "small.pem", small.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode())
    rc, _, err = run(args(inputs, tmp_path / "y", update_pubkey=None, update_keyfile=str(inputs / "small.pem")),
                     capsys)
    assert rc == 2 and "RSA-2048 or RSA-3072" in err


def test_site_key_accept_decides_which_keys_the_charger_holds(inputs, tmp_path, capsys):
    """docs/privacy.md: the overlap is site_key_accept; a version left out of it does not reach the
    charger (nor the backend table or the labels)."""
    keys = json.loads((inputs / "keys.json").read_text())
    keys["site_key_accept"] = [2]
    (inputs / "keys.json").write_text(json.dumps(keys))
    out = tmp_path / "out"
    assert run(args(inputs, out), capsys)[0] == 0
    sec = json.loads((out / "secrets.json").read_text())
    assert sec["site_keys"] == {"2": SITE_KEY} and sec["site_key_accept"] == [2] and sec["site_key_current"] == 2
    assert sorted(json.loads((out / "backend" / "auth.json").read_text())) == sorted(token(u) for _, u in CARDS)
    s = boot_settings(out)
    assert s.keys.accept == (2,)
    # the command line overrides the file: the overlap again, both versions on the charger
    assert run(args(inputs, tmp_path / "both", "--site-key-accept", "1,2"), capsys)[0] == 0
    sec = json.loads((tmp_path / "both" / "secrets.json").read_text())
    assert sec["site_keys"] == {"1": OLD_KEY, "2": SITE_KEY} and sec["site_key_accept"] == [1, 2]
    s = boot_settings(tmp_path / "both")
    assert s.keys.accept == (2, 1) and [v for v, _ in s.keys.tap(bytes.fromhex(CARDS[0][1]))] == [2, 1]


def test_provisioning_again_keeps_what_was_generated_and_moves_the_list_on(inputs, tmp_path, capsys, monkeypatch):
    """The same command into the same DIR: the generated device key and MQTT password are kept (the
    broker's entry stands), the list version stays while the list is the same and goes up by one when
    it changed (a rotation re-hashes it), since a charger takes a provisioned list only above its own."""
    monkeypatch.delenv("CP_MQTT_PASSWORD", raising=False)
    keys = {"site_keys": {"1": OLD_KEY}, "site_key_current": 1}
    (inputs / "keys.json").write_text(json.dumps(keys))
    out = tmp_path / "out"
    versions, secrets = [], []

    def again(*extra, **change):
        rc, stdout, err = run(args(inputs, out, *extra, **change), capsys)
        assert rc == 0, err
        versions.append(json.loads((out / "config.json").read_text())["local_list"]["version"])
        secrets.append(json.loads((out / "secrets.json").read_text()))
        return stdout

    stdout = again()
    assert "append passwd" in stdout
    stdout = again()
    assert "keeps the MQTT password" in stdout and "append passwd" not in stdout
    keys["site_keys"]["2"] = SITE_KEY   # rotation: a new current key re-hashes the list
    keys["site_key_current"] = 2
    (inputs / "keys.json").write_text(json.dumps(keys))
    again()
    again(cards=_write(inputs / "more.csv", "uid\nDEADBEEF\n"))   # a changed card list
    again("--list-version", "7")   # the operator's word wins
    again(device_id="cp-0002")     # another charger in that DIR starts afresh
    stdout = again("--new-mqtt-password", device_id="cp-0002")   # a password rotation (docs/security.md)
    assert "append passwd" in stdout
    assert versions == [1, 1, 2, 3, 7, 1, 1]
    assert len({s["device_key"] for s in secrets[:5]}) == 1 and len({s["mqtt_password"] for s in secrets[:5]}) == 1
    assert secrets[5]["device_key"] != secrets[0]["device_key"]
    assert secrets[5]["mqtt_password"] != secrets[0]["mqtt_password"]
    assert secrets[6]["device_key"] == secrets[5]["device_key"]
    assert secrets[6]["mqtt_password"] not in (secrets[5]["mqtt_password"], secrets[0]["mqtt_password"])
    line = (out / "broker" / "passwd").read_text()
    assert _pbkdf2_ok(line, "cp-0002", secrets[6]["mqtt_password"])


def test_the_device_key_is_derived_from_the_fleet_secret_as_the_backend_derives_it(inputs, tmp_path, capsys):
    from downlink import derive
    fleet = bytes(range(7, 39))
    (inputs / "fleet.key").write_text(fleet.hex() + "\n")
    keys = json.loads((inputs / "keys.json").read_text())
    keys.pop("device_key")
    (inputs / "keys.json").write_text(json.dumps(keys))
    out = tmp_path / "out"
    rc, _, err = run(args(inputs, out, "--fleet-key", str(inputs / "fleet.key")), capsys)
    assert rc == 0, err
    sec = json.loads((out / "secrets.json").read_text())
    assert sec["device_key"] == derive(fleet, "cp-0001").hex() != derive(fleet, "cp-0002").hex()
    rc, _, err = run(args(inputs, tmp_path / "o2", "--fleet-key", str(inputs / "fleet.key"), "--device-key",
                          DEVICE_KEY), capsys)
    assert rc == 2 and "differs from the one --fleet-key derives" in err
