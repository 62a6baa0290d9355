"""CPython stand-in for MicroPython's ustruct alias (lib/umqtt imports it)."""
from struct import *  # noqa: F401,F403
