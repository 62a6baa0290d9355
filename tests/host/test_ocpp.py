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

    def __init__(self, port, device=DEV, answers=None):
        self.prefix = "cp/v1/%s/" % device
        self.answers = answers or {}   # command name -> extra ack fields (default: unknown command)
        self.got = []                  # (suffix, payload) received
        self._lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-charger-%s" % device)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.subscribe([(self.prefix + "cmd/#", 1), (self.prefix + "ack", 1), (self.prefix + "auth/resp", 1)])
        self.c.loop_start()
        time.sleep(0.2)

    def _on_message(self, client, userdata, msg):
        suffix = msg.topic[len(self.prefix):]
        payload = json.loads(msg.payload)
        with self._lock:
            self.got.append((suffix, payload))
        if suffix.startswith("cmd/"):
            name = suffix[4:]
            ack = {"id": payload["id"], "cmd": name}
            ack.update(self.answers.get(name, {"status": "rejected", "reason": "unknown command %r" % name}))
            self.c.publish(self.prefix + "cmd_ack", json.dumps(ack), qos=1)   # no wait: paho's own thread

    def pub(self, suffix, rec, retain=False):
        self.c.publish(self.prefix + suffix, json.dumps(rec), qos=1, retain=retain).wait_for_publish(5)

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
        self.lines = []
        self.bridge_kw = bridge_kw
        self.bridge = self.new_bridge()
        self.charger = Charger(self.broker.port, answers=answers)

    def new_bridge(self):
        kw = dict(retry_s=0.2, retry_max_s=0.5, command_timeout_s=5, response_timeout_s=5, vendor_id="cp-mpy")
        kw.update(self.bridge_kw)
        b = Bridge("127.0.0.1", self.broker.port, self.csms.url, str(self.tmp / "bridge.sqlite"),
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
