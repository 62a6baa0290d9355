"""Tariff versions are bounded: no version can refuse every later tariff, and a bad tariff.json is
the config's tariff, not a charger that refuses every later update."""
import json
import os

from check import raises
from fakes import ListLog
from firmware.billing.tariff import Tariff, flat
from firmware.billing.tariffs import MAX_STEP, Tariffs
from firmware.core import jsonx

_PATH = "/tmp/cp-tariffs-test.json"


def _fresh(saved=None):
    try:
        os.remove(_PATH)
    except OSError:
        pass
    if saved is not None:
        with open(_PATH, "w") as f:
            f.write(saved)
    log = ListLog()
    return Tariffs(_PATH, Tariff(flat("0.30", "EUR", "0", "config")), log), log


def _msg(version, tid="new"):
    return {"version": version, "tariff": {"id": tid, "currency": "EUR", "elements": [
        {"price_components": [{"type": "ENERGY", "price": "0.10", "vat": "0", "step_size": 1}]}]}}


def test_huge_or_jumping_versions_are_refused_and_a_normal_update_still_works():
    t, _ = _fresh()
    raises(ValueError, jsonx.loads, json.dumps(_msg(10 ** 32)))            # the parse bound
    raises(ValueError, jsonx.loads, '{"version": %s, "tariff": {}}' % ("9" * 8037))
    for bad in (10 ** 30, 1 << 30, MAX_STEP + 1, 0, -1, "2", True):
        raises(ValueError, t.replace, _msg(bad, "evil"))
        assert t.version == 0 and t.current.id == "config"
    t.replace(_msg(MAX_STEP))                  # at most MAX_STEP over the current
    assert t.version == MAX_STEP and t.current.id == "new"
    raises(ValueError, t.replace, _msg(2 * MAX_STEP + 1))
    t.replace(_msg(MAX_STEP + 1, "next"))
    assert t.version == MAX_STEP + 1 and t.current.id == "next"


def test_an_unusable_saved_version_falls_back_to_the_config_tariff_and_updates_go_on():
    for saved in ('{"version": "9", "tariff": {"id": "x", "currency": "EUR", "elements": []}}',
                  '{"version": %d, "tariff": {"id": "x", "currency": "EUR", "elements": []}}' % (1 << 30)):
        t, log = _fresh(saved)
        assert t.version == 0 and t.current.id == "config"
        assert [e["file"] for e in log.events if e["ev"] == "storage"] == ["tariff"]
        t.replace(_msg(1))                     # raised TypeError on main ("9" <= 1)
        assert t.current.id == "new"
