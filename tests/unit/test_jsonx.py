"""jsonx keeps non-integer JSON numbers exact (as decimal strings) on both interpreters."""
from check import raises
from firmware.core.jsonx import loads, plain, quote_decimals


def test_fractions_and_exponents_become_plain_decimal_strings():
    got = loads('{"price": 0.2575, "vat": 2.1e1, "tiny": 5E-7, "neg": -1.50, "step": 300}')
    assert got == {"price": "0.2575", "vat": "21", "tiny": "0.0000005", "neg": "-1.5", "step": 300}


def test_integers_stay_integers_and_strings_are_untouched():
    text = '{"a": [1, -2, 0], "s": "1.5 and \\"2.5\\" e3", "t": true, "n": null}'
    assert loads(text) == {"a": [1, -2, 0], "s": '1.5 and "2.5" e3', "t": True, "n": None}
    assert quote_decimals('{"x": 12}') == '{"x": 12}'


def test_plain_normalises_every_exponent_form():
    cases = {"1.5e3": "1500", "2E-2": "0.02", "0.000": "0", "-0.0": "0", "12.340": "12.34",
             "1e0": "1", "100e-2": "1", "0.25": "0.25", "-3.0e+1": "-30", "9.99E-1": "0.999"}
    for token in cases:
        assert plain(token) == cases[token], (token, plain(token))


def test_loads_accepts_bytes_and_nested_values():
    assert loads(b'[[0.1, {"k": 1e-1}]]') == [["0.1", {"k": "0.1"}]]


def test_bad_numbers_and_absurd_exponents_are_value_errors():
    raises(ValueError, loads, '{"x": 1.2.3}')
    raises(ValueError, loads, '{"x": 1e999999999}')   # must not build a gigabyte of zeros
    raises(ValueError, loads, '{"x": ')


def test_long_numbers_and_deep_nesting_are_refused_at_parse_time():
    raises(ValueError, loads, '{"version": %s}' % ("9" * 8037))     # never reaches int()
    raises(ValueError, loads, '{"version": 1%s}' % ("0" * 32))      # 10^32
    assert loads('{"v": %s}' % ("9" * 32)) == {"v": int("9" * 32)}  # the bound is the token's length
    deep = '{"x": ' + '{"y": ' * 3000 + '1' + '}' * 3000 + '}'
    raises(ValueError, loads, deep)
    ok = "[" * 16 + "]" * 16
    assert loads(ok) is not None
    raises(ValueError, loads, "[" * 17 + "]" * 17)
    assert loads('{"s": "[[[[[[[[[[[[[[[[[[[[ 99999999999999999999999999999999999999"}')["s"][0] == "["
