"""Issue 15: the OCPP 1.6J bridge (tools/ocpp_bridge.py) between the chargers' MQTT and a central
system. First a scripted charger (MQTT messages published by the test, fast), then the real
firmware on the MicroPython unix port; the CSMS is tests/host/ocpp_csms.py on loopback."""
import hashlib
import hmac
import json
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from ocpp.v16 import call

from broker import Broker
from downlink import B2D, D2B, SHARED, derive, seal, unseal
from mqtt_watch import Watch
from ocpp_bridge import Bridge, charger_profile, id_tag, meter_values
from ocpp_csms import CSMS

DEV = "cp-ocpp-0001"
TOKEN = "6f1c0e5d8a2b4c7e9f0a1b2c3d4e5f60"


def wait(cond, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for %s" % what)


class Charger:
    """A scripted charger: publishes what the firmware would, answers commands as told."""

    def __init__(self, broker, device=DEV, answers=None):
        self.prefix = "cp/v1/%s/" % device
        self.device, self.key = device, derive(broker.fleet_key, device)
        self.answers = answers or {}   # command name -> extra ack fields (default: unknown command)
        self.got = []                  # (suffix, payload) received
        self._lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
        self.c.username_pw_set(**broker.device(device))
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", broker.port)
        self.c.subscribe([(self.prefix + "cmd/#", 1), (self.prefix + "ack", 1), (self.prefix + "auth/resp", 1)])
        self.c.loop_start()
        time.sleep(0.2)

    def _on_message(self, client, userdata, msg):
        suffix = msg.topic[len(self.prefix):]
        payload = json.loads(unseal(self.key, B2D, self.device, suffix, msg.payload))   # as the firmware checks
        del payload["ctr"]
        with self._lock:
            self.got.append((suffix, payload))
        if suffix.startswith("cmd/"):
            name = suffix[4:]
            ack = {"id": payload["id"], "cmd": name}
            ack.update(self.answers.get(name, {"status": "rejected", "reason": "unknown command %r" % name}))
            self.c.publish(self.prefix + "cmd_ack", self.sealed("cmd_ack", ack), qos=1)   # no wait: paho's thread

    def sealed(self, suffix, rec):
        """rec as the firmware publishes it: sealed under the charger's key."""
        return seal(self.key, D2B, self.device, suffix, json.dumps(rec).encode())

    def pub(self, suffix, rec, retain=False):
        self.c.publish(self.prefix + suffix, self.sealed(suffix, rec), qos=1, retain=retain).wait_for_publish(5)

    def acked(self):
        with self._lock:
            return [i for s, p in self.got if s == "ack" for i in p["msg_ids"]]

    def of(self, suffix):
        with self._lock:
            return [p for s, p in self.got if s == suffix]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def session(tx, seq, event, **kw):
    rec = {"msg_id": "%d-%d" % (tx, seq), "tx_id": tx, "seq": seq, "event": event, "token": TOKEN, "key": 1,
           "auth": "local_list", "meter_start_wh": 1000, "ts": "2026-03-02T08:%02d:00Z" % (seq * 10)}
    if event == "started":
        rec["started_at"] = rec["ts"]
    if event == "ended":
        rec.update(ended_at=rec["ts"], meter_stop_wh=1000 + kw.get("energy_wh", 500), stop_reason="Local",
                   cost={"currency": "EUR", "total_excl_vat_minor": 15, "total_incl_vat_minor": 18})
    rec.update(kw)
    return rec


class Rig:
    """Broker + CSMS + bridge (+ scripted charger) for the fast tests."""

    def __init__(self, tmp_path, answers=None, **bridge_kw):
        self.tmp = tmp_path
        self.broker = Broker().__enter__()
        self.csms = CSMS().__enter__()
        self.csms.auth[TOKEN[:20]] = "Accepted"
        self.lines = []
        self.bridge_kw = bridge_kw
        self.bridge = self.new_bridge()
        self.charger = Charger(self.broker, answers=answers)

    def new_bridge(self):
        kw = dict(retry_s=0.2, retry_max_s=0.5, command_timeout_s=5, response_timeout_s=5, vendor_id="cp-mpy")
        kw.update(self.bridge_kw)
        b = Bridge("127.0.0.1", self.broker.port, self.csms.url, str(self.tmp / "bridge.sqlite"), **self.broker.login("backend"),
                   fleet_key=self.broker.fleet_key,
                   out=self.lines.append, **kw).start()
        assert b.wait_connected()
        return b

    def close(self):
        self.charger.close()
        self.bridge.stop()
        self.csms.__exit__()
        self.broker.__exit__()


def test_id_tags_keep_80_bits_of_the_pseudonym_in_idtags_20_characters():
    assert id_tag(TOKEN) == TOKEN[:20] and len(id_tag(TOKEN)) == 20
    assert id_tag(TOKEN.upper()) == id_tag(TOKEN)     # CiString: case does not make another card
    assert id_tag(None) == "anonymous"


def test_meter_values_carry_register_power_and_per_phase_current_and_voltage():
    sv = meter_values({"register_wh": 18231, "p_w": 3676, "v_cv": [23010, 23100, 0], "i_ma": [15980, 20, 0]})
    assert [(s["measurand"], s.get("phase"), s["value"], s["unit"]) for s in sv] == [
        ("Energy.Active.Import.Register", None, "18231", "Wh"), ("Power.Active.Import", None, "3676", "W"),
        ("Voltage", "L1-N", "230.10", "V"), ("Current.Import", "L1", "15.980", "A"),
        ("Voltage", "L2-N", "231.00", "V"), ("Current.Import", "L2", "0.020", "A")]


def test_stop_reasons_map_to_ocpp_16_and_never_to_deauthorized():
    from ocpp.v16.enums import Reason
    from ocpp_bridge import STOP_REASONS
    assert STOP_REASONS["PowerLoss"] == "PowerLoss" and STOP_REASONS["Remote"] == "Remote"
    assert set(STOP_REASONS.values()) <= set(r.value for r in Reason) - {"DeAuthorized"}
    firmware = ("Local", "Remote", "EVDisconnected", "EnergyLimitReached", "StoppedByEV", "PowerLoss",
                "OvercurrentFault", "GroundFault", "PowerQuality", "Other", "SoftReset", "ImmediateReset")
    assert all(r in STOP_REASONS for r in firmware)                             # docs/mqtt.md
    assert STOP_REASONS["SoftReset"] == "SoftReset" and STOP_REASONS["ImmediateReset"] == "HardReset"


def test_charging_profiles_map_to_the_chargers_kinds_and_refuse_what_it_cannot_do():
    prof = {"charging_profile_id": 7, "stack_level": 2, "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Relative", "charging_schedule": {
                "charging_rate_unit": "A", "duration": 3600,
                "charging_schedule_period": [{"start_period": 0, "limit": 16.0}, {"start_period": 600, "limit": 10.5}]}}
    assert charger_profile(prof) == ("tx_default", {"stack_level": 2, "periods": [[0, 16], [600, 10]],
                                                    "duration": 3600})
    prof.update(charging_profile_purpose="ChargePointMaxProfile", charging_profile_kind="Absolute")
    prof["charging_schedule"]["start_schedule"] = "2026-03-02T08:00:00Z"
    assert charger_profile(prof)[1]["start_schedule"] == 1772438400
    for bad in ({"charging_profile_purpose": "TxProfile"}, {"charging_rate_unit": "W"}):
        p = json.loads(json.dumps(prof))
        p.update(bad) if "charging_profile_purpose" in bad else p["charging_schedule"].update(bad)
        with pytest.raises(ValueError):
            charger_profile(p)


def test_a_session_reaches_the_csms_in_order_and_is_acked_only_after_each_confirmation(tmp_path):
    rig = Rig(tmp_path)
    try:
        ch, csms = rig.charger, rig.csms
        ch.pub("status", {"state": "online", "connector": "Available", "ts": "2026-03-02T07:59:00Z"}, retain=True)
        wait(lambda: csms.actions(DEV) == ["BootNotification", "StatusNotification"], what="boot")
        ch.pub("session", session(1, 0, "started"))
        ch.pub("session", session(1, 1, "updated", energy_wh=200))
        ch.pub("session", session(1, 1, "updated", energy_wh=200))      # a re-send: once only
        ch.pub("session", session(1, 2, "ended", energy_wh=500))
        wait(lambda: len(ch.acked()) >= 3, what="acks")
        assert csms.actions(DEV)[2:] == ["StartTransaction", "MeterValues", "StopTransaction", "DataTransfer"]
        start, = csms.of("StartTransaction")
        assert start == {"connectorId": 1, "idTag": TOKEN[:20], "meterStart": 1000, "timestamp": "2026-03-02T08:00:00Z"}
        mv, = csms.of("MeterValues")
        assert mv["transactionId"] == 1001 and mv["meterValue"][0]["sampledValue"][0]["value"] == "1200"
        stop, = csms.of("StopTransaction")
        assert (stop["transactionId"], stop["meterStop"], stop["reason"]) == (1001, 1500, "Local")
        cost = json.loads(csms.of("DataTransfer")[0]["data"])
        assert (cost["transactionId"], cost["total_incl_vat_minor"]) == (1001, 18)
        assert ch.acked()[:3] == ["1-0", "1-1", "1-2"]
        # the charger re-sends a record it has not seen acknowledged: acked again, not sent again
        ch.pub("session", session(1, 2, "ended", energy_wh=500))
        wait(lambda: ch.acked().count("1-2") == 2, what="re-ack")
        assert csms.actions(DEV).count("StopTransaction") == 1
    finally:
        rig.close()


def test_records_not_sealed_by_the_charger_never_reach_the_csms_and_are_never_acked(tmp_path):
    """A broker peer publishing in the charger's name (an unsealed record, or one sealed under another
    charger's key) starts no transaction at the CSMS and gets no ack; the genuine record still does."""
    rig = Rig(tmp_path)
    try:
        ch, csms = rig.charger, rig.csms
        ch.pub("status", {"state": "online", "connector": "Available", "ts": "2026-03-02T07:59:00Z"}, retain=True)
        wait(lambda: csms.actions(DEV) == ["BootNotification", "StatusNotification"], what="boot")
        forged = json.dumps(session(1, 0, "started")).encode()
        ch.c.publish(ch.prefix + "session", forged, qos=1).wait_for_publish(5)
        other = seal(derive(rig.broker.fleet_key, "cp-other"), D2B, DEV, "session", forged)
        ch.c.publish(ch.prefix + "session", other, qos=1).wait_for_publish(5)
        wait(lambda: len([x for x in rig.lines if "unauthenticated" in x]) >= 2, what="refusals")
        assert "StartTransaction" not in csms.actions(DEV) and ch.acked() == []
        ch.pub("session", session(1, 0, "started"))
        wait(lambda: ch.acked() == ["1-0"], what="the genuine record's ack")
        assert csms.actions(DEV)[2:] == ["StartTransaction"]
    finally:
        rig.close()


def test_offline_csms_queues_in_order_a_restart_keeps_the_queue_and_start_goes_before_stop(tmp_path):
    rig = Rig(tmp_path)
    try:
        ch, csms = rig.charger, rig.csms
        ch.pub("status", {"state": "online", "connector": "Available"}, retain=True)
        wait(lambda: "BootNotification" in csms.actions(DEV), what="boot")
        csms.go_down()
        ch.pub("session", session(1, 0, "started"))
        ch.pub("fault", {"msg_id": "f-1", "event": "raised", "code": "OverCurrentFailure", "kind": "overcurrent",
                         "ts": "2026-03-02T08:05:00Z", "tx_id": 1})
        ch.pub("session", session(1, 1, "ended", energy_wh=300, stop_reason="OvercurrentFault"))
        wait(lambda: rig.bridge.queued(DEV) == 3, what="queued")
        assert ch.acked() == []                      # nothing is acknowledged while the CSMS is away
        rig.bridge.stop()                            # ... and the bridge restarts meanwhile
        rig.bridge = rig.new_bridge()
        assert rig.bridge.queued(DEV) == 3
        n = len(csms.received)
        csms.come_up()
        wait(lambda: len(ch.acked()) == 3, what="acks after the CSMS came back")
        assert [a for _, a, _ in csms.received[n:] if a != "Heartbeat"] == [
            "BootNotification", "StatusNotification", "StartTransaction", "StatusNotification", "StopTransaction",
            "DataTransfer"]
        assert ch.acked() == ["1-0", "f-1", "1-1"]
        assert csms.of("StatusNotification")[-1]["errorCode"] == "OverCurrentFailure"
        assert csms.of("StopTransaction")[0]["reason"] == "EmergencyStop"
        # an `ended` whose `started` never came: the CSMS gets the StartTransaction first
        ch.pub("session", session(2, 1, "ended", energy_wh=40))
        wait(lambda: "2-1" in ch.acked(), what="ack of the lone ended")
        assert csms.actions(DEV)[-3:] == ["StartTransaction", "StopTransaction", "DataTransfer"]
        starts = csms.of("StartTransaction")
        assert len(starts) == 2 and csms.of("StopTransaction")[-1]["transactionId"] == 1002
        # the CSMS refuses the card of a session the charger started offline: the bridge asks to stop it
        csms.auth[TOKEN[:20]] = "Blocked"
        ch.pub("session", session(3, 0, "started"))
        wait(lambda: ch.of("cmd/remote_stop"), what="remote_stop after a refused StartTransaction")
        assert ch.of("cmd/remote_stop")[0]["tx_id"] == 3
    finally:
        rig.close()


def test_a_charger_that_lost_state_and_journal_gets_new_transactions_at_the_csms(tmp_path):
    """tx 1 again, in a new data epoch: a new StartTransaction, never the old transaction's Stop replayed;
    each ack names its epoch. A bridge file from before epochs is kept (its rows: epoch 0)."""
    import sqlite3
    db = sqlite3.connect(str(tmp_path / "bridge.sqlite"))
    db.execute("CREATE TABLE txmap (device TEXT NOT NULL, tx_id INTEGER NOT NULL, transaction_id INTEGER NOT NULL,"
               " meter_start INTEGER NOT NULL, stopped INTEGER NOT NULL DEFAULT 0, cost_sent INTEGER NOT NULL DEFAULT 0,"
               " PRIMARY KEY (device, tx_id))")
    db.execute("CREATE TABLE done (device TEXT NOT NULL, msg_id TEXT NOT NULL, outcome TEXT, PRIMARY KEY (device, msg_id))")
    db.execute("INSERT INTO txmap VALUES ('cp-gone', 9, 77, 5, 1, 1)")
    db.execute("INSERT INTO done VALUES ('cp-gone', '9-1', 'transaction 77')")
    db.commit()
    db.close()
    rig = Rig(tmp_path)
    try:
        ch, csms = rig.charger, rig.csms
        assert rig.bridge.db_query("SELECT device, ep, tx_id, transaction_id FROM txmap") == [("cp-gone", 0, 9, 77)]
        assert rig.bridge.db_query("SELECT device, ep, msg_id FROM done") == [("cp-gone", 0, "9-1")]
        ch.pub("status", {"state": "online", "connector": "Available", "ep": 40}, retain=True)
        wait(lambda: "BootNotification" in csms.actions(DEV), what="boot")
        ch.pub("session", session(1, 0, "started", ep=40))
        ch.pub("session", session(1, 1, "ended", energy_wh=300, ep=40))
        wait(lambda: len(ch.acked()) == 2, what="first life")
        ch.pub("session", session(1, 0, "started", ep=41, meter_start_wh=0))   # state and journal lost
        ch.pub("session", session(1, 1, "ended", energy_wh=200, ep=41, meter_start_wh=0))
        wait(lambda: len(ch.acked()) == 4, what="second life")
        starts, stops = csms.of("StartTransaction"), csms.of("StopTransaction")
        assert [s["meterStart"] for s in starts] == [1000, 0]   # on main: the second life's start never sent
        assert [(s["transactionId"], s["meterStop"]) for s in stops] == [(1001, 1300), (1002, 1200)]
        assert [(p["msg_ids"], p["ep"]) for p in ch.of("ack")] == [(["1-0"], 40), (["1-1"], 40), (["1-0"], 41),
                                                                  (["1-1"], 41)]
        assert rig.bridge.db_query("SELECT ep, tx_id, transaction_id FROM txmap WHERE device = ? ORDER BY ep",
                                   (DEV,)) == [(40, 1, 1001), (41, 1, 1002)]
    finally:
        rig.close()


def test_commands_the_charger_does_not_know_yet_are_answered_from_its_rejection(tmp_path):
    rig = Rig(tmp_path, answers={"remote_stop": {"status": "accepted", "tx_id": 1}})
    try:
        ch, csms = rig.charger, rig.csms
        ch.pub("status", {"state": "online", "connector": "Charging"}, retain=True)
        ch.pub("session", session(1, 0, "started"))
        wait(lambda: "1-0" in ch.acked(), what="start")
        res = lambda payload: csms.call(DEV, payload).result(10)   # noqa: E731
        assert res(call.RemoteStopTransaction(transaction_id=1001)).status == "Accepted"
        assert res(call.RemoteStopTransaction(transaction_id=999)).status == "Rejected"   # never reaches it
        assert res(call.ChangeAvailability(connector_id=1, type="Inoperative")).status == "Rejected"
        assert res(call.Reset(type="Soft")).status == "Rejected"
        assert res(call.ClearCache()).status == "Rejected"
        assert res(call.TriggerMessage(requested_message="MeterValues")).status == "NotImplemented"
        assert res(call.ChangeConfiguration(key="LocalPreAuthorize", value="false")).status == "Rejected"
        assert res(call.ChangeConfiguration(key="NoSuchKey", value="1")).status == "NotSupported"
        conf = res(call.GetConfiguration(key=["NumberOfConnectors", "LocalPreAuthorize"]))
        assert conf.configuration_key == [{"key": "NumberOfConnectors", "readonly": True, "value": "1"}]
        assert conf.unknown_key == ["LocalPreAuthorize"]
        assert res(call.UnlockConnector(connector_id=1)).status == "NotSupported"
        assert res(call.GetLocalListVersion()).list_version == -1
        assert res(call.RemoteStartTransaction(id_tag="ffffffffffffffffffff")).status == "Rejected"  # unknown card
        with pytest.raises(Exception) as e:
            res(call.ReserveNow(connector_id=1, expiry_date="2026-03-02T09:00:00Z", id_tag=TOKEN[:20],
                                reservation_id=1))
        assert "NotSupported" in type(e.value).__name__ or "NotSupported" in repr(e.value)
        sent = [s for s, _ in ch.got if s.startswith("cmd/")]
        assert sent == ["cmd/remote_stop", "cmd/availability", "cmd/reset", "cmd/clear_cache", "cmd/trigger",
                        "cmd/set_config", "cmd/get_config", "cmd/list_version"]
        assert ch.of("cmd/availability")[0]["type"] == "Inoperative" and ch.of("cmd/reset")[0]["type"] == "soft"
    finally:
        rig.close()


# -- the real firmware (MicroPython unix port, simulated silicon) through the bridge ---------------
KEY = bytes(range(50, 82))
UIDS = {"alice": "04A1B2C3D4E5F6", "bob": "DEADBEEF", "mallory": "0BADCAFE"}


def token(alias):
    return hmac.new(KEY, bytes.fromhex(UIDS[alias]), hashlib.sha256).hexdigest()[:32]


def tag(alias):
    return token(alias)[:20]


class Scripted:
    """The runner's output callback. Each scenario `remote_stop` event with tx_id 9000 + n is a sync
    point: while the simulated world waits for the runner, the test's step n runs (the CSMS calls,
    the bridge restarts, the CSMS goes away); a CALL is waited for until its cmd/* reached the broker,
    so the charger reads it as soon as virtual time moves on."""

    def __init__(self, steps):
        self.steps = dict(steps)
        self.lines = []
        self.errors = []

    def __call__(self, line):
        self.lines.append(line)
        if " backend " in line and " sent remote_stop " in line:
            n = len([l for l in self.lines if " sent remote_stop " in l])
            step = self.steps.pop(n, None)
            if step is not None:
                try:
                    step()
                except Exception as e:  # noqa: BLE001 - reported by the test, the run goes on
                    self.errors.append("step %d: %r" % (n, e))

    def events(self, kind, **match):
        evs = [json.loads(l[2:]) for l in self.lines if l.startswith("@ ")]
        return [e for e in evs if e["ev"] == kind and all(e.get(k) == v for k, v in match.items())]


def marker(t, n):
    return {"t": t, "remote_stop": {"tx_id": 9000 + n}}


class FirmwareRig:
    """Broker, CSMS, bridge (knowing the cards' idTags, as exported by tools/provision.py --ocpp-ids),
    a watch on every MQTT message, and the firmware running a scenario."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.broker = Broker().__enter__()
        self.csms = CSMS().__enter__()
        self.csms.auth.update({tag("alice"): "Accepted", tag("bob"): "Accepted"})
        self.bridge_lines = []
        self.bridge = self.new_bridge()
        self.watch = Watch(self.broker, topic="#")
        self.futures = {}

    def new_bridge(self):
        cards = [{"idTag": tag(a), "token": token(a), "key": 1} for a in UIDS]
        b = Bridge("127.0.0.1", self.broker.port, self.csms.url, str(self.tmp / "bridge.sqlite"), **self.broker.login("backend"),
                   fleet_key=self.broker.fleet_key, counter=SHARED,   # the scenario runner sends commands too
                   cards=cards, vendor_id="cp-mpy", retry_s=0.2, retry_max_s=0.5, command_timeout_s=8, response_timeout_s=5,
                   out=self.bridge_lines.append).start()
        assert b.wait_connected()
        return b

    def restart_bridge(self):
        self.bridge.stop()
        self.bridge = self.new_bridge()

    def cmds(self, name):
        return [json.loads(p) for t, p, _ in self.watch.messages if t.endswith("/cmd/" + name)]

    def csms_call(self, name, payload, cmd=None):
        """A CALL from the CSMS to the charger; waits until the charger's command is on the broker (the
        CSMS sends one CALL at a time: a second one waits for the charger's answer to the first)."""
        wait(lambda: DEV in self.csms.stations, what="the charge point connected")
        before = len(self.cmds(cmd)) if cmd else 0
        self.futures[name] = self.csms.call(DEV, payload)
        if cmd:
            wait(lambda: len(self.cmds(cmd)) > before, what="cmd/%s on the broker" % cmd)

    def run(self, scenario):
        import sim
        path = self.tmp / "scenario.json"
        path.write_text(json.dumps(scenario))
        out = Scripted(self.steps)
        rc = sim.run(str(path), broker=self.broker, site_key=KEY,
                     run_dir=str(self.tmp / "run"), raw=True, out=out)
        self.out = out
        return rc

    def ended(self):
        seen, out = set(), []
        for t, p, _ in self.watch.messages:
            if t.endswith("/session"):
                r = json.loads(p)
                if r["event"] == "ended" and r["msg_id"] not in seen:
                    seen.add(r["msg_id"])
                    out.append(r)
        return out

    def close(self):
        self.watch.close()
        self.bridge.stop()
        self.csms.__exit__()
        self.broker.__exit__()


def _scenario(events, end):
    return {"board": "sim", "start": "2026-03-02T07:00:00Z", "device_id": DEV,
            "cards": dict((a, u) for a, u in UIDS.items()), "allow": [], "events": events, "end": end}


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    """Local list pushed by the CSMS, an unknown card refused by it, a station-max profile, a
    power cut in the middle of alice's session, then a remote start and stop from the CSMS."""
    rig = FirmwareRig(tmp_path_factory.mktemp("ocpp_cut"))
    profile = {"charging_profile_id": 5, "stack_level": 1, "charging_profile_purpose": "ChargePointMaxProfile",
               "charging_profile_kind": "Absolute", "charging_schedule": {
                   "charging_rate_unit": "A", "start_schedule": "2026-03-02T07:00:00Z",
                   "charging_schedule_period": [{"start_period": 0, "limit": 10}]}}

    def remote_stop():
        wait(lambda: len(rig.csms.of("StartTransaction")) == 2, what="bob's StartTransaction")
        rig.csms_call("stop", call.RemoteStopTransaction(transaction_id=1002), "remote_stop")

    rig.steps = {
        1: lambda: (rig.csms_call("list", call.SendLocalList(
            list_version=2, update_type="Full",
            local_authorization_list=[{"idTag": tag("alice"), "idTagInfo": {"status": "Accepted"}}]), "list_update"),
            rig.csms_call("availability", call.ChangeAvailability(connector_id=1, type="Operative")),
            rig.csms_call("list_version", call.GetLocalListVersion())),   # these two go after the first is answered
        2: lambda: rig.csms_call("profile", call.SetChargingProfile(connector_id=0, cs_charging_profiles=profile),
                                 "charging_profile"),
        3: lambda: rig.csms_call("start", call.RemoteStartTransaction(id_tag=tag("bob")), "remote_start"),
        4: remote_stop,
    }
    events = [marker(10, 1), {"t": 20, "tap": "mallory"}, {"t": 30, "plug": True}, {"t": 35, "tap": "alice"},
              {"t": 40, "ev_current_a": 16}, marker(100, 2), {"t": 400.5, "power_cut": 30, "meter_kept": True},
              marker(500, 3), marker(800, 4), {"t": 850, "plug": False}]
    try:
        rig.rc = rig.run(_scenario(events, 900))
        rig.results = dict((k, f.result(15)) for k, f in rig.futures.items())
        rig.bridge.stop()   # everything it had to do is done: the sequence below is complete
        yield rig
    finally:
        rig.close()


def test_the_firmware_run_ends_cleanly_with_every_record_acknowledged_through_the_csms(cut_run):
    assert cut_run.rc == 0, "\n".join(cut_run.out.lines[-40:])
    assert cut_run.out.errors == []
    assert [e for e in cut_run.out.events("halt")][-1]["queued"] == 0


def test_the_csms_receives_the_exact_transaction_sequence(cut_run):
    csms = cut_run.csms
    tx = [(a, p.get("idTag"), p.get("reason")) for _, a, p in csms.received
          if a in ("Authorize", "StartTransaction", "StopTransaction")]
    assert tx == [("Authorize", tag("mallory"), None),
                  ("StartTransaction", tag("alice"), None), ("StopTransaction", tag("alice"), "PowerLoss"),
                  ("StartTransaction", tag("bob"), None), ("StopTransaction", tag("bob"), "Remote")]
    # everything but the live messages (status changes, meter values), in order; the second boot is
    # the charger's return from the power cut, before the PowerLoss stop it brings
    assert csms.actions(DEV, skip=("Heartbeat", "StatusNotification", "MeterValues")) == [
        "BootNotification", "Authorize", "StartTransaction", "BootNotification", "StopTransaction", "DataTransfer",
        "StartTransaction", "StopTransaction", "DataTransfer"]
    assert [json.loads(p["data"])["transactionId"] for p in csms.of("DataTransfer")] == [1001, 1002]


def test_meter_start_and_stop_are_the_chargers_billing_register(cut_run):
    ended = cut_run.ended()
    starts, stops = cut_run.csms.of("StartTransaction"), cut_run.csms.of("StopTransaction")
    assert [r["tx_id"] for r in ended] == [1, 2]                     # no transaction lost or duplicated
    assert [s["meterStart"] for s in starts] == [r["meter_start_wh"] for r in ended]
    assert [s["meterStop"] for s in stops] == [r["meter_stop_wh"] for r in ended]
    assert [s["transactionId"] for s in stops] == [1001, 1002]
    assert ended[0]["stop_reason"] == "PowerLoss" and ended[0]["energy_wh"] > 0
    cost = json.loads(cut_run.csms.of("DataTransfer")[0]["data"])
    assert cost["total_incl_vat_minor"] == ended[0]["cost"]["total_incl_vat_minor"]


def test_live_meter_values_carry_register_power_current_and_voltage(cut_run):
    mv = [p for p in cut_run.csms.of("MeterValues") if p.get("transactionId") == 1001]
    assert mv
    for p in mv:
        sv = p["meterValue"][0]["sampledValue"]
        assert [(v["measurand"], v.get("phase")) for v in sv] == [
            ("Energy.Active.Import.Register", None), ("Power.Active.Import", None), ("Voltage", "L1-N"),
            ("Current.Import", "L1")]                                   # the sim board is single-phase
        assert 230.0 * 0.95 <= float(sv[2]["value"]) <= 230.0 * 1.05
    first = [v for v in mv[0]["meterValue"][0]["sampledValue"]][0]
    assert int(first["value"]) >= cut_run.csms.of("StartTransaction")[0]["meterStart"]


def test_the_unknown_card_is_refused_by_the_csms(cut_run):
    assert cut_run.out.events("tap", token=token("mallory"), result="refused", status="Invalid", auth="online")


def test_the_local_list_push_lets_alice_in_from_the_list(cut_run):
    assert cut_run.results["list"].status == "Accepted"
    assert cut_run.cmds("list_update")[0]["entries"] == [{"token": token("alice"), "key": 1, "status": "Accepted"}]
    assert cut_run.out.events("tap", token=token("alice"), result="accepted", auth="local_list")


def test_the_station_max_profile_limits_the_offer(cut_run):
    assert cut_run.results["profile"].status == "Accepted"
    assert cut_run.out.events("offer", amps=10, limit="schedule")
    amps = [float(v["value"]) for p in cut_run.csms.of("MeterValues") if p.get("transactionId") == 1001
            for v in p["meterValue"][0]["sampledValue"] if v["measurand"] == "Current.Import"]
    assert amps[0] == 16.0 and amps[-1] == 10.0     # alice's session, before and after the profile


def test_remote_start_and_stop_from_the_csms(cut_run):
    assert cut_run.results["start"].status == "Accepted" and cut_run.results["stop"].status == "Accepted"
    bob = cut_run.ended()[1]
    assert (bob["token"], bob["auth"], bob["stop_reason"]) == (token("bob"), "remote", "Remote")


def test_availability_and_list_version_are_answered_by_the_firmware_itself(cut_run):
    assert cut_run.results["availability"].status == "Accepted"
    assert cut_run.results["list_version"].list_version == 2      # the list the CSMS pushed just before
    acks = [json.loads(p) for t, p, _ in cut_run.watch.messages if t.endswith("/cmd_ack")]
    assert [(a["status"], a.get("version")) for a in acks if a["cmd"] in ("availability", "list_version")] == [
        ("accepted", None), ("accepted", 2)]


def test_the_station_max_profile_survives_the_power_cut(cut_run):
    bob = [e for e in cut_run.out.events("session_start") if e["tx_id"] == 2]
    assert bob and bob[0]["token"] == token("bob")
    evs = [json.loads(l[2:]) for l in cut_run.out.lines if l.startswith("@ ")]
    after = evs[evs.index(bob[0]):]
    offers = [e for e in after if e["ev"] == "offer"]
    assert offers[0]["amps"] == 10 and offers[0]["limit"] == "schedule"   # not 16 A: the profile was kept
    amps = [float(v["value"]) for p in cut_run.csms.of("MeterValues") if p.get("transactionId") == 1002
            for v in p["meterValue"][0]["sampledValue"] if v["measurand"] == "Current.Import"]
    assert amps and max(amps) <= 10.0


def test_the_boot_notification_names_the_firmware_version_from_the_status(cut_run):
    boots = cut_run.csms.of("BootNotification")
    version = cut_run.out.events("boot")[0]["version"]
    assert boots and all(b.get("firmwareVersion") == version for b in boots)
    st = [json.loads(p) for t, p, _ in cut_run.watch.messages if t.endswith("/status")]
    assert [s["firmware"] for s in st if s.get("state") == "online"][0] == version


@pytest.fixture(scope="module")
def admin_run(tmp_path_factory):
    """The CSMS takes the charger out of service (alice's tap is refused), back in, reads and changes its
    configuration, clears its cache; during alice's session it schedules Inoperative, triggers a status
    and a meter value, then resets it hard: the session ends HardReset and the firmware restarts."""
    rig = FirmwareRig(tmp_path_factory.mktemp("ocpp_admin"))

    def in_service():
        rig.csms_call("operative", call.ChangeAvailability(connector_id=0, type="Operative"), "availability")
        rig.csms_call("get_config", call.GetConfiguration(key=["LocalPreAuthorize", "MeterValueSampleInterval"]))
        rig.csms_call("set_config", call.ChangeConfiguration(key="MeterValueSampleInterval", value="10"))
        rig.csms_call("bad_config", call.ChangeConfiguration(key="MeterValueSampleInterval", value="5"))
        rig.csms_call("clear_cache", call.ClearCache())

    def during():
        wait(lambda: rig.csms.of("StartTransaction"), what="alice's StartTransaction")
        rig.csms_call("scheduled", call.ChangeAvailability(connector_id=1, type="Inoperative"), "availability")
        rig.csms_call("trigger_status", call.TriggerMessage(requested_message="StatusNotification"))
        rig.csms_call("trigger_meter", call.TriggerMessage(requested_message="MeterValues"))

    rig.steps = {
        1: lambda: rig.csms_call("inoperative", call.ChangeAvailability(connector_id=1, type="Inoperative"),
                                 "availability"),
        2: in_service,
        3: during,
        4: lambda: rig.csms_call("reset", call.Reset(type="Hard"), "reset"),
    }
    events = [marker(10, 1), {"t": 20, "plug": True}, {"t": 30, "tap": "alice"}, marker(60, 2),
              {"t": 90, "tap": "alice"}, {"t": 95, "ev_current_a": 16}, marker(200, 3), marker(400, 4)]
    sc = _scenario(events, 600)
    sc["allow"] = ["alice"]
    try:
        rig.rc = rig.run(sc)
        rig.results = dict((k, f.result(15)) for k, f in rig.futures.items())
        wait(lambda: rig.csms.of("StopTransaction"), what="the StopTransaction of the reset")
        rig.bridge.stop()
        yield rig
    finally:
        rig.close()


def test_inoperative_refuses_the_tap_and_operative_lets_the_next_one_charge(admin_run):
    r = admin_run.results
    assert r["inoperative"].status == "Accepted" and r["operative"].status == "Accepted"
    assert admin_run.out.events("tap", token=token("alice"), result="refused", status="Unavailable")
    assert [e["tx_id"] for e in admin_run.out.events("session_start")] == [1]
    statuses = [p["status"] for p in admin_run.csms.of("StatusNotification")]
    assert "Unavailable" in statuses and statuses.index("Unavailable") < statuses.index("Charging")


def test_configuration_is_read_and_changed_on_the_charger_and_checked_like_its_config_file(admin_run):
    r = admin_run.results
    conf = dict((k["key"], k["value"]) for k in r["get_config"].configuration_key)
    assert conf == {"LocalPreAuthorize": "true", "MeterValueSampleInterval": "60"} and not r["get_config"].unknown_key
    assert r["set_config"].status == "Accepted" and r["bad_config"].status == "Rejected"
    acks = [json.loads(p) for t, p, _ in admin_run.watch.messages if t.endswith("/cmd_ack")]
    assert [a.get("reason") for a in acks if a["cmd"] == "set_config"] == [
        None, "config: meter_values_s must be within 10..3600 (got 5)"]
    assert r["clear_cache"].status == "Accepted"
    assert [a["entries"] for a in acks if a["cmd"] == "clear_cache"] == [0]


def test_inoperative_during_a_session_is_scheduled_and_triggers_are_carried_out(admin_run):
    r = admin_run.results
    assert r["scheduled"].status == "Scheduled"
    assert r["trigger_status"].status == "Accepted" and r["trigger_meter"].status == "Accepted"
    mv = [p for p in admin_run.csms.of("MeterValues") if p.get("transactionId") == 1001]
    assert len(mv) >= 30   # every 10 s now (MeterValueSampleInterval), plus the triggered one


def test_a_hard_reset_ends_the_session_hardreset_and_the_firmware_restarts(admin_run):
    assert admin_run.results["reset"].status == "Accepted"
    stops = admin_run.csms.of("StopTransaction")
    assert [(s["transactionId"], s["reason"]) for s in stops] == [(1001, "HardReset")]
    assert admin_run.rc == 4, "\n".join(admin_run.out.lines[-40:])   # tools/sim.py: the board would reset now
    assert admin_run.out.events("reset", why="reset_hard")
    assert admin_run.out.errors == []


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """Alice's first session: the bridge restarts in the middle of it. Then the CSMS is away for an
    hour of virtual time, during which her second session runs from start to end; it comes back
    and gets everything, in order, once (an idle hour: charging time costs CPU, the hour is what counts)."""
    rig = FirmwareRig(tmp_path_factory.mktemp("ocpp_offline"))
    seen = {}

    def restart():
        wait(lambda: rig.csms.of("StartTransaction"), what="the first StartTransaction")
        rig.restart_bridge()
        wait(lambda: rig.csms.actions(DEV).count("BootNotification") == 2, what="the new bridge's boot")

    def down():
        wait(lambda: rig.bridge.queued(DEV) == 0, what="the first session delivered")
        rig.csms.go_down()
        seen["n"] = len(rig.csms.received)

    def up():
        seen["queued"] = rig.bridge.queued(DEV)
        seen["stops"] = len(rig.csms.of("StopTransaction"))
        rig.csms.come_up()
        wait(lambda: rig.bridge.queued(DEV) == 0, timeout=20, what="the queue drained into the CSMS")

    rig.steps = {1: restart, 2: down, 3: up}
    events = [{"t": 10, "plug": True}, {"t": 15, "tap": "alice"}, {"t": 20, "ev_current_a": 16}, marker(60, 1),
              {"t": 300, "tap": "alice"}, marker(320, 2), {"t": 400, "tap": "alice"}, {"t": 700, "tap": "alice"},
              {"t": 750, "plug": False}, marker(3920, 3)]
    sc = _scenario(events, 3980)
    sc["allow"] = ["alice"]
    try:
        rig.rc = rig.run(sc)
        rig.seen = seen
        rig.after_down = rig.csms.received[seen.get("n", 0):]
        rig.bridge.stop()
        yield rig
    finally:
        rig.close()


def test_an_hour_without_the_csms_and_a_bridge_restart_lose_and_duplicate_nothing(offline_run):
    rig = offline_run
    assert rig.rc == 0, "\n".join(rig.out.lines[-40:])
    assert rig.out.errors == [], "\n".join(rig.bridge_lines)
    assert rig.out.events("halt")[-1]["queued"] == 0            # the charger got every ack in the end
    assert rig.seen["queued"] == 2 and rig.seen["stops"] == 1   # an hour later: started and ended held, unacked
    ended = rig.ended()
    assert [r["tx_id"] for r in ended] == [1, 2]
    # the first session, across the bridge's restart: its Stop carries the transactionId from before
    assert [(a, p.get("transactionId")) for _, a, p in rig.csms.received
            if a in ("BootNotification", "StartTransaction", "StopTransaction")][:4] == [
        ("BootNotification", None), ("StartTransaction", None), ("BootNotification", None), ("StopTransaction", 1001)]
    # what the CSMS received once it was back, in order: boot, status, then the queue
    replay = [(a, p.get("transactionId"), p.get("meterStart"), p.get("meterStop")) for _, a, p in rig.after_down
              if a not in ("Heartbeat", "StatusNotification", "MeterValues")]
    # (a connection the CSMS side drops later, e.g. a missed websocket ping on a loaded machine,
    # brings one more BootNotification: a new connection, not a duplicate)
    assert replay[0] == ("BootNotification", None, None, None)
    assert [r for r in replay if r[0] != "BootNotification"] == [
        ("StartTransaction", None, ended[1]["meter_start_wh"], None),
        ("StopTransaction", 1002, None, ended[1]["meter_stop_wh"]),
        ("DataTransfer", None, None, None)]
    assert len(rig.csms.of("StartTransaction")) == 2 and len(rig.csms.of("StopTransaction")) == 2
    stops = rig.csms.of("StopTransaction")
    assert [s["meterStop"] for s in stops] == [r["meter_stop_wh"] for r in ended]
    assert [s["timestamp"] for s in stops] == [r["ended_at"] for r in ended]    # when it happened, not when sent
    assert rig.csms.of("StartTransaction")[1]["timestamp"] == ended[1]["started_at"]


def test_the_bridge_keeps_its_queue_and_the_transaction_map_in_its_file(offline_run):
    rows = offline_run.bridge.db_query("SELECT tx_id, transaction_id, stopped FROM txmap ORDER BY tx_id")
    assert rows == [(1, 1001, 1), (2, 1002, 1)]
    assert offline_run.bridge.db_query("SELECT COUNT(*) FROM queue") == [(0,)]


# -- security profile 2: TLS to the CSMS, HTTP Basic per charge point ------------------------------
def test_security_profile_2_tls_with_basic_auth_per_charge_point(tmp_path):
    import ssl

    from test_tls import _ca, _signed
    _ca(tmp_path, "ca")
    _ca(tmp_path, "other-ca")
    _signed(tmp_path, "csms", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tmp_path / "csms.pem"), str(tmp_path / "csms.key"))
    with pytest.raises(ValueError, match="TLS"):
        Bridge("127.0.0.1", 1, "ws://127.0.0.1:1/ocpp", str(tmp_path / "x.sqlite"), passwords={DEV: "x" * 20})
    lines = []
    passwords = {DEV: "correct-horse-0001", "cp-2": "correct-horse-0002"}
    with Broker() as broker, CSMS(ssl=ctx, credentials=passwords) as csms:
        assert csms.url.startswith("wss://")
        bridges = [Bridge("127.0.0.1", broker.port, csms.url, str(tmp_path / "b.sqlite"), ca=str(tmp_path / "ca.pem"),
                          passwords={DEV: "correct-horse-0001", "cp-2": "wrong-password-0002"}, retry_s=0.2,
                          retry_max_s=0.5, out=lines.append, **broker.login("backend"),
                          fleet_key=broker.fleet_key).start(),
                   Bridge("127.0.0.1", broker.port, csms.url, str(tmp_path / "c.sqlite"), **broker.login("backend"), fleet_key=broker.fleet_key,
                          ca=str(tmp_path / "other-ca.pem"), passwords={"cp-3": "correct-horse-0003"},
                          retry_s=0.2, retry_max_s=0.5, out=lines.append).start()]
        try:
            chargers = [Charger(broker, device=d) for d in (DEV, "cp-2", "cp-3")]
            for ch in chargers:
                ch.pub("status", {"state": "online", "connector": "Available"}, retain=True)
            wait(lambda: csms.actions(DEV) == ["BootNotification", "StatusNotification"], what="boot over TLS")
            wait(lambda: any("cp-2" in l and "401" in l for l in lines), what="cp-2 refused")
            wait(lambda: any("cp-3" in l and "CERTIFICATE_VERIFY_FAILED" in l for l in lines), what="cp-3 refused")
            assert [c for c, _, _ in csms.received] == [DEV, DEV]    # only the charger with the right password
            assert any("cp-3 ignored: no password" in l for l in lines)
            for ch in chargers:
                ch.close()
        finally:
            for b in bridges:
                b.stop()


# -- the same ids on both sides: tools/provision.py --ocpp-ids for the CSMS and the bridge ----------
def test_provision_exports_the_idtags_the_bridge_sends_and_the_pseudonyms_it_maps_them_back_to(tmp_path):
    import provision
    from bundle import public_hex
    from cryptography.hazmat.primitives.asymmetric import rsa
    from ocpp_bridge import load_cards

    site_key = "5a1f0c3e9b7d2468ace13579bdf02468" "13579bdf02468ace5a1f0c3e9b7d2468"
    uids = ["DEADBEEF", "04A1B2C3D4E5F6"]
    (tmp_path / "tariff.json").write_text(json.dumps({"id": "flat", "currency": "EUR", "elements": [
        {"price_components": [{"type": "ENERGY", "price": "0.30", "vat": "20", "step_size": 1}]}]}))
    (tmp_path / "cards.csv").write_text("uid,status,expiry,group\n%s,,,\n%s,Blocked,2027-01-01T00:00:00Z,fleet-a\n"
                                        % tuple(uids))
    ids = tmp_path / "ocpp-ids.json"
    argv = ["--board", "esp32_devkit", "--device-id", "cp-0001", "--site-key", "1:" + site_key,
            "--update-pubkey", public_hex(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "--broker", "mqtt.example.org", "--no-tls",
            "--tariff", str(tmp_path / "tariff.json"), "--cards", str(tmp_path / "cards.csv"),
            "--out", str(tmp_path / "out")]
    assert provision.main(argv + ["--ocpp-ids", str(ids)]) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["board.json", "config.json", "secrets.json"]
    tokens = sorted(hmac.new(bytes.fromhex(site_key), bytes.fromhex(u), hashlib.sha256).hexdigest()[:32] for u in uids)
    exported = json.loads(ids.read_text())["cards"]
    assert [c["token"] for c in exported] == tokens and [c["key"] for c in exported] == [1, 1]
    assert [c["idTag"] for c in exported] == [id_tag(t) for t in tokens]   # what the bridge sends for these cards
    infos = sorted((c["idTagInfo"] for c in exported), key=lambda i: i["status"])
    assert infos == [{"status": "Accepted"},
                     {"status": "Blocked", "expiryDate": "2027-01-01T00:00:00Z", "parentIdTag": "fleet-a"}]
    text = ids.read_text().lower()
    assert not any(u.lower() in text for u in uids)                          # pseudonyms only
    assert load_cards(str(ids)) == exported
    (tmp_path / "cards.csv").write_text("uid,group\nDEADBEEF,a-group-name-longer-than-20\n")
    os.remove(ids)
    assert provision.main(argv + ["--ocpp-ids", str(ids)]) == 2 and not ids.exists()
