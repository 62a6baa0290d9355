"""A private mosquitto on a free loopback port, for tests and the demo (no system service used).

    with Broker() as b:
        print(b.port)        # 127.0.0.1:b.port accepts MQTT until the block ends
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time


def mosquitto_path():
    for p in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if p and os.path.exists(p):
            return p
    raise RuntimeError("mosquitto is not installed: run `make setup` (apt-get install mosquitto)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """tls={"ca", "cert", "key" (PEM files), "require_client": bool} adds a TLS listener on .tls_port."""

    def __init__(self, port=None, tls=None):
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.dir = tempfile.mkdtemp(prefix="cp-broker-")
        self.proc = None

    def __enter__(self):
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("per_listener_settings false\nallow_anonymous true\npersistence false\n")
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                f.write("user root\n")   # as root it would drop to `mosquitto`, who cannot read our key files
            f.write("listener %d 127.0.0.1\n" % self.port)
            if self.tls:
                f.write("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate %s\n"
                        % (self.tls_port, self.tls["ca"], self.tls["cert"], self.tls["key"],
                           "true" if self.tls.get("require_client") else "false"))
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
        shutil.rmtree(self.dir, ignore_errors=True)
