"""A loopback TCP proxy in front of the broker that the simulator can turn up, down or silent.

`down` refuses connections (and drops open ones), `silent` accepts TCP and never answers
(the hardest case for a client), `up` forwards to the broker.

    with Proxy(1883) as p:       # firmware connects to 127.0.0.1:p.port
        p.set_mode("silent")
"""
import socket
import threading

from broker import free_port


class Proxy:
    MODES = ("up", "down", "silent")

    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "up"
        self._lock = threading.Lock()
        self._listener = None
        self._conns = []   # (client, upstream or None)

    def __enter__(self):
        self._listen()
        return self

    def __exit__(self, *exc):
        self.set_mode("down")

    def _listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(8)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed: mode went down
            with self._lock:
                if self.mode == "up":
                    try:
                        up = socket.create_connection(self.target, timeout=5)
                    except OSError:
                        client.close()
                        continue
                    up.settimeout(None)  # the timeout was for connecting: an idle MQTT link is normal
                    self._conns.append((client, up))
                    for a, b in ((client, up), (up, client)):
                        threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
                else:  # silent: hold the connection, swallow whatever comes
                    self._conns.append((client, None))
                    threading.Thread(target=self._pump, args=(client, None), daemon=True).start()

    def _pump(self, src, dst):
        """Forward src to dst while the broker is up; swallow everything once it went silent."""
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                if dst is not None and self.mode == "up":
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _drop_connections(self):
        for client, up in self._conns:
            for s in (client, up):
                if s is not None:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
        self._conns = []

    def set_mode(self, mode):
        if mode not in self.MODES:
            raise ValueError("proxy mode must be one of %s" % ", ".join(self.MODES))
        with self._lock:
            if mode == self.mode and self._listener is not None:
                return
            self.mode = mode
            if mode != "silent":
                self._drop_connections()  # a silent broker keeps its open connections, mute
            if mode == "down":
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
            elif self._listener is None:
                self._listen()
