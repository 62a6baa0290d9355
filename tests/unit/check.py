"""Assertion helpers that work the same under pytest and the MicroPython runner."""


def raises(exc, fn, *args, **kw):
    """Call fn and return the exception of type exc it raised; fail if it raised none."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)
