"""MQTT link: `umqtt.simple` behind sockets whose every wait is bounded and keeps the meter running.

umqtt.simple blocks in connect() (TCP, CONNACK), in QoS 1 publish() (PUBACK) and in
subscribe() (SUBACK). This adapter hands it a socket of ours: DNS is resolved once, the TCP
connect is non-blocking, and every wait polls in short slices, calling `idle()` (the sampler)
between slices and giving up with OSError(ETIMEDOUT) after `timeout_ms` without progress.
A broker that accepts TCP and never answers therefore costs at most one timeout per attempt,
while sampling and safety checks go on: each slice ends when the next sample is due.

    link = Link("cp-0001", "broker.local", 1883, clock, timeout_ms=2000, idle=ctl.idle)
    link.connect("cp/v1/cp-0001/status", b'{"state":"offline"}', on_message)
    link.publish("cp/v1/cp-0001/session", payload, qos=1)
"""
import errno
import select
import socket

from micropython import const
from umqtt import simple

_SLICE_MS = const(10)
_MAX_IN_PER_POLL = const(8)
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLFAIL = select.POLLERR | select.POLLHUP


class _Sock:
    """The socket umqtt.simple talks through: bounded waits, idle work while waiting."""

    def __init__(self, link):
        self._link = link
        self._s = None
        self._poll = select.poll()
        self._blocking = True

    def settimeout(self, t):
        """Newer umqtt versions set a timeout; ours comes from the link."""

    def setblocking(self, flag):
        self._blocking = flag

    def connect(self, addr):
        s = socket.socket()
        s.setblocking(False)
        self._s = s
        self._poll.register(s, _POLLOUT)
        try:
            s.connect(addr)
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        self._wait(_POLLOUT)

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
            sent += self._s.send(mv[sent:])
        return sent

    def pending(self):
        """Bytes are waiting to be read."""
        return self._ready(_POLLIN, 0)

    def read(self, n):
        if not self._blocking and not self.pending():
            return None  # check_msg(): nothing waiting
        data = b""
        while len(data) < n:
            self._wait(_POLLIN)
            chunk = self._s.recv(n - len(data))
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
                 user=None, password=None, idle=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.timeout_ms = timeout_ms
        self.keepalive_s = keepalive_s
        self.user = user
        self.password = password
        self.idle = idle or (lambda: None)
        self.addr = None
        self._clock = clock
        self._client = None
        self._last_out = 0
        simple.socket = _Net(self)

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
            raise OSError("mqtt protocol error: %r" % (e,))
        if sends:
            self._last_out = self._clock.ticks_ms()
        return r

    def close(self):
        if self._client is not None and self._client.sock is not None:
            self._client.sock.close()
        self._client = None
