"""Check a stream of signed session records (firmware/billing/signing.py) for tampering.

    python3 tools/verify.py records.jsonl --key 00112233…   [--partial] [--count N]

One JSON record per line. Reports, one line each: forged (signature does not verify, or a
second record claims a verified record's place), altered (a signed record whose content
changed: its successor is chained to the original), missing (a gap in chain_n), reordered
(a record after a later one), broken chain (chain_prev is not the previous record's hash).
Identical duplicates (at-least-once delivery) are not problems. Exit 0 clean, 1 problems,
2 usage. --partial: the stream may start mid-chain. --count N: the device says it signed N
records (chain_n 0 … N-1) in its current data epoch, so records cut off at the end are reported too.
Each data epoch (`ep`: a life of the device; a new one begins when its state and journal were
lost) has a chain of its own, from chain_n 0: a new epoch is noted, not a problem; within an
epoch every check above holds (a replayed chain_n of an old epoch is still a fork).
This is tamper evidence for the operator's books, not a legal-for-trade signature.
"""
import hmac
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "tools", "compat"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from firmware.billing.signing import GENESIS, record_hash, signature  # noqa: E402

USAGE = "usage: verify.py RECORDS.jsonl --key HEX [--partial] [--count N]\n"


def _records(lines, problems):
    """[(line number, record)] of the parseable lines; unparseable ones become problems."""
    out = []
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            problems.append("line %d: forged: not a JSON record" % i)
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("sig"), str) \
                or not isinstance(rec.get("chain_prev"), str) or isinstance(rec.get("chain_n"), bool) \
                or not isinstance(rec.get("chain_n"), int):
            problems.append("line %d: forged: unsigned (no sig, chain_n and chain_prev)" % i)
            continue
        out.append((i, rec))
    return out


def _signed_by(key, rec):
    try:
        return hmac.compare_digest(signature(key, rec), rec["sig"])
    except (ValueError, TypeError):   # a float, a non-ASCII sig …: not what the device signed
        return False


def _epochs(recs):
    """The data epochs of the records, in order of first appearance (0: records without `ep`)."""
    out = []
    for _, rec in recs:
        if _ep(rec) not in out:
            out.append(_ep(rec))
    return out


def _ep(rec):
    ep = rec.get("ep", 0)
    return ep if isinstance(ep, int) and not isinstance(ep, bool) else -1


def check(lines, key, partial=False, count=None):
    """The list of problems found in the record lines (empty when the stream is clean), one chain
    per data epoch; problems of a stream of several epochs name theirs."""
    problems = []
    recs = _records(lines, problems)
    eps = _epochs(recs)
    for i, ep in enumerate(eps):
        found = []
        _check_chain([r for r in recs if _ep(r[1]) == ep], key, partial and i == 0,
                     count if ep == _ep(recs[-1][1]) else None, found)
        problems.extend(found if len(eps) == 1 else ["epoch %d: %s" % (ep, p) for p in found])
    return problems


def _check_chain(recs, key, partial, count, problems):
    """The checks of one data epoch's chain: its problems go to `problems`."""
    hashes = {}        # line -> record hash, for the records whose signature verifies
    good = {}          # chain_n -> (line, hash) of the first verified record with it
    bad = []           # (line, record) whose signature fails
    for line, rec in recs:
        if not _signed_by(key, rec):
            bad.append((line, rec))
            continue
        h = hashes[line] = record_hash(rec)
        n = rec["chain_n"]
        if n in good and good[n][1] != h:
            problems.append("line %d: forked chain: chain_n %d also on line %d with other content, "
                            "both signed (was the device's chain state rolled back?)" % (line, n, good[n][0]))
        good.setdefault(n, (line, h))
    by_line = dict(recs)
    at = {}            # chain_n -> first line claiming it, verified or not
    for line, rec in recs:
        at.setdefault(rec["chain_n"], line)
    for line, rec in bad:
        n = rec["chain_n"]
        nxt = good.get(n + 1)
        if n in good:
            problems.append("line %d: forged: signature does not verify and chain_n %d belongs to the "
                            "verified record on line %d" % (line, n, good[n][0]))
        elif nxt is not None and by_line[nxt[0]]["chain_prev"] != record_hash(rec):
            problems.append("line %d: altered: chain_n %d does not match its signature; chain_n %d "
                            "(line %d) was chained to different content" % (line, n, n + 1, nxt[0]))
        else:
            problems.append("line %d: forged or altered: signature does not verify (chain_n %d)" % (line, n))
    _reordered(recs, hashes, good, problems)
    if at:
        first = min(at) if partial else 0
        last = max(at) if count is None else max(max(at), count - 1)
        _gaps(at, first, last, problems)
        _links(good, by_line, first, partial, problems)


def _reordered(recs, hashes, good, problems):
    """A verified record after a verified record with a higher chain_n (re-deliveries aside)."""
    top = None
    for line, rec in recs:
        if line not in hashes:
            continue
        n = rec["chain_n"]
        if line != good[n][0] and hashes[line] == good[n][1]:
            continue        # an identical re-delivery of an earlier line
        if top is not None and n < top[0]:
            problems.append("line %d: reordered: chain_n %d comes after chain_n %d (line %d)"
                            % (line, n, top[0], top[1]))
        elif top is None or n > top[0]:
            top = (n, line)


def _gaps(at, first, last, problems):
    gap = None
    for n in range(first, last + 2):
        if n <= last and n not in at:
            gap = gap or [n, n]
            gap[1] = n
        elif gap:
            where = "before line %d" % at[n] if n in at else "at the end of the stream"
            span = "%d" % gap[0] if gap[0] == gap[1] else "%d..%d" % (gap[0], gap[1])
            problems.append("missing: chain_n %s %s" % (span, where))
            gap = None


def _links(good, by_line, first, partial, problems):
    for n in sorted(good):
        line = good[n][0]
        prev = by_line[line]["chain_prev"]
        if n == first and partial:
            continue
        if n == 0:
            if prev != GENESIS:
                problems.append("line %d: broken chain: chain_n 0 must have chain_prev of 64 zeros" % line)
        elif n - 1 in good and prev != good[n - 1][1]:
            problems.append("line %d: broken chain: chain_prev of chain_n %d is not the hash of chain_n %d "
                            "(line %d)" % (line, n, n - 1, good[n - 1][0]))


def main(argv):
    path, key, partial, count = None, None, False, None
    i = 0
    try:
        while i < len(argv):
            a = argv[i]
            if a in ("-h", "--help"):
                sys.stdout.write(USAGE + __doc__)
                return 0
            if a == "--key":
                key = bytes.fromhex(argv[i + 1])
                i += 2
            elif a == "--count":
                count = int(argv[i + 1])
                i += 2
            elif a == "--partial":
                partial = True
                i += 1
            elif path is None and not a.startswith("-"):
                path = a
                i += 1
            else:
                raise ValueError("unexpected argument %r" % a)
        if path is None or key is None or len(key) < 16:
            raise ValueError("need RECORDS.jsonl and --key (at least 16 bytes of hex)")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (ValueError, IndexError, OSError) as e:
        sys.stderr.write("verify.py: %s\n%s" % (e, USAGE))
        return 2
    problems = check(lines, key, partial, count)
    for p in problems:
        print(p)
    eps = _epochs(_records(lines, []))
    if len(eps) > 1:
        print("note: %d data epochs (%s): the device was re-initialised %d times, each epoch's chain "
              "checked on its own" % (len(eps), ", ".join(str(e) for e in eps), len(eps) - 1))
    if not problems:
        print("ok: %d records, chain intact" % sum(1 for x in lines if x.strip()))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
