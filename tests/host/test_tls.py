"""MQTT over TLS for real: mosquitto with a TLS listener that wants client certificates, the
firmware on the MicroPython unix port checking the broker against its CA (certificates made
here by openssl, PEM files as tools/provision.py writes them)."""
import json
import os
import subprocess

import pytest

import sim
from backend import Backend
from broker import Broker
from store import Store

KEY = bytes(range(32))
SCENARIO = {"board": "sim", "start": "2026-03-02T07:00:00Z", "device_id": "cp-tls-0001",
            "cards": {"alice": "04A1B2C3D4E5F6"}, "allow": ["alice"],
            "events": [{"t": 10, "plug": True}, {"t": 15, "tap": "alice"}, {"t": 20, "ev_current_a": 16},
                       {"t": 600, "tap": "alice"}, {"t": 620, "plug": False}],
            "end": 660}


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def _ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", "/CN=%s" % name, "-keyout", str(d / ("%s.key" % name)), "-out", str(d / ("%s.pem" % name)))


def _signed(d, name, ca, ext=None):
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=%s" % name,
             "-keyout", str(d / ("%s.key" % name)), "-out", str(d / ("%s.csr" % name)))
    extra = []
    if ext:
        (d / "ext.cnf").write_text(ext)
        extra = ["-extfile", str(d / "ext.cnf")]
    _openssl("x509", "-req", "-in", str(d / ("%s.csr" % name)), "-CA", str(d / ("%s.pem" % ca)),
             "-CAkey", str(d / ("%s.key" % ca)), "-CAcreateserial", "-days", "2", "-out", str(d / ("%s.pem" % name)),
             *extra)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other-ca")
    _signed(d, "broker", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _signed(d, "cp-tls-0001", "ca")
    for name in os.listdir(d):
        os.chmod(d / name, 0o644)
    return d


def _run(tmp_path, pki, tls):
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(SCENARIO))
    db = str(tmp_path / "backend.sqlite")
    lines = []
    with Broker(tls={"ca": str(pki / "ca.pem"), "cert": str(pki / "broker.pem"), "key": str(pki / "broker.key"),
                     "require_client": True}) as broker:
        backend = Backend(db, **broker.client_args("backend"), auth={}, ack_delay_s=0.05, out=lambda line: None).start()
        backend.wait_connected()
        tls["port"] = broker.tls_port
        result = sim.simulate(str(path), broker=broker, site_key=KEY,
                              run_dir=str(tmp_path / "run"), raw=True, out=lines.append, tls=tls)
        backend.wait_idle(0.5, timeout=20)
        backend.stop()
    st = Store(db)
    rows = [tuple(r) for r in st.query("SELECT tx_id, seq, event FROM session_events ORDER BY tx_id, seq")]
    st.close()
    events = [json.loads(line[2:]) for line in lines if line.startswith("@ ")]
    return result.rc, lines, events, rows


def test_sessions_reach_the_backend_over_tls_with_a_client_certificate(tmp_path, pki):
    rc, lines, events, rows = _run(tmp_path, pki, {"ca": str(pki / "ca.pem"), "cert": str(pki / "cp-tls-0001.pem"),
                                                   "key": str(pki / "cp-tls-0001.key")})
    assert rc == 0, "\n".join(lines[-30:])
    assert [e["state"] for e in events if e["ev"] == "mqtt"][:1] == ["connected"]
    assert rows == [(1, 0, "started"), (1, 1, "ended")]
    assert [e for e in events if e["ev"] == "halt"][0]["queued"] == 0


def test_a_broker_the_ca_did_not_sign_is_refused_and_charging_goes_on(tmp_path, pki):
    rc, lines, events, rows = _run(tmp_path, pki, {"ca": str(pki / "other-ca.pem")})
    assert rc == 0, "\n".join(lines[-30:])
    mqtt = [e for e in events if e["ev"] == "mqtt"]
    assert mqtt and all(e["state"] == "unreachable" for e in mqtt)
    assert "TLS" in mqtt[0]["error"] and "certificate" in mqtt[0]["error"]
    ended = [e for e in events if e["ev"] == "session_end"]
    assert len(ended) == 1 and ended[0]["energy_wh"] > 0      # the driver charged all the same
    assert rows == [] and [e for e in events if e["ev"] == "halt"][0]["queued"] == 2   # kept for later


def test_a_client_without_its_certificate_is_refused_by_the_broker(tmp_path, pki):
    rc, lines, events, rows = _run(tmp_path, pki, {"ca": str(pki / "ca.pem")})
    assert rc == 0, "\n".join(lines[-30:])
    assert rows == [] and not [e for e in events if e["ev"] == "mqtt" and e["state"] == "connected"]


def test_an_unreadable_ca_file_stops_the_boot_naming_the_key(tmp_path, pki):
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    rc, lines, _, _ = _run(tmp_path, pki, {"ca": str(bad)})
    assert rc == 3
    assert any(line.startswith("charger not started: config: mqtt.ca") for line in lines), lines[-5:]
