"""A hand-written network for the MQTT link's tests (both interpreters, no mocks): connections
whose far end is a small scripted broker that parses what the link writes and answers it.

    broker = FakeBroker(); link = Link("cp-1", "broker", 1883, clock, net=FakeNet(broker))
    broker.max_read = 1          # the broker's bytes arrive one at a time
    broker.send("cp/v1/cp-1/cmd/x", b"{}", qos=1)
"""
import struct


def varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varlen(len(body)) + bytes(body)


def publish_packet(topic, payload, qos=0, pid=1, retain=False):
    t = topic.encode() if isinstance(topic, str) else topic
    body = struct.pack("!H", len(t)) + t + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(0x30 | qos << 1 | (1 if retain else 0), body)


class FakeBroker:
    """The far end. mode: "up" answers, "silent" accepts TCP and never answers, "down" refuses."""

    def __init__(self, clock=None):
        self.clock = clock
        self.mode = "up"
        self.connect_polls = 0     # connected() says "not yet" this many times first
        self.max_write = None      # bytes taken per write call (None: all)
        self.max_read = None       # bytes given per readinto call (None: all asked)
        self.window = None         # bytes the socket takes before it is full (None: no limit)
        self.trickle_ms = 0        # with max_read = 1: a byte at most every trickle_ms (virtual)
        self.us_per_byte = 0       # virtual time each byte moved costs the device (a slow CPU, TLS)
        self.connack_rc = 0
        self.puback = True
        self.resolved = 0
        self.conns = 0             # connections opened
        self.packets = []          # (type, body) of every packet the link sent, in order
        self.published = []        # (topic, payload, qos, retain)
        self.asked = []            # the buffer size of every readinto call
        self._rx = bytearray()     # to the link
        self._tx = bytearray()     # from the link, not parsed yet
        self._last_byte = None
        self._debt = 0

    # -- what a test does ---------------------------------------------------------------------
    def send(self, topic, payload, qos=0, pid=1):
        self._rx += publish_packet(topic, payload, qos, pid)

    def raw(self, data):
        self._rx += data

    def pending(self):
        return len(self._rx)

    def kinds(self):
        return [k for k, _ in self.packets]

    # -- the link's side ----------------------------------------------------------------------
    def _cost(self, n):
        if self.clock is not None and self.us_per_byte:
            self._debt += n * self.us_per_byte
            ms, self._debt = self._debt // 1000, self._debt % 1000
            if ms:
                self.clock.advance(ms)

    def _took(self, data):
        self._tx += data
        while len(self._tx) >= 2:
            rl, shift, i = 0, 0, 1
            while True:
                if i >= len(self._tx):
                    return
                b = self._tx[i]
                rl |= (b & 0x7F) << shift
                shift += 7
                i += 1
                if not b & 0x80:
                    break
            if len(self._tx) < i + rl:
                return
            first = self._tx[0]
            body = bytes(self._tx[i:i + rl])
            self._tx = self._tx[i + rl:]
            self._got(first, body)

    def _got(self, first, body):
        kind = first & 0xF0
        self.packets.append((kind, body))
        if kind == 0x30:
            qos = (first >> 1) & 3
            tl = body[0] << 8 | body[1]
            topic = body[2:2 + tl].decode()
            off = 2 + tl + (2 if qos else 0)
            self.published.append((topic, body[off:], qos, bool(first & 1)))
            if qos and self.mode == "up" and self.puback:
                self._rx += packet(0x40, body[2 + tl:4 + tl])
        if self.mode != "up":
            return
        if kind == 0x10:
            self._rx += packet(0x20, bytes([0, self.connack_rc]))
        elif kind == 0x80:
            self._rx += packet(0x90, body[:2] + b"\x01")
        elif kind == 0xC0:
            self._rx += packet(0xD0, b"")

    def connect(self):
        self.conns += 1
        self._tx = bytearray()   # a new connection: nothing half-parsed from the last one
        return FakeConn(self)


class FakeConn:
    """What firmware/link/mqtt.py's _Tcp is to a real socket: connected(), wrap(), write(), readinto(), close()."""

    def __init__(self, broker):
        self.b = broker
        self.polls = 0
        self.closed = False

    def connected(self):
        b = self.b
        if b.mode == "down":
            raise OSError(111)
        self.polls += 1
        return self.polls > b.connect_polls

    def wrap(self, ctx, hostname):
        raise OSError("the fake network has no TLS")

    def write(self, mv):
        b = self.b
        if self.closed:
            raise OSError(9)
        n = len(mv)
        if b.max_write is not None:
            n = min(n, b.max_write)
        if b.window is not None:
            n = min(n, b.window)
            b.window -= n
        if n:
            b._took(bytes(mv[:n]))
            b._cost(n)
        return n

    def readinto(self, mv):
        b = self.b
        if self.closed:
            raise OSError(9)
        b.asked.append(len(mv))
        n = min(len(mv), len(b._rx))
        if b.max_read is not None:
            n = min(n, b.max_read)
        if n and b.trickle_ms and b.clock is not None:
            now = b.clock.ticks_ms()
            if b._last_byte is not None and b.clock.ticks_diff(now, b._last_byte) < b.trickle_ms:
                return 0
            b._last_byte = now
        if n:
            mv[:n] = b._rx[:n]
            b._rx = b._rx[n:]
            b._cost(n)
        return n

    def close(self):
        self.closed = True


class FakeNet:
    """Resolves any name (counting how often) and connects to the one fake broker."""

    def __init__(self, broker):
        self.broker = broker

    def resolve(self, host, port):
        self.broker.resolved += 1
        return (host, port)

    def connect(self, addr):
        return self.broker.connect()
