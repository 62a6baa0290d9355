"""Issue 14: an operator follows docs/operations.md on a fresh clone. The provisioning command and
the card file are taken from the doc (marked blocks), run as written (only the board becomes the
simulated one and the broker a local one), the broker's entries are appended to a locked-down
mosquitto with TLS and client certificates, and the firmware boots on exactly the files that go
onto the board and charges a session that reaches the backend. Then the site key is rotated as
docs/privacy.md says: overlap (old list still matches), then the old key dropped."""
import csv
import hashlib
import hmac
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

import sim
from backend import Backend
from broker import Broker
from downlink import read_fleet_key
from scenario import normalise
from store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "operations.md")
TARIFF = {"id": "day-rate", "currency": "EUR", "elements": [{"price_components": [
    {"type": "ENERGY", "price": "0.3120", "vat": "19", "step_size": 1}]}]}
ALICE, BOB = "04A1B2C3D4E5F6", "DEADBEEF"   # the doc's card file
# a driver who charges with the first card (a session), then the blocked one is refused
DRIVE = {"board": "sim", "start": "2026-03-02T07:00:00Z", "cards": {"alice": ALICE, "bob": BOB},
         "events": [{"t": 10, "plug": True}, {"t": 15, "tap": "bob"}, {"t": 25, "tap": "alice"},
                    {"t": 30, "ev_current_a": 16}, {"t": 600, "tap": "alice"}, {"t": 620, "plug": False}],
         "end": 660}


def doc_block(marker):
    """The fenced block right after `<!-- marker` in docs/operations.md."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"<!-- %s\b[^\n]*-->\n\s*```\w*\n(.*?)\n\s*```" % re.escape(marker), text, re.S)
    assert m, "docs/operations.md has no block marked %s" % marker
    return "\n".join(line.strip() for line in m.group(1).splitlines())


def doc_command():
    """The documented command's argv (its first command, lines joined at the backslashes)."""
    first = doc_block("provision:example").split("\n\n")[0].replace("\\\n", " ")
    argv = shlex.split(first)
    assert argv[:2] == ["python3", "tools/provision.py"], argv
    return argv[2:]


def token(key_hex, uid_hex):
    """HMAC-SHA256(site key, UID), first 16 bytes: computed here, apart from the firmware's code."""
    return hmac.new(bytes.fromhex(key_hex), bytes.fromhex(uid_hex), hashlib.sha256).hexdigest()[:32]


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def _cert(d, name, ca=None, ext=None):
    """An EC key and certificate: self-signed (a CA) or signed by `ca`."""
    key, pem = str(d / ("%s.key" % name)), str(d / ("%s.pem" % name))
    if ca is None:
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                 "-subj", "/CN=%s" % name, "-keyout", key, "-out", pem)
        return
    csr = str(d / ("%s.csr" % name))
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=%s" % name,
             "-keyout", key, "-out", csr)
    extra = []
    if ext:
        (d / "ext.cnf").write_text(ext)
        extra = ["-extfile", str(d / "ext.cnf")]
    _openssl("x509", "-req", "-in", csr, "-CA", str(d / ("%s.pem" % ca)), "-CAkey", str(d / ("%s.key" % ca)),
             "-CAcreateserial", "-days", "2", "-out", pem, *extra)


@pytest.fixture
def operator(tmp_path):
    """The operator's working directory, with every input the documented command names."""
    d = tmp_path / "operator"
    pki = tmp_path / "pki"
    for p in (d, pki):
        p.mkdir()
    _cert(pki, "ca")
    _cert(pki, "localhost", "ca", "subjectAltName=DNS:localhost\n")   # the broker
    _cert(pki, "cp-0001", "ca")                                        # the charger's client certificate
    for p in pki.iterdir():
        p.chmod(0o644)   # mosquitto may run as another user
    shutil.copy(pki / "ca.pem", d / "ca.pem")
    shutil.copy(pki / "cp-0001.pem", d / "cp-0001.crt")
    shutil.copy(pki / "cp-0001.key", d / "cp-0001.key")
    # "cp secrets.example.json secrets.json", then one random key per REPLACE field
    with open(os.path.join(ROOT, "secrets.example.json")) as f:
        keys = json.load(f)
    assert keys["site_keys"]["1"].startswith("REPLACE")
    keys["site_keys"]["1"] = os.urandom(32).hex()
    (d / "secrets.json").write_text(json.dumps(keys, indent=1))
    # the update signing key: made with tools/bundle.py keygen (outside the project), public part with openssl
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bundle.py"), "keygen", "--out",
                        str(tmp_path / "keys" / "cp-update.pem")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _openssl("pkey", "-in", str(tmp_path / "keys" / "cp-update.pem"), "-pubout", "-out", str(d / "cp-update.pub.pem"))
    # the fleet secret, made as docs/operations.md says; the backend gets the same file
    (d / "fleet.key").write_text(os.urandom(32).hex() + "\n")
    (d / "tariff.json").write_text(json.dumps(TARIFF))
    (d / "cards.csv").write_text(doc_block("provision:cards") + "\n")
    return {"dir": d, "pki": pki, "site_key": keys["site_keys"]["1"],
            "public_key": json.loads(r.stdout)["ota"]["public_key"],
            "fleet_key": read_fleet_key(str(d / "fleet.key"))}


def provision(d, argv):
    """tools/provision.py as the operator runs it, in their directory."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "provision.py")] + argv, cwd=str(d),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def onto_board(out, root):
    """What --port copies: the files outside broker/ and backend/, into the board's filesystem root
    (its data directory stays, as on a board)."""
    os.makedirs(root, exist_ok=True)
    names = sorted(n for n in os.listdir(out) if os.path.isfile(os.path.join(out, n)))
    for n in names:
        shutil.copy(os.path.join(out, n), os.path.join(root, n))
    return names


def boot(root, scenario):
    """main.py with no file arguments (board.json, config.json, secrets.json from its directory, as
    on a board), the simulated world playing `scenario`; (exit status, lines, events)."""
    world = normalise(scenario, os.urandom(32))[0]   # the simulated silicon's, kept off the board's files
    path = os.path.join(os.path.dirname(root), "world.json")
    with open(path, "w") as f:
        json.dump(world, f)
    r = subprocess.run([sim.micropython_path(), os.path.join(ROOT, "main.py"), "--scenario", path],
                       cwd=root, env=sim.micropython_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    lines = r.stdout.splitlines()
    return r.returncode, lines, [json.loads(line[2:]) for line in lines if line.startswith("@ ")]


def start_backend(broker, operator, db, out):
    """tools/backend.py with its broker account, the operator's fleet secret and the provisioned --auth table."""
    return Backend(db, **dict(broker.client_args("backend"), fleet_key=operator["fleet_key"]),
                   auth=os.path.join(out, "backend", "auth.json"), ack_delay_s=0.05, out=lambda line: None).start()


def connected(events):
    """The charger's first MQTT connection attempt succeeded and everything was acknowledged."""
    return [e["state"] for e in events if e["ev"] == "mqtt"][:1] == ["connected"] and \
        [e for e in events if e["ev"] == "halt"][0]["queued"] == 0


def taps(events):
    """(result, token, how it was decided: the refusal's status, else the authorization method)."""
    return [(e["result"], e.get("token"), e.get("status") or e.get("auth")) for e in events if e["ev"] == "tap"]


def sessions(db):
    st = Store(db)
    rows = [tuple(r) for r in st.query("SELECT tx_id, token, key_version, tariff_id, energy_wh, currency, "
                                       "total_excl_minor, final FROM sessions ORDER BY tx_id")]
    st.close()
    return rows


def read_labels(out):
    with open(os.path.join(out, "backend", "labels.csv"), newline="") as f:
        return dict((r["token"], (int(r["key"]), r["name"])) for r in csv.DictReader(f))


def test_the_documented_command_provisions_a_charger_that_boots_and_charges(operator, tmp_path):
    d = operator["dir"]
    key1 = operator["site_key"]
    a1, b1 = token(key1, ALICE), token(key1, BOB)
    root = str(tmp_path / "board")
    db = str(tmp_path / "backend.sqlite")
    with Broker(tls={"ca": str(operator["pki"] / "ca.pem"), "cert": str(operator["pki"] / "localhost.pem"),
                     "key": str(operator["pki"] / "localhost.key"), "require_client": True}) as broker:
        argv = doc_command()
        changed = {"--board": "sim", "--broker": "localhost:%d" % broker.tls_port}
        for flag, value in changed.items():
            argv[argv.index(flag) + 1] = value
        stdout = provision(d, argv)
        out = str(d / "out" / "cp-0001")
        assert "2 cards in local list v1" in stdout
        cfg = json.load(open(os.path.join(out, "config.json")))
        assert cfg["ota"] == {"public_key": operator["public_key"]}
        assert cfg["tariff"] == TARIFF and cfg["mqtt"]["tls"] is True
        # the broker's entries, appended as docs/security.md says
        broker.append(*(open(os.path.join(out, "broker", n)).read() for n in ("passwd", "acl")))
        backend = start_backend(broker, operator, db, out)
        assert backend.wait_connected()
        on_board = onto_board(out, root)
        assert on_board == ["board.json", "ca.pem", "cert.pem", "config.json", "key.pem", "secrets.json"]
        rc, lines, events = boot(root, DRIVE)
        assert rc == 0, "\n".join(lines[-30:])
        assert [e for e in events if e["ev"] == "boot"][0]["device_id"] == "cp-0001"
        assert connected(events)
        assert taps(events) == [("refused", b1, "Blocked"), ("accepted", a1, "local_list"), ("stop", a1, None)]
        assert backend.wait_idle(0.5, timeout=20)

        # key rotation, step 1 (docs/privacy.md): new key 2 current, key 1 still accepted
        keys = json.loads((d / "secrets.json").read_text())
        key2 = os.urandom(32).hex()
        keys["site_keys"]["2"] = key2
        keys["site_key_current"] = 2
        (d / "secrets.json").write_text(json.dumps(keys))
        a2 = token(key2, ALICE)
        # the charger keeps the list it has (same list version), so only the overlap lets alice in
        stdout = provision(d, argv + ["--list-version", "1"])
        assert "key version 2" in stdout
        sec = json.load(open(os.path.join(out, "secrets.json")))
        assert sec["site_key_current"] == 2 and sec["site_key_accept"] == [1, 2]
        assert sec["site_keys"] == {"1": key1, "2": key2}
        auth = json.load(open(os.path.join(out, "backend", "auth.json")))
        assert sorted(auth) == sorted([a1, a2, b1, token(key2, BOB)])
        assert read_labels(out) == {a1: (1, "Alice Example"), a2: (2, "Alice Example"), b1: (1, "Bob Example"),
                                    token(key2, BOB): (2, "Bob Example")}
        backend.stop()   # the operator restarts the backend with the regenerated table
        backend = start_backend(broker, operator, db, out)
        assert backend.wait_connected()
        onto_board(out, root)
        rc, lines, events = boot(root, DRIVE)
        assert rc == 0, "\n".join(lines[-30:])
        # matched under key 1 (the old list), every record under the current key 2
        assert taps(events) == [("refused", token(key2, BOB), "Blocked"), ("accepted", a2, "local_list"),
                                ("stop", a2, None)]
        assert connected(events)   # provisioning again kept the password: the broker's entries stand
        assert backend.wait_idle(0.5, timeout=20)

        # step 3: the old key dropped, the list re-provisioned under key 2 (a version above the one the
        # charger holds: given here, since step 1 forced 1); online authorization first, answered from
        # the regenerated backend table
        del keys["site_keys"]["1"]
        (d / "secrets.json").write_text(json.dumps(keys))
        stdout = provision(d, argv + ["--list-version", "2", "--auth-policy", "LocalPreAuthorize=false"])
        assert "2 cards in local list v2" in stdout
        sec = json.load(open(os.path.join(out, "secrets.json")))
        assert sec["site_keys"] == {"2": key2} and sec["site_key_accept"] == [2]
        assert sorted(json.load(open(os.path.join(out, "backend", "auth.json")))) == sorted([a2, token(key2, BOB)])
        backend.stop()
        backend = start_backend(broker, operator, db, out)
        assert backend.wait_connected()
        onto_board(out, root)
        rc, lines, events = boot(root, DRIVE)
        assert rc == 0, "\n".join(lines[-30:])
        assert connected(events)
        assert ("accepted", a2, "online") in taps(events)
        assert not [t for t in taps(events) if t[1] in (a1, b1)]
        assert backend.wait_idle(0.5, timeout=20)
        backend.stop()
        assert backend.counts["auth"] >= 1
    with open(os.path.join(root, "data", "auth_list.jsonl")) as f:
        stored = f.read()
    assert a2 in stored and a1 not in stored   # the charger's list is under key 2 now

    rows = sessions(db)
    assert [(r[0], r[1], r[2], r[3], r[5], r[7]) for r in rows] == [
        (1, a1, 1, "day-rate", "EUR", 1), (2, a2, 2, "day-rate", "EUR", 1), (3, a2, 2, "day-rate", "EUR", 1)]
    for r in rows:
        # 16 A on one phase (the simulated EV) for ~9.5 minutes, priced with the provisioned tariff (0.312/kWh)
        assert 500 < r[4] < 700 and abs(r[6] - r[4] * 312 / 10000) <= 1, r
    assert read_labels(out)[rows[-1][1]] == (2, "Alice Example")   # the operator names a session's driver
    # names and raw UIDs are on the operator's side only: nowhere on the board, nowhere in the backend
    board_bytes = b"".join(open(os.path.join(dp, n), "rb").read() for dp, _, ns in os.walk(root) for n in ns)
    for secret in (b"Alice Example", b"Bob Example", ALICE.encode(), ALICE.lower().encode(), BOB.encode(),
                   BOB.lower().encode(), bytes.fromhex(ALICE), bytes.fromhex(BOB)):
        assert secret not in board_bytes


def test_a_closed_network_charger_without_a_password_connects(operator, tmp_path):
    """--no-tls (docs/operations.md: a closed network with a broker of its own): the secrets name the
    user (the device id) and no password; the charger must still connect to an open broker."""
    d = operator["dir"]
    root = str(tmp_path / "board")
    with Broker(open=True) as broker:
        argv = doc_command()
        for flag, value in {"--board": "sim", "--broker": broker.address}.items():
            argv[argv.index(flag) + 1] = value
        for flag in ("--ca", "--cert", "--key"):
            del argv[argv.index(flag):argv.index(flag) + 2]
        provision(d, argv + ["--no-tls"])
        sec = json.load(open(os.path.join(d, "out", "cp-0001", "secrets.json")))
        assert sec["mqtt_user"] == "cp-0001" and "mqtt_password" not in sec
        onto_board(os.path.join(d, "out", "cp-0001"), root)
        rc, lines, events = boot(root, DRIVE)
    assert rc == 0, "\n".join(lines[-30:])
    assert [e["state"] for e in events if e["ev"] == "mqtt"][:1] == ["connected"], \
        [e for e in events if e["ev"] == "mqtt"][:1]
