"""CPython stand-in for MicroPython's ubinascii alias (lib/umqtt imports it)."""
from binascii import *  # noqa: F401,F403
