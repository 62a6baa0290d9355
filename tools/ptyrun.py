"""Run the charger firmware on the MicroPython unix port with a pseudo-terminal as its console.

This is the PC stand-in for a board on a USB cable: the firmware runs a simulator scenario
(`micropython -i main.py ...`, so its REPL stays up once the firmware stops) and the console
appears as a serial device that `mpremote` drives like a board's, Ctrl-C and raw REPL included.

    python3 tools/ptyrun.py demo/two_drivers.json --keep out/pty      # prints the device path
    mpremote connect /dev/pts/7 resume exec "from firmware.ops import tech; tech.status()"

How: the firmware's terminal and the device mpremote opens are two pty pairs in raw mode, like a
UART on both sides; a thread copies bytes between their master sides, like a USB-serial bridge,
and keeps a transcript of everything the firmware printed. The scenario gets `"console": true`:
the simulated board then turns a Ctrl-C on its console into KeyboardInterrupt at a safe point,
as an ESP32's UART driver does (the unix port's own SIGINT can strike inside the garbage
collector). Bytes that follow a Ctrl-C are held until the REPL prompts, because the unix port
flushes pending console input when its REPL switches the terminal to raw mode (a board's UART
does not). Without a broker, world requests (`% {...}` lines) are answered "ok" as tools/sim.py does.
"""
import argparse
import errno
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scenario import ROOT, ScenarioError  # noqa: E402
from sim import micropython_env, micropython_path, prepare  # noqa: E402

_CTRL_C = b"\x03"
_PROMPTS = (b">>> ", b"raw REPL; CTRL-B to exit")   # the REPL reads raw input once it shows one
_HOLD_S = 5.0                 # bytes after a Ctrl-C wait at most this long for a prompt
_TRANSCRIPT_MAX = 1 << 20     # bytes of firmware output kept (the newest)


class PtyRun:
    """One firmware process on a pty; `device` is the path to give `mpremote connect`."""

    def __init__(self, scenario, run_dir, site_key=None, echo=None):
        self.scenario = scenario
        self.run_dir = run_dir
        self.site_key = site_key or os.urandom(32)
        self.echo = echo              # called with each chunk of firmware output (bytes), or None
        self.proc = None
        self.device = None
        self.data = os.path.join(run_dir, "data")
        self._out = bytearray()
        self._lock = threading.Lock()
        self._stop = False
        self._thread = None
        self._fds = []
        self._prompted = False
        self._since = bytearray()

    def start(self):
        _, _, board_path, _ = prepare(self.scenario, self.run_dir, self.site_key, None)
        world_path = os.path.join(self.run_dir, "scenario.json")
        with open(world_path) as f:
            world = json.load(f)
        world["console"] = True       # the simulated board watches its console for Ctrl-C
        with open(world_path, "w") as f:
            json.dump(world, f)
        fw_master, fw_slave = os.openpty()
        host_master, host_slave = os.openpty()
        self._fds = [fw_master, host_master, host_slave]
        tty.setraw(fw_slave)          # a UART: no echo, no line editing, no signals, bytes as they are
        tty.setraw(host_slave)
        self._fw, self._host = fw_master, host_master
        self.device = os.ttyname(host_slave)
        cmd = [micropython_path(), "-i", os.path.join(ROOT, "main.py"), "--board", board_path,
               "--config", os.path.join(self.run_dir, "config.json"),
               "--secrets", os.path.join(self.run_dir, "secrets.json"),
               "--scenario", os.path.join(self.run_dir, "scenario.json"), "--data", self.data]
        try:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=micropython_env(), stdin=fw_slave, stdout=fw_slave,
                                         stderr=fw_slave, start_new_session=True)
        finally:
            os.close(fw_slave)
        os.set_blocking(host_master, False)
        self._thread = threading.Thread(target=self._bridge, name="ptyrun-bridge", daemon=True)
        self._thread.start()
        return self

    # -- the bridge ---------------------------------------------------------------------------
    def _bridge(self):
        held = None          # host bytes after a Ctrl-C, waiting for the REPL's prompt
        hold_until = 0.0
        line = bytearray()
        fw_open = True
        while not self._stop:
            if held is not None and (self._prompted or time.monotonic() > hold_until):
                os.write(self._fw, held)
                held = None
            fds = [self._host] + ([self._fw] if fw_open else [])
            ready = select.select(fds, [], [], 0.05)[0]
            if self._fw in ready:
                try:
                    data = os.read(self._fw, 4096)
                except OSError:   # EIO: the firmware process closed its terminal (it ended)
                    data = b""
                if not data:
                    fw_open = False
                    continue
                self._firmware_said(data, line, held is not None)
            if self._host in ready:
                try:
                    data = os.read(self._host, 4096)
                except OSError:
                    data = b""
                if held is not None:
                    held += data
                    continue
                i = data.find(_CTRL_C)
                if i < 0:
                    os.write(self._fw, data)
                    continue
                os.write(self._fw, data[:i + 1])
                held, hold_until = data[i + 1:], time.monotonic() + _HOLD_S
                self._prompted = False
                self._since = bytearray()

    def _firmware_said(self, data, line, holding):
        with self._lock:
            self._out += data
            if len(self._out) > _TRANSCRIPT_MAX:
                del self._out[:len(self._out) - _TRANSCRIPT_MAX]
        if holding:
            self._since = (self._since + data)[-64:]
            if any(p in self._since for p in _PROMPTS):
                self._prompted = True
        if self.echo is not None:
            self.echo(data)
        try:
            os.write(self._host, data)
        except BlockingIOError:
            pass   # nobody reads the device and its buffer is full: dropped, like a UART's
        for b in data:
            if b == 10:
                if line.startswith(b"% "):
                    os.write(self._fw, b"ok\n")   # a world request: no broker here, nothing to do
                line[:] = b""
            elif len(line) < 4096:
                line.append(b)

    # -- for tests and the command line --------------------------------------------------------
    def transcript(self):
        """Everything the firmware printed so far (newest 1 MiB), as text."""
        with self._lock:
            return bytes(self._out).decode("utf-8", "replace")

    def wait_for(self, text, timeout=30.0):
        """Block until the transcript contains text; TimeoutError (with the tail) otherwise."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.transcript():
                return
            if self.proc.poll() is not None:   # it ended: its last words may still be in the bridge
                time.sleep(0.3)
                if text in self.transcript():
                    return
                break
            time.sleep(0.05)
        raise TimeoutError("%r not seen within %.0f s (exit %r); last output:\n%s"
                           % (text, timeout, self.proc.poll(), self.transcript()[-3000:]))

    def stop(self, timeout=5.0):
        """End the firmware process (SIGTERM, then SIGKILL) and the bridge; close the ptys."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._stop = True
        if self._thread is not None:
            self._thread.join(timeout)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError as e:
                if e.errno != errno.EBADF:
                    raise
        self._fds = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _kept_key(run_dir):
    """The site key of an earlier run in run_dir (its data holds pseudonyms under it), or None."""
    try:
        with open(os.path.join(run_dir, "secrets.json")) as f:
            sec = json.load(f)
        return bytes.fromhex(sec["site_keys"][str(sec["site_key_current"])])
    except (OSError, ValueError, KeyError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="then: mpremote connect DEVICE resume exec \"from firmware.ops import tech; "
                                        "tech.status()\"",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", help="scenario JSON file (see README: Scenario contract)")
    ap.add_argument("--keep", metavar="DIR", help="run directory (config, scenario, data) to keep; "
                                                  "reuse it to boot again on the same data")
    ap.add_argument("--site-key", metavar="HEX",
                    help="site key for pseudonyms (default: the --keep run's, else random)")
    ap.add_argument("--quiet", action="store_true", help="do not copy the firmware's output here")
    args = ap.parse_args()
    run_dir = args.keep or tempfile.mkdtemp(prefix="cp-pty-")
    key = bytes.fromhex(args.site_key) if args.site_key else _kept_key(run_dir)

    def show(data):
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()

    run = PtyRun(args.scenario, run_dir, key, None if args.quiet else show)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # stop the firmware too (finally below)
    try:
        run.start()
    except ScenarioError as e:
        print("scenario error: %s" % e, file=sys.stderr)
        sys.exit(2)
    print("firmware console: %s   (data: %s)\n  mpremote connect %s resume exec \"from firmware.ops import tech; "
          "tech.status()\"" % (run.device, run.data, run.device), file=sys.stderr)
    try:
        while run.proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        run.stop()
    sys.exit(run.proc.returncode or 0)


if __name__ == "__main__":
    main()
