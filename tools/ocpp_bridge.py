"""OCPP 1.6J bridge: presents every charger on the MQTT broker as one charge point to a central system.

Each charger seen on `cp/v1/<device>/…` gets its own WebSocket to `<csms-url>/<device>`
(subprotocol `ocpp1.6`, charge point id = device id). Records the charger keeps until they
are acknowledged (`session`, `fault`, `feedback`) go into a persistent queue (SQLite) and are
sent to the CSMS in order; the charger gets its `ack` only once the CSMS confirmed the OCPP
message. The map charger tx <-> CSMS transactionId is kept in the same file, so a restart of
the bridge or of the CSMS loses nothing and sends nothing twice. Mapping: docs/ocpp.md.

    python3 tools/ocpp_bridge.py --broker 127.0.0.1:1883 --csms wss://csms.example.org/ocpp \\
        --ca csms-ca.pem --passwords ocpp-passwords.json --cards ocpp-ids.json --db out/bridge.sqlite --fleet-key fleet.key

In Python: `b = Bridge("127.0.0.1", 1883, "ws://127.0.0.1:9000/ocpp", "out/b.sqlite",
fleet_key=secret).start(); …; b.stop()`.
"""
import argparse
import asyncio
import base64
import datetime
import json
import os
import re
import signal
import sqlite3
import ssl
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from packages import require  # noqa: E402

require("paho", "websockets", "ocpp")
import paho.mqtt.client as mqtt  # noqa: E402
import websockets  # noqa: E402
from ocpp.exceptions import NotSupportedError, OCPPError  # noqa: E402
from ocpp.routing import after, on  # noqa: E402
from ocpp.v16 import ChargePoint, call, call_result  # noqa: E402
from ocpp.v16.enums import Action  # noqa: E402

from backend import CHECKS, MAX_ID_LEN, Malformed  # noqa: E402
from downlink import Sealer, broker_arg, read_fleet_key, to_device  # noqa: E402
from store import ep_of, epoch  # noqa: E402

TOPICS = ("session", "fault", "feedback", "status", "meter", "auth/req", "cmd_ack")
ID_TAG_LEN = 20            # OCPP 1.6 idTag is CiString20: 20 hex digits = 80 bits of the pseudonym
MAX_DEVICES = 10000
MAX_ATTEMPTS = 3           # CALLERRORs on one queued record before it is set aside (never on timeouts)
DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# OCPP 2.0.1 stop reasons (the charger's) -> OCPP 1.6 Reason; never DeAuthorized
STOP_REASONS = {"Local": "Local", "Remote": "Remote", "EVDisconnected": "EVDisconnected",
                "PowerLoss": "PowerLoss", "EmergencyStop": "EmergencyStop", "OvercurrentFault": "EmergencyStop",
                "GroundFault": "EmergencyStop", "PowerQuality": "EmergencyStop", "Reboot": "Reboot",
                "ImmediateReset": "HardReset", "SoftReset": "SoftReset", "EnergyLimitReached": "Other",
                "StoppedByEV": "Other", "TimeLimitReached": "Other", "Other": "Other"}
PROFILE_KINDS = {"ChargePointMaxProfile": "station_max", "TxDefaultProfile": "tx_default"}
# OCPP configuration keys that are charger settings (cmd/get_config, cmd/set_config) ...
CHARGER_KEYS = {"LocalAuthorizeOffline": "auth.LocalAuthorizeOffline", "LocalPreAuthorize": "auth.LocalPreAuthorize",
                "AllowOfflineTxForUnknownId": "auth.AllowOfflineTxForUnknownId",
                "AuthorizeRemoteTxRequests": "auth.AuthorizeRemoteTxRequests",
                "MeterValueSampleInterval": "meter_values_s", "ClockAlignedDataInterval": "meter_aligned_s",
                "ConnectionTimeOut": "auth_timeout_s"}
# ... and those the bridge answers itself (read-only facts of the charger, or the bridge's own)
FIXED_KEYS = {"NumberOfConnectors": "1", "LocalAuthListEnabled": "true", "SupportedFeatureProfiles":
              "Core,LocalAuthListManagement,RemoteTrigger,SmartCharging",
              "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage",
              "ChargeProfileMaxStackLevel": "99", "ChargingScheduleAllowedChargingRateUnit": "Current",
              "StopTransactionOnEVSideDisconnect": "true", "SecurityProfile": None}

# ep: the charger's data epoch (docs/mqtt.md): a charger that lost its state and journal numbers
# its transactions and messages from 1 again, in a new epoch; 0 for firmware without epochs
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS queue (n INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL,
        ep INTEGER NOT NULL DEFAULT 0, msg_id TEXT NOT NULL, kind TEXT NOT NULL, record TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, UNIQUE (device, ep, msg_id))""",
    """CREATE TABLE IF NOT EXISTS done (device TEXT NOT NULL, ep INTEGER NOT NULL DEFAULT 0, msg_id TEXT NOT NULL,
        outcome TEXT, PRIMARY KEY (device, ep, msg_id))""",
    """CREATE TABLE IF NOT EXISTS txmap (device TEXT NOT NULL, ep INTEGER NOT NULL DEFAULT 0, tx_id INTEGER NOT NULL,
        transaction_id INTEGER NOT NULL, meter_start INTEGER NOT NULL, stopped INTEGER NOT NULL DEFAULT 0,
        cost_sent INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (device, ep, tx_id))""",
    """CREATE TABLE IF NOT EXISTS idtags (id_tag TEXT PRIMARY KEY, token TEXT NOT NULL, key INTEGER)""",
    """CREATE TABLE IF NOT EXISTS profiles (device TEXT NOT NULL, profile_id INTEGER NOT NULL,
        kind TEXT NOT NULL, stack_level INTEGER NOT NULL, PRIMARY KEY (device, profile_id))""",
    """CREATE TABLE IF NOT EXISTS lists (device TEXT PRIMARY KEY, version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS counters (device TEXT PRIMARY KEY, ctr INTEGER NOT NULL)""",
)
EPOCH_TABLES = ("queue", "done", "txmap")


def id_tag(token):
    """The OCPP idTag of a pseudonym: its first 20 hex digits (80 bits), lower case."""
    return token[:ID_TAG_LEN].lower() if isinstance(token, str) and token else "anonymous"


def ocpp_time(iso):
    """The charger's ISO 8601 UTC time as OCPP wants it, or now when it has none."""
    if isinstance(iso, str) and epoch(iso) is not None:
        return iso
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(iso):
    """An OCPP dateTime (any offset, fractions) as the charger's UTC form, or None if unreadable."""
    s = epoch(iso)
    return None if s is None else datetime.datetime.fromtimestamp(s, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def meter_values(rec):
    """A `meter` message -> OCPP sampledValue list (register, power, current and voltage per phase)."""
    out = [{"value": str(rec["register_wh"]), "measurand": "Energy.Active.Import.Register", "unit": "Wh",
            "context": "Sample.Periodic"}]
    if isinstance(rec.get("p_w"), int):
        out.append({"value": str(rec["p_w"]), "measurand": "Power.Active.Import", "unit": "W",
                    "context": "Sample.Periodic"})
    volts, amps = rec.get("v_cv") or [], rec.get("i_ma") or []
    for i, name in enumerate(("L1", "L2", "L3")):
        if i < len(volts) and isinstance(volts[i], int) and volts[i] > 0:
            out.append({"value": "%d.%02d" % divmod(volts[i], 100), "measurand": "Voltage", "unit": "V",
                        "phase": name + "-N", "context": "Sample.Periodic"})
            if i < len(amps) and isinstance(amps[i], int):
                out.append({"value": "%d.%03d" % divmod(max(amps[i], 0), 1000), "measurand": "Current.Import",
                            "unit": "A", "phase": name, "context": "Sample.Periodic"})
    return out


def charger_profile(p):
    """An OCPP csChargingProfiles -> (charger kind, charger profile); ValueError says why not."""
    kind = PROFILE_KINDS.get(p.get("charging_profile_purpose"))
    if kind is None:
        raise ValueError("purpose %s is not supported" % p.get("charging_profile_purpose"))
    sched = p.get("charging_schedule") or {}
    if sched.get("charging_rate_unit") != "A":
        raise ValueError("only schedules in A (the charger limits current)")
    periods = [[int(x["start_period"]), int(x["limit"])] for x in sched.get("charging_schedule_period") or []]
    prof = {"stack_level": p.get("stack_level", 0), "periods": periods}
    for name, value in (("valid_from", epoch(p.get("valid_from"))), ("valid_to", epoch(p.get("valid_to"))),
                        ("duration", sched.get("duration"))):
        if value is not None:
            prof[name] = value
    if kind == "station_max":
        start = epoch(sched.get("start_schedule"))
        if p.get("charging_profile_kind") == "Recurring":
            prof["recurrency"] = p.get("recurrency_kind")
        if start is None and p.get("charging_profile_kind") != "Relative":
            start = int(time.time())   # an absolute schedule without a start begins now
        if start is not None:
            prof["start_schedule"] = start
    return kind, prof


class Station(ChargePoint):
    """The CSMS's view of one charger: the OCPP handlers for CSMS -> charger messages."""

    def __init__(self, link, ws):
        super().__init__(link.device, ws, response_timeout=link.bridge.response_timeout_s)
        self.link = link
        self._tasks = set()

    async def start(self):
        """Like ChargePoint.start, but CALLs are handled as tasks: a command waiting for the
        charger's cmd_ack must not hold up the CSMS's answers to our own CALLs."""
        while True:
            raw = await self._connection.recv()
            try:
                kind = json.loads(raw)[0]
            except (ValueError, IndexError, KeyError, TypeError):
                kind = None
            if kind == 2:
                t = asyncio.ensure_future(self.route_message(raw))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
            else:
                await self.route_message(raw)

    @on(Action.remote_start_transaction)
    async def on_remote_start(self, id_tag, connector_id=None, charging_profile=None):
        known = self.link.bridge.token_of(id_tag)
        if known is None or connector_id not in (None, 1):
            return call_result.RemoteStartTransaction(status="Rejected")
        args = {"token": known[0], "key": known[1] or 1}
        sched = (charging_profile or {}).get("charging_schedule") or {}
        periods = sched.get("charging_schedule_period") or []
        if sched.get("charging_rate_unit") == "A" and periods and 6 <= int(periods[0]["limit"]) <= 80:
            args["max_current_a"] = int(periods[0]["limit"])
        ack = await self.link.command("remote_start", args)
        return call_result.RemoteStartTransaction(status=_accepted(ack))

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(self, transaction_id):
        found = self.link.bridge.tx_of(self.link.device, transaction_id)
        if found is None:
            return call_result.RemoteStopTransaction(status="Rejected")
        ep, tx = found   # the charger refuses a stop meant for an earlier life's tx with the same number
        ack = await self.link.command("remote_stop", {"tx_id": tx, "ep": ep})
        return call_result.RemoteStopTransaction(status=_accepted(ack))

    @on(Action.change_availability)
    async def on_change_availability(self, connector_id, type):
        ack = await self.link.command("availability", {"connector": connector_id, "type": type})
        status = "Scheduled" if ack and ack.get("status") == "accepted" and ack.get("scheduled") else _accepted(ack)
        return call_result.ChangeAvailability(status=status)

    @on(Action.send_local_list)
    async def on_send_local_list(self, list_version, update_type, local_authorization_list=None):
        entries = []
        for item in local_authorization_list or []:
            known = self.link.bridge.token_of(item["id_tag"])
            if known is None:   # an idTag the bridge cannot turn into a pseudonym: never a partial list
                self.link.say("SendLocalList: idTag %s unknown (export ids with tools/provision.py "
                              "--ocpp-ids, load them with --cards)" % item["id_tag"])
                return call_result.SendLocalList(status="Failed")
            e = {"token": known[0], "key": known[1] or 1}
            info = item.get("id_tag_info")
            if info is None:
                e["remove"] = True
            else:
                e["status"] = info["status"]
                if _utc(info.get("expiry_date")):
                    e["expiry"] = _utc(info["expiry_date"])
                if info.get("parent_id_tag"):
                    e["group"] = info["parent_id_tag"]
            entries.append(e)
        ack = await self.link.command("list_update", {"version": list_version, "entries": entries,
                                                      "type": "full" if update_type == "Full" else "diff"})
        if ack is not None and ack.get("status") == "accepted":
            self.link.bridge.set_list_version(self.link.device, list_version)
            return call_result.SendLocalList(status="Accepted")
        if ack is not None and "version" in (ack.get("reason") or ""):
            return call_result.SendLocalList(status="VersionMismatch")
        return call_result.SendLocalList(status="Failed")

    @on(Action.get_local_list_version)
    async def on_get_local_list_version(self):
        ack = await self.link.command("list_version", {})
        if ack is not None and ack.get("status") == "accepted" and isinstance(ack.get("version"), int):
            return call_result.GetLocalListVersion(list_version=ack["version"])
        known = self.link.bridge.list_version(self.link.device)   # from the charger's last list_update ack
        return call_result.GetLocalListVersion(list_version=known if known is not None else -1)

    @on(Action.clear_cache)
    async def on_clear_cache(self):
        return call_result.ClearCache(status=_accepted(await self.link.command("clear_cache", {})))

    @on(Action.reset)
    async def on_reset(self, type):
        ack = await self.link.command("reset", {"type": type.lower()})
        return call_result.Reset(status=_accepted(ack))

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message, connector_id=None):
        if requested_message in ("BootNotification", "Heartbeat"):
            return call_result.TriggerMessage(status="Accepted")   # the bridge's own messages: sent after
        what = {"StatusNotification": "status", "MeterValues": "meter"}.get(requested_message)
        if what is None:
            return call_result.TriggerMessage(status="NotImplemented")
        ack = await self.link.command("trigger", {"message": what})
        if ack is not None and ack.get("status") == "accepted":
            return call_result.TriggerMessage(status="Accepted")
        if ack is not None and "unknown command" in (ack.get("reason") or ""):
            return call_result.TriggerMessage(status="NotImplemented")
        return call_result.TriggerMessage(status="Rejected")

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message, connector_id=None):
        if requested_message == "BootNotification":
            await self.link.boot(self)
        elif requested_message == "Heartbeat":
            await self.call(call.Heartbeat(), suppress=False)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id, cs_charging_profiles):
        try:
            kind, prof = charger_profile(cs_charging_profiles)
        except (ValueError, KeyError, TypeError) as e:
            self.link.say("SetChargingProfile rejected: %s" % e)
            return call_result.SetChargingProfile(status="Rejected")
        ack = await self.link.command("charging_profile", {"kind": kind, "profile": prof})
        status = _accepted(ack)
        if status == "Accepted":
            self.link.bridge.set_profile(self.link.device, cs_charging_profiles["charging_profile_id"], kind,
                                         prof["stack_level"])
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, id=None, connector_id=None, charging_profile_purpose=None,
                                        stack_level=None):
        if id is not None:
            found = self.link.bridge.profile(self.link.device, id)
            if found is None:
                return call_result.ClearChargingProfile(status="Unknown")
            targets = [found]
        elif charging_profile_purpose is not None:
            if charging_profile_purpose not in PROFILE_KINDS:
                return call_result.ClearChargingProfile(status="Unknown")
            targets = [(PROFILE_KINDS[charging_profile_purpose], stack_level)]
        else:
            targets = [(k, stack_level) for k in ("station_max", "tx_default")]
        for kind, level in targets:
            args = {"kind": kind, "profile": None}
            if level is not None:
                args["stack_level"] = level
            if _accepted(await self.link.command("charging_profile", args)) != "Accepted":
                return call_result.ClearChargingProfile(status="Unknown")
        if id is not None:
            self.link.bridge.set_profile(self.link.device, id, None, None)
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.get_configuration)
    async def on_get_configuration(self, key=None):
        wanted = key or list(FIXED_KEYS) + ["HeartbeatInterval"] + list(CHARGER_KEYS)
        known, unknown, ask = [], [], []
        for k in wanted:
            if k == "HeartbeatInterval":
                known.append({"key": k, "readonly": False, "value": str(self.link.heartbeat_s)})
            elif k == "SecurityProfile":
                known.append({"key": k, "readonly": True, "value": "2" if self.link.bridge.basic else "0"})
            elif k in FIXED_KEYS:
                known.append({"key": k, "readonly": True, "value": FIXED_KEYS[k]})
            elif k in CHARGER_KEYS:
                ask.append(k)
            else:
                unknown.append(k)
        if ask:
            ack = await self.link.command("get_config", {"keys": [CHARGER_KEYS[k] for k in ask]})
            values = ack.get("values") if ack is not None and ack.get("status") == "accepted" else None
            for k in ask:
                v = values.get(CHARGER_KEYS[k]) if isinstance(values, dict) else None
                if v is None:
                    unknown.append(k)
                else:
                    known.append({"key": k, "readonly": False,
                                  "value": ("true" if v else "false") if isinstance(v, bool) else str(v)})
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    async def on_change_configuration(self, key, value):
        if key == "HeartbeatInterval":
            if not value.isdigit() or not 10 <= int(value) <= 86400:
                return call_result.ChangeConfiguration(status="Rejected")
            self.link.heartbeat_s = int(value)
            return call_result.ChangeConfiguration(status="Accepted")
        if key in FIXED_KEYS:
            return call_result.ChangeConfiguration(status="Rejected")
        if key not in CHARGER_KEYS:
            return call_result.ChangeConfiguration(status="NotSupported")
        name = CHARGER_KEYS[key]
        if name.startswith("auth."):
            if value.lower() not in ("true", "false"):
                return call_result.ChangeConfiguration(status="Rejected")
            typed = value.lower() == "true"
        elif value.isdigit():
            typed = int(value)
        else:
            return call_result.ChangeConfiguration(status="Rejected")
        ack = await self.link.command("set_config", {"key": name, "value": typed})
        if ack is not None and ack.get("status") == "accepted" and ack.get("reboot_required"):
            return call_result.ChangeConfiguration(status="RebootRequired")
        return call_result.ChangeConfiguration(status=_accepted(ack))

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id):
        return call_result.UnlockConnector(status="NotSupported")   # a fixed cable has no lock to open

    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id, message_id=None, data=None):
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.signed_update_firmware)
    async def on_signed_update_firmware(self, request_id, firmware, retries=None, retry_interval=None):
        # the charger verifies bundles with the operator's update key (docs/ota.md), not X.509
        return call_result.SignedUpdateFirmware(status="Rejected")

    @on(Action.reserve_now)
    async def on_reserve_now(self, **kwargs):
        raise NotSupportedError(details={"cause": "reservations are not supported (docs/ocpp.md)"})

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, **kwargs):
        raise NotSupportedError(details={"cause": "reservations are not supported (docs/ocpp.md)"})

    @on(Action.update_firmware)
    async def on_update_firmware(self, **kwargs):
        raise NotSupportedError(details={"cause": "unsigned updates are refused: cmd/update (docs/ota.md)"})

    @on(Action.get_diagnostics)
    async def on_get_diagnostics(self, **kwargs):
        raise NotSupportedError(details={"cause": "no diagnostics upload (docs/ocpp.md)"})

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(self, **kwargs):
        raise NotSupportedError(details={"cause": "no composite schedule (docs/ocpp.md)"})


def _accepted(ack):
    return "Accepted" if ack is not None and ack.get("status") == "accepted" else "Rejected"


class Link:
    """One charger's WebSocket to the CSMS: connects, boots, drains the queue in order, retries."""

    def __init__(self, bridge, device):
        self.bridge = bridge
        self.device = device
        self.status = None          # the charger's last `status` message
        self.cp = None              # Station while connected and booted
        self.heartbeat_s = 300
        self.wake = asyncio.Event()
        self.waiting = {}           # command id -> future for its cmd_ack
        self.task = asyncio.ensure_future(self.run())

    def say(self, text):
        self.bridge.say("%s %s" % (self.device, text))

    async def run(self):
        delay = self.bridge.retry_s
        while True:
            try:
                await self._session()
                delay = self.bridge.retry_s
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure: reconnect later, the queue is kept
                self.say("CSMS link: %s: %s" % (type(e).__name__, str(e)[:200]))
            self.cp = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.bridge.retry_max_s)

    async def _session(self):
        url = self.bridge.csms_url.rstrip("/") + "/" + urllib.parse.quote(self.device, safe="")
        headers = {}
        password = self.bridge.password(self.device)
        if password is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(
                ("%s:%s" % (self.device, password)).encode()).decode()
        async with websockets.connect(url, subprotocols=["ocpp1.6"], additional_headers=headers,
                                      ssl=self.bridge.ssl, open_timeout=self.bridge.response_timeout_s,
                                      ping_interval=20) as ws:
            cp = Station(self, ws)
            reader = asyncio.ensure_future(cp.start())
            try:
                await self.boot(cp)
                self.cp = cp          # nothing else goes to the CSMS before it accepted the boot
                self.say("CSMS link up")
                worker = asyncio.ensure_future(self._drain(cp))
                beat = asyncio.ensure_future(self._heartbeat(cp))
                done, _ = await asyncio.wait([reader, worker, beat], return_when=asyncio.FIRST_COMPLETED)
                for t in (worker, beat):
                    t.cancel()
                for t in done:
                    t.result()   # raises what ended the session
            finally:
                self.cp = None
                reader.cancel()

    async def boot(self, cp):
        """BootNotification until Accepted, then the connector's status (OCPP: after every boot)."""
        st = self.status or {}
        while True:
            res = await cp.call(call.BootNotification(
                charge_point_vendor=st.get("vendor") or self.bridge.vendor,
                charge_point_model=st.get("model") or self.bridge.model,
                firmware_version=st.get("firmware")), suppress=False)
            if res.status == "Accepted":
                self.heartbeat_s = res.interval or self.heartbeat_s
                break
            await asyncio.sleep(max(res.interval or 0, 1))
        await self.send_status(cp)

    async def send_status(self, cp):
        st = self.status
        if st is None or st.get("state") != "online" or not st.get("connector"):
            return
        await cp.call(call.StatusNotification(connector_id=1, status=st["connector"], error_code=st.get("error") or
                                              "NoError", timestamp=ocpp_time(st.get("ts"))), suppress=False)

    async def _heartbeat(self, cp):
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await cp.call(call.Heartbeat(), suppress=False)

    async def _drain(self, cp):
        db = self.bridge.db
        while True:
            row = db.execute("SELECT n, ep, msg_id, kind, record, attempts FROM queue WHERE device = ? "
                             "ORDER BY n LIMIT 1", (self.device,)).fetchone()
            if row is None:
                self.wake.clear()
                await self.wake.wait()
                continue
            n, ep, msg_id, kind, record, attempts = row
            rec = json.loads(record)
            try:
                outcome = await self._deliver(cp, kind, rec)
            except (KeyError, TypeError, ValueError) as e:   # a record that can never be sent: not a CALLERROR
                outcome = "set aside, unusable record: %s: %s" % (type(e).__name__, e)
                self.say("%s %s %s" % (kind, msg_id, outcome))
            except OCPPError as e:
                attempts += 1   # timeouts and a lost connection are not caught: the record stays first in line
                if attempts < MAX_ATTEMPTS:
                    db.execute("UPDATE queue SET attempts = ? WHERE n = ?", (attempts, n))
                    db.commit()
                    self.say("%s %s: CSMS answered %s (attempt %d)" % (kind, msg_id, type(e).__name__, attempts))
                    await asyncio.sleep(self.bridge.retry_s)
                    continue
                outcome = "set aside after %d CALLERRORs: %s" % (attempts, e)
                self.say("%s %s %s" % (kind, msg_id, outcome))
            with db:
                db.execute("DELETE FROM queue WHERE n = ?", (n,))
                db.execute("INSERT OR IGNORE INTO done (device, ep, msg_id, outcome) VALUES (?, ?, ?, ?)",
                           (self.device, ep, msg_id, outcome))
            self.bridge.ack(self.device, msg_id, ep)

    async def _deliver(self, cp, kind, rec):
        """Send what one queued record means in OCPP; returns a short outcome once the CSMS confirmed."""
        if kind == "session":
            if rec["event"] == "updated":   # no meter_start_wh in it: a StartTransaction cannot come from it
                row = self.bridge.db.execute("SELECT transaction_id, meter_start, stopped FROM txmap WHERE device = ? "
                                             "AND ep = ? AND tx_id = ?", (self.device, ep_of(rec), rec["tx_id"])).fetchone()
                if row is None or row[2] or not isinstance(rec.get("energy_wh"), int):
                    return "not sent (transaction not started or already stopped)"
                await cp.call(call.MeterValues(connector_id=1, transaction_id=row[0], meter_value=[{
                    "timestamp": ocpp_time(rec.get("ts")), "sampled_value": [{
                        "value": str(row[1] + rec["energy_wh"]), "measurand": "Energy.Active.Import.Register",
                        "unit": "Wh", "context": "Sample.Periodic"}]}]), suppress=False)
                return "transaction %d" % row[0]
            tid = await self._started(cp, rec)
            if rec["event"] == "ended":
                await self._stop(cp, rec, tid)
            return "transaction %d" % tid
        if kind == "fault":
            if rec["event"] == "notice":
                if not self.bridge.vendor_id:
                    return "not forwarded (no --vendor-id)"
                res = await cp.call(self._data_transfer("Notice", rec), suppress=False)
                return "DataTransfer %s" % res.status
            st = self.status or {}
            if rec["event"] == "raised":
                status, code = "Faulted", rec["code"]
            else:
                status = st.get("connector") if st.get("connector") not in (None, "Faulted") else "Available"
                code = st.get("error") if st.get("connector") == status and st.get("error") else "NoError"
            await cp.call(call.StatusNotification(connector_id=1, status=status, error_code=code,
                                                  info=(rec.get("kind") or "")[:50] or None,
                                                  vendor_error_code=(rec.get("kind") or "")[:50] or None,
                                                  timestamp=ocpp_time(rec.get("ts"))), suppress=False)
            return "StatusNotification %s" % status
        if not self.bridge.vendor_id:
            return "not forwarded (no --vendor-id)"
        res = await cp.call(self._data_transfer("Feedback", rec), suppress=False)
        return "DataTransfer %s" % res.status

    def _data_transfer(self, message_id, rec):
        return call.DataTransfer(vendor_id=self.bridge.vendor_id, message_id=message_id,
                                 data=json.dumps(rec, separators=(",", ":")))

    def _stopped(self, ep, tx_id):
        row = self.bridge.db.execute("SELECT stopped FROM txmap WHERE device = ? AND ep = ? AND tx_id = ?",
                                     (self.device, ep, tx_id)).fetchone()
        return row is not None and row[0] == 1

    async def _started(self, cp, rec):
        """The CSMS's transactionId for the charger's tx, sending StartTransaction first if the CSMS
        has not started it yet (a Stop never goes out for a transaction the CSMS did not start)."""
        db = self.bridge.db
        row = db.execute("SELECT transaction_id FROM txmap WHERE device = ? AND ep = ? AND tx_id = ?",
                         (self.device, ep_of(rec), rec["tx_id"])).fetchone()
        if row is not None:
            return row[0]
        res = await cp.call(call.StartTransaction(
            connector_id=1, id_tag=id_tag(rec.get("token")), meter_start=rec["meter_start_wh"],
            timestamp=ocpp_time(rec.get("started_at") or rec.get("ts"))), suppress=False)
        with db:
            db.execute("INSERT INTO txmap (device, ep, tx_id, transaction_id, meter_start) VALUES (?, ?, ?, ?, ?)",
                       (self.device, ep_of(rec), rec["tx_id"], res.transaction_id, rec["meter_start_wh"]))
        status = (res.id_tag_info or {}).get("status")
        if status != "Accepted" and rec["event"] == "started":   # StopTransactionOnInvalidId: stop it if it runs
            self.say("tx %d: the CSMS answered StartTransaction with %s: asking the charger to stop it"
                     % (rec["tx_id"], status))
            self.bridge.spawn(self.command("remote_stop", {"tx_id": rec["tx_id"], "ep": ep_of(rec)}))
        return res.transaction_id

    async def _stop(self, cp, rec, tid):
        db = self.bridge.db
        key = (self.device, ep_of(rec), rec["tx_id"])
        if not self._stopped(*key[1:]):
            await cp.call(call.StopTransaction(
                transaction_id=tid, meter_stop=rec["meter_stop_wh"], id_tag=id_tag(rec.get("token")),
                timestamp=ocpp_time(rec.get("ended_at") or rec.get("ts")),
                reason=STOP_REASONS.get(rec.get("stop_reason"), "Other")), suppress=False)
            with db:
                db.execute("UPDATE txmap SET stopped = 1 WHERE device = ? AND ep = ? AND tx_id = ?", key)
        cost = rec.get("cost")
        if self.bridge.vendor_id and cost is not None:
            sent = db.execute("SELECT cost_sent FROM txmap WHERE device = ? AND ep = ? AND tx_id = ?", key).fetchone()[0]
            if not sent:
                body = dict(cost, transactionId=tid, energy_wh=rec.get("energy_wh"),
                            tariff_id=rec.get("tariff_id"))
                await cp.call(call.DataTransfer(vendor_id=self.bridge.vendor_id, message_id="SessionCost",
                                                data=json.dumps(body, separators=(",", ":"))), suppress=False)
                with db:
                    db.execute("UPDATE txmap SET cost_sent = 1 WHERE device = ? AND ep = ? AND tx_id = ?", key)

    async def command(self, name, args):
        """Publish cmd/<name> to the charger and wait for its cmd_ack (None: no answer in time)."""
        cid = self.bridge.next_id()
        fut = asyncio.get_running_loop().create_future()
        self.waiting[cid] = fut
        self.bridge.send(self.device, "cmd/" + name, dict(args, id=cid))
        try:
            ack = await asyncio.wait_for(fut, self.bridge.command_timeout_s)
        except asyncio.TimeoutError:
            ack = None
        finally:
            self.waiting.pop(cid, None)
        self.say("cmd/%s %s -> %s" % (name, cid, "no answer" if ack is None else
                                      ack.get("status") + (" (%s)" % ack["reason"] if ack.get("reason") else "")))
        return ack

    # -- from the charger ---------------------------------------------------------------------
    def on_status(self, rec):
        back = rec.get("state") == "online" and (self.status or {}).get("state") == "offline"
        self.status = rec
        cp = self.cp
        if cp is not None and rec.get("state") == "online":   # back from a reboot or a lost link: boot again
            self.bridge.spawn(self.boot(cp) if back else self.send_status(cp))

    def on_meter(self, rec):
        cp = self.cp
        if cp is None or not isinstance(rec.get("register_wh"), int) or not isinstance(rec.get("tx_id"), int):
            return   # live values only: the transaction's energy travels in Start/Stop and `updated`
        db = self.bridge.db
        row = db.execute("SELECT transaction_id, stopped FROM txmap WHERE device = ? AND tx_id = ? "
                         "ORDER BY rowid DESC LIMIT 1", (self.device, rec["tx_id"])).fetchone()   # meter values name no
        # epoch: the transaction of the charger's latest life
        if row is None or row[1]:
            return
        self.bridge.spawn(cp.call(call.MeterValues(connector_id=1, transaction_id=row[0], meter_value=[
            {"timestamp": ocpp_time(rec.get("ts")), "sampled_value": meter_values(rec)}]), suppress=False))

    async def authorize(self, rec):
        cp = self.cp
        if cp is None:
            return   # no CSMS: the charger's offline rules decide after its timeout
        self.bridge.learn(rec["token"], rec.get("key"))
        res = await cp.call(call.Authorize(id_tag=id_tag(rec["token"])), suppress=False)
        info = res.id_tag_info or {}
        answer = {"id": rec["id"], "status": info.get("status", "Invalid")}
        if _utc(info.get("expiry_date")):
            answer["expiry"] = _utc(info["expiry_date"])
        if info.get("parent_id_tag"):
            answer["group"] = info["parent_id_tag"]
        self.bridge.send(self.device, "auth/resp", answer)

    def on_cmd_ack(self, rec):
        fut = self.waiting.get(rec.get("id"))
        if fut is not None and not fut.done():
            fut.set_result(rec)


class Bridge:
    """MQTT side (paho, its own thread) + one asyncio loop holding every charger's Link."""

    def __init__(self, host, port, csms_url, db_path, passwords=None, ca=None, cards=None, vendor="OpenCP",
                 model="cp-mpy", vendor_id=None, command_timeout_s=10, response_timeout_s=10, retry_s=1,
                 retry_max_s=30, client_id=None, out=None, username=None, password=None, fleet_key=None,
                 counter=None):
        """fleet_key: the operator's fleet secret; counter(device) -> next message counter (default: kept
        in db_path; another sender to the same chargers must share it, docs/mqtt.md "Authenticity")."""
        self.host, self.port = host, port
        self.csms_url = csms_url
        self.db_path = db_path
        self.passwords = passwords or {}
        self.basic = bool(self.passwords)
        if self.basic and not csms_url.startswith("wss://"):
            raise ValueError("HTTP Basic passwords go only over TLS (wss://): security profile 2")
        self.ssl = None
        if csms_url.startswith("wss://"):
            self.ssl = ssl.create_default_context(cafile=ca)
        if fleet_key is None:
            raise ValueError("a fleet key is needed (--fleet-key): chargers believe nothing unsealed")
        self.sealer = Sealer(fleet_key, counter or self._next_ctr)   # docs/mqtt.md "Authenticity"
        self.cards = cards or []
        self.vendor, self.model, self.vendor_id = vendor, model, vendor_id
        self.command_timeout_s = command_timeout_s
        self.response_timeout_s = response_timeout_s
        self.retry_s, self.retry_max_s = retry_s, retry_max_s
        self.out = out or (lambda line: print(line, flush=True))
        self.links = {}
        self.db = None
        self.loop = None
        self._n = 0
        self._tasks = set()
        self._ignored = set()      # chargers without a password under security profile 2
        self._thread = None
        self._ready = threading.Event()
        self._stopping = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or "cp-ocpp-bridge-%d-%d" % (os.getpid(), id(self) % 100000))
        if username is not None:   # a locked-down broker (docs/security.md): the backend role's account
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 30)
        self.connected = threading.Event()

    # -- life ---------------------------------------------------------------------------------
    def start(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.db_path)), exist_ok=True)
        sqlite3.connect(self.db_path).close()   # an unusable file fails here, with its name
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="ocpp-bridge", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("bridge did not start")
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self

    def stop(self):
        """Disconnects MQTT, closes every CSMS link; the queue stays in the database file."""
        if self._thread is None:
            return
        self.client.disconnect()
        self.client.loop_stop()
        if self.loop is not None and self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        self._thread = None

    async def _main(self):
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.db = sqlite3.connect(self.db_path)
        for t in EPOCH_TABLES:   # a file of a bridge before data epochs: rebuilt with ep 0 in its keys
            cols = [r[1] for r in self.db.execute("PRAGMA table_info(%s)" % t)]
            if cols and "ep" not in cols:
                self.db.execute("ALTER TABLE %s RENAME TO %s_v1" % (t, t))
        for stmt in SCHEMA:
            self.db.execute(stmt)
        for t in EPOCH_TABLES:
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (t + "_v1",)).fetchone():
                cols = ", ".join(r[1] for r in self.db.execute("PRAGMA table_info(%s_v1)" % t))
                self.db.execute("INSERT INTO %s (%s) SELECT %s FROM %s_v1" % (t, cols, cols, t))
                self.db.execute("DROP TABLE %s_v1" % t)
        for c in self.cards:
            self.learn(c["token"], c.get("key"))
        self.db.commit()
        self._ready.set()
        await self._stopping.wait()
        for link in self.links.values():
            link.task.cancel()
        await asyncio.gather(*[link.task for link in self.links.values()], return_exceptions=True)
        self.db.close()

    def wait_connected(self, timeout=10):
        return self.connected.wait(timeout)

    def say(self, text):
        self.out("%s bridge: %s" % (time.strftime("%H:%M:%S"), text))

    def spawn(self, coro):
        t = asyncio.ensure_future(self._quiet(coro))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _quiet(self, coro):
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a lost live message is not a lost record
            self.say("not sent: %s: %s" % (type(e).__name__, str(e)[:200]))

    def next_id(self):
        self._n += 1
        return "o-%d-%d" % (int(time.time()) % 100000, self._n)

    # -- store --------------------------------------------------------------------------------
    def learn(self, token, key):
        """Remember which pseudonym an idTag stands for (remote starts, local lists need it)."""
        if isinstance(token, str) and len(token) == 32:
            self.db.execute("INSERT INTO idtags (id_tag, token, key) VALUES (?, ?, ?) ON CONFLICT (id_tag) "
                            "DO UPDATE SET token = excluded.token, key = excluded.key",
                            (id_tag(token), token.lower(), key))
            self.db.commit()

    def token_of(self, tag):
        row = self.db.execute("SELECT token, key FROM idtags WHERE id_tag = ?", (tag.lower(),)).fetchone()
        return tuple(row) if row else None

    def tx_of(self, device, transaction_id):
        """(data epoch, tx_id) of a running transaction the CSMS numbered, None if there is none."""
        row = self.db.execute("SELECT ep, tx_id FROM txmap WHERE device = ? AND transaction_id = ? AND stopped = 0 "
                              "ORDER BY rowid DESC LIMIT 1", (device, transaction_id)).fetchone()
        return (row[0], row[1]) if row else None

    def set_profile(self, device, profile_id, kind, level):
        with self.db:
            if kind is None:
                self.db.execute("DELETE FROM profiles WHERE device = ? AND profile_id = ?", (device, profile_id))
            else:
                self.db.execute("INSERT OR REPLACE INTO profiles VALUES (?, ?, ?, ?)",
                                (device, profile_id, kind, level))

    def profile(self, device, profile_id):
        row = self.db.execute("SELECT kind, stack_level FROM profiles WHERE device = ? AND profile_id = ?",
                              (device, profile_id)).fetchone()
        return tuple(row) if row else None

    def set_list_version(self, device, version):
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO lists VALUES (?, ?)", (device, version))

    def list_version(self, device):
        row = self.db.execute("SELECT version FROM lists WHERE device = ?", (device,)).fetchone()
        return row[0] if row else None

    def password(self, device):
        return self.passwords.get(device)

    # -- MQTT ---------------------------------------------------------------------------------
    def send(self, device, suffix, payload):
        to_device(self.client, device, suffix, payload, self.sealer)

    def _next_ctr(self, device):
        """The next message counter for a charger, kept in the bridge's file (its own connection: any thread)."""
        con = sqlite3.connect(self.db_path)
        try:
            with con:
                con.execute("CREATE TABLE IF NOT EXISTS counters (device TEXT PRIMARY KEY, ctr INTEGER NOT NULL)")
                return con.execute("INSERT INTO counters (device, ctr) VALUES (?, 1) ON CONFLICT (device) DO UPDATE "
                                   "SET ctr = counters.ctr + 1 RETURNING ctr", (device,)).fetchone()[0]
        finally:
            con.close()

    def ack(self, device, msg_id, ep):
        self.send(device, "ack", {"msg_ids": [msg_id], "ep": ep})

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.say("broker refused the connection: %s" % reason_code)
            return
        client.subscribe([("cp/v1/+/" + t, 1) for t in TOPICS])
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        self.loop.call_soon_threadsafe(self._dispatch, msg.topic, bytes(msg.payload))

    def _dispatch(self, topic, payload):
        parts = topic.split("/", 3)
        if len(parts) != 4 or parts[3] not in TOPICS or not DEVICE_ID.fullmatch(parts[2]):
            return
        device, kind = parts[2], parts[3]
        try:   # only what the charger sealed under its own key (docs/mqtt.md "Authenticity")
            payload = self.sealer.open(device, kind, payload)
        except ValueError as e:
            self.say("%s %s refused, unauthenticated: %s" % (device, kind, e))
            return
        try:
            rec = json.loads(payload.decode("utf-8"))
            if not isinstance(rec, dict):
                raise Malformed("not a JSON object")
            if kind in CHECKS:
                CHECKS[kind](rec)
        except (UnicodeDecodeError, ValueError) as e:
            self.say("%s malformed %s skipped: %s" % (device, kind, e))
            return
        link = self.links.get(device)
        if link is None:
            if kind == "cmd_ack" or (kind == "status" and rec.get("state") != "online"):
                return
            if self.basic and device not in self.passwords:
                if device not in self._ignored:
                    self._ignored.add(device)
                    self.say("%s ignored: no password for it (--passwords)" % device)
                return
            if len(self.links) >= MAX_DEVICES:
                self.say("%s ignored: %d chargers already" % (device, MAX_DEVICES))
                return
            link = self.links[device] = Link(self, device)
        if kind == "status":
            link.on_status(rec)
        elif kind == "meter":
            link.on_meter(rec)
        elif kind == "cmd_ack":
            link.on_cmd_ack(rec)
        elif kind == "auth/req":
            self.spawn(link.authorize(rec))
        else:
            self._enqueue(link, kind, rec)

    def _enqueue(self, link, kind, rec):
        if kind == "session":
            self.learn(rec.get("token"), rec.get("key"))
        msg_id = rec.get("msg_id") or "%s-%s" % (rec.get("tx_id"), rec.get("seq"))
        if len(msg_id) > MAX_ID_LEN:
            return
        ep = ep_of(rec)
        if self.db.execute("SELECT 1 FROM done WHERE device = ? AND ep = ? AND msg_id = ?",
                           (link.device, ep, msg_id)).fetchone():
            self.ack(link.device, msg_id, ep)   # the CSMS has it; our earlier ack was lost
            return
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO queue (device, ep, msg_id, kind, record) VALUES (?, ?, ?, ?, ?)",
                            (link.device, ep, msg_id, kind, json.dumps(rec)))
        link.wake.set()

    def queued(self, device=None):
        """Records waiting for the CSMS (tests, operators)."""
        return self.db_query("SELECT COUNT(*) FROM queue" + (" WHERE device = ?" if device else ""),
                             (device,) if device else ())[0][0]

    def db_query(self, sql, params=()):
        """A read of the bridge's database from another thread (tests, tools)."""
        con = sqlite3.connect(self.db_path)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()


def load_cards(path):
    """The --cards file written by tools/provision.py --ocpp-ids: [{"idTag", "token", "key", …}]."""
    with open(path) as f:
        data = json.load(f)
    rows = data.get("cards") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ValueError("--cards %s: must hold a list (tools/provision.py --ocpp-ids)" % path)
    for r in rows:
        if not isinstance(r, dict) or not isinstance(r.get("token"), str) or len(r["token"]) != 32:
            raise ValueError("--cards %s: every entry needs a 32-hex-digit token" % path)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="docs/ocpp.md has the message-by-message mapping.")
    ap.add_argument("--broker", type=broker_arg, default=("127.0.0.1", 1883), help="MQTT HOST:PORT")
    ap.add_argument("--csms", required=True, help="ws(s)://HOST:PORT/PATH of the central system")
    ap.add_argument("--db", default=os.path.join("out", "ocpp_bridge.sqlite"), help="the bridge's SQLite file")
    ap.add_argument("--ca", help="CA certificate of the CSMS (wss://); default: the system's")
    ap.add_argument("--passwords", metavar="FILE", help="JSON {device_id: password}: HTTP Basic (needs wss://)")
    ap.add_argument("--cards", metavar="FILE", help="idTags of the cards (tools/provision.py --ocpp-ids)")
    ap.add_argument("--vendor", default="OpenCP", help="chargePointVendor in BootNotification")
    ap.add_argument("--model", default="cp-mpy", help="chargePointModel in BootNotification")
    ap.add_argument("--vendor-id", metavar="ID",
                    help="send each session's cost, notices and problem reports as DataTransfer with this vendorId")
    ap.add_argument("--fleet-key", metavar="FILE", required=True,
                    help="the fleet secret (hex): each charger's key is derived from it (docs/security.md)")
    ap.add_argument("--user", help="MQTT account with the backend's rights (password from $CP_BACKEND_PASSWORD)")
    args = ap.parse_args(argv)
    mqtt_password = os.environ.get("CP_BACKEND_PASSWORD")
    if args.user and mqtt_password is None:
        print("ocpp_bridge: --user %s needs its password in $CP_BACKEND_PASSWORD" % args.user, file=sys.stderr)
        return 2
    try:
        passwords = None
        if args.passwords:
            try:
                with open(args.passwords) as f:
                    passwords = json.load(f)
            except ValueError as e:
                raise ValueError("--passwords %s: %s" % (args.passwords, e))
            if not isinstance(passwords, dict) or not all(isinstance(v, str) for v in passwords.values()):
                raise ValueError("--passwords %s: must hold {device_id: password}" % args.passwords)
        cards = load_cards(args.cards) if args.cards else None
        bridge = Bridge(args.broker[0], args.broker[1], args.csms, args.db, passwords, args.ca, cards,
                        args.vendor, args.model, args.vendor_id, username=args.user,
                        password=mqtt_password if args.user else None,
                        fleet_key=read_fleet_key(args.fleet_key)).start()
    except (OSError, ValueError, RuntimeError) as e:
        print("ocpp_bridge: %s" % e, file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: done.set())
    done.wait()
    bridge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
