"""JSON with exact decimals: numbers with a fraction or exponent come back as decimal strings.

MicroPython's json turns 0.1 into a float (single precision on the ESP32), which is fatal for
prices. A small pre-pass quotes such number tokens (outside strings) in plain decimal form,
then the port's json.loads does the rest; integers stay integers. The same pass bounds what no
message or file may hold: a number token over 32 characters (no int() of 8 000 nines) and
nesting deeper than 16 (no recursion error later, when the value is saved or walked).

    loads('{"price": 0.2575, "step_size": 1, "vat": 2.1e1}')
    == {"price": "0.2575", "step_size": 1, "vat": "21"}
"""
import json

from micropython import const

_NUMBER_CHARS = "0123456789+-.eE"
_MAX_EXP = const(40)  # "1e999999999" must not become a gigabyte of zeros
MAX_NUMBER = const(32)  # characters in a number token: more is never a price, count or version
MAX_DEPTH = const(16)   # nested arrays/objects: an OCPI tariff needs 6


class TooBig(ValueError):
    """Well-formed, perhaps, but past a bound no message or file may cross (named in the text)."""


def plain(token):
    """A JSON number token with a fraction or exponent → the same value as a plain decimal string."""
    s = token
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    exp = 0
    for mark in ("e", "E"):
        if mark in s:
            s, _, e = s.partition(mark)
            exp = int(e)  # int() takes "+3" and "-3"
            break
    if not -_MAX_EXP <= exp <= _MAX_EXP:
        raise ValueError("number out of range: %r" % token)
    whole, _, frac = s.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError("not a JSON number: %r" % token)
    digits = whole + frac
    point = len(whole) + exp           # position of the decimal point within digits
    if point <= 0:
        digits = "0" * (1 - point) + digits
        point = 1
    elif point > len(digits):
        digits = digits + "0" * (point - len(digits))
    whole, frac = digits[:point].lstrip("0") or "0", digits[point:].rstrip("0")
    text = whole + "." + frac if frac else whole
    return "-" + text if neg and text != "0" else text


def quote_decimals(text):
    """The JSON text with every non-integer number token turned into a quoted plain decimal;
    ValueError for a number token over MAX_NUMBER characters or nesting over MAX_DEPTH."""
    out = []
    i = start = depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':                        # skip the string, escapes included
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == "[" or c == "{":
            depth += 1
            if depth > MAX_DEPTH:
                raise TooBig("nested deeper than %d" % MAX_DEPTH)
            i += 1
        elif c == "]" or c == "}":
            depth -= 1
            i += 1
        elif c == "-" or "0" <= c <= "9":
            j = i + 1
            while j < n and text[j] in _NUMBER_CHARS:
                j += 1
                if j - i > MAX_NUMBER:
                    raise TooBig("number longer than %d characters" % MAX_NUMBER)
            token = text[i:j]
            if "." in token or "e" in token or "E" in token:
                out.append(text[start:i])
                out.append('"' + plain(token) + '"')
                start = j
            i = j
        else:
            i += 1
    if not out:
        return text
    out.append(text[start:])
    return "".join(out)


def loads(text):
    """json.loads, but non-integer numbers arrive as exact decimal strings."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode()
    return json.loads(quote_decimals(text))
