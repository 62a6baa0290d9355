"""Parsed settings for unit tests: board_configs/sim.json and a minimal device, with changes.

    s = settings({"auth": {"timeout_s": 5}}); s.auth.timeout_s == 5
    hw = board(limits={"max_current_a": 16}); hw.limits.max_current_a == 16
"""
import json

from firmware.billing.tariff import flat
from firmware.core.settings import Settings, board_settings

SITE_KEY = "00" * 32


def board_config(**sections):
    """board_configs/sim.json as a dict, top-level sections replaced by the given ones."""
    with open("board_configs/sim.json") as f:
        cfg = json.load(f)
    cfg.update(sections)
    return cfg


def board(**sections):
    return board_settings(board_config(**sections))


def device_config(**changes):
    d = {"device_id": "cp-test", "tariff": flat("0.30", "EUR", "20")}
    d.update(changes)
    return d


def settings(device=None, secrets=None, hw=None):
    """Settings of the sim board with `device` and `secrets` keys over a minimal device."""
    sec = {"site_keys": {"1": SITE_KEY}, "site_key_current": 1}
    sec.update(secrets or {})
    return Settings(hw or board(), device_config(**(device or {})), sec)
