"""CPython stand-in for MicroPython's `micropython` module, so firmware modules import on a PC."""


def const(x):
    return x


def native(f):
    return f


def viper(f):
    return f


def heap_lock():
    return 0


def heap_unlock():
    return 0
