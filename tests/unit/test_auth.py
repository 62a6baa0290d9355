"""Authorization with OCPP semantics: local list, cache, online answers, offline policies, rotation."""
import binascii
import gc
import json
import os

from check import raises
from configs import settings
from firmware.auth.authorize import AuthCache, Authorizer, LocalList, from_settings, may_stop
from firmware.auth.keys import Keys
from firmware.auth.pseudonym import pseudonym
from firmware.core.timefmt import parse_iso
from hal.sim.clock import VirtualClock

K1 = b"\x11" * 16
K2 = b"\x22" * 16
NOW = 1772438100                      # 2026-03-02T07:55:00Z
ALICE = b"\x04\xa1\xb2\xc3\xd4\xe5\xf6"
BOB = b"\xde\xad\xbe\xef"
CAROL = b"\x01\x02\x03\x04"
A1 = pseudonym(K1, ALICE)
B1 = pseudonym(K1, BOB)
C1 = pseudonym(K1, CAROL)


def _auth(keys=None, lst=None, cache=None, **policy):
    clock = VirtualClock(start_utc=NOW)
    keys = Keys({1: K1}, 1) if keys is None else keys
    lst = LocalList() if lst is None else lst          # an empty list or cache is falsy
    cache = AuthCache() if cache is None else cache
    auth = Authorizer(keys, lst, cache, clock, **policy)
    return auth, keys, clock


def _listed(*entries, **kw):
    lst = LocalList(**kw)
    lst.update({"version": 1, "type": "full", "entries": list(entries)})
    return lst


def _tmpdir():
    path = "/tmp/auth_test_" + binascii.hexlify(os.urandom(6)).decode()
    os.mkdir(path)
    return path


def _rmtree(path):
    for name in os.listdir(path):
        os.remove(path + "/" + name)
    os.rmdir(path)


# -- local list ---------------------------------------------------------------------------------
def test_listed_card_is_accepted_at_once_with_local_pre_authorize_and_carries_prefs():
    lst = _listed({"token": A1, "group": "fleet-a", "max_current_a": 16, "max_kwh": "20.5",
                   "offpeak_only": True, "expiry": "2027-01-01T00:00:00Z"})
    auth, keys, _ = _auth(lst=lst, local_pre_authorize=True)
    d = auth.tap(keys.tap(ALICE), online=True)
    assert (d.status, d.method, d.token, d.key, d.reason) == ("Accepted", "local_list", A1, 1, None)
    assert (d.group, d.max_current_a, d.max_wh, d.offpeak_only) == ("fleet-a", 16, 20500, True)
    assert not d.pending and d.accepted


def test_listed_card_online_without_pre_authorize_asks_the_backend_and_is_not_cached():
    auth, keys, _ = _auth(lst=_listed({"token": A1}))
    d = auth.tap(keys.tap(ALICE), online=True)
    assert d.pending and d.method == "online"
    assert d.request() == {"id": d.corr, "token": A1, "key": 1}
    done = auth.online_answer(d.corr, {"id": d.corr, "status": "Accepted"})
    assert (done.status, done.method, done.conflict) == ("Accepted", "online", False)
    assert len(auth.cache) == 0          # listed cards never go into the cache


def test_backend_disagreeing_with_the_list_is_flagged_as_a_conflict():
    auth, keys, _ = _auth(lst=_listed({"token": A1}))
    d = auth.tap(keys.tap(ALICE), online=True)
    done = auth.online_answer(d.corr, {"status": "Blocked"})
    assert (done.status, done.conflict) == ("Blocked", True)


def test_listed_card_offline_follows_local_authorize_offline():
    lst = _listed({"token": A1, "group": "g"})
    auth, keys, _ = _auth(lst=lst)
    d = auth.tap(keys.tap(ALICE), online=False)
    assert (d.status, d.method, d.reason, d.group) == ("Accepted", "local_list", "offline", "g")
    auth, keys, _ = _auth(lst=lst, local_authorize_offline=False)
    d = auth.tap(keys.tap(ALICE), online=False)     # the list may not be used: treated as unknown
    assert (d.status, d.method) == ("Invalid", "offline_unknown")
    auth, keys, _ = _auth(lst=lst, local_authorize_offline=False, allow_offline_unknown=True)
    d = auth.tap(keys.tap(ALICE), online=False)
    assert (d.status, d.method, d.group) == ("Accepted", "offline_unknown", None)


def test_listed_refusals_refuse_online_and_offline_without_asking():
    lst = _listed({"token": A1, "status": "Blocked"}, {"token": B1, "status": "Expired"},
                  {"token": C1, "status": "Invalid"})
    for online in (True, False):
        auth, keys, _ = _auth(lst=lst, allow_offline_unknown=True, local_pre_authorize=True)
        got = [auth.tap(keys.tap(uid), online) for uid in (ALICE, BOB, CAROL)]
        got = [(d.status, d.method) for d in got]
        assert got == [("Blocked", "local_list"), ("Expired", "local_list"), ("Invalid", "local_list")]


def test_listed_expiry_date_passing_makes_the_card_expired():
    lst = _listed({"token": A1, "expiry": "2026-03-02T08:00:00Z"})
    auth, keys, clock = _auth(lst=lst)
    assert auth.tap(keys.tap(ALICE), online=False).status == "Accepted"
    clock.advance((parse_iso("2026-03-02T08:00:00Z") - NOW - 1) * 1000)
    assert auth.tap(keys.tap(ALICE), online=False).status == "Accepted"
    clock.advance(1000)                                   # exactly at the expiry
    d = auth.tap(keys.tap(ALICE), online=True)
    assert (d.status, d.method) == ("Expired", "local_list")


# -- online and cache ---------------------------------------------------------------------------
def test_online_accepted_answer_is_used_and_cached_with_its_prefs():
    auth, keys, _ = _auth(local_pre_authorize=True)
    d = auth.tap(keys.tap(BOB), online=True)
    assert d.pending
    done = auth.online_answer(d.corr, {"id": d.corr, "status": "Accepted", "group": "fleet-b",
                                       "max_current_a": 10, "max_kwh": 7, "expiry": None})
    assert (done.status, done.method, done.token, done.group) == ("Accepted", "online", B1, "fleet-b")
    assert (done.max_current_a, done.max_wh, done.offpeak_only) == (10, 7000, False)
    again = auth.tap(keys.tap(BOB), online=True)
    assert (again.status, again.method, again.group, again.max_wh) == ("Accepted", "cache", "fleet-b", 7000)
    off = auth.tap(keys.tap(BOB), online=False)
    assert (off.status, off.method, off.reason) == ("Accepted", "cache", "offline")


def test_cached_accept_without_pre_authorize_asks_again_online():
    auth, keys, _ = _auth()
    d = auth.tap(keys.tap(BOB), online=True)
    auth.online_answer(d.corr, {"status": "Accepted"})
    assert auth.tap(keys.tap(BOB), online=True).pending


def test_online_refusal_is_cached_rechecked_online_and_refused_offline():
    auth, keys, _ = _auth(allow_offline_unknown=True, local_pre_authorize=True)
    d = auth.tap(keys.tap(BOB), online=True)
    done = auth.online_answer(d.corr, {"status": "Blocked"})
    assert (done.status, done.method) == ("Blocked", "online")
    assert auth.tap(keys.tap(BOB), online=True).pending          # a cached refusal may be stale
    off = auth.tap(keys.tap(BOB), online=False)
    assert (off.status, off.method) == ("Blocked", "cache")       # not waved through as unknown


def test_answer_with_a_past_expiry_is_expired_and_concurrent_tx_is_not_cached():
    auth, keys, _ = _auth()
    d = auth.tap(keys.tap(BOB), online=True)
    done = auth.online_answer(d.corr, {"status": "Accepted", "expiry": "2026-03-01T00:00:00Z"})
    assert done.status == "Expired"
    d = auth.tap(keys.tap(CAROL), online=True)
    assert auth.online_answer(d.corr, {"status": "ConcurrentTx"}).status == "ConcurrentTx"
    assert [e["token"] for e in auth.cache.entries()] == [B1]


def test_cache_entries_older_than_max_age_are_not_used():
    auth, keys, clock = _auth(cache=AuthCache(max_age_s=3600))
    d = auth.tap(keys.tap(BOB), online=True)
    auth.online_answer(d.corr, {"status": "Accepted"})
    clock.advance(3600 * 1000)
    assert auth.tap(keys.tap(BOB), online=False).method == "cache"
    clock.advance(1000)
    d = auth.tap(keys.tap(BOB), online=False)
    assert (d.status, d.method) == ("Invalid", "offline_unknown")
    assert len(auth.cache) == 0


def test_cache_written_in_the_future_is_not_trusted():
    cache = AuthCache()
    cache.put(1, B1, ("Accepted", None, None, None, None, False), NOW + 60)
    assert cache.get([(1, B1)], NOW) is None and len(cache) == 0


def test_cache_evicts_the_least_recently_used():
    cache = AuthCache(max_entries=2)
    grant = ("Accepted", None, None, None, None, False)
    cache.put(1, A1, grant, NOW)
    cache.put(1, B1, grant, NOW)
    assert cache.get([(1, A1)], NOW) == grant            # A1 is now the most recent
    cache.put(1, C1, grant, NOW)
    assert len(cache) == 2
    assert cache.get([(1, B1)], NOW) is None
    assert cache.get([(1, A1)], NOW) == grant and cache.get([(1, C1)], NOW) == grant


def test_disabled_cache_keeps_nothing():
    cache = AuthCache(max_entries=0)
    cache.put(1, A1, ("Accepted", None, None, None, None, False), NOW)
    assert len(cache) == 0


def test_no_answer_in_time_decides_as_offline():
    auth, keys, clock = _auth(lst=_listed({"token": A1}), timeout_ms=3000)
    known = auth.tap(keys.tap(ALICE), online=True)
    unknown = auth.tap(keys.tap(BOB), online=True)
    clock.advance(2999)
    assert auth.timeouts() == []
    clock.advance(1)
    got = dict((d.token, d) for d in auth.timeouts())
    assert (got[A1].status, got[A1].method, got[A1].reason) == ("Accepted", "local_list", "timeout")
    assert (got[B1].status, got[B1].method, got[B1].reason) == ("Invalid", "offline_unknown", "timeout")
    assert "waiting" in str(raises(ValueError, auth.online_answer, unknown.corr, {"status": "Accepted"}))
    assert "waiting" in str(raises(ValueError, auth.online_timeout, known.corr))


def test_timeout_with_unknown_ids_allowed_offline():
    auth, keys, _ = _auth(allow_offline_unknown=True)
    d = auth.tap(keys.tap(BOB), online=True)
    t = auth.online_timeout(d.corr)
    assert (t.status, t.method, t.token, t.reason) == ("Accepted", "offline_unknown", B1, "timeout")


def test_malformed_answers_are_refused_and_change_nothing():
    auth, keys, _ = _auth()
    d = auth.tap(keys.tap(BOB), online=True)
    bad = [({"status": "OK"}, "status: must be Accepted, Blocked, Expired, Invalid or ConcurrentTx"),
           ({}, "status"), ("Accepted", "answer"), ({"id": "other", "status": "Accepted"}, "id"),
           ({"status": "Accepted", "expiry": "tomorrow"}, "expiry"),
           ({"status": "Accepted", "max_kwh": 7.5}, "max_kwh"),
           ({"status": "Accepted", "max_current_a": 500}, "max_current_a"),
           ({"status": "Accepted", "group": 12}, "group"),
           ({"status": "Accepted", "offpeak_only": "yes"}, "offpeak_only")]
    for payload, field in bad:
        assert str(raises(ValueError, auth.online_answer, d.corr, payload)).startswith(field)
    assert len(auth.cache) == 0
    assert "waiting" in str(raises(ValueError, auth.online_answer, "nope", {"status": "Accepted"}))
    assert auth.online_answer(d.corr, {"status": "Accepted"}).status == "Accepted"   # still waiting


def test_waiting_requests_are_bounded_oldest_dropped():
    auth, keys, clock = _auth(max_pending=2)
    first = auth.tap(keys.tap(ALICE), online=True)
    clock.advance(10)
    second = auth.tap(keys.tap(BOB), online=True)
    clock.advance(10)
    third = auth.tap(keys.tap(CAROL), online=True)
    assert len(set((first.corr, second.corr, third.corr))) == 3
    raises(ValueError, auth.online_answer, first.corr, {"status": "Accepted"})
    assert auth.online_answer(second.corr, {"status": "Accepted"}).token == B1
    assert auth.online_answer(third.corr, {"status": "Accepted"}).token == C1


def test_unknown_card_offline_each_policy():
    auth, keys, _ = _auth()
    d = auth.tap(keys.tap(BOB), online=False)
    assert (d.status, d.method, d.reason, d.token) == ("Invalid", "offline_unknown", "offline", B1)
    auth, keys, _ = _auth(allow_offline_unknown=True)
    d = auth.tap(keys.tap(BOB), online=False)
    assert (d.status, d.method) == ("Accepted", "offline_unknown")


# -- remote start, stop rules -------------------------------------------------------------------
def test_remote_start_is_trusted_only_when_the_config_turns_the_check_off():
    auth, keys, _ = _auth(lst=_listed({"token": B1, "status": "Blocked"}), authorize_remote=False)
    d = auth.remote_start({"id": "c1", "token": B1.upper(), "key": 1, "group": "g", "max_kwh": "3"})
    assert (d.status, d.method, d.token, d.group, d.max_wh, d.remote) == ("Accepted", "remote", B1, "g", 3000, True)
    assert d.checked_by is None


def test_remote_start_checked_with_authorize_remote_tx_requests():
    lst = _listed({"token": B1, "status": "Blocked"}, {"token": A1, "max_current_a": 16, "group": "g"})
    auth, keys, _ = _auth(lst=lst, authorize_remote=True, local_pre_authorize=True)
    d = auth.remote_start({"id": "c1", "token": B1})
    assert (d.status, d.method, d.checked_by) == ("Blocked", "remote", "local_list")
    d = auth.remote_start({"id": "c2", "token": A1, "max_current_a": 10})
    assert (d.status, d.method, d.checked_by, d.max_current_a, d.group) == ("Accepted", "remote", "local_list", 10, "g")
    d = auth.remote_start({"id": "c3", "token": C1})
    assert d.pending and d.remote and d.request()["token"] == C1
    done = auth.online_answer(d.corr, {"status": "Accepted", "max_kwh": "5"})
    assert (done.status, done.method, done.checked_by, done.max_wh) == ("Accepted", "remote", "online", 5000)


def test_remote_start_is_checked_like_a_tap_by_default():
    auth, keys, _ = _auth(lst=_listed({"token": B1, "status": "Blocked"}))   # OCPP AuthorizeRemoteTxRequests
    d = auth.remote_start({"id": "c1", "token": B1})          # a pseudonym read off the broker: blocked card
    assert (d.status, d.checked_by, d.accepted) == ("Blocked", "local_list", False)
    d = auth.remote_start({"id": "c2", "token": "ab" * 16}, online=False)   # made up, backend away
    assert (d.status, d.accepted) == ("Invalid", False)
    d = auth.remote_start({"id": "c3", "token": "cd" * 16})   # made up, online: the backend decides
    assert d.pending and d.request()["token"] == "cd" * 16
    assert not auth.online_answer(d.corr, {"status": "Invalid"}).accepted


def test_bad_remote_start_names_the_field():
    auth, keys, _ = _auth()
    assert str(raises(ValueError, auth.remote_start, {"token": "xyz"})).startswith("token")
    assert str(raises(ValueError, auth.remote_start, {"token": B1, "key": 2})).startswith("key")
    assert str(raises(ValueError, auth.remote_start, {"token": B1, "max_current_a": 3})).startswith("max_current_a")
    assert str(raises(ValueError, auth.remote_start, [])).startswith("remote_start")
    assert str(raises(ValueError, auth.remote_start, {"token": B1, "status": "Blocked"})) == "status: must be Accepted"


def test_same_card_or_same_group_may_stop():
    assert may_stop(A1, None, A1, None)
    assert may_stop(A1, "fleet", B1, "fleet")
    assert not may_stop(A1, "fleet", B1, "other")
    assert not may_stop(A1, None, B1, None)          # no group is not a shared group
    assert not may_stop(A1, "fleet", B1, None)
    keys = Keys({1: K1, 2: K2}, 2, (1, 2))           # key rotated during the session
    assert may_stop(A1, None, keys.tap(ALICE), None)
    assert not may_stop(A1, None, keys.tap(BOB), None)


def test_group_of_a_tapping_card_comes_from_list_or_cache():
    auth, keys, _ = _auth(lst=_listed({"token": A1, "group": "fleet"}))
    assert auth.group_of(keys.tap(ALICE)) == "fleet"
    assert auth.group_of(keys.tap(BOB)) is None
    d = auth.tap(keys.tap(BOB), online=True)
    auth.online_answer(d.corr, {"status": "Accepted", "group": "fleet"})
    assert auth.group_of(keys.tap(BOB)) == "fleet"


# -- list updates -------------------------------------------------------------------------------
def test_full_update_replaces_and_diff_upserts_and_removes():
    lst = _listed({"token": A1}, {"token": B1, "status": "Blocked"})
    assert lst.version == 1 and len(lst) == 2
    got = lst.update({"version": 2, "type": "diff", "entries": [
        {"token": B1, "status": "Accepted", "group": "g"}, {"token": A1, "remove": True},
        {"token": C1, "max_current_a": 8}]})
    assert got == {"version": 2, "entries": 2}
    assert lst.get([(1, A1)]) is None
    assert lst.get([(1, B1)]) == ("Accepted", None, "g", None, None, False)
    assert lst.get([(1, C1)]) == ("Accepted", None, None, 8, None, False)
    lst.update({"version": 3, "type": "full", "entries": [{"token": A1}]})
    assert [e["token"] for e in lst.entries()] == [A1] and lst.version == 3
    lst.update({"version": 4, "type": "full"})        # an empty full update clears the list
    assert len(lst) == 0 and lst.version == 4


def test_version_rules():
    lst = _listed({"token": A1})
    lst.update({"version": 5, "type": "diff", "entries": []})   # greater, not necessarily +1
    assert lst.version == 5
    for v in (5, 4):
        msg = str(raises(ValueError, lst.update, {"version": v, "type": "diff", "entries": [{"token": B1}]}))
        assert msg.startswith("version") and "5" in msg
    for v in (0, -1, True, "6", None):
        assert str(raises(ValueError, lst.update, {"version": v, "type": "full"})).startswith("version")
    lst.update({"version": 2, "type": "full", "entries": [{"token": B1}]})  # full: any version > 0
    assert lst.version == 2 and lst.get([(1, B1)])


def test_a_huge_diff_version_is_refused_and_a_full_list_resets_the_version():
    lst = _listed({"token": A1})
    for v in (0x3FFFFFFF, 1 << 30, 1002):           # 0x3FFFFFFF once refused every later diff
        msg = str(raises(ValueError, lst.update, {"version": v, "type": "diff", "entries": [{"token": C1}]}))
        assert msg.startswith("version") and ("1001" in msg and "full" in msg or v == 1 << 30)
        assert lst.version == 1 and not lst.get([(1, C1)])
    lst.update({"version": 1001, "type": "diff", "entries": [{"token": B1}]})   # +1000 at most
    assert lst.version == 1001 and lst.get([(1, B1)])
    lst.update({"version": 0x3FFFFFFF, "type": "full", "entries": [{"token": A1}]})
    lst.update({"version": 3, "type": "full", "entries": [{"token": A1}]})      # a full list resets it
    lst.update({"version": 4, "type": "diff", "entries": [{"token": C1}]})
    assert lst.version == 4 and lst.get([(1, C1)])


def test_a_bad_update_is_rejected_whole_and_the_old_list_stays():
    lst = _listed({"token": A1}, {"token": B1})
    before = list(lst.entries())
    entries = [{"token": C1}, {"token": A1, "remove": True}, {"token": B1, "group": "g"},
               {"token": pseudonym(K1, b"\x09" * 4), "status": "Stolen"}]
    e = raises(ValueError, lst.update, {"version": 2, "type": "diff", "entries": entries})
    assert str(e) == "entries[3].status: must be Accepted, Blocked, Expired or Invalid"
    assert list(lst.entries()) == before and lst.version == 1
    cases = [([{"token": "zz" * 16}], "entries[0].token"),
             ([{"token": A1[:30]}], "entries[0].token"),
             ([{"token": A1, "key": 0}], "entries[0].key"),
             ([{"token": A1, "expiry": "2027-01-01"}], "entries[0].expiry"),
             ([{"token": A1, "max_kwh": "1.2345"}], "entries[0].max_kwh"),
             ([{"token": A1, "max_kwh": "0"}], "entries[0].max_kwh"),
             ([{"token": A1, "max_current_a": True}], "entries[0].max_current_a"),
             ([{"token": A1, "group": ""}], "entries[0].group"),
             ([{"token": A1, "colour": "red"}], "entries[0].colour"),
             ([{"token": A1}, {"token": A1.upper()}], "entries[1].token"),
             (["x"], "entries[0]"),
             ({"token": A1}, "entries")]
    for entries, field in cases:
        msg = str(raises(ValueError, lst.update, {"version": 9, "type": "diff", "entries": entries}))
        assert msg.startswith(field), msg
    assert str(raises(ValueError, lst.update, {"version": 9, "type": "full", "entries": [
        {"token": A1, "remove": True}]})).startswith("entries[0].remove")
    assert str(raises(ValueError, lst.update, {"version": 9, "type": "all"})).startswith("type")
    assert str(raises(ValueError, lst.update, "full")).startswith("update")
    assert str(raises(ValueError, lst.update, {"version": 9, "type": "full", "entires": []})).startswith("entires")
    assert list(lst.entries()) == before and lst.version == 1


def test_list_size_is_bounded():
    tokens = [pseudonym(K1, bytes((n,)) * 4) for n in range(4)]
    lst = _listed(*[{"token": t} for t in tokens[:3]], max_entries=3)
    msg = str(raises(ValueError, lst.update, {"version": 2, "type": "full",
                                              "entries": [{"token": t} for t in tokens]}))
    assert msg.startswith("entries") and "3" in msg
    msg = str(raises(ValueError, lst.update, {"version": 2, "type": "diff", "entries": [{"token": tokens[3]}]}))
    assert msg.startswith("entries") and len(lst) == 3 and lst.version == 1
    lst.update({"version": 2, "type": "diff", "entries": [{"token": tokens[0], "remove": True},
                                                         {"token": tokens[3]}]})
    assert len(lst) == 3 and lst.get([(1, tokens[3])]) and not lst.get([(1, tokens[0])])


def test_entries_keep_the_provisioning_shape():
    entry = {"token": A1, "key": 2, "status": "Blocked", "expiry": "2027-01-01T00:00:00Z",
             "group": "fleet-a", "max_current_a": 16, "max_kwh": "20.5", "offpeak_only": True}
    nulls = {"token": C1, "key": 1, "status": "Accepted", "expiry": None, "group": None,
             "max_current_a": None, "max_kwh": None, "offpeak_only": False}   # as tools/provision.py writes
    lst = _listed(entry, {"token": B1.upper(), "max_kwh": 7}, nulls)
    assert list(lst.entries()) == [entry, {"token": B1, "key": 1, "status": "Accepted", "max_kwh": "7"},
                                   {"token": C1, "key": 1, "status": "Accepted"}]


def test_packed_key_lookup_ignores_misaligned_matches():
    # a 17-byte key that occurs across the boundary of two packed keys must not match
    lst = _listed({"token": "00" * 15 + "ab", "key": 1}, {"token": "01" + "cd" * 15, "key": 1})
    probe = "00" * 14 + "ab" + "01"              # bytes 2..17 of the packed table
    assert lst.get([(0, probe)]) is None and lst.get([(1, "00" * 15 + "ab")]) is not None


# -- key rotation -------------------------------------------------------------------------------
def test_entries_under_the_old_key_match_during_the_overlap_only():
    lst = _listed({"token": A1, "key": 1, "group": "g"})
    cache = AuthCache()
    cache.put(1, B1, ("Accepted", None, None, None, None, False), NOW)
    overlap = Keys({1: K1, 2: K2}, current=2, accept=(1, 2))
    auth, keys, _ = _auth(overlap, lst, cache)
    d = auth.tap(keys.tap(ALICE), online=False)
    assert (d.status, d.method, d.token, d.key, d.group) == ("Accepted", "local_list", pseudonym(K2, ALICE), 2, "g")
    d = auth.tap(keys.tap(BOB), online=False)
    assert (d.status, d.method, d.token) == ("Accepted", "cache", pseudonym(K2, BOB))
    auth, keys, _ = _auth(Keys({2: K2}, 2), lst, cache)
    for uid in (ALICE, BOB):
        d = auth.tap(keys.tap(uid), online=False)
        assert (d.status, d.method) == ("Invalid", "offline_unknown")


def test_online_request_uses_the_current_key():
    auth, keys, _ = _auth(Keys({1: K1, 2: K2}, 2, (1, 2)))
    d = auth.tap(keys.tap(BOB), online=True)
    assert d.request()["token"] == pseudonym(K2, BOB) and d.request()["key"] == 2


# -- persistence, purge, privacy ----------------------------------------------------------------
def test_list_and_cache_survive_a_restart():
    d = _tmpdir()
    try:
        lst = LocalList(d + "/list.jsonl")
        lst.update({"version": 7, "type": "full", "entries": [
            {"token": A1, "group": "g", "max_kwh": "12.25", "expiry": "2027-01-01T00:00:00Z"},
            {"token": B1, "key": 2, "status": "Blocked"}]})
        cache = AuthCache(d + "/cache.jsonl", max_entries=2)
        cache.put(1, A1, ("Accepted", None, "g", 16, None, True), NOW)
        cache.put(1, B1, ("Blocked", None, None, None, None, False), NOW + 5)
        cache.get([(1, A1)], NOW + 10)                  # A1 most recent
        cache.put(1, B1, ("Blocked", None, None, None, None, False), NOW + 20)  # saves; B1 most recent
        again = LocalList(d + "/list.jsonl")
        assert again.load_error is None and again.version == 7
        assert list(again.entries()) == list(lst.entries())
        cache2 = AuthCache(d + "/cache.jsonl", max_entries=2)
        assert cache2.load_error is None and list(cache2.entries()) == list(cache.entries())
        assert [e["token"] for e in cache2.entries()] == [A1, B1]   # LRU order kept
        cache2.put(1, C1, ("Accepted", None, None, None, None, False), NOW + 30)
        assert cache2.get([(1, A1)], NOW + 30) is None and cache2.get([(1, B1)], NOW + 30)
        assert sorted(os.listdir(d)) == ["cache.jsonl", "list.jsonl"]   # no temp file left
    finally:
        _rmtree(d)


def test_corrupted_or_missing_files_start_empty_and_say_why():
    d = _tmpdir()
    try:
        assert LocalList(d + "/none.jsonl").load_error is None      # first boot
        good = LocalList(d + "/list.jsonl")
        good.update({"version": 3, "type": "full", "entries": [{"token": A1}, {"token": B1}]})
        with open(d + "/list.jsonl") as f:
            text = f.read()
        variants = ["\x00\xff garbage", "", text.replace(B1, "nothex" * 5 + "xx"),
                    text[:len(text) - 40], text + '{"token": "%s"}\n' % C1, '{"version": 3}\n']
        for bad in variants:
            with open(d + "/list.jsonl", "w") as f:
                f.write(bad)
            lst = LocalList(d + "/list.jsonl")
            assert len(lst) == 0 and lst.version == 0
            assert lst.load_error and "list.jsonl" in lst.load_error
        for bad in ["{{{", '{"cache": 1}\n{"token": "%s"}\n' % A1, '{"cache": 99}\n']:
            with open(d + "/cache.jsonl", "w") as f:
                f.write(bad)
            cache = AuthCache(d + "/cache.jsonl", max_entries=8)
            assert len(cache) == 0 and cache.load_error and "cache.jsonl" in cache.load_error
    finally:
        _rmtree(d)


def test_a_failed_flash_write_keeps_the_old_list():
    lst = LocalList("/tmp/no-such-dir-%s/list.jsonl" % binascii.hexlify(os.urandom(4)).decode())
    raises(OSError, lst.update, {"version": 1, "type": "full", "entries": [{"token": A1}]})
    assert len(lst) == 0 and lst.version == 0
    cache = AuthCache(lst.path)
    cache.put(1, A1, ("Accepted", None, None, None, None, False), NOW)
    assert cache.save_error and len(cache) == 1   # the RAM copy is still used


def test_purge_removes_every_record_of_a_pseudonym_and_reports_it():
    d = _tmpdir()
    try:
        lst = LocalList(d + "/list.jsonl")
        lst.update({"version": 1, "type": "full", "entries": [
            {"token": A1, "key": 1}, {"token": A1, "key": 2}, {"token": B1}]})
        cache = AuthCache(d + "/cache.jsonl")
        cache.put(1, A1, ("Accepted", None, None, None, None, False), NOW)
        auth, keys, _ = _auth(lst=lst, cache=cache)
        waiting = auth.tap(keys.tap(ALICE), online=True)
        assert auth.purge(A1.upper()) == {"token": A1, "list": 2, "cache": 1, "pending": 1}
        raises(ValueError, auth.online_answer, waiting.corr, {"status": "Accepted"})
        assert LocalList(d + "/list.jsonl").get([(1, A1), (2, A1)]) is None
        assert len(LocalList(d + "/list.jsonl")) == 1 and len(AuthCache(d + "/cache.jsonl")) == 0
        assert lst.version == 1
        assert auth.purge(C1) == {"token": C1, "list": 0, "cache": 0, "pending": 0}
        assert str(raises(ValueError, auth.purge, "abc")).startswith("token")
        assert str(raises(ValueError, auth.purge, B1, 0)).startswith("key")
    finally:
        _rmtree(d)


def test_no_raw_uid_in_any_written_file():
    d = _tmpdir()
    uid = b"\x04\x9c\x5a\x12\x7b\x33\x80"
    try:
        keys = Keys({1: K1, 2: K2}, 2, (1, 2))
        lst = LocalList(d + "/list.jsonl")
        cache = AuthCache(d + "/cache.jsonl")
        pairs = keys.tap(uid)
        lst.update({"version": 1, "type": "full", "entries": [
            {"token": t, "key": v, "group": "fleet"} for v, t in pairs]})
        auth, _, _ = _auth(keys, lst, cache)
        d1 = auth.tap(pairs, online=True)
        auth.online_answer(d1.corr, {"status": "Accepted"})
        cache.put(pairs[0][0], pairs[0][1], ("Accepted", None, None, None, None, False), NOW)
        names = os.listdir(d)
        assert len(names) == 2
        hexes = [binascii.hexlify(uid), binascii.hexlify(bytes(reversed(uid)))]
        needles = [uid] + [h.lower() for h in hexes] + [h.upper() for h in hexes]
        for name in names:
            with open(d + "/" + name, "rb") as f:
                data = f.read()
            assert pairs[0][1].encode() in data or pairs[1][1].encode() in data
            for needle in needles:
                assert needle not in data and needle not in data.upper()
    finally:
        _rmtree(d)


# -- config, memory -----------------------------------------------------------------------------
def test_from_settings_reads_the_ocpp_switches_and_sizes():
    clock = VirtualClock(start_utc=NOW)
    keys = Keys({1: K1}, 1)
    auth = from_settings(settings().auth, clock, keys)
    assert (auth.local_authorize_offline, auth.local_pre_authorize, auth.allow_offline_unknown,
            auth.authorize_remote, auth.timeout_ms) == (True, False, False, True, 3000)   # OCPP: remote starts checked
    assert (auth.local_list.max_entries, auth.cache.max_entries, auth.cache.max_age_s) == (1000, 64, 604800)
    cfg = {"auth": {"LocalAuthorizeOffline": False, "LocalPreAuthorize": True,
                    "AllowOfflineTxForUnknownId": True, "AuthorizeRemoteTxRequests": False,
                    "timeout_s": 5, "list_max_entries": 50, "cache_entries": 0}}
    auth = from_settings(settings(cfg).auth, clock, keys)
    assert (auth.local_authorize_offline, auth.local_pre_authorize, auth.allow_offline_unknown,
            auth.authorize_remote, auth.timeout_ms) == (False, True, True, False, 5000)
    assert (auth.local_list.max_entries, auth.cache.max_entries) == (50, 0)
    e = raises(ValueError, settings, {"auth": {"LocalPreAuthorize": 1}})
    assert "auth.LocalPreAuthorize" in str(e)
    assert "auth.timeout_s" in str(raises(ValueError, settings, {"auth": {"timeout_s": 0}}))


def test_decision_as_dict_is_json_ready():
    auth, keys, _ = _auth(lst=_listed({"token": A1, "max_kwh": "2"}))
    d = json.loads(json.dumps(auth.tap(keys.tap(ALICE), online=False).as_dict()))
    assert d == {"status": "Accepted", "method": "local_list", "token": A1, "key": 1, "group": None,
                 "max_current_a": None, "max_wh": 2000, "offpeak_only": False, "reason": "offline"}


def _feed(lst, part):
    """200 entries a message, as an MQTT payload could carry them; garbage once it returns."""
    entries = [{"token": pseudonym(K1, n.to_bytes(4, "big")), "group": "g%d" % (n % 10),
                "max_current_a": 16, "max_kwh": "20", "expiry": "2027-01-01T00:00:00Z"}
               for n in range(part * 200, part * 200 + 200)]
    lst.update({"version": part + 1, "type": "diff" if part else "full", "entries": entries})


def test_a_full_list_of_1000_entries_stays_small_in_ram():
    if not hasattr(gc, "mem_alloc"):
        return   # CPython: no heap to measure
    lst = LocalList()
    gc.collect()
    before = gc.mem_alloc()
    for part in range(5):
        _feed(lst, part)
    [0] * 64     # overwrite stale stack slots so the collector can free the messages
    gc.collect()
    used = gc.mem_alloc() - before
    assert len(lst) == 1000 and lst.get([(1, pseudonym(K1, (999).to_bytes(4, "big")))])
    assert used < 36 * 1024, used    # 29 bytes an entry: 1000 dicts would take ten times more
