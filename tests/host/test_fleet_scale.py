"""Fleet scale: two backend processes on one shared subscription and one PostgreSQL store, a simulated
fleet (tools/loadgen.py) of sealed, signed records, and one backend killed mid-run: nothing lost,
nothing stored twice. The big runs are `make bench` (tools/bench_fleet.py)."""
import os
import threading

import pytest

import verify
from bench_fleet import start_backends, stored_sessions
from broker import Broker
from downlink import derive
from loadgen import LoadGen, fleet_accounts
from store import Store


@pytest.fixture
def pg_url(postgres):
    return postgres.url()


def test_instances_starting_together_on_a_fresh_database_all_get_the_schema(pg_url):
    errors = []

    def open_store():
        try:
            Store(pg_url).close()
        except RuntimeError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with Store(pg_url) as st:
        assert st.count("sessions") == 0


def test_a_backend_killed_mid_run_loses_nothing_and_stores_nothing_twice(pg_url, tmp_path):
    with Broker() as broker:
        key_file = tmp_path / "fleet.key"
        key_file.write_text(broker.fleet_key.hex())
        gen = LoadGen("127.0.0.1", broker.port, fleet_accounts(broker, 20), broker.fleet_key, sessions=3, updates=1,
                      window=2, resend_s=0.5)
        a, b = start_backends(broker, pg_url, str(key_file), ack_delay_ms=50)
        half = 20 * 3 * 3 // 2
        killed = []

        def kill_halfway(g):
            if not killed and sum(len(ch.acked) for ch in g.chargers) >= half:
                a.kill()
                killed.append(sum(len(ch.acked) for ch in g.chargers))

        try:
            r = gen.run(timeout=60, on_tick=kill_halfway)
        finally:
            b_totals = b.stop()
            a.stop()
        stored, events = stored_sessions(pg_url)
    assert killed and killed[0] < 180, "the kill came before the end of the run"
    assert any(" session tx " in line for line in a.lines), "the killed instance had taken a share"
    assert r["unacked"] == 0 and r["acked"] == r["messages"] == 180
    assert r["publishes"] > r["messages"], "what the killed instance had taken was sent again"
    assert r["refused_acks"] == 0
    assert stored == gen.expected()          # every session, with its own energy, once
    assert events == 180                     # every record once: (device, tx_id, seq) is the key
    assert b_totals is not None and b_totals[0] > 0
    with Store(pg_url) as st:
        assert st.query("SELECT COUNT(*) FROM rejects")[0][0] == 0
        costs = st.query("SELECT device, tx_id, energy_wh, total_excl_minor FROM sessions")
        ended = st.query("SELECT device, record FROM session_events WHERE event = 'ended' ORDER BY device, tx_id")
    assert all(excl == (wh * 30 + 500) // 1000 for _, _, wh, excl in costs)
    for device in ("lg-0001", "lg-0020"):   # the stored `ended` records still carry an intact chain
        lines = [rec for d, rec in ended if d == device]
        assert verify.check(lines, derive(broker.fleet_key, device), count=3) == []
        assert verify.check(lines[:1] + lines[2:], derive(broker.fleet_key, device), count=3) != []


def test_the_load_generator_is_refused_without_its_fleet_key(pg_url, tmp_path):
    """The records are sealed: a backend with another fleet secret acknowledges none of them."""
    with Broker() as broker:
        key_file = tmp_path / "other.key"
        key_file.write_text(os.urandom(32).hex())
        gen = LoadGen("127.0.0.1", broker.port, fleet_accounts(broker, 2), broker.fleet_key, sessions=1, updates=0,
                      resend_s=5.0)
        (a,) = start_backends(broker, pg_url, str(key_file), n=1)
        try:
            r = gen.run(timeout=2)
        finally:
            a.stop()
    assert r["acked"] == 0 and r["unacked"] == 4
    assert sum(" REFUSED session: unauthenticated" in line for line in a.lines) == 4
