"""Settings parsed once (firmware/core/settings.py): one default and one bound per key, errors that
name the key, optional values that may be null, and records that carry what the files said."""

from check import raises
from configs import SITE_KEY, board, board_config, device_config, settings
from firmware.core.config import REQUIRED
from test_board import py_files
from testkeys import KEY_A
from firmware.core.settings import OPTIONAL, PIN, TRIPLE, Settings, board_rows, board_settings, device_rows, one, \
    ota_settings, secret_rows


def _set(cfg, key, value):
    """cfg with the dotted key set (sections copied, never shared with the original)."""
    out = dict(cfg)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node[part] = dict(node.get(part) or {})
        node = node[part]
    node[parts[-1]] = value
    return out


def _get(rec, key):
    for part in key.split("."):
        rec = getattr(rec, part)
    return rec


def _full_board():
    """sim.json with every optional section present."""
    return board_config(buzzer={"pin": 21}, power_good={"pin": 39})


def _minimal_board():
    """Only the required board keys: everything else takes its default."""
    bus = {"id": 1, "polarity": 0, "phase": 0, "sck": 14, "mosi": 13, "miso": 12}
    return {"spi": {"meter": dict(bus, id=2), "reader": bus}, "limits": {"max_current_a": 16},
            "meter": {"cs": 5, "phases": 1, "line_hz": 50, "pga": 1, "ugain": [30000] * 3, "igain": [30000] * 3},
            "reader": {"cs": 15}, "contactor": {"coil": 26}, "led": {"pin": 2}, "ev_sense": "current"}


def _words(text):
    """The identifiers of a source text."""
    return "".join(c if c.isalpha() or c.isdigit() or c == "_" else " " for c in text).split()


def _static(x):
    return x is not REQUIRED and not callable(x)


# -- the tables ----------------------------------------------------------------------------------
def test_one_row_per_key_and_every_default_within_its_bounds():
    for table in (board_rows(), device_rows(), secret_rows()):
        keys = [r[0] for r in table]
        assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1]
        for r in table:
            kind, default = r[1], r[2]
            if isinstance(kind, tuple) and _static(default) and default is not None:
                assert default in kind, r
            if len(r) > 3 and _static(default) and default is not None and _static(r[3]) and _static(r[4]):
                for v in (default if kind == TRIPLE else (default,)):
                    assert r[3] <= v <= r[4], r


def _reads_settings(text):
    """Calls or imports firmware/core/config.py's `setting`."""
    for line in text.split("\n"):
        code = line.split("#")[0]
        if code.strip().startswith(("from ", "import ")) and "setting" in _words(code):
            return True
        i = code.find("setting(")
        if i >= 0 and (i == 0 or code[i - 1] not in "_abcdefghijklmnopqrstuvwxyz"):
            return True
    return False


def test_no_other_module_reads_settings_from_the_files():
    # every key is parsed here; the site keys' versioned map is firmware/auth/keys.py's (secrets)
    allowed = ("firmware/core/config.py", "firmware/core/settings.py", "firmware/auth/keys.py")
    found = []
    for path in py_files("firmware") + py_files("hal"):
        if path not in allowed:
            with open(path) as f:
                if _reads_settings(f.read()):
                    found.append(path)
    assert found == [], found
    assert _reads_settings("x = setting(cfg, 'a', int)") and not _reads_settings('"""naming the setting."""')


def test_the_keys_are_documented():
    with open("docs/settings.md") as f:
        doc = f.read()
    missing = [r[0] for t in (board_rows(), device_rows(), secret_rows()) for r in t if "`%s`" % r[0] not in doc]
    assert missing == [], missing


# -- defaults ------------------------------------------------------------------------------------
def test_a_minimal_board_takes_every_default():
    hw = board_settings(_minimal_board())
    for r in board_rows():
        key, default = r[0], r[2]
        if key.split(".")[0] in OPTIONAL:
            assert getattr(hw, key.split(".")[0]) is None, key   # an absent optional section
        elif _static(default):
            assert _get(hw, key) == default, (key, _get(hw, key), default)
    # defaults that follow other keys: limits.nominal_v 230 V, meter.line_hz 50 Hz
    assert (hw.meter.ov_cv, hw.meter.sag_cv, hw.meter.loss_cv) == (26450, 18400, 9200)
    assert (hw.meter.freq_lo_chz, hw.meter.freq_hi_chz) == (4700, 5300)
    assert (hw.safety.voltage_min_v, hw.safety.voltage_max_v, hw.safety.phase_loss_v) == (195, 253, 92)
    assert (hw.safety.frequency_min_chz, hw.safety.frequency_max_chz) == (4800, 5150)
    hw = board_settings(_set(_set(_minimal_board(), "limits.nominal_v", 120), "meter.line_hz", 60))
    assert (hw.meter.ov_cv, hw.safety.voltage_min_v, hw.safety.frequency_max_chz) == (13800, 102, 6150)


def test_a_minimal_device_takes_every_default():
    s = Settings(board_settings(_minimal_board()), device_config(), {"site_key": SITE_KEY})
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.keepalive_s, s.mqtt.tls, s.mqtt.timeout_ms) == ("", 1883, 60, None, 2000)
    assert (s.mqtt.user, s.mqtt.password) == (None, None)
    assert (s.journal.every_wh, s.journal.min_s, s.journal.every_s) == (250, 150, 300)
    assert (s.ota.max_size, s.ota.max_boots, s.ota.trial_s, s.ota.key) == (1 << 20, 3, 600, None)
    assert (s.auth.LocalAuthorizeOffline, s.auth.timeout_s, s.auth.cache_entries) == (True, 3, 64)
    assert (s.outbox_size, s.data_dir, s.device_key, s.take_local_list(), s.offpeak) == (64, "data", None, None, [])
    assert (s.pilot_debounce_ms, s.pilot_poll_ms, s.soft_stop_ms, s.reader_poll_ms, s.sample_ms) == (20, 25, 5000, 200, 100)
    assert s.max_power_w == 16 * 230 * 1


# -- bounds and errors ---------------------------------------------------------------------------
def _out_of_range(r):
    """Values just outside a row's static bounds or choices (none for rows without)."""
    kind = r[1]
    if kind == PIN:
        return (-1, 49, "5")
    if isinstance(kind, tuple):
        return ("x" if isinstance(kind[0], int) else 1, True if isinstance(kind[0], int) else None)
    if kind == TRIPLE:
        return ([r[3] - 1, r[3], r[3]], [r[4] + 1] * 3, [r[3]] * 2)
    if kind is bool:
        return (1, "true")
    if len(r) > 3:
        out = ["10"]
        if _static(r[3]):
            out.append(r[3] - 1)
        if _static(r[4]):
            out.append(r[4] + 1)
        return out
    return ()


def test_every_bad_value_stops_the_boot_naming_its_key():
    checked = 0
    for table, where in ((board_rows(), "board"), (device_rows(), "device"), (secret_rows(), "secrets")):
        for r in table:
            for bad in _out_of_range(r):
                if bad is None:   # null means "left out" for keys whose default is None
                    continue
                if where == "board":
                    e = raises(ValueError, board_settings, _set(_full_board(), r[0], bad))
                elif where == "device":
                    e = raises(ValueError, settings, _set({}, r[0], bad))
                else:
                    e = raises(ValueError, settings, None, {r[0]: bad})
                assert str(e).startswith("config: %s " % r[0]), (r[0], bad, str(e))
                checked += 1
    assert checked > 200, checked


def test_the_bounds_are_inclusive():
    assert board(pilot=dict(board_config()["pilot"], debounce_ms=100)).pilot.debounce_ms == 100
    assert board(pilot=dict(board_config()["pilot"], debounce_ms=0)).pilot.debounce_ms == 0
    e = raises(ValueError, board, pilot=dict(board_config()["pilot"], debounce_ms=101))
    assert str(e) == "config: pilot.debounce_ms must be within 0..100 (got 101)"


def test_bounds_that_follow_other_keys():
    e = raises(ValueError, board, limits={"max_current_a": 32, "thermal": {"t1_c": 90}})
    assert "limits.thermal.t2_c must be within 91..150" in str(e)   # the default 85 does not fit: say so
    e = raises(ValueError, board, safety={"voltage_max_v": 220})
    assert "safety.voltage_max_v must be within 230..320" in str(e)
    e = raises(ValueError, board, meter=dict(board_config()["meter"], line_hz=60), safety={"frequency_min_chz": 4900})
    assert "safety.frequency_min_chz must be within 5400..6000" in str(e)
    assert "journal.every_s" in str(raises(ValueError, settings, {"journal": {"min_s": 600, "every_s": 300}}))


def test_meter_keys_are_checked_at_boot_with_their_names():
    meter = board_config()["meter"]
    cases = (
        ({"pga": 3}, "meter.pga must be one of 1, 2, 4"),
        ({"phases": 2}, "meter.phases"),
        ({"line_hz": 55}, "meter.line_hz"),
        ({"line_hz": 50.0}, "meter.line_hz must be an integer"),
        ({"phases": True}, "meter.phases must be an integer"),
        ({"pga": None}, "meter.pga"),
        ({"ugain": None}, "meter.ugain"),
        ({"ugain": [1, 2]}, "meter.ugain"),
        ({"igain": [0, 1, 1]}, "meter.igain"),
        ({"uoffset": [0, 40000, 0]}, "meter.uoffset"),
        ({"pmean_lsb_per_w": 0}, "meter.pmean_lsb_per_w"),
        ({"pmean_lsb_per_w": 3125.0}, "meter.pmean_lsb_per_w"),
        ({"freq_lo_chz": 5100, "freq_hi_chz": 5000}, "meter.freq_lo_chz"),
    )
    for change, words in cases:
        cfg = dict(meter)
        cfg.update(change)
        if change.get("ugain", 0) is None:
            del cfg["ugain"]
        e = raises(ValueError, board, meter=cfg)
        assert words in str(e), (change, str(e))
    # the chip's own limit (a threshold too high for its gain) stops the boot when the board is built
    from hal.board import Board
    from hal.sim import machine

    hw = board(meter=dict(meter, oi_ma=65535, igain=[1000, 1000, 1000]))
    assert "oi_ma" in str(raises(ValueError, Board, hw, machine, lambda ms: None))
    assert "limits.nominal_v" in str(raises(ValueError, board, limits={"max_current_a": 32, "nominal_v": 1000}))


def test_the_sample_ring_holds_what_a_fault_report_reads_and_no_more_by_default():
    """26 bytes of heap a row: the default ring is the forensics window's size class, not 256 rows."""
    cfg = board_config()
    cfg.get("sampling", {}).pop("ring_samples", None)
    assert board_settings(cfg).sampling.ring_samples == 64
    e = raises(ValueError, board, sampling={"rate_hz": 10, "ring_samples": 32}, safety={"forensics_samples": 50})
    assert str(e) == "config: safety.forensics_samples (50) is more than sampling.ring_samples (32)"
    assert board(sampling={"rate_hz": 10, "ring_samples": 50}, safety={"forensics_samples": 50}) is not None


def test_required_keys_and_sections():
    cfg = board_config()
    del cfg["ev_sense"]
    assert str(raises(ValueError, board_settings, cfg)) == "config: ev_sense is missing"
    e = raises(ValueError, board, pilot={"adc": 36, "cal": [[4000, -12000], [60000, 12000]]})
    assert str(e) == "config: pilot.pwm is missing (ev_sense is 'pilot')"
    e = raises(ValueError, board, ev_sense="pin")
    assert str(e) == "config: plug.pin is missing (ev_sense is 'pin')"
    assert board(ev_sense="pin", plug={"pin": 34}).plug.pin == 34
    assert str(raises(ValueError, board, rcd={"trip": 33})) == "config: rcd.test is missing"
    assert str(raises(ValueError, board, watchdog={})) == "config: watchdog.timeout_ms is missing"
    cfg = board_config()
    for name in OPTIONAL:
        cfg.pop(name, None)
    hw = board_settings(cfg)
    assert (hw.buzzer, hw.rcd, hw.watchdog, hw.button) == (None, None, None, None)
    assert "device_id" in str(raises(ValueError, Settings, board(), {"tariff": device_config()["tariff"]},
                                     {"site_key": SITE_KEY}))
    assert "device_id must be 1..64" in str(raises(ValueError, settings, {"device_id": "a/b"}))


def test_null_is_accepted_where_a_value_is_optional():
    s = settings({"mqtt": {"host": "broker", "tls": True, "ca": "ca.pem", "tls_hostname": None}},
                 {"mqtt_user": None, "mqtt_password": None, "tls_cert": None, "tls_key": None,
                  "device_key": None, "update_key": None})
    assert (s.mqtt.user, s.mqtt.password, s.device_key, s.ota.key) == (None, None, None, None)
    assert s.mqtt.tls == {"ca": "ca.pem", "cert": None, "key": None, "hostname": None}
    hw = board(limits={"max_current_a": 32, "cable_max_a": None},
               reader={"cs": 15, "rst": None, "gain": None})
    assert (hw.limits.cable_max_a, hw.reader.rst, hw.reader.gain) == (None, None, None)
    # null is not a value where one is required
    assert "mqtt.port" in str(raises(ValueError, settings, {"mqtt": {"port": None}}))
    assert "meter.cs" in str(raises(ValueError, board, meter=dict(board_config()["meter"], cs=None)))
    e = raises(ValueError, settings, {"mqtt": {"tls": True, "ca": "ca.pem"}}, {"tls_cert": "c.pem"})
    assert "tls_cert and tls_key" in str(e)
    assert "mqtt.ca" in str(raises(ValueError, settings, {"mqtt": {"tls": True}}))


# -- records -------------------------------------------------------------------------------------
def test_records_carry_the_values():
    hw = board(reader={"cs": 15, "rst": 22, "poll_ms": 300, "gain": 5},
               limits={"max_current_a": 20, "nominal_v": 240, "cable_max_a": 16,
                       "thermal": {"t1_c": 60, "t2_c": 75, "reduced_a": 8, "hyst_c": 3}})
    assert (hw.reader.cs, hw.reader.rst, hw.reader.poll_ms, hw.reader.gain) == (15, 22, 300, 5)
    assert (hw.spi.meter.id, hw.spi.meter.polarity, hw.spi.reader.miso) == (2, 1, 35)
    t = hw.limits.thermal
    assert (hw.limits.cable_max_a, t.t1_c, t.t2_c, t.reduced_a, t.hyst_c) == (16, 60, 75, 8, 3)
    assert hw.meter.ugain == (34000, 34000, 34000) and hw.pilot.cal == [[4000, -12000], [60000, 12000]]
    assert (hw.platform, hw.name, hw.sim.grid_v, hw.sim.cp_step_us, hw.watchdog.timeout_ms) == ("sim", "sim", 230, 100, 8000)
    s = settings({"mqtt": {"host": "b", "port": 8883, "keepalive_s": 30}, "auth": {"cache_entries": 8},
                  "site": {"utc_offset_min": 60, "offpeak": [["22:00", "06:00"]]}, "ota": {"public_key": KEY_A.hex}},
                 {"mqtt_user": "u", "mqtt_password": "p", "update_key": "ab" * 32}, hw=hw)
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.keepalive_s, s.mqtt.user, s.mqtt.password) == ("b", 8883, 30, "u", "p")
    assert s.mqtt.timeout_ms == 500   # network.timeout_ms of the board
    assert s.auth.cache_entries == 8 and s.ota.key.n == KEY_A.n and s.offpeak == [(1320, 360)]
    assert s.ota.old_hmac_key and s.ota.device_id == "cp-test"   # a leftover HMAC key is only reported
    assert s.max_power_w == 20 * 240 * 1 and s.reader_poll_ms == 300
    assert s.limits.offer_a(0, temp_c=65) == 8 and s.limits.reason == "thermal"
    assert ota_settings({"ota": {"stall_s": 9}}, {}).stall_s == 9   # the ota section alone
    assert one(device_rows(), {}, "data_dir") == "data" and one(device_rows(), {"data_dir": "d"}, "data_dir") == "d"


def test_a_bad_time_window_names_its_place():
    e = raises(ValueError, settings, {"site": {"offpeak": [["22:00", "25:00"]]}})
    assert "site.offpeak[0][1]" in str(e)
