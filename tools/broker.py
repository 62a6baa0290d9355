"""A private mosquitto on a free loopback port, locked down as docs/security.md says to deploy one.

Nobody connects without an account (password_file, allow_anonymous false); the ACL lets a charger
publish only its own records and read only its own commands; the client id is the user name, so
nobody can take a charger's session without its password. The tests and the demo use it so:

    with Broker() as b:
        b.device("cp-0001")       # {"username": "cp-0001", "password": ...}: the charger's account
        b.login("backend")        # a new account per call: backend (commands, acks) or observer (reads)

`Broker(open=True)` is the unprotected broker (anonymous, no ACL), for the tests that show the
firmware's own checks hold alone. password_line() and device_acl() make the broker's entries for
one charger (tools/provision.py writes them next to its config).
"""
import base64
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

DEVICE_WRITES = ("status", "session", "fault", "feedback", "meter", "stats", "auth/req", "cmd_ack")
DEVICE_READS = ("cmd/+", "ack", "auth/resp")
# what the other accounts may do, as ACL lines (docs/mqtt.md has the topics)
ROLES = {"backend": ("topic read cp/v1/#", "topic write cp/v1/+/cmd/+", "topic write cp/v1/+/ack",
                     "topic write cp/v1/+/auth/resp"),
         "observer": ("topic read #",)}
PBKDF2_ITERATIONS = 101   # mosquitto_passwd's default; the passwords are random, so more buys nothing


def mosquitto_path():
    for p in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if p and os.path.exists(p):
            return p
    raise RuntimeError("mosquitto is not installed: run `make setup` (apt-get install mosquitto)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_password():
    """128 random bits, URL-safe text (no ':' which ends a password_file user name)."""
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


def password_line(user, password, salt=None):
    """One mosquitto 2 password_file line: `user:$7$iterations$salt$PBKDF2-SHA512(password)`."""
    if not user or ":" in user or "\n" in user or "\n" in password:
        raise ValueError("password_file: user name %r cannot be written" % user)
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return "%s:$7$%d$%s$%s\n" % (user, PBKDF2_ITERATIONS, base64.b64encode(salt).decode(),
                                 base64.b64encode(digest).decode())


def device_acl(device_id=None):
    """ACL lines for chargers: `pattern` lines for all (%u = user name = device id), or one user's block."""
    if device_id is None:
        head, who, kind = "# chargers: each user is a device id\n", "%u", "pattern"
    else:
        head, who, kind = "user %s\n" % device_id, device_id, "topic"
    return head + "".join("%s write cp/v1/%s/%s\n" % (kind, who, t) for t in DEVICE_WRITES) + \
        "".join("%s read cp/v1/%s/%s\n" % (kind, who, t) for t in DEVICE_READS)


def role_acl(user, role):
    """ACL block of a backend or observer account."""
    return "user %s\n" % user + "".join(line + "\n" for line in ROLES[role])


def _varint(n):
    out = b""
    while True:
        n, b = n >> 7, n & 0x7F
        out += bytes((b | (0x80 if n else 0),))
        if not n:
            return out


def mqtt_connect(host, port, username=None, password=None, client_id="probe", timeout=5.0):
    """CONNECT once (MQTT 3.1.1) and disconnect: the CONNACK return code (0 accepted, 5 not
    authorized), or None when the broker closed the connection without one."""
    def s16(b):
        return struct.pack(">H", len(b)) + b

    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = s16(b"MQTT") + bytes((4, flags)) + struct.pack(">H", 30) + s16(client_id.encode())
    for part in (username, password):
        if part is not None:
            body += s16(part.encode())
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(bytes((0x10,)) + _varint(len(body)) + body)
        ack = b""
        while len(ack) < 4:
            chunk = s.recv(4 - len(ack))
            if not chunk:
                return None
            ack += chunk
        if ack[3] == 0:
            s.sendall(b"\xe0\x00")   # DISCONNECT: no Last Will, nothing left behind
        return ack[3] if ack[0] == 0x20 else None


class Broker:
    """tls={"ca", "cert", "key" (PEM files), "require_client": bool} adds a TLS listener on .tls_port;
    open=True: anonymous clients may do anything (no password_file, no ACL)."""

    def __init__(self, port=None, tls=None, open=False):
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.open = open
        self.dir = tempfile.mkdtemp(prefix="cp-broker-")
        self.proc = None
        self._accounts = {}       # user name -> (password, role: "device", "backend" or "observer")
        self._appended = ["", ""]   # password_file and acl_file text an operator appended (append())
        self._lock = threading.Lock()
        self.fleet_key = os.urandom(32)   # the operator's fleet secret for this run (docs/security.md)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def device(self, device_id):
        """The charger's account (created on first use; the same answer afterwards)."""
        with self._lock:
            if device_id in self._accounts:
                if self._accounts[device_id][1] != "device":
                    raise ValueError("broker: %r is already a %s account" % (device_id, self._accounts[device_id][1]))
                return {"username": device_id, "password": self._accounts[device_id][0]}
            return self._add(device_id, "device")

    def login(self, role):
        """A new account of `role` ("backend" or "observer"): one per connection, since a second
        connection with the same user name (= client id) would take the first one's place."""
        if role not in ROLES:
            raise ValueError("broker: role must be one of %s" % ", ".join(ROLES))
        with self._lock:
            n = 1
            while "%s-%d" % (role, n) in self._accounts:
                n += 1
            return self._add("%s-%d" % (role, n), role)

    def client_args(self, role):
        """host, port, username, password (and for the backend role, the fleet secret) for
        tools/backend.py's Backend."""
        args = dict(host="127.0.0.1", port=self.port, **self.login(role))
        if role == "backend":
            args["fleet_key"] = self.fleet_key
        return args

    def append(self, passwd, acl):
        """Appends entries as an operator does (tools/provision.py's broker/passwd and broker/acl)
        and reloads; returns once mosquitto has read them."""
        with self._lock:
            self._appended[0] += passwd
            self._appended[1] += "\n" + acl
            self._reload()

    def remove(self, user):
        """Revokes an account as an operator does (its password_file line deleted, then a reload):
        mosquitto 2 also ends its open connection."""
        with self._lock:
            del self._accounts[user]
            self._reload()

    def _add(self, user, role):
        password = new_password()
        self._accounts[user] = (password, role)
        self._reload((user, password))
        return {"username": user, "password": password}

    def _reload(self, probe=None):
        """Rewrites the files and, when running, has mosquitto read them (SIGHUP); an account to
        probe is tried until the broker takes it, else a reload a client can see is waited for."""
        if self.open:
            return
        self._write_security()
        if self.proc is None:
            return
        if probe is None:   # a throw-away account: it works once the reload happened
            probe = ("reload-probe-%d" % len(self._accounts), new_password())
            self._accounts[probe[0]] = (probe[1], "observer")
            self._write_security()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while self._probe(probe) != 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("broker: mosquitto did not take the new account %s" % probe[0])
            time.sleep(0.02)

    def _probe(self, account):
        """The CONNACK code for the account, or None while mosquitto is busy reloading (it may reset
        a connection that arrives meanwhile: seen on a loaded machine)."""
        try:
            return mqtt_connect("127.0.0.1", self.port, account[0], account[1], account[0])
        except OSError:
            return None

    def _write_security(self):
        """password_file and acl_file from the accounts, each replaced whole."""
        acl = device_acl() + "".join("\n" + role_acl(u, r) for u, (_, r) in sorted(self._accounts.items())
                                     if r != "device") + self._appended[1]
        pw = "".join(password_line(u, p) for u, (p, _) in sorted(self._accounts.items())) + self._appended[0]
        for name, text in (("passwd", pw), ("acl", acl)):
            path = os.path.join(self.dir, name)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.chmod(path + ".tmp", 0o600)
            os.replace(path + ".tmp", path)

    def config(self):
        """The mosquitto.conf text: what docs/security.md deploys, on loopback ports."""
        lines = ["per_listener_settings false", "persistence false"]
        if self.open:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", "password_file %s" % os.path.join(self.dir, "passwd"),
                      "acl_file %s" % os.path.join(self.dir, "acl")]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")   # as root it would drop to `mosquitto`, who cannot read our files
        # use_username_as_clientid is a listener option: given before the listener lines it does nothing
        own_id = [] if self.open else ["use_username_as_clientid true"]
        lines += ["listener %d 127.0.0.1" % self.port] + own_id
        if self.tls:
            lines += ["listener %d 127.0.0.1" % self.tls_port] + own_id + ["cafile %s" % self.tls["ca"],
                      "certfile %s" % self.tls["cert"], "keyfile %s" % self.tls["key"],
                      "require_certificate %s" % ("true" if self.tls.get("require_client") else "false")]
        return "\n".join(lines) + "\n"

    def __enter__(self):
        conf = os.path.join(self.dir, "mosquitto.conf")
        if not self.open:
            self._write_security()
        with open(conf, "w") as f:
            f.write(self.config())
        self.proc = subprocess.Popen([mosquitto_path(), "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                for port in (self.port, self.tls_port):
                    if port:
                        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("mosquitto did not start on port %d" % self.port)

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
