"""MQTT link: `umqtt.simple` behind sockets whose every wait is bounded and keeps the meter running.

umqtt.simple blocks in connect() (TCP, CONNACK), in QoS 1 publish() (PUBACK) and in
subscribe() (SUBACK). This adapter hands it a socket of ours: DNS is resolved once, the TCP
connect is non-blocking, and every wait polls in short slices, calling `idle()` (the sampler)
between slices and giving up with OSError(ETIMEDOUT) after `timeout_ms` without progress.
A broker that accepts TCP and never answers therefore costs at most one timeout per attempt,
while sampling and safety checks go on: each slice ends when the next sample is due.
With `tls` the TCP socket is wrapped in TLS (server certificate checked against a CA, optional
client certificate); the handshake runs non-blocking inside the same bounded waits.

    link = Link("cp-0001", "broker.local", 1883, clock, timeout_ms=2000, idle=ctl.idle)
    link.connect("cp/v1/cp-0001/status", b'{"state":"offline"}', on_message)
    link.publish("cp/v1/cp-0001/session", payload, qos=1)
"""
import binascii
import errno
import select
import socket

from micropython import const
from umqtt import simple

_SLICE_MS = const(10)
_MAX_IN_PER_POLL = const(8)
_MAX_SPINS = const(2000)   # ready-but-no-progress rounds in a row before giving up
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLFAIL = select.POLLERR | select.POLLHUP


def der(path, key):
    """A certificate or key file as DER bytes (PEM is decoded: not every port's TLS parses it);
    ValueError naming the config key if it is unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError("config: %s: cannot read %s (%s)" % (key, path, e))
    if not data.startswith(b"-----BEGIN"):
        return data
    lines = data.split(b"\n")
    try:
        end = [i for i, line in enumerate(lines) if line.startswith(b"-----END")][0]
        return binascii.a2b_base64(b"".join(line.strip() for line in lines[1:end]))
    except (IndexError, ValueError):
        raise ValueError("config: %s: %s is not a PEM or DER file" % (key, path))


class _Sock:
    """The socket umqtt.simple talks through: bounded waits, idle work while waiting."""

    def __init__(self, link):
        self._link = link
        self._s = None
        self._poll = select.poll()
        self._blocking = True
        self._tries = 0
        self._peek = None   # a byte read ahead by pending()

    def settimeout(self, t):
        """Newer umqtt versions set a timeout; ours comes from the link."""

    def setblocking(self, flag):
        self._blocking = flag

    def connect(self, addr):
        s = socket.socket()
        s.setblocking(False)
        self._s = s
        self._tries = 0
        self._peek = None
        self._poll.register(s, _POLLOUT)
        try:
            s.connect(addr)
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        self._wait(_POLLOUT)
        tls = self._link.tls_context()
        if tls is not None:   # the handshake happens in the first writes and reads, never blocking
            self._poll.unregister(s)
            self._s = tls.wrap_socket(s, server_side=False, do_handshake_on_connect=False,
                                      server_hostname=self._link.tls_hostname)
            self._poll.register(self._s, _POLLOUT)

    def _ready(self, event, ms):
        self._poll.modify(self._s, event)
        for _, flags in self._poll.poll(ms):
            if flags & event:
                return True
            if flags & _POLLFAIL:
                raise OSError(errno.ECONNRESET)
        return False

    def _wait(self, event):
        waited = 0
        ms = 0
        while not self._ready(event, ms):
            waited += ms
            if waited >= self._link.timeout_ms:
                raise OSError(errno.ETIMEDOUT)
            due = self._link.idle()   # the meter's work, then how long until more of it is due
            ms = _SLICE_MS if due is None or due > _SLICE_MS else max(1, due)

    def write(self, buf, n=None):
        mv = memoryview(buf)
        if n is not None:
            mv = mv[:n]
        sent = 0
        while sent < len(mv):
            self._wait(_POLLOUT)
            n = self._s.write(mv[sent:])
            if n:                     # None: not now (TLS wants to read or write first)
                sent += n
                self._tries = 0
            else:
                self._spun()
        return sent

    def _spun(self):
        """Ready yet no progress (a TLS handshake step): bounded like any other wait."""
        self._link.idle()
        self._tries += 1
        if self._tries > _MAX_SPINS:
            raise OSError(errno.ETIMEDOUT)

    def pending(self):
        """Bytes are waiting to be read. One is read ahead rather than polled for: polling a TLS
        socket costs a millisecond on the unix port, and the loop asks this every iteration."""
        if self._peek is None:
            try:
                self._peek = self._s.read(1)   # None: nothing yet; b"": the peer closed
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    raise
        return self._peek is not None

    def read(self, n):
        if not self._blocking and not self.pending():
            return None  # check_msg(): nothing waiting
        data = b""
        if self._peek is not None:
            data, self._peek = self._peek, None
            if not data:
                return b""  # peer closed: umqtt raises on an empty read
        while len(data) < n:
            self._wait(_POLLIN)
            chunk = self._s.read(n - len(data))
            if chunk is None:
                self._spun()
                continue
            self._tries = 0
            if not chunk:
                if data:
                    raise OSError(errno.ECONNRESET)
                return b""  # peer closed: umqtt raises on an empty read
            data += chunk
        return data

    def close(self):
        if self._s is not None:
            self._poll.unregister(self._s)
            self._s.close()
            self._s = None


class _Net:
    """Stands in for the `socket` module inside umqtt.simple."""

    def __init__(self, link):
        self._link = link

    def getaddrinfo(self, host, port, *args):
        return [(None, None, None, "", self._link.addr)]

    def socket(self, *args):
        return _Sock(self._link)


class Link:
    def __init__(self, client_id, host, port, clock, keepalive_s=60, timeout_ms=2000,
                 user=None, password=None, idle=None, tls=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.timeout_ms = timeout_ms
        self.keepalive_s = keepalive_s
        self.user = user
        self.password = password
        self.idle = idle or (lambda: None)
        self.addr = None
        self.tls = tls             # {"ca": file, "cert"/"key": files or None, "hostname"}: PEM or DER
        self.tls_hostname = tls and tls.get("hostname") or host
        self._tls = None
        self._clock = clock
        self._client = None
        self._last_out = 0
        simple.socket = _Net(self)

    def tls_context(self):
        """The TLS context, built once (the CA and client certificate are read from flash)."""
        if self.tls is None:
            return None
        if self._tls is None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED   # MicroPython's default is CERT_NONE: never rely on it
            try:
                ctx.load_verify_locations(cadata=der(self.tls["ca"], "mqtt.ca"))
            except ValueError as e:
                raise ValueError("config: mqtt.ca: %s is not a usable CA certificate (%s)" % (self.tls["ca"], e))
            if self.tls.get("cert"):
                try:
                    ctx.load_cert_chain(der(self.tls["cert"], "tls_cert"), der(self.tls["key"], "tls_key"))
                except ValueError as e:
                    raise ValueError("secrets: tls_cert/tls_key: not a usable certificate and key (%s)" % e)
            self._tls = ctx
        return self._tls

    @property
    def connected(self):
        return self._client is not None

    def connect(self, will_topic, will_payload, on_message):
        """Open the session with a retained Last Will; OSError if the broker is not there."""
        if self.addr is None:
            self.addr = socket.getaddrinfo(self.host, self.port)[0][-1]  # DNS once: it blocks
        c = simple.MQTTClient(self.client_id, self.host, self.port, self.user, self.password,
                              self.keepalive_s)
        c.set_callback(on_message)
        c.set_last_will(will_topic, will_payload, retain=True, qos=1)
        self._client = c
        self._call(c.connect)

    def subscribe(self, topic):
        self._call(self._client.subscribe, topic, 1)

    def publish(self, topic, payload, retain=False, qos=1):
        self._call(self._client.publish, topic, payload, retain, qos)

    def poll(self):
        """Deliver waiting messages to the callback and keep the connection alive."""
        c = self._client
        for _ in range(_MAX_IN_PER_POLL):
            self._call(c.check_msg, sends=False)
            if self._client is None or not c.sock.pending():
                break
        if self._clock.ticks_diff(self._clock.ticks_ms(), self._last_out) > self.keepalive_s * 500:
            self._call(c.ping)

    def _call(self, fn, *args, sends=True):
        try:
            r = fn(*args)
        except Exception as e:  # umqtt signals protocol errors with assert/IndexError too
            self.close()
            if isinstance(e, OSError):
                raise
            if self.tls is not None and isinstance(e, ValueError):   # mbedtls: a certificate refused
                raise OSError("TLS: %s" % str(e).strip())
            raise OSError("mqtt protocol error: %r" % (e,))
        if sends:
            self._last_out = self._clock.ticks_ms()
        return r

    def close(self):
        if self._client is not None and self._client.sock is not None:
            self._client.sock.close()
        self._client = None
