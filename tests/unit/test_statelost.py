"""A lost, corrupt or invalid state.json: counters are rebuilt from the journal, reported upstream,
and the charger keeps charging; ids never repeat. Also State alone: refused writes never raise."""
import binascii
import json
import os

from simharness import Harness
from firmware.storage.state import State

CARDS = {"alice": "04A1B2C3D4E5F6"}
KEY = "00112233445566778899aabbccddeeff"


def _dir():
    d = "/tmp/st-" + binascii.hexlify(os.urandom(4)).decode()
    os.mkdir(d)
    return d


def _session(data, amps=10, secs=600, start_utc=1772438100, run=True):
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 3000, "ev_current_a": amps}, {"t": 3000 + secs * 1000, "tap": "alice"}],
                secs * 1000 + 20000, data=data, secrets={"device_key": KEY}, start_utc=start_utc)
    if run:
        h.run()
    return h


def _notices(h):
    return [json.loads(p) for t, p, _, _ in h.link.published
            if t.endswith("/fault") and json.loads(p)["event"] == "notice"]


def _items(h, name):
    """(state, error) of every storage condition reported upstream about file `name`."""
    return [(i[1], i[2]) for n in _notices(h) if n["info"] == "storage" for i in n["items"] if i[0] == name]


def _ended(h):
    return [s for s in h.sessions() if s["event"] == "ended"][-1]


def test_lost_state_continues_tx_ids_and_meter_from_the_journal_and_says_so():
    d = _dir()
    first = _ended(_session(d))
    assert first["tx_id"] == 1 and first["meter_stop_wh"] > 300
    os.remove(d + "/state.json")
    h = _session(d)
    second = _ended(h)
    # on main: tx 1 again with meter_start_wh 0 -> msg_id "1-0" again, acked as a duplicate, never billed
    assert second["tx_id"] == 2 and second["msg_id"] != first["msg_id"]
    assert second["meter_start_wh"] == first["meter_stop_wh"]
    assert second["chain_n"] == first["chain_n"] + 1   # the signing chain goes on
    assert second["ep"] == first["ep"] > 0   # the journal keeps the data epoch
    assert any("lost" in str(e) for _, e in _items(h, "state")), _notices(h)
    assert all(int(n["msg_id"][2:]) >= 1000 for n in _notices(h))   # fault ids above a fresh random base


def test_corrupt_state_is_kept_aside_and_rebuilt():
    d = _dir()
    first = _ended(_session(d))
    with open(d + "/state.json", "w") as f:
        f.write('{"tx": 1, "meter_')
    h = _session(d)
    assert _ended(h)["tx_id"] == 2
    assert os.stat(d + "/state.json.bad")
    assert any("unreadable" in str(e) for _, e in _items(h, "state"))
    assert _ended(h)["meter_start_wh"] == first["meter_stop_wh"]


def test_invalid_stored_values_are_reported_and_replaced_by_safe_defaults():
    d = _dir()
    _session(d, secs=60)
    with open(d + "/state.json") as f:
        st = json.load(f)
    st["meter_wh"] = -5          # on main: Metering.restore refuses it, the charger does not start
    st["cycles"] = "many"
    with open(d + "/state.json", "w") as f:
        f.write(json.dumps(st))
    h = _session(d, secs=60)
    ended = _ended(h)
    assert ended["tx_id"] == 2 and ended["energy_wh"] > 0 and ended["meter_start_wh"] >= 0
    errors = [str(e) for _, e in _items(h, "state")]
    assert any("meter_wh=-5 invalid" in e for e in errors) and any("cycles" in e for e in errors), errors


def test_a_refused_write_keeps_the_values_in_ram_and_retry_writes_them():
    d = _dir()
    st = State(d + "/sub/state.json")   # its directory is missing: every write fails (as on a full flash)
    assert st.lost and not st.problems
    assert st.next_tx() == 1 and st.next_tx() == 2   # never raises
    assert st.dirty and st.error
    assert not st.retry()
    os.mkdir(d + "/sub")
    assert st.retry() and not st.dirty and st.error == 0
    assert State(d + "/sub/state.json").values["tx"] == 2


# -- storage damage: reported upstream with the number of records lost ---------------------------
def _two_sessions(d):
    h = Harness(CARDS, ["alice"], [{"t": 1000, "plug": True}, {"t": 2000, "tap": "alice"},
                                   {"t": 3000, "ev_current_a": 10}, {"t": 200000, "tap": "alice"},
                                   {"t": 210000, "tap": "alice"}, {"t": 400000, "tap": "alice"}],
                420000, data=d, secrets={"device_key": KEY})
    h.run()
    assert [s["tx_id"] for s in h.sessions() if s["event"] == "ended"] == [1, 2]


def _lost(h):
    """The records-lost number of the journal's storage report."""
    texts = [str(e) for _, e in _items(h, "journal") if "records lost" in str(e)]
    assert texts, _notices(h)
    return int(texts[0].split()[0])


def test_an_emptied_journal_reports_the_records_it_lost():
    d = _dir()
    _two_sessions(d)
    for n in os.listdir(d + "/journal"):
        os.remove(d + "/journal/" + n)
    h = _session(d, secs=60)
    assert _lost(h) >= 4   # two starts and two ends at least; on main: no report at all
    assert _ended(h)["tx_id"] == 3


def test_a_wiped_journal_holding_two_sessions_counts_records_not_stretches():
    d = _dir()
    _two_sessions(d)
    for n in os.listdir(d + "/journal"):
        p = d + "/journal/" + n
        size = os.stat(p)[6]
        with open(p, "wb") as f:
            f.write(bytes(size))   # zeroed in place: one damaged stretch per segment
    h = _session(d, secs=60)
    assert _lost(h) >= 4   # on main: "1 damaged records skipped", and only in the local log
    assert _ended(h)["tx_id"] == 3


def test_a_journal_that_is_a_file_is_kept_aside_and_the_charger_runs():
    d = _dir()
    _two_sessions(d)
    for n in os.listdir(d + "/journal"):
        os.remove(d + "/journal/" + n)
    os.rmdir(d + "/journal")
    with open(d + "/journal", "w") as f:
        f.write("not a directory")
    h = _session(d, secs=60)   # on main: boot crashes (ENOTDIR listing it)
    assert _ended(h)["tx_id"] == 3 and os.stat(d + "/journal.bad")
    assert any("a file" in str(e) for _, e in _items(h, "journal")), _notices(h)
    assert _lost(h) >= 4


def test_a_normal_reboot_reports_nothing():
    d = _dir()
    _session(d, secs=60)
    h = _session(d, secs=60)
    assert _ended(h)["tx_id"] == 2 and [n for n in _notices(h) if n["info"] == "storage"] == []


def test_revenue_and_tariff_saves_never_raise_and_retry():
    from fakes import ListLog
    from firmware.billing.revenue import Revenue
    from firmware.billing.tariff import Tariff, flat
    from firmware.billing.tariffs import Tariffs

    d = _dir()
    rev = Revenue(d + "/gone/revenue.json")   # a missing directory fails every write, like a full flash
    rev.add((2026, 3, 2), 3650, 110, 132, "EUR")   # on main: OSError out of the session's end
    assert rev.error and rev.snapshot()["day"]["sessions"] == 1
    tf = Tariffs(d + "/gone/tariff.json", Tariff(flat("0.30", "EUR", "20")), ListLog())
    tf.replace({"version": 2, "tariff": flat("0.40", "EUR", "20")})   # applies from RAM
    assert tf.version == 2 and tf.error
    os.mkdir(d + "/gone")
    assert rev.retry() and tf.retry() and rev.error == 0 and tf.error == 0
    assert Revenue(d + "/gone/revenue.json").snapshot()["day"]["sessions"] == 1
    assert Tariffs(d + "/gone/tariff.json", Tariff(flat("0.30", "EUR", "20")), ListLog()).version == 2


# -- state.json and the journal both lost: a new data epoch, ids never repeat ---------------------
def _upstream(h):
    """Every record sent upstream with a msg_id (session, fault, feedback), each once."""
    out = {}
    for t, p, _, _ in h.link.published:
        if t.endswith(("/session", "/fault", "/feedback")):
            rec = json.loads(p)
            out[rec["msg_id"]] = rec
    return list(out.values())


def _wipe_all(d):
    os.remove(d + "/state.json")
    for n in os.listdir(d + "/journal"):
        os.remove(d + "/journal/" + n)


def test_state_and_journal_both_lost_start_a_new_epoch_and_no_id_repeats():
    d = _dir()
    h1 = _session(d)
    _wipe_all(d)
    h2 = _session(d, start_utc=1772438100 + 86400)   # the next day: it looks like a first boot
    first, second = _ended(h1), _ended(h2)
    assert second["tx_id"] == 1 and second["msg_id"] == first["msg_id"]   # ids start again ...
    assert second["ep"] != first["ep"] and second["ep"] > first["ep"] > 0   # ... in a new, later epoch
    lives = [_upstream(h1), _upstream(h2)]
    for life, h in zip(lives, (h1, h2)):
        assert life and all(r["ep"] == h.ctl.stamp.ep for r in life)   # every record names its epoch
    keys = [(r["ep"], r["msg_id"]) for life in lives for r in life]
    assert len(keys) == len(set(keys))   # on main: "1-0", "1-1" ... again, taken for duplicates
    status = [json.loads(p) for t, p, _, _ in h2.link.published if t.endswith("/status")]
    assert status and all(st.get("ep") == second["ep"] for st in status if st["state"] == "online")


def test_a_new_epoch_without_a_wall_clock_is_random_and_one_with_it_grows():
    from firmware.app import new_epoch
    from firmware.core.clock import VALID_AFTER

    eps = set(new_epoch(VALID_AFTER - 3600) for _ in range(8))   # the board's RTC was never set
    assert len(eps) > 1 and all(0 < e < 1 << 30 for e in eps)
    assert new_epoch(VALID_AFTER + 99) == 100 and new_epoch(VALID_AFTER + 99, 100) == 101
    assert new_epoch(VALID_AFTER) == 1 and 0 < new_epoch(VALID_AFTER + (1 << 30) * 2) < 1 << 30


def test_a_stale_ack_naming_the_old_epoch_deletes_nothing():
    d = _dir()
    old = _ended(_session(d))
    _wipe_all(d)
    h = _session(d, start_utc=1772438100 + 86400, run=False)
    h.acking = False   # the backend is away: the new life's records wait
    h.run()
    waiting = h.outbox.pending()
    assert old["msg_id"] in waiting
    h.inject("ack", {"msg_ids": waiting, "ep": old["ep"]})   # the previous life's ack, delivered late
    h.ctl.commands.handle_inbox()
    assert h.outbox.pending() == waiting   # on main: the new records are deleted, never stored
    h.inject("ack", {"msg_ids": waiting, "ep": h.ctl.stamp.ep})
    h.ctl.commands.handle_inbox()
    assert h.outbox.pending() == []


def test_a_state_file_from_older_firmware_keeps_epoch_0():
    d = _dir()
    _session(d, secs=60)
    with open(d + "/state.json") as f:
        st = json.load(f)
    del st["ep"]   # older firmware knew no epochs: its records (without ep) are epoch 0 upstream
    with open(d + "/state.json", "w") as f:
        f.write(json.dumps(st))
    h = _session(d, secs=60)
    assert _ended(h)["ep"] == 0 and _ended(h)["tx_id"] == 2
    os.remove(d + "/state.json")   # now lost: the journal says epoch 0
    assert _ended(_session(d, secs=60))["ep"] == 0
