"""The charger's settings: board config (hardware), device config (identity, tariff, list, policies)
and device secrets (keys, credentials), as written by tools/provision.py (docs/operations.md).

Everything is checked at boot; a missing or out-of-range value stops the boot with a
ValueError naming its key, so the charger never runs on guesses.

    s = Settings(load("board.json"), load("config.json"), load("secrets.json"))
"""
from firmware.core.config import setting
from firmware.auth.keys import keys_from_config
from firmware.charging.limits import limits_from_config
from firmware.billing.localtime import LocalTime
from firmware.auth.pseudonym import parse_key
from firmware.billing.tariff import Tariff


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


class Settings:
    def __init__(self, board, device, secrets):
        self.board = board
        self.device = device
        self.device_id = setting(device, "device_id", str)
        if not self.device_id or len(self.device_id) > 64 or [c for c in "/+# " if c in self.device_id]:
            raise ValueError("config: device_id must be 1..64 characters without '/', '+', '#' or spaces")
        self.keys = keys_from_config(secrets)
        device_key = setting(secrets, "device_key", str, None)
        self.device_key = parse_key(device_key, "secrets: device_key") if device_key else None
        self.tariff = Tariff(setting(device, "tariff", dict))
        self.local_list = setting(device, "local_list", dict, None)
        self.tz = LocalTime(setting(device, "site.utc_offset_min", int, 0, lo=-720, hi=840),
                            setting(device, "site.dst", str, None, choices=("EU", "US", "none")))
        self.offpeak = [_window(w, i) for i, w in enumerate(setting(device, "site.offpeak", list, []))]

        self.mqtt_host = setting(device, "mqtt.host", str, "")
        self.mqtt_port = setting(device, "mqtt.port", int, 1883, lo=1, hi=65535)
        self.mqtt_keepalive_s = setting(device, "mqtt.keepalive_s", int, 60, lo=10, hi=3600)
        self.mqtt_user = setting(secrets, "mqtt_user", str, None)
        self.mqtt_password = setting(secrets, "mqtt_password", str, None)
        self.mqtt_timeout_ms = setting(board, "network.timeout_ms", int, 2000, lo=50, hi=30000)
        self.mqtt_tls = None
        if setting(device, "mqtt.tls", bool, False):
            ca = setting(device, "mqtt.ca", str, None)
            if not ca:
                raise ValueError("config: mqtt.ca: TLS needs the broker's CA certificate file")
            cert, key = secrets.get("tls_cert"), secrets.get("tls_key")   # null: no client certificate
            for name, v in (("tls_cert", cert), ("tls_key", key)):
                if v is not None and not isinstance(v, str):
                    raise ValueError("secrets: %s must be a file name or null (got %r)" % (name, v))
            if bool(cert) != bool(key):
                raise ValueError("secrets: tls_cert and tls_key: give both the client certificate and its key, or neither")
            self.mqtt_tls = {"ca": ca, "cert": cert, "key": key,
                             "hostname": setting(device, "mqtt.tls_hostname", str, None)}
        self.outbox_size = setting(device, "outbox_size", int, 64, lo=4, hi=1024)
        # checkpoints of a running session: flash bytes against the energy a power cut may leave unbilled
        self.checkpoint_wh = setting(device, "journal.every_wh", int, 250, lo=10, hi=100000)
        self.checkpoint_min_s = setting(device, "journal.min_s", int, 150, lo=10, hi=86400)
        self.checkpoint_max_s = setting(device, "journal.every_s", int, 300, lo=self.checkpoint_min_s, hi=86400)
        self.auth_timeout_s = setting(device, "auth_timeout_s", int, 60, lo=5, hi=600)
        self.data_dir = setting(device, "data_dir", str, "data")
        self.meter_values_s = setting(device, "meter_values_s", int, 60, lo=10, hi=3600)
        self.meter_aligned_s = setting(device, "meter_aligned_s", int, 900, lo=0, hi=86400)
        self.updated_s = setting(device, "updated_s", int, 1800, lo=0, hi=86400)
        self.ev_idle_report_s = setting(device, "ev_idle_report_s", int, 600, lo=60, hi=86400)

        self.phases = setting(board, "meter.phases", int, choices=(1, 3))
        self.limits = limits_from_config(board)
        self.max_current_a = setting(board, "limits.max_current_a", int, lo=6, hi=80)
        self.nominal_v = setting(board, "limits.nominal_v", int, 230, lo=100, hi=277)
        rate = setting(board, "sampling.rate_hz", int, 10, lo=1, hi=50)
        self.sample_ms = 1000 // rate
        self.ring_samples = setting(board, "sampling.ring_samples", int, 256, lo=16, hi=4096)
        self.reader_poll_ms = setting(board, "reader.poll_ms", int, 200, lo=50, hi=2000)
        self.reader_gain = setting(board, "reader.gain", int, None, lo=0, hi=7)
        self.pilot_poll_ms = setting(board, "pilot.poll_ms", int, 25, lo=5, hi=50)
        self.pilot_debounce_ms = setting(board, "pilot.debounce_ms", int, 20, lo=0, hi=100)
        self.soft_stop_ms = setting(board, "pilot.soft_stop_ms", int, 5000, lo=0, hi=10000)   # IEC: 5 s to follow
        self.idle_end_s = setting(board, "ev_idle_end_s", int, 0, lo=0, hi=86400)
        self.crosscheck_pct = setting(board, "metering.crosscheck_pct", int, 3, lo=1, hi=50)
        self.crosscheck_min_wh = setting(board, "metering.crosscheck_min_wh", int, 20, lo=1, hi=1000)
        self.profile_bucket_s = setting(board, "metering.profile_bucket_s", int, 300, lo=10, hi=3600)
        self.forensics_samples = setting(board, "safety.forensics_samples", int, 50, lo=0, hi=200)

    def offpeak_now(self, utc):
        """Inside one of the site's off-peak windows (local time)?"""
        lt = self.tz.local(utc)
        minute = lt[3] * 60 + lt[4]
        for a, b in self.offpeak:
            if (a <= minute < b) if a <= b else (minute >= a or minute < b):
                return True
        return False

    @property
    def max_power_w(self):
        return self.max_current_a * self.nominal_v * self.phases
