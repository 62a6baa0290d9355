"""The charger's settings, parsed once at boot: board config (hardware), device config (identity,
tariff, list, policies) and device secrets (keys, credentials), as written by tools/provision.py.

Every key has one row in board_rows(), device_rows() or secret_rows() below: its type, its one
default and its one bound (docs/settings.md lists them). A missing or out-of-range value stops
the boot with a ValueError naming its key, so the charger never runs on guesses. The values end up in small
records, one per concern, that are handed to whoever needs them (`hw.reader.gain`,
`s.journal.every_wh`); no other module reads the raw JSON.

    hw = board_settings(load("board.json"))          # the hardware: buses, pins, calibration
    s = Settings(hw, load("config.json"), load("secrets.json"))
"""
from firmware.core.clock import BASE
from firmware.core.config import REQUIRED, setting
from firmware.auth.keys import keys_from_config
from firmware.billing.localtime import LocalTime
from firmware.auth.pseudonym import parse_key
from firmware.billing.tariff import Tariff
from firmware.charging.limits import from_settings as limits_from_settings
from firmware.charging.pilot import DEBOUNCE_MAX_MS
from firmware.core.rsa import parse_public_key
from firmware.safety.faults import POLICIES
from hal.mfrc522 import GAIN_MAX
from hal.pilot import SAMPLES_MAX, SAMPLES_MIN

PIN = "pin"               # an ESP32 GPIO number, 0..48
TRIPLE = "triple"         # 3 integers within the bounds, one per phase A, B, C
# Optional sections of the board config: absent, their record is None; present, their
# required keys must be there.
OPTIONAL = ("buzzer", "rcd", "watchdog", "button", "fram", "power_good")
# Device settings the backend may change at run time (cmd/set_config, OCPP ChangeConfiguration):
# each is re-validated with its row below and applied live by its owner.
CHANGEABLE = ("auth.LocalAuthorizeOffline", "auth.LocalPreAuthorize", "auth.AllowOfflineTxForUnknownId",
              "auth.AuthorizeRemoteTxRequests", "meter_values_s", "meter_aligned_s", "auth_timeout_s")


def _nominal(pct):
    return lambda v: v["limits.nominal_v"] * pct // 100


def _line(pct_of_hz, add=0):
    return lambda v: v["meter.line_hz"] * pct_of_hz + add


# Rows: (key, type, default, low, high). The type is int, bool, str, list, dict, PIN, TRIPLE, or a
# tuple of the allowed values. A default or bound may depend on keys above it (a function of the
# values); a bound that is a driver's own limit is the driver's constant.
def board_rows():
    """The board config's rows (a function: the table lives only while it is read)."""
    return (
        ("name", str, "?"),
        ("platform", ("esp32", "sim"), "esp32"),
        ("spi.meter.id", int, REQUIRED, 0, 3),
        ("spi.meter.baudrate", int, 1000000, 100000, 10000000),
        ("spi.meter.polarity", (0, 1), REQUIRED),
        ("spi.meter.phase", (0, 1), REQUIRED),
        ("spi.meter.sck", PIN, REQUIRED),
        ("spi.meter.mosi", PIN, REQUIRED),
        ("spi.meter.miso", PIN, REQUIRED),
        ("spi.reader.id", int, REQUIRED, 0, 3),
        ("spi.reader.baudrate", int, 1000000, 100000, 10000000),
        ("spi.reader.polarity", (0, 1), REQUIRED),
        ("spi.reader.phase", (0, 1), REQUIRED),
        ("spi.reader.sck", PIN, REQUIRED),
        ("spi.reader.mosi", PIN, REQUIRED),
        ("spi.reader.miso", PIN, REQUIRED),
        ("limits.max_current_a", int, REQUIRED, 6, 80),
        ("limits.nominal_v", int, 230, 100, 277),
        ("limits.cable_max_a", int, None, 6, 80),
        ("limits.thermal.t1_c", int, 70, -40, 150),
        ("limits.thermal.t2_c", int, 85, lambda v: v["limits.thermal.t1_c"] + 1, 150),
        ("limits.thermal.reduced_a", int, 16, 0, 80),
        ("limits.thermal.hyst_c", int, 5, 1, 50),
        ("meter.cs", PIN, REQUIRED),
        ("meter.phases", (1, 3), REQUIRED),
        ("meter.line_hz", (50, 60), REQUIRED),
        ("meter.pga", (1, 2, 4), REQUIRED),
        ("meter.ugain", TRIPLE, REQUIRED, 1, 0xFFFF),
        ("meter.igain", TRIPLE, REQUIRED, 1, 0xFFFF),
        ("meter.uoffset", TRIPLE, (0, 0, 0), -0x8000, 0x7FFF),
        ("meter.ioffset", TRIPLE, (0, 0, 0), -0x8000, 0x7FFF),
        ("meter.pmean_lsb_per_w", int, 3125, 4, 1 << 22),
        ("meter.ov_cv", int, _nominal(11500), 1, 0xFFFF),
        ("meter.sag_cv", int, _nominal(8000), 1, 0xFFFF),
        ("meter.loss_cv", int, _nominal(4000), 1, 0xFFFF),
        ("meter.oi_ma", int, 40000, 1, 0xFFFF),
        ("meter.freq_hi_chz", int, _line(100, 300), 1000, 10000),
        ("meter.freq_lo_chz", int, _line(100, -300), 1000, lambda v: v["meter.freq_hi_chz"] - 1),
        ("meter.sag_peak_cfg", int, 0x143F, 0, 0xFFFF),
        ("reader.cs", PIN, REQUIRED),
        ("reader.rst", PIN, None),
        ("reader.poll_ms", int, 200, 50, 2000),
        ("reader.gain", int, None, 0, GAIN_MAX),
        ("contactor.coil", PIN, REQUIRED),
        ("contactor.aux", PIN, None),
        ("contactor.aux_closed", (0, 1), 1),
        ("led.pin", PIN, REQUIRED),
        ("led.active", (0, 1), 1),
        ("buzzer.pin", PIN, REQUIRED),
        ("buzzer.active", (0, 1), 1),
        ("ev_sense", ("pilot", "pin", "current"), REQUIRED),
        ("ev_idle_end_s", int, 0, 0, 86400),
        ("pilot.pwm", PIN, None),                # required with ev_sense "pilot"
        ("pilot.adc", PIN, None),                # required with ev_sense "pilot"
        ("pilot.cal", list, None),               # required with ev_sense "pilot" (hal/pilot.py checks the pairs)
        ("pilot.invert", (0, 1), 0),
        ("pilot.samples", int, 64, SAMPLES_MIN, SAMPLES_MAX),
        ("pilot.poll_ms", int, 25, 5, 50),
        ("pilot.debounce_ms", int, 20, 0, DEBOUNCE_MAX_MS),
        ("pilot.soft_stop_ms", int, 5000, 0, 10000),  # IEC 61851-1: the EV has 5 s to follow
        ("plug.pin", PIN, None),                 # required with ev_sense "pin"
        ("plug.active", (0, 1), 1),
        ("rcd.trip", PIN, REQUIRED),
        ("rcd.test", PIN, REQUIRED),
        ("rcd.active", (0, 1), 1),
        ("watchdog.timeout_ms", int, REQUIRED, 1000, 60000),
        ("button.pin", PIN, REQUIRED),
        ("button.active", (0, 1), 0),
        ("fram.i2c", int, REQUIRED, 0, 1),
        ("fram.scl", PIN, REQUIRED),
        ("fram.sda", PIN, REQUIRED),
        ("fram.freq", int, 400000, 100000, 1000000),
        ("fram.addr", int, 0x50, 0x50, 0x57),
        ("fram.size", int, 32768, 2048, 65536),
        ("power_good.pin", PIN, REQUIRED),
        ("power_good.active", (0, 1), 1),
        ("power_good.hold_up_ms", int, 20, 1, 1000),
        ("sampling.rate_hz", int, 10, 1, 50),
        ("sampling.ring_samples", int, 64, 16, 4096),
        ("metering.crosscheck_pct", int, 3, 1, 50),
        ("metering.crosscheck_min_wh", int, 20, 1, 1000),
        ("metering.profile_bucket_s", int, 300, 10, 3600),
        ("safety.forensics_samples", int, 50, 0, 200),
        ("safety.overcurrent_margin_pct", int, 10, 0, 50),
        ("safety.overcurrent_ms", int, 1000, 100, 10000),
        ("safety.voltage_min_v", int, _nominal(85), 80, lambda v: v["limits.nominal_v"]),
        ("safety.voltage_max_v", int, _nominal(110), lambda v: v["limits.nominal_v"], 320),
        ("safety.voltage_ms", int, 2000, 100, 60000),
        ("safety.phase_loss_v", int, _nominal(40), 10, lambda v: v["limits.nominal_v"]),
        ("safety.frequency_min_chz", int, _line(100, -200), _line(90), _line(100)),
        ("safety.frequency_max_chz", int, _line(100, 150), _line(100), _line(110)),
        ("safety.contactor_settle_ms", int, 1000, 100, 5000),
        ("safety.open_current_ma", int, 500, 50, 5000),
        ("safety.rcd_selftest_s", int, 86400, 60, 7 * 86400),
        ("network.timeout_ms", int, 2000, 50, 30000),
        # the simulated world (platform "sim" only; tools/sim.py)
        ("sim.grid_v", int, 230, 0, 400),
        ("sim.grid_hz", int, 50, 40, 70),
        ("sim.card_hold_ms", int, 1000, 0, 600000),
        ("sim.ev_follow_delay_ms", int, 2000, 0, 5000),
        ("sim.cp_step_us", int, 23, 1, 1000),
        ("sim.cp_noise_mv", int, 0, 0, 5000),
    )


def device_rows():
    """The device config's rows."""
    return (
        ("device_id", str, REQUIRED),
        ("vendor", str, None),                   # shown in status (OCPP chargePointVendor)
        ("model", str, None),                    # shown in status (OCPP chargePointModel)
        ("tariff", dict, REQUIRED),
        ("local_list", dict, None),
        ("data_dir", str, "data"),
        ("outbox_size", int, 64, 4, 1024),
        ("auth_timeout_s", int, 60, 5, 600),
        ("meter_values_s", int, 60, 10, 3600),
        ("meter_aligned_s", int, 900, 0, 86400),
        ("updated_s", int, 1800, 0, 86400),
        ("ev_idle_report_s", int, 600, 60, 86400),
        ("site.utc_offset_min", int, 0, -720, 840),
        ("site.dst", ("EU", "US", "none"), None),
        ("site.offpeak", list, []),
        ("mqtt.host", str, ""),
        ("mqtt.port", int, 1883, 1, 65535),
        ("mqtt.keepalive_s", int, 60, 10, 3600),
        ("mqtt.tls", bool, False),
        ("mqtt.ca", str, None),
        ("mqtt.tls_hostname", str, None),
        # checkpoints of a running session: flash bytes against the energy a power cut may leave unbilled
        ("journal.every_wh", int, 250, 10, 100000),
        ("journal.min_s", int, 150, 10, 86400),
        ("journal.every_s", int, 300, lambda v: v["journal.min_s"], 86400),
        ("auth.list_max_entries", int, 1000, 1, 10000),
        ("auth.cache_entries", int, 64, 0, 1000),
        ("auth.cache_max_age_s", int, 604800, 60, 31536000),
        ("auth.LocalAuthorizeOffline", bool, True),
        ("auth.LocalPreAuthorize", bool, False),
        ("auth.AllowOfflineTxForUnknownId", bool, False),
        ("auth.AuthorizeRemoteTxRequests", bool, True),   # OCPP: a remote start is checked like a tap
        ("auth.timeout_s", int, 3, 1, 30),
        ("faults.remote_clear", list, []),
        ("ota.max_size", int, 1 << 20, 4096, 4 << 20),
        ("ota.max_boots", int, 3, 1, 10),
        ("ota.trial_s", int, 600, 60, 86400),
        ("ota.confirm_after_s", int, 60, 0, 3600),
        ("ota.timeout_ms", int, 2000, 100, 10000),
        ("ota.stall_s", int, 30, 5, 600),
        ("ota.public_key", str, None),
    )


def secret_rows():
    """The device secrets' rows (site_key, site_keys, site_key_current, site_key_accept: the
    versioned card-pseudonym keys, are firmware/auth/keys.py's)."""
    return (
        ("device_key", str, None),
        ("update_key", str, None),
        ("mqtt_user", str, None),
        ("mqtt_password", str, None),
        ("tls_cert", str, None),
        ("tls_key", str, None),
    )


class Record:
    """One concern's settings as attributes (`hw.pilot.debounce_ms`); read, written only by Settings.change."""

    def __init__(self, **values):
        for k in values:
            setattr(self, k, values[k])


def _triple(cfg, key, default, lo, hi):
    v = setting(cfg, key, list, default)
    if v is default:
        return default
    if len(v) != 3:
        raise ValueError("config: %s must list 3 integers (phases A, B, C)" % key)
    for x in v:
        if not isinstance(x, int) or isinstance(x, bool) or x < lo or x > hi:
            raise ValueError("config: %s values must be integers %d..%d (got %r)" % (key, lo, hi, v))
    return tuple(v)


def _value(cfg, row, values):
    """One row's value from cfg: type, bounds and default as the row says (ValueError names the key)."""
    key, kind, default = row[0], row[1], row[2]
    lo = hi = choices = None
    if len(row) > 3:
        lo = row[3](values) if callable(row[3]) else row[3]
        hi = row[4](values) if callable(row[4]) else row[4]
    if callable(default):
        default = default(values)
    if kind == TRIPLE:
        return _triple(cfg, key, default, lo, hi)
    if kind == PIN:
        kind, lo, hi = int, 0, 48
    elif isinstance(kind, tuple):
        kind, choices = type(kind[0]), kind
    v = setting(cfg, key, kind, default, lo=lo, hi=hi, choices=choices)
    if v is default and v is not None and (lo is not None and v < lo or hi is not None and v > hi):
        raise ValueError("config: %s must be within %s..%s (its default %r does not fit: set it)" % (key, lo, hi, v))
    return v


def parse(table, cfg):
    """{key: value} for every row of the table; rows of an absent OPTIONAL section are left out."""
    values = {}
    for row in table:
        key = row[0]
        dot = key.find(".")
        if dot > 0 and key[:dot] in OPTIONAL and key[:dot] not in cfg:
            continue
        values[key] = _value(cfg, row, values)
    return values


def records(values, absent=()):
    """The dotted keys as a tree of Records: {"pilot.poll_ms": 25} -> r.pilot.poll_ms == 25."""
    root = Record()
    for key in values:
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            sub = getattr(node, part, None)
            if sub is None:
                sub = Record()
                setattr(node, part, sub)
            node = sub
        setattr(node, parts[-1], values[key])
    for name in absent:
        if not hasattr(root, name):
            setattr(root, name, None)
    return root


def section(table, cfg, name):
    """One section's rows ("ota") as a Record, the rest of the file unread."""
    return getattr(records(parse([r for r in table if r[0].startswith(name + ".")], cfg)), name)


def one(table, cfg, key):
    """One key's value, the rest of the file unread (for helpers that run without a boot)."""
    return parse([r for r in table if r[0] == key], cfg)[key]


def ota_settings(device, secrets):
    """The device's ota record with its RSA public key (or None) and device id: all a rescue script needs."""
    ota = section(device_rows(), device, "ota")
    try:
        ota.key = parse_public_key(ota.public_key) if ota.public_key else None
    except ValueError as e:
        raise ValueError("config: ota.public_key: %s" % e)
    ota.device_id = one((("device_id", str, None),), device, "device_id")
    ota.old_hmac_key = one(secret_rows(), secrets, "update_key") is not None   # no longer accepted: logged
    if ota.confirm_after_s >= ota.trial_s:   # checked at boot, though the Updater may load only with an update
        raise ValueError("config: ota.confirm_after_s must be shorter than ota.trial_s")
    return ota


def board_settings(cfg):
    """The board config (board.json) as records: what hal/board.py and the simulator build from."""
    v = parse(board_rows(), cfg)
    sense = v["ev_sense"]
    for key in ("pilot.pwm", "pilot.adc", "pilot.cal") if sense == "pilot" else ("plug.pin",) if sense == "pin" else ():
        if v[key] is None:
            raise ValueError("config: %s is missing (ev_sense is %r)" % (key, sense))
    if v["safety.forensics_samples"] > v["sampling.ring_samples"]:   # the ring holds only what a fault report reads
        raise ValueError("config: safety.forensics_samples (%d) is more than sampling.ring_samples (%d)"
                         % (v["safety.forensics_samples"], v["sampling.ring_samples"]))
    return records(v, OPTIONAL)


def _remote_clear(kinds):
    """The latched fault kinds cmd/clear_fault may clear: known kinds, never a welded contactor."""
    for k in kinds:
        if not isinstance(k, str) or k not in POLICIES or k == "welded":
            raise ValueError("config: faults.remote_clear: %r is not a fault kind the backend may clear "
                             "(a welded contactor is cleared only at the charger)" % (k,))
    return tuple(kinds)


def _hhmm(text, where):
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":" or not (text[:2] + text[3:]).isdigit() \
            or int(text[:2]) > 23 or int(text[3:]) > 59:
        raise ValueError("config: %s must be \"HH:MM\" (got %r)" % (where, text))
    return int(text[:2]) * 60 + int(text[3:])


def _window(w, i):
    """An off-peak window ["22:00", "06:00"] in local time (may wrap past midnight) as minutes."""
    if not isinstance(w, list) or len(w) != 2:
        raise ValueError("config: site.offpeak[%d] must be [\"HH:MM\", \"HH:MM\"]" % i)
    return _hhmm(w[0], "site.offpeak[%d][0]" % i), _hhmm(w[1], "site.offpeak[%d][1]" % i)


def _tls(d, sec):
    """The broker's TLS files, or None without TLS; a client certificate needs its key."""
    if not d["mqtt.tls"]:
        return None
    if not d["mqtt.ca"]:
        raise ValueError("config: mqtt.ca: TLS needs the broker's CA certificate file")
    cert, key = sec["tls_cert"], sec["tls_key"]   # null: no client certificate
    if bool(cert) != bool(key):
        raise ValueError("secrets: tls_cert and tls_key: give both the client certificate and its key, or neither")
    return {"ca": d["mqtt.ca"], "cert": cert, "key": key, "hostname": d["mqtt.tls_hostname"]}


class Settings:
    """Everything the charger was told, checked: `board` (records of board_settings), the device
    config and secrets as records per concern (mqtt, journal, auth, ota), and the controller's own."""

    def __init__(self, board, device, secrets):
        d = parse(device_rows(), device)
        sec = parse(secret_rows(), secrets)
        self.board = board
        self.device_id = d["device_id"]
        self.vendor = d["vendor"]
        self.model = d["model"]
        if not self.device_id or len(self.device_id) > 64 or [c for c in "/+# " if c in self.device_id]:
            raise ValueError("config: device_id must be 1..64 characters without '/', '+', '#' or spaces")
        self.keys = keys_from_config(secrets)
        self.device_key = parse_key(sec["device_key"], "secrets: device_key") if sec["device_key"] else None
        self.tariff = Tariff(d["tariff"])
        self._local_list = d["local_list"]
        self.tz = LocalTime(d["site.utc_offset_min"], d["site.dst"])
        self.offpeak = [_window(w, i) for i, w in enumerate(d["site.offpeak"])]
        self._offpeak_at = None     # clock.seconds() of the minute offpeak_now() last worked out
        self._offpeak_in = False
        self.mqtt = Record(host=d["mqtt.host"], port=d["mqtt.port"], keepalive_s=d["mqtt.keepalive_s"],
                           user=sec["mqtt_user"], password=sec["mqtt_password"],
                           timeout_ms=board.network.timeout_ms, tls=_tls(d, sec))
        self.journal = Record(every_wh=d["journal.every_wh"], min_s=d["journal.min_s"], every_s=d["journal.every_s"])
        self.auth = records(d).auth
        self.faults = Record(remote_clear=_remote_clear(d["faults.remote_clear"]))
        self.ota = ota_settings(device, secrets)
        self.outbox_size = d["outbox_size"]
        self.data_dir = d["data_dir"]
        # the controller's own
        self.auth_timeout_s = d["auth_timeout_s"]
        self.meter_values_s = d["meter_values_s"]
        self.meter_aligned_s = d["meter_aligned_s"]
        self.updated_s = d["updated_s"]
        self.ev_idle_report_s = d["ev_idle_report_s"]
        self.phases = board.meter.phases
        self.limits = limits_from_settings(board.limits)
        self.max_current_a = board.limits.max_current_a
        self.max_power_w = board.limits.max_current_a * board.limits.nominal_v * board.meter.phases
        self.sample_ms = 1000 // board.sampling.rate_hz
        self.ring_samples = board.sampling.ring_samples
        self.reader_poll_ms = board.reader.poll_ms
        self.pilot_poll_ms = board.pilot.poll_ms
        self.pilot_debounce_ms = board.pilot.debounce_ms
        self.soft_stop_ms = board.pilot.soft_stop_ms
        self.idle_end_s = board.ev_idle_end_s
        self.crosscheck_pct = board.metering.crosscheck_pct
        self.crosscheck_min_wh = board.metering.crosscheck_min_wh
        self.profile_bucket_s = board.metering.profile_bucket_s
        self.forensics_samples = board.safety.forensics_samples

    def value(self, key):
        """The present value of a CHANGEABLE key (ValueError for any other)."""
        if key not in CHANGEABLE:
            raise ValueError("key: %r is not a setting the backend can read or change" % (key,))
        if key.startswith("auth."):
            return getattr(self.auth, key[5:])
        return getattr(self, key)

    def take_local_list(self):
        """The provisioned local list (config), handed over once at boot: kept, every card in it
        would hold heap for as long as the charger runs."""
        lst, self._local_list = self._local_list, None
        return lst

    def change(self, key, value):
        """Set a CHANGEABLE key, checked with its own row (ValueError names the key); the new value."""
        self.value(key)
        row = [r for r in device_rows() if r[0] == key][0]
        dot = key.find(".")
        cfg = {key[:dot]: {key[dot + 1:]: value}} if dot > 0 else {key: value}   # one level at most
        v = _value(cfg, row, {})
        if key.startswith("auth."):
            setattr(self.auth, key[5:], v)
        else:
            setattr(self, key, v)
        return v

    def offpeak_now(self, now_s):
        """Inside one of the site's off-peak windows (local time)? now_s: clock.seconds(). Every
        control step of an off-peak-only session asks; the answer changes only at a whole minute
        (UTC offsets are whole minutes), so it is worked out once a minute."""
        at = self._offpeak_at
        if at is None or not 0 <= now_s - at < 60:
            lt = self.tz.local(BASE + now_s)
            self._offpeak_at = now_s - lt[5]
            self._offpeak_in = self._in_offpeak(lt[3] * 60 + lt[4])
        return self._offpeak_in

    def _in_offpeak(self, minute):
        for a, b in self.offpeak:
            if (a <= minute < b) if a <= b else (minute >= a or minute < b):
                return True
        return False
