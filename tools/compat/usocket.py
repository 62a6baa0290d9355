"""CPython stand-in for MicroPython's usocket alias (lib/umqtt imports it)."""
from socket import *  # noqa: F401,F403
