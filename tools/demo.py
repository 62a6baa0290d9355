"""`make demo`: a simulated charger on real MicroPython talking to a real local broker and backend.

Starts a private mosquitto and the reference backend (tools/backend.py: stores, acknowledges,
answers online authorization), runs the demo scenario (two known drivers, one refused card),
prints the session records as they reach the broker, then writes the operator report.

    python3 tools/demo.py [SCENARIO]       # default demo/two_drivers.json; report in out/demo-report
"""
import argparse
import json
import os
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from packages import require  # noqa: E402

require("paho", "matplotlib")
import paho.mqtt.client as mqtt  # noqa: E402

import sim  # noqa: E402
from backend import Backend  # noqa: E402
from broker import Broker  # noqa: E402
from report import build_report  # noqa: E402
from scenario import ROOT  # noqa: E402


def _record_line(topic, rec):
    if rec.get("event") == "ended":
        c = rec["cost"]
        return "%s  %s tx %s: %d Wh, %s %.2f excl. / %.2f incl. VAT, %s, token %s…" % (
            topic, rec["event"], rec["tx_id"], rec["energy_wh"], c["currency"],
            c["total_excl_vat_minor"] / 100, c["total_incl_vat_minor"] / 100, rec["stop_reason"], rec["token"][:12])
    if rec.get("event") == "started":
        return "%s  started tx %s for token %s… (%s)" % (topic, rec["tx_id"], rec["token"][:12], rec["auth"])
    return "%s  %s" % (topic, json.dumps(rec, sort_keys=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python3 tools/demo.py demo/two_drivers.json")
    ap.add_argument("scenario", nargs="?", default=os.path.join(ROOT, "demo", "two_drivers.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "out"), help="where the store and report go")
    args = ap.parse_args()
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    db = os.path.join(args.out, "demo.sqlite")
    if os.path.exists(db):
        os.remove(db)
    with Broker() as broker:
        print("broker: mosquitto on 127.0.0.1:%d, locked down (accounts and ACL, docs/security.md); "
              "backend storing into %s" % (broker.port, db))
        backend = Backend(db, **broker.client_args("backend"), auth={}, out=lambda line: None).start()
        backend.wait_connected()
        got = []
        lock = threading.Lock()

        def on_message(client, userdata, msg):
            if not msg.topic.endswith(("/session", "/status")):
                return
            rec = json.loads(msg.payload)
            with lock:
                got.append((msg.topic, rec))
                print("    >> broker: " + _record_line(msg.topic, rec), flush=True)

        watch = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-watch")
        watch.username_pw_set(**broker.login("observer"))   # read-only: the broker is locked down
        watch.on_message = on_message
        watch.connect("127.0.0.1", broker.port)
        watch.subscribe("cp/v1/#", qos=1)
        watch.loop_start()
        rc = sim.run(args.scenario, broker=broker, out=lambda line: print(line, flush=True))
        backend.wait_idle(0.5, timeout=10)
        backend.stop()
        watch.loop_stop()
        watch.disconnect()
    report_dir = os.path.join(args.out, "demo-report")
    shutil.rmtree(report_dir, ignore_errors=True)
    figures = build_report(db, report_dir, out=lambda line: None)
    sessions = [r for t, r in got if t.endswith("/session") and r.get("event") == "ended"]
    print("backend: %(stored)d messages stored, %(acked)d acknowledged, %(auth)d authorizations answered"
          % backend.counts)
    revenue = ", ".join("%s %.2f incl. VAT" % (cur, r["incl_minor"] / 100) for cur, r in figures["revenue"].items())
    print("report: %d sessions, %.3f kWh, %s -> %s"
          % (figures["sessions"], figures["energy_wh"] / 1000, revenue or "no revenue",
             os.path.relpath(figures["files"]["report.html"], ROOT)))
    print("demo: %d sessions received at the broker, %.1f s wall time, firmware exit %d"
          % (len(sessions), time.time() - t0, rc))
    return rc


if __name__ == "__main__":
    sys.exit(main())
