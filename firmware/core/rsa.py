"""RSA signature check for firmware updates: RSASSA-PKCS1-v1_5 with SHA-256 and e = 65537
(RFC 8017, sections 8.2.2 and 9.2). The charger holds only the public key; a check is one
modular exponentiation on MicroPython's big ints (docs/ota.md has the timings).

    key = parse_public_key(hex_modulus)                         # RSA-2048 or RSA-3072
    ok = verify(key, hashlib.sha256(message).digest(), sig)     # sig: exactly key.k bytes
"""
import binascii

E = 65537
SIZES = (256, 384)   # modulus bytes accepted: RSA-2048, RSA-3072
# DER DigestInfo of SHA-256 up to the hash itself (RFC 8017 section 9.2, note 1)
_SHA256_INFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"


class PublicKey:
    """An RSA public key with e = 65537: modulus n, k bytes long."""

    def __init__(self, n, k):
        self.n = n
        self.k = k


def parse_public_key(text):
    """The key from its modulus in hex (as `tools/bundle.py keygen` prints it); ValueError saying why not."""
    if not isinstance(text, str):
        raise ValueError("public key must be the RSA modulus as a string of hex digits")
    t = text.strip()
    if len(t) not in (2 * SIZES[0], 2 * SIZES[1]):
        raise ValueError("public key must be an RSA-2048 or RSA-3072 modulus: %d or %d hex digits (got %d)"
                         % (2 * SIZES[0], 2 * SIZES[1], len(t)))
    try:
        raw = binascii.unhexlify(t)
    except ValueError:
        raise ValueError("public key must be hex digits only")
    if raw[0] < 0x80 or not raw[-1] & 1:
        raise ValueError("public key is not an RSA modulus (its top bit must be set, and it must be odd)")
    return PublicKey(int.from_bytes(raw, "big"), len(raw))


def encode(digest, k):
    """EMSA-PKCS1-v1_5 (RFC 8017 section 9.2) of a SHA-256 digest for a k-byte modulus:
    00 01 FF..FF 00 DigestInfo hash, the one form a valid signature can open to."""
    if len(digest) != 32:
        raise ValueError("digest must be the 32 bytes of a SHA-256")
    return b"\x00\x01" + b"\xff" * (k - 3 - len(_SHA256_INFO) - 32) + b"\x00" + _SHA256_INFO + digest


def verify(key, digest, sig):
    """True only when sig is the signature of digest under key (RFC 8017 section 8.2.2).

    The whole encoded message is rebuilt and compared, never parsed, so a lenient parse
    (Bleichenbacher 2006: padding or DigestInfo with room for garbage) cannot be forged against.
    Nothing here is secret, so the comparison need not be constant-time."""
    if len(sig) != key.k:
        return False                                 # step 1: exactly k bytes
    s = int.from_bytes(sig, "big")
    if s >= key.n:
        return False                                 # RSAVP1: representative out of range
    em = pow(s, E, key.n).to_bytes(key.k, "big")     # RSAVP1 then I2OSP: < n, so always fits
    return em == encode(digest, key.k)
