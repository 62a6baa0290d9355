"""Operator-supplied names for drivers' pseudonyms (the report shows names, files keep both).

A labels file is JSON ({"<pseudonym>": "name"} or [{"token": ..., "name": ...}]) or CSV with a
header row holding `token` (or `pseudonym`) and `name` columns; other columns are ignored.

    labels = load_labels("drivers.csv")       # {"6f1c0e5d...": "Anna (fleet)"}
"""
import csv
import json

MAX_NAME = 80


def _put(out, token, name, where):
    if not isinstance(token, str) or not token.strip():
        raise ValueError("%s: token is missing" % where)
    if not isinstance(name, str) or not name.strip():
        raise ValueError("%s: name is missing" % where)
    name = name.strip()
    if len(name) > MAX_NAME:
        raise ValueError("%s: name is longer than %d characters" % (where, MAX_NAME))
    token = token.strip().lower()
    if out.get(token, name) != name:
        raise ValueError("%s: token %s… has two names (%r and %r)" % (where, token[:12], out[token], name))
    out[token] = name


def load_labels(path):
    """{lower-case pseudonym: name}; ValueError names the file and line of a bad entry."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            body = f.read()
    except OSError as e:
        raise ValueError("--labels: cannot read %s (%s)" % (path, e.strerror))
    except UnicodeDecodeError:
        raise ValueError("--labels: %s is not UTF-8 text" % path)
    out = {}
    if body.lstrip()[:1] in ("{", "["):
        try:
            data = json.loads(body)
        except ValueError as e:
            raise ValueError("--labels: %s is not valid JSON (%s)" % (path, e))
        if isinstance(data, dict):
            for token, name in data.items():
                _put(out, token, name, "--labels %s" % path)
        else:
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise ValueError("--labels %s entry %d: must be an object with token and name" % (path, i + 1))
                _put(out, row.get("token") or row.get("pseudonym"), row.get("name"),
                     "--labels %s entry %d" % (path, i + 1))
        return out
    reader = csv.DictReader(body.splitlines())
    cols = [c.strip() for c in reader.fieldnames or ()]
    key = "token" if "token" in cols else "pseudonym" if "pseudonym" in cols else None
    if key is None or "name" not in cols:
        raise ValueError("--labels: %s needs a header row with token (or pseudonym) and name columns" % path)
    for i, row in enumerate(reader):
        row = {(k or "").strip(): v for k, v in row.items()}
        _put(out, row.get(key), row.get("name"), "--labels %s line %d" % (path, i + 2))
    return out
