"""Versioned site keys: pseudonyms under every accepted version, validation naming the field."""
from check import raises
from firmware.auth.keys import Keys, keys_from_config
from firmware.auth.pseudonym import pseudonym

K1 = b"\x11" * 16
K2 = b"\x22" * 20
UID = b"\x04\xa1\xb2\xc3\xd4\xe5\xf6"


def test_tap_gives_the_current_version_first_then_the_other_accepted_ones():
    keys = Keys({1: K1, 2: K2}, current=2, accept=(1, 2))
    assert keys.tap(UID) == [(2, pseudonym(K2, UID)), (1, pseudonym(K1, UID))]
    assert keys.token(UID) == pseudonym(K2, UID)
    assert keys.accept == (2, 1) and keys.current == 2


def test_only_the_current_version_is_accepted_by_default():
    keys = Keys({1: K1, 2: K2}, current=1)
    assert keys.tap(UID) == [(1, pseudonym(K1, UID))]


def test_a_dropped_version_gives_no_pseudonym_any_more():
    overlap = Keys({1: K1, 2: K2}, 2, (1, 2))
    after = Keys({2: K2}, 2)
    old = pseudonym(K1, UID)
    assert old in [t for _, t in overlap.tap(UID)]
    assert old not in [t for _, t in after.tap(UID)]


def test_the_uid_is_not_kept():
    keys = Keys({1: K1}, 1)
    keys.tap(UID)
    for value in keys.__dict__.values():
        assert value != UID and UID not in repr(value).encode()


def test_bad_keys_name_the_field():
    assert "keys[1]" in str(raises(ValueError, Keys, {1: b"short"}, 1))
    assert "keys" in str(raises(ValueError, Keys, {}, 1))
    assert "keys" in str(raises(ValueError, Keys, {0: K1}, 0))
    assert "keys" in str(raises(ValueError, Keys, {256: K1}, 256))
    assert "keys" in str(raises(ValueError, Keys, {True: K1}, 1))
    assert "current" in str(raises(ValueError, Keys, {1: K1}, 2))
    assert "current" in str(raises(ValueError, Keys, {1: K1}, "1"))
    assert "accept" in str(raises(ValueError, Keys, {1: K1, 2: K2}, 2, (1,)))
    assert "accept" in str(raises(ValueError, Keys, {1: K1}, 1, (1, 3)))
    assert "accept" in str(raises(ValueError, Keys, {1: K1}, 1, 1))


def test_single_site_key_config_is_version_1():
    keys = keys_from_config({"site_key": "11" * 16})
    assert keys.current == 1 and keys.tap(UID) == [(1, pseudonym(K1, UID))]


def test_versioned_config():
    cfg = {"site_keys": {"1": "11" * 16, "2": "22" * 20}, "site_key_current": 2, "site_key_accept": [1, 2]}
    keys = keys_from_config(cfg)
    assert keys.tap(UID) == [(2, pseudonym(K2, UID)), (1, pseudonym(K1, UID))]


def test_bad_versioned_config_names_the_setting():
    base = {"site_keys": {"1": "11" * 16}, "site_key_current": 1}
    cfg = dict(base, site_keys={"1": "11" * 8})
    assert "site_keys.1" in str(raises(ValueError, keys_from_config, cfg))
    cfg = dict(base, site_keys={"x": "11" * 16})
    assert "site_keys.x" in str(raises(ValueError, keys_from_config, cfg))
    cfg = dict(base, site_keys={"1": 7})
    assert "site_keys.1" in str(raises(ValueError, keys_from_config, cfg))
    assert "site_keys" in str(raises(ValueError, keys_from_config, dict(base, site_keys={})))
    assert "site_key_current" in str(raises(ValueError, keys_from_config, dict(base, site_key_current=2)))
    cfg = dict(base, site_key_accept=[1, 2])
    assert "site_key_accept" in str(raises(ValueError, keys_from_config, cfg))
    assert "site_key_current" in str(raises(ValueError, keys_from_config, {"site_keys": base["site_keys"]}))
    assert "site_key" in str(raises(ValueError, keys_from_config, {}))
