"""Assertion helpers that work the same under pytest and the MicroPython runner."""

try:
    from micropython import heap_lock, heap_unlock
except ImportError:  # CPython: no heap lock, the same calls run unlocked
    def heap_lock():
        pass

    def heap_unlock():
        pass


def raises(exc, fn, *args, **kw):
    """Call fn and return the exception of type exc it raised; fail if it raised none."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)
