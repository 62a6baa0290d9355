"""MQTT link: a non-blocking state machine the loop ticks; it never waits and never calls back.

Each `tick()` moves the connection on by what is possible right now: DNS once (getaddrinfo
blocks: only the first attempt pays it), TCP connect, TLS handshake (CA-checked, optional
client certificate), CONNECT then CONNACK, SUBSCRIBE then SUBACKs, ready; then at most
_IN_MSGS messages or _IN_BYTES bytes in and _OUT_BYTES bytes out per pass. Every phase that
waits for the broker has a deadline of `timeout_ms`, so a broker that accepts TCP and never
answers costs one check per tick until the deadline ends the attempt; a failed attempt or a
lost connection comes back after a backoff (doubling to 60 s) with jitter.

umqtt.simple frames the outgoing packets (CONNECT with the retained Last Will, PUBLISH,
SUBSCRIBE, PINGREQ) into a bounded out-buffer; it is stopped where it would wait for an
answer. Incoming packets are parsed here, header first: a message over `max_message` is
drained in small chunks and refused, never held whole. Messages only reach `on_message`
(the sync queues them); nothing here runs the application.

Publishing never waits for a PUBACK. The backend acknowledges end to end on `ack` and the
outbox re-sends until it does, so a PUBACK only says the broker is alive: QoS 1 is kept (a
broker queues QoS 1 messages for a backend whose persistent session is away, not QoS 0) and
each PUBACK is read whenever it comes. An answer (PUBACK, SUBACK, PINGRESP) overdue by
`timeout_ms` closes the link: that is how a broker gone mute under an open connection is seen.

    link = Link("cp-0001", "broker.local", 1883, clock, timeout_ms=2000)
    link.start("cp/v1/cp-0001/status", b'{"state":"offline"}', topics, sync_queue, 8192)
    link.tick(); link.ready and link.publish("cp/v1/cp-0001/session", payload, False, 1)
"""
import binascii
import errno
import os
import select
import socket

from micropython import const
from umqtt import simple

UP = "up"        # tick(): the link just became ready
DOWN = "down"    # tick(): the attempt failed or the connection was lost (see `error`, `retry_ms`)

_CLOSED = const(0)
_TCP = const(1)
_TLS = const(2)
_CONNACK = const(3)
_SUBACK = const(4)
_READY = const(5)

_OUT_SIZE = const(1024)    # the out-buffer's ring: packets, headers, small messages (a record is held, not copied)
_HOLD_MIN = const(256)     # a payload of bytes above this is held in place of a copy
_RESERVE = const(32)       # out-buffer bytes publish() leaves for PUBACKs and PINGREQs
_OUT_BYTES = const(2048)   # written per tick at most
_IN_BYTES = const(2048)    # read per tick at most
_IN_MSGS = const(4)        # messages taken per tick at most
_CHUNK = const(256)        # control packets, topics, and the drain of refused messages
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)

# incoming packet parser stages
_H1 = const(0)       # the packet type byte
_HLEN = const(1)     # the remaining length, a byte at a time
_BODY = const(2)     # a control packet's body
_TLEN = const(3)     # PUBLISH: topic length
_TOPIC = const(4)    # PUBLISH: topic (and packet id)
_PAYLOAD = const(5)  # PUBLISH: payload into its own buffer
_DRAIN = const(6)    # PUBLISH: payload too large, read and dropped

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


def _jitter(span):
    """0..span ms at random: chargers that lost the broker together do not all retry together."""
    return int.from_bytes(os.urandom(2), "big") * span // 65536 if span > 0 else 0


class _Tcp:
    """A non-blocking TCP (then TLS) connection: every call returns at once."""

    def __init__(self, addr):
        self._poll = select.poll()
        s = socket.socket()
        s.setblocking(False)
        self._s = s
        self._poll.register(s, _POLLOUT)
        try:
            s.connect(addr)
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                s.close()
                raise

    def connected(self):
        """True once the TCP connect completed; OSError if it was refused."""
        for _, flags in self._poll.poll(0):
            if flags & _POLLFAIL:
                raise OSError(errno.ECONNREFUSED)
            if flags & _POLLOUT:
                self._poll.unregister(self._s)
                return True
        return False

    def wrap(self, ctx, hostname):
        """TLS from here on; the handshake runs inside the next non-blocking writes."""
        self._s = ctx.wrap_socket(self._s, server_side=False, do_handshake_on_connect=False,
                                  server_hostname=hostname)

    def write(self, mv):
        return self._s.write(mv) or 0   # None: not now (the socket, or TLS, wants to wait)

    def readinto(self, mv):
        """Bytes read, 0 if none are waiting; OSError when the peer closed."""
        n = self._s.readinto(mv)
        if n is None:
            return 0
        if n == 0:
            raise OSError(errno.ECONNRESET)
        return n

    def close(self):
        self._s.close()


class _Net:
    """The real network: DNS and non-blocking connections (tests pass a fake with these two methods)."""

    def resolve(self, host, port):
        return socket.getaddrinfo(host, port)[0][-1]

    def connect(self, addr):
        return _Tcp(addr)


class _Framed(Exception):
    """umqtt.simple finished writing a packet and would now wait for the answer."""


class _Out:
    """The bounded out-buffer that umqtt.simple takes for its socket: a ring for headers, control
    packets and small messages, and one large payload held as the caller's own immutable bytes
    (sent in its place in the stream, never copied), so no buffer the size of a record is kept."""

    def __init__(self, size):
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.head = 0       # the next ring byte to send
        self.ring = 0       # bytes waiting in the ring
        self.used = 0       # bytes waiting in all: the ring's and the held payload's
        self._big = None    # the held payload (a view of bytes), or None
        self._before = 0    # ring bytes that go out before it

    def free(self):
        return len(self.buf) - self.ring

    def room(self, size, payload):
        """A packet of `size` bytes ending in `payload` fits, leaving _RESERVE for PUBACKs and PINGREQs."""
        if len(payload) > _HOLD_MIN and isinstance(payload, bytes):
            return self._big is None and size - len(payload) + _RESERVE <= self.free()
        return size + _RESERVE <= self.free()

    def clear(self):
        self.head = self.ring = self.used = self._before = 0
        self._big = None

    def connect(self, addr):
        """umqtt.simple's connect() opens its socket: ours is already there."""

    def write(self, data, n=None):
        if isinstance(data, str):
            data = data.encode()
        src = memoryview(data)
        if n is not None:
            src = src[:n]
        k = len(src)
        if k > _HOLD_MIN and isinstance(data, bytes) and self._big is None:
            self._big = src
            self._before = self.ring
            self.used += k
            return k
        size = len(self.buf)
        if k > size - self.ring:
            raise OSError(errno.ENOBUFS)
        tail = (self.head + self.ring) % size
        first = min(k, size - tail)
        self.buf[tail:tail + first] = src[:first]
        if first < k:
            self.buf[:k - first] = src[first:]
        self.ring += k
        self.used += k
        return k

    def read(self, n):
        raise _Framed()

    def waiting(self):
        """The next contiguous bytes to send."""
        if self._big is not None and self._before == 0:
            return self._big
        n = min(self.ring, len(self.buf) - self.head)
        if self._big is not None and self._before < n:
            n = self._before
        return self.mv[self.head:self.head + n]

    def sent(self, n):
        self.used -= n
        if self._big is not None:
            if self._before == 0:
                self._big = self._big[n:] if n < len(self._big) else None
                return
            self._before -= n
        self.ring -= n
        self.head = 0 if self.ring == 0 else (self.head + n) % len(self.buf)


class _Framer:
    """Stands in for the `socket` module inside umqtt.simple: its socket is the out-buffer."""

    def __init__(self, out):
        self._out = out

    def getaddrinfo(self, host, port, *args):
        return [(None, None, None, "", None)]

    def socket(self, *args):
        return self._out


def _publish_size(topic_len, payload_len, qos):
    rl = 2 + topic_len + payload_len + (2 if qos else 0)
    n = 2
    while rl > 0x7F:
        rl >>= 7
        n += 1
    return n + 2 + topic_len + payload_len + (2 if qos else 0)


class Link:
    def __init__(self, client_id, host, port, clock, keepalive_s=60, timeout_ms=2000,
                 user=None, password=None, tls=None, net=None, out_size=_OUT_SIZE):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.timeout_ms = timeout_ms
        self.keepalive_s = keepalive_s
        self.user = user
        self.password = password
        self.addr = None
        self.tls = tls             # {"ca": file, "cert"/"key": files or None, "hostname"}: PEM or DER
        self.tls_hostname = tls and tls.get("hostname") or host
        self.error = None          # why the last attempt or connection ended
        self.retry_ms = 0          # the backoff chosen then
        self._tls = None
        self._clock = clock
        self._net = net or _Net()
        self._out = _Out(out_size)
        self._small = bytearray(_CHUNK)
        self._smv = memoryview(self._small)
        self._puback = bytearray(b"\x40\x02\0\0")
        self._client = None
        self._topics = ()
        self._sink = None
        self._max_message = 0
        self._conn = None
        self._state = _CLOSED
        self._deadline = 0
        self._backoff = _BACKOFF_MIN_MS
        self._retry_at = clock.ticks_ms()
        self._subacks = 0
        self._asked = 0            # answers owed by the broker (PUBACK, PINGRESP)
        self._asked_at = None      # since when one is owed with nothing left to send
        self._sent_at = 0
        self._recv_at = 0
        self._stage = _H1          # the incoming packet parser
        self._need = 0
        self._got = 0
        self._dst = None
        self._kind = 0
        self._rl = 0
        self._shift = 0
        self._topic = None
        self._pid = 0
        self._msg = None

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

    def start(self, will_topic, will_payload, topics, on_message, max_message):
        """Connect from the next tick on, with a retained Last Will; on_message(topic, payload)
        must only queue (payload None: larger than max_message, drained unread)."""
        c = simple.MQTTClient(self.client_id, self.host, self.port, self.user,
                              "" if self.password is None else self.password,   # a user without one: umqtt takes len()
                              self.keepalive_s)
        c.set_callback(on_message)
        c.set_last_will(will_topic, will_payload, retain=True, qos=1)
        simple.socket = _Framer(self._out)
        self._client = c
        self._topics = topics
        self._sink = on_message
        self._max_message = max_message

    @property
    def ready(self):
        return self._state == _READY

    def hurry(self):
        """Try at the next tick, backoff or not (at shutdown)."""
        self._retry_at = self._clock.ticks_ms()

    def drained(self):
        """Everything handed over has gone out (at shutdown: time to stop)."""
        return self._out.used == 0

    def publish(self, topic, payload, retain=False, qos=0):
        """Hand a message to the out-buffer: False if the link is not ready or the buffer is full."""
        if self._state != _READY:
            return False
        if isinstance(payload, str):
            payload = payload.encode()   # umqtt.simple counts characters, the broker counts bytes
        elif not isinstance(payload, bytes) and len(payload) > _HOLD_MIN:
            payload = bytes(payload)     # a view of a reused buffer: held, it needs bytes of its own
        if not self._out.room(_publish_size(len(topic), len(payload), qos), payload):
            return False
        if qos:
            self._next_pid()
        self._frame(self._client.publish, topic, payload, retain, qos)
        if qos:
            self._ask()
        return True

    def tick(self):
        """One pass of connection work and I/O within the budgets: UP, DOWN or None."""
        now = self._clock.ticks_ms()
        state = self._state
        try:
            if state == _CLOSED:
                if self._client is None or self._clock.ticks_diff(now, self._retry_at) < 0:
                    return None
                self._open(now)
            if self._state == _TCP:
                if not self._conn.connected():
                    self._overdue(now)
                    return None
                if self.tls is not None:
                    self._conn.wrap(self.tls_context(), self.tls_hostname)
                    self._enter(_TLS, now)
                else:
                    self._enter(_CONNACK, now)
            wrote = self._drain(now)
            if self._state == _TLS:
                if not wrote:
                    self._overdue(now)
                    return None
                self._enter(_CONNACK, now)   # a byte of CONNECT went out: the handshake is done
            self._read(now)
            if self._state == _READY:
                self._keepalive(now)
            else:
                self._overdue(now)
        except (OSError, ValueError) as e:   # the socket, TLS (a certificate refused), the broker
            self._fail(e, now)
            return DOWN
        if state != _READY and self._state == _READY:
            self._backoff = _BACKOFF_MIN_MS
            self._clock.outside(0)
            return UP
        return None

    # -- connection steps ---------------------------------------------------------------------
    def _open(self, now):
        self._clock.outside(self.timeout_ms)   # a simulator keeps its virtual time with the broker's
        if self.addr is None:
            self.addr = self._net.resolve(self.host, self.port)   # DNS once: it blocks
        self._out.clear()
        self._stage = _H1
        self._need = 1
        self._got = 0
        self._dst = self._smv[:1]
        self._msg = None
        self._asked = 0
        self._asked_at = None
        self._subacks = 0
        self._conn = self._net.connect(self.addr)
        self._frame(self._client.connect)
        self._enter(_TCP, now)

    def _enter(self, state, now):
        self._state = state
        self._deadline = self._clock.ticks_add(now, self.timeout_ms)
        self._sent_at = self._recv_at = now
        if state != _READY:
            self._clock.outside(self.timeout_ms)

    def _overdue(self, now):
        if self._clock.ticks_diff(now, self._deadline) >= 0:
            raise OSError(errno.ETIMEDOUT)

    def _fail(self, err, now):
        why = str(err).strip() or repr(err)
        self.error = ("TLS: " + why) if self._state == _TLS else why
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None
        self._state = _CLOSED
        self._msg = None
        wait = self._backoff + _jitter(self._backoff // 4)
        self.retry_ms = wait
        self._retry_at = self._clock.ticks_add(now, wait)
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_MS)
        self._clock.outside(0)

    def _keepalive(self, now):
        """A PINGREQ after half the keepalive without traffic; an answer overdue ends the link."""
        c = self._clock
        if self._asked and self._out.used == 0:
            if self._asked_at is None:
                self._asked_at = now
            elif c.ticks_diff(now, self._asked_at) > self.timeout_ms:
                raise OSError(errno.ETIMEDOUT)
        if self._out.used and c.ticks_diff(now, self._sent_at) > self.timeout_ms:
            raise OSError(errno.ETIMEDOUT)   # the broker stopped taking bytes
        half = self.keepalive_s * 500
        if not self._asked and (c.ticks_diff(now, self._sent_at) >= half or c.ticks_diff(now, self._recv_at) >= half):
            self._frame(self._client.ping)
            self._ask()

    def _ask(self):
        if not self._asked:
            self._clock.outside(self.timeout_ms)
        self._asked += 1

    def _answered(self):
        if self._asked:
            self._asked -= 1
        self._asked_at = None

    def _next_pid(self):
        c = self._client
        if c.pid >= 0xFFFF:   # umqtt.simple never wraps its packet id: 65536 does not fit the field
            c.pid = 0

    def _frame(self, fn, *args):
        """Let umqtt.simple (or fn) write a packet into the out-buffer; the stall deadline of
        what waits there counts from now if it was empty."""
        if self._out.used == 0:
            self._sent_at = self._clock.ticks_ms()
        try:
            fn(*args)
        except _Framed:
            pass

    # -- bytes in and out ---------------------------------------------------------------------
    def _drain(self, now):
        out = self._out
        budget = _OUT_BYTES
        wrote = 0
        while out.used and budget > 0:
            mv = out.waiting()
            n = self._conn.write(mv[:budget] if len(mv) > budget else mv)
            if not n:
                break
            out.sent(n)
            budget -= n
            wrote += n
            self._sent_at = now
        return wrote

    def _read(self, now):
        budget = _IN_BYTES
        msgs = 0
        while msgs < _IN_MSGS:
            if self._need:
                if budget <= 0:
                    return
                k = min(self._need, budget)
                if self._dst is None:
                    view = self._smv[:min(k, _CHUNK)]
                else:
                    view = self._dst[self._got:self._got + k]
                n = self._conn.readinto(view)
                if not n:
                    return
                budget -= n
                self._need -= n
                self._got += n
                self._recv_at = now
                if self._need:
                    continue
            msgs += self._step()

    def _want(self, stage, n, dst):
        self._stage = stage
        self._need = n
        self._got = 0
        self._dst = dst

    def _step(self):
        """A piece of the incoming packet is complete: parse it; 1 when a message was taken."""
        st = self._stage
        s = self._small
        if st == _H1:
            self._kind = s[0]
            self._rl = 0
            self._shift = 0
            self._want(_HLEN, 1, self._smv[:1])
        elif st == _HLEN:
            self._rl |= (s[0] & 0x7F) << self._shift
            self._shift += 7
            if s[0] & 0x80:
                if self._shift > 21:
                    raise OSError("mqtt: bad remaining length")
                self._want(_HLEN, 1, self._smv[:1])
            elif self._kind & 0xF0 == 0x30:
                if self._rl < 2:
                    raise OSError("mqtt: bad PUBLISH")
                self._want(_TLEN, 2, self._smv[:2])
            elif self._rl > _CHUNK:
                raise OSError("mqtt: control packet of %d bytes" % self._rl)
            else:
                self._want(_BODY, self._rl, self._smv[:self._rl])
        elif st == _BODY:
            self._control()
            self._want(_H1, 1, self._smv[:1])
        elif st == _TLEN:
            qos = (self._kind >> 1) & 3
            tl = s[0] << 8 | s[1]
            extra = 2 if qos else 0
            if qos > 1 or tl + extra + 2 > self._rl or tl + extra > _CHUNK:
                raise OSError("mqtt: bad PUBLISH")
            self._want(_TOPIC, tl + extra, self._smv[:tl + extra])
        elif st == _TOPIC:
            qos = (self._kind >> 1) & 3
            tl = self._got - (2 if qos else 0)
            self._topic = bytes(s[:tl])
            self._pid = s[tl] << 8 | s[tl + 1] if qos else 0
            n = self._rl - 2 - self._got
            if n > self._max_message:
                self._want(_DRAIN, n, None)
            else:
                self._msg = bytearray(n)
                self._want(_PAYLOAD, n, memoryview(self._msg))
            if n == 0:
                return self._step()
        else:   # _PAYLOAD or _DRAIN: the message is complete
            msg, self._msg = self._msg, None
            self._sink(self._topic, msg if st == _PAYLOAD else None)
            if self._pid:   # QoS 1 from the broker: acknowledged once taken (or refused)
                a = self._puback
                a[2] = self._pid >> 8
                a[3] = self._pid & 0xFF
                self._frame(self._out.write, a)
            self._topic = None
            self._want(_H1, 1, self._smv[:1])
            return 1
        return 0

    def _control(self):
        kind = self._kind & 0xF0
        s = self._small
        if kind == 0x20:   # CONNACK
            if self._state != _CONNACK or self._rl != 2:
                raise OSError("mqtt: unexpected CONNACK")
            if s[1]:
                raise OSError("mqtt: broker refused the connection (code %d)" % s[1])
            for t in self._topics:
                self._next_pid()
                self._frame(self._client.subscribe, t, 1)
            self._enter(_SUBACK, self._clock.ticks_ms())
        elif kind == 0x90:   # SUBACK
            if self._rl < 3 or s[2] == 0x80:
                raise OSError("mqtt: subscription refused")
            self._subacks += 1
            if self._state == _SUBACK and self._subacks == len(self._topics):
                self._enter(_READY, self._clock.ticks_ms())
        elif kind == 0x40 or kind == 0xD0:   # PUBACK, PINGRESP
            self._answered()
