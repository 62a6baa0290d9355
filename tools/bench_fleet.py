"""`make bench`, fleet part: two backend instances on one shared subscription and one PostgreSQL store
under a simulated fleet (tools/loadgen.py), for N = 100 and 1 000 chargers.

Each charger has 3 sessions (started, updated, ended: 9 records), one record in flight. Two runs per
N: a backlog (every record there at once, each sent as soon as the one before is acked: the fleet at
full pressure, so the latency is mostly queueing) and paced (a charger's records 4 s apart, the
chargers staggered). Prints the messages each instance handled per second (stored + duplicates over
the run; its CPU seconds, start-up included) and the latency from a record's first publish to its
ack (the backend acks only after its commit, batched for --ack-delay-ms: publish -> stored -> ack
received), median and 95th percentile; then checks the store holds every session once with its energy.

    .venv/bin/python tools/bench_fleet.py                 # N = 100 and 1000
    .venv/bin/python tools/bench_fleet.py --chargers 50 --interval-s 0
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker import Broker  # noqa: E402
from loadgen import LoadGen, fleet_accounts, percentile  # noqa: E402
from store import Store, TempPostgres, postgres_available  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTALS = re.compile(r"backend: (\d+) stored, (\d+) duplicates")


class BackendProcess:
    """tools/backend.py as a process of its own, logged in with its own account, lines collected."""

    def __init__(self, broker, db_url, key_file, share, ack_delay_ms=200):
        login = broker.login("backend")
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tools", "backend.py"), "--broker", broker.address, "--user",
             login["username"], "--db", db_url, "--fleet-key", key_file, "--share", share,
             "--ack-delay-ms", str(ack_delay_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, CP_BACKEND_PASSWORD=login["password"]))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_connected(self, timeout=20.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(line.startswith("backend: connected") for line in self.lines):
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("backend did not connect:\n%s" % "\n".join(self.lines[-20:]))

    def kill(self):
        """SIGKILL: no draining, no acks sent, no goodbye (a crash or a pulled plug)."""
        self.proc.kill()
        self.proc.wait(10)

    def cpu_s(self):
        """CPU seconds it used so far (Linux /proc), or None."""
        try:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        """SIGTERM, then (stored, duplicates) from its totals line; None for a killed one."""
        self.cpu = self.cpu_s()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        for line in reversed(self.lines):
            m = TOTALS.search(line)
            if m:
                return int(m.group(1)), int(m.group(2))
        return None


def start_backends(broker, db_url, key_file, n=2, share="fleet", ack_delay_ms=200):
    """n connected backend instances sharing one subscription group."""
    procs = [BackendProcess(broker, db_url, key_file, share, ack_delay_ms) for _ in range(n)]
    try:
        for p in procs:
            p.wait_connected()
    except RuntimeError:
        for p in procs:
            p.kill()
        raise
    return procs


def stored_sessions(db_url):
    """{(device, tx_id): energy_wh} of the finished sessions, and the count of stored session events."""
    with Store(db_url) as st:
        rows = st.query("SELECT device, tx_id, energy_wh FROM sessions WHERE final = 1")
        sessions = {(d, tx): wh for d, tx, wh in rows}
        events = st.query("SELECT COUNT(*) FROM session_events")[0][0]
    return sessions, events


def run(pg, n, sessions, updates, window, resend_s, ack_delay_ms, interval_s=0.0):
    """One fleet of n chargers against two fresh instances on a fresh database: the figures as a dict."""
    with Broker() as broker, tempfile.TemporaryDirectory(prefix="cp-fleet-") as tmp:
        key_file = os.path.join(tmp, "fleet.key")
        with open(key_file, "w") as f:
            f.write(broker.fleet_key.hex())
        db_url = pg.url()
        gen = LoadGen("127.0.0.1", broker.port, fleet_accounts(broker, n), broker.fleet_key, sessions=sessions,
                      updates=updates, window=window, resend_s=resend_s, interval_s=interval_s)
        procs = start_backends(broker, db_url, key_file, ack_delay_ms=ack_delay_ms)
        try:
            r = gen.run(timeout=600)
        finally:
            totals = [p.stop() for p in procs]
        stored, events = stored_sessions(db_url)
    r["handled"] = [t[0] + t[1] if t else None for t in totals]   # stored + duplicates
    r["per_instance"] = [h / r["seconds"] if h is not None else None for h in r["handled"]]
    r["cpu_s"] = [p.cpu for p in procs]
    r["interval_s"] = interval_s
    r["store_ok"] = stored == gen.expected() and events == r["messages"]
    return r


def report(r):
    lat = r["latency_ms"]
    how = ("paced, a record every %g s per charger" % r["interval_s"] if r["interval_s"]
           else "backlog, every charger at once")
    each = []
    for rate, handled, cpu in zip(r["per_instance"], r["handled"], r["cpu_s"]):
        if rate is not None:
            each.append("%.0f messages/s" % rate + (" (%.1f CPU s, %.0f messages per CPU s)" % (cpu, handled / cpu)
                                                   if cpu else ""))
    return ("fleet N=%d (%s): %d records (%d publications) acked in %.1f s; per instance %s; "
            "publish -> stored (ack) median %.0f ms, p95 %.0f ms; store %s" % (
                r["chargers"], how, r["messages"], r["publishes"], r["seconds"], " and ".join(each),
                percentile(lat, 50), percentile(lat, 95),
                "complete, nothing twice" if r["store_ok"] and not r["unacked"] else "WRONG"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chargers", type=int, action="append", help="fleet size (repeatable; default 100 and 1000)")
    ap.add_argument("--sessions", type=int, default=3, help="sessions per charger (default 3)")
    ap.add_argument("--updates", type=int, default=1, help="`updated` records per session (default 1)")
    ap.add_argument("--window", type=int, default=1, help="unacked records in flight per charger (default 1)")
    ap.add_argument("--resend-s", type=float, default=5.0, help="a charger's first re-send (default 5 s)")
    ap.add_argument("--ack-delay-ms", type=int, default=200, help="the backends' ack batching (default 200)")
    ap.add_argument("--interval-s", type=float, action="append",
                    help="a charger's records this far apart (repeatable; 0: a backlog; default 0 and 4)")
    args = ap.parse_args(argv)
    if not postgres_available():
        print("bench_fleet: skipped: PostgreSQL is not installed (apt-get install postgresql)")
        return 0
    ok = True
    with TempPostgres() as pg:
        for n in args.chargers or (100, 1000):
            for interval in args.interval_s or (0.0, 4.0):
                r = run(pg, n, args.sessions, args.updates, args.window, args.resend_s, args.ack_delay_ms, interval)
                print(report(r), flush=True)
                ok = ok and r["store_ok"] and not r["unacked"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
