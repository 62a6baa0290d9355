"""An in-process OCPP 1.6J central system on loopback for tests: the `ocpp` package's ChargePoint in
the CSMS role, `websockets` as the server, every CALL it receives recorded in order.

    with CSMS() as csms:                     # ws://127.0.0.1:<csms.port>/ocpp/<charge point id>
        csms.auth["0123456789abcdef0123"] = "Accepted"
        csms.go_down(); csms.come_up()       # the same port, every connection closed in between
        res = csms.call("cp-1", call.RemoteStopTransaction(transaction_id=1)).result(10)
"""
import asyncio
import itertools
import json
import threading

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import basic_auth, serve


class _Central(ChargePoint):
    """The CSMS's end of one charge point's connection."""

    def __init__(self, cp_id, ws, csms):
        super().__init__(cp_id, ws, response_timeout=10)
        self.csms = csms

    async def route_message(self, raw):
        msg = json.loads(raw)
        if msg[0] == 2:
            self.csms.received.append((self.id, msg[2], msg[3]))
        await super().route_message(raw)

    @on(Action.boot_notification)
    def on_boot(self, **kw):
        return call_result.BootNotification(current_time=self.csms.now(), interval=600, status="Accepted")

    @on(Action.heartbeat)
    def on_heartbeat(self):
        return call_result.Heartbeat(current_time=self.csms.now())

    @on(Action.status_notification)
    def on_status(self, **kw):
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag):
        return call_result.Authorize(id_tag_info={"status": self.csms.auth.get(id_tag, "Invalid")})

    @on(Action.start_transaction)
    def on_start(self, id_tag, connector_id, meter_start, timestamp, **kw):
        tid = next(self.csms.tx_ids)
        return call_result.StartTransaction(transaction_id=tid,
                                            id_tag_info={"status": self.csms.auth.get(id_tag, "Invalid")})

    @on(Action.stop_transaction)
    def on_stop(self, **kw):
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter(self, **kw):
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data(self, **kw):
        return call_result.DataTransfer(status="Accepted")


class CSMS:
    """ssl: an SSLContext (security profile 2 with credentials={cp id: password})."""

    def __init__(self, ssl=None, credentials=None, path="/ocpp"):
        self.ssl = ssl
        self.credentials = credentials
        self.path = path
        self.received = []         # (charge point id, action, payload) of every CALL, in order
        self.auth = {}             # idTag -> status; others are Invalid
        self.tx_ids = itertools.count(1001)
        self.stations = {}         # charge point id -> _Central while connected
        self.refused = []          # paths refused (wrong path or subprotocol)
        self.port = None
        self.loop = None
        self._server = None
        self._thread = None

    def __enter__(self):
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(self._up())
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.go_down()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @property
    def url(self):
        return "%s://127.0.0.1:%d%s" % ("wss" if self.ssl else "ws", self.port, self.path)

    def now(self):
        import datetime
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def _up(self):
        extra = {}
        if self.credentials:
            extra["process_request"] = basic_auth(
                realm="csms", check_credentials=lambda user, pw: self.credentials.get(user) == pw)
        self._server = await serve(self._handler, "127.0.0.1", self.port or 0, subprotocols=["ocpp1.6"],
                                   ssl=self.ssl, **extra)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _down(self):
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        self.stations.clear()

    async def _handler(self, ws):
        path = ws.request.path
        cp_id = path[len(self.path) + 1:] if path.startswith(self.path + "/") else None
        if not cp_id or ws.subprotocol != "ocpp1.6" or (self.credentials and ws.username != cp_id):
            self.refused.append(path)
            await ws.close()
            return
        cp = _Central(cp_id, ws, self)
        self.stations[cp_id] = cp
        try:
            await cp.start()
        except Exception:  # noqa: BLE001 - the connection closed
            pass
        finally:
            if self.stations.get(cp_id) is cp:
                del self.stations[cp_id]

    def go_down(self):
        """Stop listening and drop every connection (the CSMS is offline)."""
        asyncio.run_coroutine_threadsafe(self._down(), self.loop).result(10)

    def come_up(self):
        asyncio.run_coroutine_threadsafe(self._up(), self.loop).result(10)

    def call(self, cp_id, payload):
        """Send a CALL to a connected charge point; a concurrent.futures.Future of its result."""
        return asyncio.run_coroutine_threadsafe(self.stations[cp_id].call(payload, suppress=False), self.loop)

    def actions(self, cp_id=None, skip=("Heartbeat",)):
        return [a for c, a, _ in self.received if (cp_id is None or c == cp_id) and a not in skip]

    def of(self, action, cp_id=None):
        return [p for c, a, p in self.received if a == action and (cp_id is None or c == cp_id)]
