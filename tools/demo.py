"""`make demo`: a simulated charger on real MicroPython talking to a real local broker.

Starts a private mosquitto, subscribes to everything the charger publishes, runs the demo
scenario (two known drivers, one refused card) and prints the session records as they arrive.

    python3 tools/demo.py [SCENARIO]       # default demo/two_drivers.json
"""
import argparse
import json
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sim  # noqa: E402
from broker import Broker  # noqa: E402
from scenario import ROOT  # noqa: E402


def _record_line(topic, rec):
    if rec.get("event") == "ended":
        c = rec["cost"]
        return "%s  %s tx %s: %d Wh, %s %.2f excl. / %.2f incl. VAT, %s, token %s…" % (
            topic, rec["event"], rec["tx_id"], rec["energy_wh"], c["currency"],
            c["total_excl_vat_minor"] / 100, c["total_incl_vat_minor"] / 100, rec["stop_reason"], rec["token"][:12])
    return "%s  %s" % (topic, json.dumps(rec, sort_keys=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python3 tools/demo.py demo/two_drivers.json")
    ap.add_argument("scenario", nargs="?", default=os.path.join(ROOT, "demo", "two_drivers.json"))
    args = ap.parse_args()
    t0 = time.time()
    with Broker() as broker:
        print("broker: mosquitto on 127.0.0.1:%d" % broker.port)
        got = []
        lock = threading.Lock()

        def on_message(client, userdata, msg):
            try:
                rec = json.loads(msg.payload)
            except ValueError:
                rec = {"raw": msg.payload.decode("utf-8", "replace")}
            with lock:
                got.append((msg.topic, rec))
                print("    >> broker: " + _record_line(msg.topic, rec), flush=True)

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-watch")
        sub.on_message = on_message
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe("cp/v1/#", qos=1)
        sub.loop_start()
        rc = sim.run(args.scenario, broker="127.0.0.1:%d" % broker.port,
                     out=lambda line: print(line, flush=True))
        time.sleep(0.5)
        sub.loop_stop()
        sub.disconnect()
    sessions = [r for t, r in got if t.endswith("/session") and r.get("event") == "ended"]
    print("demo: %d sessions received at the broker, %.1f s wall time, firmware exit %d"
          % (len(sessions), time.time() - t0, rc))
    return rc


if __name__ == "__main__":
    sys.exit(main())
