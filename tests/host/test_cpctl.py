"""tools/cpctl.py, the operator's command line: against the real firmware (a simulated charger on a
locked-down mosquitto, the reference backend recording every cmd_ack), and its input checks, which
must refuse before anything is sent."""
import hashlib
import hmac
import json
import os
import re
import shlex
import threading
import time

import paho.mqtt.client as mqtt
import pytest

import cpctl
import sim
from backend import Backend
from broker import Broker
from firmware.billing.tariff import flat
from scenario import ROOT
from store import Store

KEY = bytes(range(40, 72))           # the site key
ALICE, BOB = "04A1B2C3D4E5F6", "DEADBEEF"
DEVICE = "cp-0001"                   # as docs/operations.md names it
TAP_S = 16                           # the charger's tap of alice, after the commands below


def pseudo(uid):
    return hmac.new(KEY, bytes.fromhex(uid), hashlib.sha256).hexdigest()[:32]


def _write(path, content):
    with open(path, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))
    return path


class Rig:
    """Broker, in-process backend on a SQLite store, one real charger in real time, and cpctl's files."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.db = os.path.join(tmp, "backend.sqlite")
        self.backend_lines = []
        self.charger_lines = []
        self.sim = None

    def start(self):
        self.broker = Broker().__enter__()
        self.fleet = _write(os.path.join(self.tmp, "fleet.key"), self.broker.fleet_key.hex())
        self.keys = _write(os.path.join(self.tmp, "secrets.json"), {"site_keys": {"1": KEY.hex()},
                                                                    "site_key_current": 1})
        self.ctl_login = self.broker.login("backend")   # cpctl's own account of the backend role
        login = self.broker.login("backend")
        self.backend = Backend(self.db, "127.0.0.1", self.broker.port, username=login["username"],
                               password=login["password"], fleet_key=self.broker.fleet_key, ack_delay_s=0.05,
                               out=self.backend_lines.append)
        self.backend.start()
        assert self.backend.wait_connected(10)
        sc = {"board": "sim", "start": "2026-03-02T07:55:00Z", "device_id": DEVICE, "realtime": True,
              "cards": {"alice": ALICE, "bob": BOB}, "allow": ["alice"], "price_per_kwh": "0.30",
              "currency": "EUR", "events": [{"t": TAP_S, "tap": "alice"}], "end": TAP_S + 2}
        path = _write(os.path.join(self.tmp, "charger.json"), sc)
        self.thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while time.time() < deadline and not self.online():
            time.sleep(0.1)
        assert self.online(), "\n".join(self.charger_lines[-20:])
        return self

    def _run(self, path):
        self.sim = sim.simulate(path, broker=self.broker, site_key=KEY, out=self.charger_lines.append)

    def online(self):
        with Store(self.db) as st:
            row = st.status_of(DEVICE)
        return row is not None and row["state"] == "online"

    def ctl(self, *argv, db=None):
        """cpctl's exit status and its output lines, run as an operator would (password in the env)."""
        lines = []
        os.environ[cpctl.PASSWORD_ENV] = self.ctl_login["password"]
        try:
            rc = cpctl.main(list(argv) + ["--broker", "127.0.0.1:%d" % self.broker.port, "--user",
                                          self.ctl_login["username"], "--fleet-key", self.fleet, "--db", db or self.db],
                            out=lines.append)
        finally:
            del os.environ[cpctl.PASSWORD_ENV]
        return rc, lines

    def stop(self):
        self.thread.join(60)
        self.backend.stop()
        self.broker.__exit__()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(str(tmp_path_factory.mktemp("cpctl")))
    try:
        yield r.start()
    finally:
        r.stop()


def _stored_acks(db, cmd):
    with Store(db) as st:
        return st.cmd_acks_of(DEVICE, cmd)


def test_tariff_push_is_acked_and_recorded_by_the_backend(rig, tmp_path):
    tariff = _write(str(tmp_path / "tariff.json"), flat("0.42", "EUR", "19", "day-rate"))
    rc, lines = rig.ctl("tariff", tariff, "--device", DEVICE)
    assert rc == cpctl.OK, lines
    assert lines[0].startswith(DEVICE + " ok tariff") and '"version": 1' in lines[0], lines
    rc, lines = rig.ctl("tariff", tariff, "--device", DEVICE)   # the next version comes from the store
    assert rc == cpctl.OK and '"version": 2' in lines[0], lines
    time.sleep(0.3)
    assert any("cmd_ack tariff" in line and "accepted" in line for line in rig.backend_lines), rig.backend_lines
    assert [a["status"] for a in _stored_acks(rig.db, "tariff")] == ["accepted", "accepted"]


def test_full_list_then_a_card_blocked_by_uid(rig, tmp_path):
    cards = _write(str(tmp_path / "cards.csv"), "uid,status\n%s,Accepted\n%s,Accepted\n" % (ALICE, BOB))
    rc, lines = rig.ctl("list", "full", cards, "--keys", rig.keys, "--device", DEVICE)
    assert rc == cpctl.OK and '"entries": 2' in lines[0], lines
    rc, lines = rig.ctl("card", "block", ALICE, "--keys", rig.keys, "--device", DEVICE)
    assert rc == cpctl.OK and lines[0].startswith(DEVICE + " ok list_update"), lines
    assert not any(ALICE in line for line in lines + rig.backend_lines)   # the raw UID stays local


def doc_commands():
    """The argv of each command in docs/operations.md's block marked cpctl:example."""
    with open(os.path.join(ROOT, "docs", "operations.md"), encoding="utf-8") as f:
        m = re.search(r"<!-- cpctl:example\b[^\n]*-->\n```sh\n(.*?)\n```", f.read(), re.S)
    assert m, "docs/operations.md has no block marked cpctl:example"
    out = []
    for line in m.group(1).splitlines():
        if line.startswith("export "):
            assert line.split()[1].startswith(cpctl.PASSWORD_ENV + "=")
            continue
        argv = shlex.split(line)
        assert argv[:2] == [".venv/bin/python", "tools/cpctl.py"], argv
        out.append(argv[2:])
    return out


def test_the_documented_commands_run(rig, tmp_path):
    files = {"tariff.json": _write(str(tmp_path / "t.json"), flat("0.3120", "EUR", "19", "day-rate")),
             "cards.csv": _write(str(tmp_path / "c.csv"), "uid,name\n%s,Alice\n%s,Bob\n" % (ALICE, BOB)),
             "secrets.json": rig.keys, "fleet.key": rig.fleet, "out/backend.sqlite": rig.db,
             "ctl-1": rig.ctl_login["username"]}
    commands = doc_commands()
    assert [argv[0] for argv in commands] == ["tariff", "list", "card", "acks"]
    os.environ[cpctl.PASSWORD_ENV] = rig.ctl_login["password"]
    try:
        for argv in commands:
            lines = []
            argv = [files.get(a, a) for a in argv] + ["--broker", "127.0.0.1:%d" % rig.broker.port]
            assert cpctl.main(argv, out=lines.append) == cpctl.OK, (argv, lines)
            assert lines and all(DEVICE in line.split()[:2] for line in lines), lines
    finally:
        del os.environ[cpctl.PASSWORD_ENV]


def test_a_refused_command_prints_its_reason_and_exits_1(rig):
    rc, lines = rig.ctl("clear-fault", "--device", DEVICE)
    assert rc == cpctl.REFUSED
    assert lines == ["%s refused clear_fault: no latched fault to clear" % DEVICE]


def test_a_counter_from_another_store_is_refused_with_a_hint(rig, tmp_path):
    other = str(tmp_path / "other.sqlite")
    Store(other).close()   # a store whose counters start again at 1
    rc, lines = rig.ctl("stop", "--device", DEVICE, db=other)
    assert rc == cpctl.REFUSED
    assert "unauthenticated: replayed or out of order" in lines[0] and "--db" in lines[0], lines
    assert "the backend has not recorded 1 answer(s)" in lines[1]   # no backend on that store: kept by cpctl
    assert [a["status"] for a in _stored_acks(other, "remote_stop")] == ["rejected"]


def manifest(**changes):
    """A cmd/update payload with every field well formed (the signature is not a real one)."""
    m = {"id": "u-9.9.9-test", "url": "https://updates.example.org/cp.bin", "version": "9.9.9", "target": "*",
         "expires": "2030-01-01T00:00:00Z", "rollback": False, "size": 1000, "sha256": "ab" * 32, "sig": "cd" * 256}
    m.update(changes)
    return m


def test_an_update_reaches_the_charger_which_checks_it(rig, tmp_path):
    path = _write(str(tmp_path / "update.json"), manifest())
    rc, lines = rig.ctl("update", path, "--device", DEVICE)
    assert rc == cpctl.REFUSED   # the simulated charger has no update key: its own reason says so
    assert lines[0].startswith(DEVICE + " refused update: ") and "update" in lines[0].split(":", 1)[1], lines


def test_a_wrong_broker_password_sends_nothing(rig, capsys):
    os.environ[cpctl.PASSWORD_ENV] = "not-the-password"
    try:
        start = time.time()
        rc = cpctl.main(["stop", "--device", DEVICE, "--broker", "127.0.0.1:%d" % rig.broker.port, "--user",
                         rig.ctl_login["username"], "--fleet-key", rig.fleet, "--db", rig.db], out=print)
    finally:
        del os.environ[cpctl.PASSWORD_ENV]
    assert rc == cpctl.BAD_INPUT and time.time() - start < 5
    assert "refused the login" in capsys.readouterr().err


def test_an_unreachable_device_times_out_with_exit_3(rig):
    start = time.time()
    rc, lines = rig.ctl("stop", "--device", DEVICE, "--device", "cp-ghost", "--timeout", "1")
    assert rc == cpctl.TIMEOUT
    assert lines[0].startswith(DEVICE + " refused remote_stop")   # the live one still answers
    assert lines[1] == "cp-ghost timeout remote_stop: no cmd_ack within 1 s"
    assert time.time() - start < 5
    rc, lines = rig.ctl("card", "expire", BOB, "--keys", rig.keys, "--device", "cp-ghost", "--timeout", "0.5")
    assert rc == cpctl.TIMEOUT and lines == ["cp-ghost timeout list_version: no cmd_ack within 0.5 s"]


def test_bad_input_exits_2_and_sends_nothing(rig, tmp_path, capsys):
    seen = []
    watch = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="obs")
    watch.username_pw_set(**rig.broker.login("observer"))
    watch.on_message = lambda c, u, m: seen.append(m.topic)
    watch.connect("127.0.0.1", rig.broker.port)
    watch.subscribe("cp/v1/+/cmd/#", qos=1)
    watch.loop_start()
    with Store(rig.db) as st:
        before = st.query("SELECT ctr FROM counters WHERE device = ?", (DEVICE,))
    bad_tariff = _write(str(tmp_path / "bad.json"), {"id": "x", "currency": "euro", "elements": []})
    low = _write(str(tmp_path / "low.json"), {"periods": [[0, 3]]})
    try:
        for argv, why in (
                (["tariff", bad_tariff, "--device", DEVICE], "tariff.currency"),
                (["profile", "station_max", low, "--device", DEVICE], "limit_a"),
                (["card", "block", "0BADCAF", "--keys", rig.keys, "--device", DEVICE], "uid must be"),
                (["card", "add", ALICE, "--device", DEVICE], "--keys"),
                (["clear-fault", "--device", "cp/+/#"], "not a device id"),
                (["clear-fault"], "no device")):
            rc, lines = rig.ctl(*argv)
            err = capsys.readouterr().err
            assert rc == cpctl.BAD_INPUT and lines == [], (argv, lines)
            assert why in err and "nothing sent" in err, (argv, err)
            assert "0BADCAF" not in err
        time.sleep(0.3)
    finally:
        watch.loop_stop()
        watch.disconnect()
    assert seen == []
    with Store(rig.db) as st:
        assert st.query("SELECT ctr FROM counters WHERE device = ?", (DEVICE,)) == before


def test_the_blocked_card_is_refused_at_the_tap(rig):
    rig.thread.join(60)
    assert rig.sim is not None and rig.sim.rc == 0, "\n".join(rig.charger_lines[-30:])
    taps = [ev for _, ev in rig.sim.events if ev.get("ev") == "tap"]
    assert [(t.get("result"), t.get("status"), t.get("token")) for t in taps] == [("refused", "Blocked", pseudo(ALICE))]
    tariffs = [ev for _, ev in rig.sim.events if ev.get("ev") == "tariff"]
    assert [(t["version"], t["id"]) for t in tariffs if t["version"]] == [(v, "day-rate") for v in (1, 2, 3)]


def test_acks_lists_what_the_store_holds(rig):
    rc, lines = rig.ctl("acks", "--device", DEVICE, "--limit", "50")
    assert rc == cpctl.OK
    cmds = [line.split()[2] for line in lines]
    for cmd in ("tariff", "list_update", "list_version", "clear_fault", "remote_stop"):
        assert cmd in cmds, lines


# --- input checks without a charger -------------------------------------------------------------

@pytest.fixture
def offline(tmp_path):
    """A store, a fleet key and site keys, and no broker at all: anything that got as far as
    connecting would fail with a different message."""
    db = str(tmp_path / "b.sqlite")
    with Store(db) as st:
        st.add_cmd_ack("cp-a", {"id": "t1", "cmd": "tariff", "status": "accepted", "version": 7}, 1)
        st.add_cmd_ack("cp-a", {"id": "t2", "cmd": "tariff", "status": "rejected", "reason": "x", "version": 9}, 2)
    files = {"db": db, "fleet": _write(str(tmp_path / "fleet.key"), bytes(range(32)).hex()),
             "keys": _write(str(tmp_path / "s.json"), {"site_keys": {"1": KEY.hex()}})}

    def ctl(*argv):
        lines = []
        rc = cpctl.main(list(argv) + ["--db", db, "--fleet-key", files["fleet"], "--broker", "127.0.0.1:9"],
                        out=lines.append)
        return rc, lines
    files["ctl"] = ctl
    return files


def test_the_next_tariff_version_is_one_above_the_last_accepted(offline):
    with Store(offline["db"]) as st:
        assert cpctl.tariff_version(st, "cp-a") == 8
        assert cpctl.tariff_version(st, "cp-new") == 1


def test_targets_from_a_file_and_the_store(offline, tmp_path):
    listing = _write(str(tmp_path / "devs.txt"), "# depot\ncp-b\n\ncp-a  # again\n")
    args = cpctl.parser().parse_args(["stop", "--device", "cp-a", "--devices", listing, "--all"])
    with Store(offline["db"]) as st:
        assert cpctl.targets(args, st) == ["cp-a", "cp-b"]
    bad = _write(str(tmp_path / "bad.txt"), "cp-1\ncp 2\n")
    with pytest.raises(cpctl.InputError, match="line 2"):
        cpctl.read_devices(bad)


@pytest.mark.parametrize("argv, why", [
    (["stop", "--device", "cp-a", "--timeout", "0"], "--timeout"),
    (["profile", "tx_default", "--device", "cp-a"], "FILE or --clear"),
    (["update", "missing.json", "--device", "cp-a"], "missing.json"),
    (["card", "add", "04A1B2C3D4E5F6", "--keys", "nope.json", "--device", "cp-a"], "nope.json"),
    (["card", "add", "04A1B2C3D4E5F6", "--max-current-a", "99", "--device", "cp-a"], "max_current_a"),
    (["stop", "--device", "cp-a", "--user", "ops"], "CP_CTL_PASSWORD"),
])
def test_bad_arguments_exit_2_before_connecting(offline, argv, why, capsys, monkeypatch):
    monkeypatch.delenv(cpctl.PASSWORD_ENV, raising=False)
    if "--keys" not in argv and argv[0] == "card":
        argv = argv + ["--keys", offline["keys"]]
    rc, lines = offline["ctl"](*argv)
    err = capsys.readouterr().err
    assert rc == cpctl.BAD_INPUT and lines == []
    assert why in err and "broker" not in err, err


def _build(*argv):
    return cpctl.build(cpctl.parser().parse_args(list(argv)))


def test_cards_are_sent_as_pseudonyms_under_every_accepted_key(tmp_path):
    key2 = bytes(range(80, 112))
    keys = _write(str(tmp_path / "s.json"), {"site_keys": {"1": KEY.hex(), "2": key2.hex()}, "site_key_current": 2})
    block = _build("card", "block", "04:a1:b2:c3:d4:e5:f6", "--keys", keys)
    assert block.name == "list_update" and block.version == "list"
    tok2 = hmac.new(key2, bytes.fromhex(ALICE), hashlib.sha256).hexdigest()[:32]
    assert block.payload == {"type": "diff", "entries": [{"token": pseudo(ALICE), "key": 1, "status": "Blocked"},
                                                         {"token": tok2, "key": 2, "status": "Blocked"}]}
    add = _build("card", "add", ALICE, "--keys", keys, "--max-kwh", "7.5", "--group", "fleet", "--list-version", "9")
    assert add.version is None and add.for_device() == {
        "id": add.cid, "type": "diff", "version": 9,
        "entries": [{"token": tok2, "key": 2, "status": "Accepted", "group": "fleet", "max_kwh": "7.5"}]}
    gone = _build("card", "remove", ALICE, "--keys", keys)
    assert [e.get("remove") for e in gone.payload["entries"]] == [True, True]
    start = _build("start", ALICE, "--keys", keys, "--max-current-a", "16")
    assert start.payload == {"token": tok2, "key": 2, "max_current_a": 16}
    assert ALICE not in json.dumps([block.payload, add.payload, gone.payload, start.payload])


def test_tariff_prices_stay_exact_decimals(tmp_path):
    path = _write(str(tmp_path / "t.json"), '{"id": "x", "currency": "EUR", "elements": [{"price_components": '
                                            '[{"type": "ENERGY", "price": 0.3120, "vat": 19, "step_size": 1}]}]}')
    cmd = _build("tariff", path, "--version", "5")
    assert cmd.for_device()["tariff"]["elements"][0]["price_components"][0]["price"] == "0.3120"
    assert cmd.for_device()["version"] == 5 and cmd.version is None


def test_profiles_and_updates_as_the_charger_expects_them(tmp_path):
    prof = _write(str(tmp_path / "p.json"), {"periods": [[0, 16], [3600, 10]], "stack_level": 1})
    assert _build("profile", "station_max", prof).payload == {
        "kind": "station_max", "profile": {"periods": [[0, 16], [3600, 10]], "stack_level": 1}}
    assert _build("profile", "tx_default", "--clear", "--stack-level", "2").payload == {
        "kind": "tx_default", "profile": None, "stack_level": 2}
    up = _build("update", _write(str(tmp_path / "m.json"), manifest()))
    assert up.cid == "u-9.9.9-test" and up.for_device() == manifest()


def test_an_update_for_another_device_is_refused(offline, tmp_path, capsys):
    path = _write(str(tmp_path / "m.json"), manifest(target="cp-b"))
    assert offline["ctl"]("update", path, "--device", "cp-a")[0] == cpctl.BAD_INPUT
    assert "signed for cp-b only" in capsys.readouterr().err


def test_a_list_too_big_for_the_charger_is_refused(offline, tmp_path, capsys):
    rows = "".join("%08X\n" % (0x10000000 + i) for i in range(200))
    cards = _write(str(tmp_path / "many.csv"), "uid\n" + rows)
    rc, lines = offline["ctl"]("list", "full", cards, "--keys", offline["keys"], "--device", "cp-a",
                               "--list-version", "3")
    assert rc == cpctl.BAD_INPUT and "over the charger's 8192" in capsys.readouterr().err


def test_an_update_manifest_is_checked_like_the_charger_does(offline, tmp_path, capsys):
    path = _write(str(tmp_path / "m.json"), manifest(url="ftp://x/y.bin"))
    assert offline["ctl"]("update", path, "--device", "cp-a")[0] == cpctl.BAD_INPUT
    assert "url must start with http" in capsys.readouterr().err


def test_an_unreachable_broker_sends_nothing(offline, capsys):
    rc, _ = offline["ctl"]("stop", "--device", "cp-a", "--timeout", "1")
    assert rc == cpctl.BAD_INPUT and "cannot reach the broker" in capsys.readouterr().err


def test_a_mistyped_store_is_not_created(tmp_path, capsys):
    fleet = _write(str(tmp_path / "f.key"), bytes(range(32)).hex())
    rc = cpctl.main(["stop", "--device", "cp-a", "--db", str(tmp_path / "typo.sqlite"), "--fleet-key", fleet])
    assert rc == cpctl.BAD_INPUT and not os.path.exists(str(tmp_path / "typo.sqlite"))
    assert "no store" in capsys.readouterr().err


def test_the_help_runs_as_a_program():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "cpctl.py"), "card", "--help"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "block" in r.stdout and "--keys" in r.stdout


def test_versions_targets_and_counters_from_the_store(tmp_path):
    with Store(str(tmp_path / "s.sqlite")) as st:
        st.add_cmd_ack("cp-pg", {"id": "t1", "cmd": "tariff", "status": "accepted", "version": 41}, 1)
        st.add_cmd_ack("cp-pg", {"id": "t2", "cmd": "tariff", "status": "accepted", "version": 42}, 2)
        assert cpctl.tariff_version(st, "cp-pg") == 43
        assert cpctl.targets(cpctl.parser().parse_args(["stop", "--all"]), st) == ["cp-pg"]
        first = st.next_ctr("cp-pg")
        cmd = cpctl.Command("remote_stop", {})
        sealer = cpctl.Sealer(bytes(range(32)), st.next_ctr)   # as cpctl seals: the store's counters
        assert json.loads(sealer.seal("cp-pg", "cmd/remote_stop", cmd.for_device()).decode())["ctr"] == first + 1
