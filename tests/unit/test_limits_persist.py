"""Charging profiles persist: a reboot installs what the backend set; a failed write changes nothing."""
import os

from check import raises
from firmware.charging.limits import Limits

PATH = "/tmp/cp-limits-persist-%d.json" % os.getpid() if hasattr(os, "getpid") else "/tmp/cp-limits-persist.json"


def _fresh():
    try:
        os.remove(PATH)
    except OSError:
        pass
    lim = Limits(32)
    lim.load(PATH)
    return lim


def test_profiles_set_and_cleared_are_there_after_a_reboot():
    lim = _fresh()
    lim.set_profile("station_max", {"periods": [[0, 10], [3600, 20]], "start_schedule": 1000})
    lim.set_profile("tx_default", {"periods": [[0, 12]], "stack_level": 1})
    lim.set_profile("tx_default", {"periods": [[0, 8]], "stack_level": 2})
    lim.clear_profile("tx_default", 2)
    again = Limits(32)
    assert again.schedule_a(2000) is None
    again.load(PATH)
    assert again.load_error is None
    assert again.schedule_a(2000) == 10 and again.schedule_a(5000) == 20
    assert again.schedule_a(5000, session_start=4000) == 12


def test_a_failed_write_keeps_the_old_profiles_and_a_damaged_file_is_named():
    lim = _fresh()
    lim.set_profile("station_max", {"periods": [[0, 10]]})
    lim.path = "/nonexistent-dir/profiles.json"
    raises(OSError, lim.set_profile, "station_max", {"periods": [[0, 6]]})
    raises(OSError, lim.clear_profile, "station_max")
    assert lim.schedule_a(100) == 10
    with open(PATH, "w") as f:
        f.write("{not json")
    bad = Limits(32)
    bad.load(PATH)
    assert PATH in bad.load_error and bad.schedule_a(100) is None
