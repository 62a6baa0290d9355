"""Commands from the backend (`cmd/<name>`), authorization answers and acknowledgements.

Every message is sealed by the backend under this charger's key (firmware/link/seal.py): one
without a valid MAC is refused before it is even parsed, so a broker peer can neither forge nor
alter one. A command also carries a counter `ctr` above the last accepted one, persisted before
the command runs, so a replay is refused even after a reboot. Answers (`ack`, `auth/resp`) need
no counter: an ack names msg_ids that are never reused (a replay acknowledges a record already
gone) and an authorization answer names a random correlation id that is answered once.

A command is a JSON object with an `id`; it is validated, handed to the handler its name maps
to in an explicit route table (firmware/link/handlers.py builds it) and answered on `cmd_ack`
with `accepted` or `rejected` and a reason. Anything malformed, oversized, too deep, unknown,
or that makes its handler raise anything at all is rejected: a command never becomes an
internal fault. Short of heap, a command is rejected as `busy` (not applied; the backend sends
it again) and an answer is ignored. At most `per_pass` messages are handled per loop pass, and commands pass a
token bucket (RATE a second, BURST at once): the excess is dropped unparsed and unanswered,
counted and logged at most once per 10 s, so a flood cannot starve sampling or the watchdog.

    commands = Commands({"remote_stop": h.remote_stop}, {"ack": h.ack}, sync, log, clock, key, "cp-0001", state)
    commands.handle_inbox()   # every control step
"""
import gc
import json

from micropython import const

from firmware.core import jsonx
from firmware.core.log import print_exception
from firmware.link.seal import B2D, Counter, unseal

_MAX_ID = const(64)
PER_PASS = 4
RATE = 4                    # commands a second, sustained
BURST = 16                  # commands at once after a quiet spell (a reconnect's catch-up)
_DROP_PER_PASS = const(16)  # excess commands discarded per pass (cheap, but bounded too)
_DROP_LOG_MS = const(10000)
BUSY = "busy: low memory, not applied; try again"
NO_KEY = "no device_key in secrets.json: every backend message is refused"


class Commands:
    def __init__(self, routes, answers, sync, log, clock, key, device_id, state, per_pass=PER_PASS, rate=RATE,
                 burst=BURST):
        """routes: command name -> handler(payload) returning extra ack fields or None, raising
        ValueError to reject; answers: topic suffix (auth/resp, ack) -> handler(payload);
        key: the device key (None: nothing is accepted); state: keeps the command counter;
        rate commands a second (1..1000), burst at once."""
        if not 1 <= rate <= 1000 or burst < 1:
            raise ValueError("commands: rate must be 1..1000 and burst >= 1")
        self.routes = routes
        self.answers = answers
        self.sync = sync
        self.log = log
        self.clock = clock
        self.key = key
        self.device_id = device_id
        self.state = state
        self.counter = Counter(state.cmd_ctr())
        self.per_pass = per_pass
        self.rate = rate
        self.dropped = 0            # commands over the rate limit since boot (mod 2^30)
        self._cost = 1000 // rate   # bucket credit (ms) one command takes
        self._cap = burst * self._cost
        self._credit = self._cap    # token bucket, in ms of credit
        self._filled = clock.ticks_ms()
        self._logged = self._filled
        self._unlogged = 0          # drops not yet in the log
        if key is None:
            log.event("command", result="disabled", reason=NO_KEY)

    def handle_inbox(self):
        """Handle what the broker delivered: at most per_pass messages, commands within the rate."""
        inbox = self.sync.inbox
        if not inbox:
            return
        now = self.clock.ticks_ms()
        credit = self._credit + self.clock.ticks_diff(now, self._filled)
        self._credit = credit if 0 <= credit < self._cap else self._cap
        self._filled = now
        n = drops = 0
        while inbox and n < self.per_pass and drops < _DROP_PER_PASS:
            suffix, raw = inbox[0]
            if suffix.startswith("cmd/"):
                if self._credit < self._cost:
                    inbox.pop(0)
                    drops += 1
                    continue
                self._credit -= self._cost
            inbox.pop(0)
            self.handle(suffix, raw)
            n += 1
        if drops:
            self.dropped = (self.dropped + drops) & 0x3FFFFFFF   # a small int, even after months of flood
            self._unlogged = min(self._unlogged + drops, 0x3FFFFFFF)
        if self._unlogged and self.clock.ticks_diff(now, self._logged) >= _DROP_LOG_MS:
            self.log.event("command", result="dropped", reason="rate limit (%d/s)" % self.rate, n=self._unlogged)
            self._unlogged = 0
            self._logged = now

    def handle(self, suffix, raw):
        command = suffix.startswith("cmd/")
        fn = None if command else self.answers.get(suffix)
        if not command and fn is None:
            return
        try:
            body = self._open(suffix, raw)
        except MemoryError:
            gc.collect()
            if command:
                return self.answer(_id_of(raw), suffix[4:], "rejected", BUSY)
            self.log.event("command", topic=suffix, result="ignored", reason=BUSY)
            return
        except ValueError as e:
            if command:
                return self.answer(_id_of(raw), suffix[4:], "rejected", "unauthenticated: %s" % e)
            self.log.event("command", topic=suffix, result="refused", reason="unauthenticated: %s" % e)
            return
        why = "payload must be a JSON object"
        try:
            payload = jsonx.loads(body)   # prices stay exact decimals, never floats
        except jsonx.TooBig as e:
            payload, why = None, "payload: %s" % e
        except MemoryError:
            gc.collect()
            payload, why = None, BUSY
        except Exception:   # malformed JSON (ValueError), bad UTF-8, anything else: refused
            payload = None
        if command:
            self._command(suffix[4:], payload, why)
            return
        try:
            fn(payload)
        except MemoryError:
            gc.collect()
            self.log.event("command", topic=suffix, result="ignored", reason=BUSY)
        except ValueError as e:
            self.log.event("command", topic=suffix, result="ignored", reason=str(e))
        except Exception as e:   # a bug in an answer's handler must not stop the charger
            print_exception(e)
            self.log.event("command", topic=suffix, result="ignored", reason="internal error: %s" % type(e).__name__)

    def _open(self, suffix, raw):
        """The body of a sealed message; ValueError with the reason if it is not this backend's."""
        if self.key is None:
            raise ValueError(NO_KEY)
        if isinstance(raw, str):
            raw = raw.encode()
        return unseal(self.key, B2D, self.device_id, suffix, raw)

    def _command(self, name, p, why):
        cid = p.get("id") if isinstance(p, dict) else None
        if not isinstance(p, dict):
            return self.answer(None, name, "rejected", why)
        if not isinstance(cid, str) or not 0 < len(cid) <= _MAX_ID:
            return self.answer(None, name, "rejected", "id must be a string of 1..%d characters" % _MAX_ID)
        ctr = p.get("ctr")
        try:
            self.counter.check(ctr)
        except ValueError as e:
            return self.answer(cid, name, "rejected", "unauthenticated: %s" % e)
        self.state.set_cmd_ctr(ctr)   # spent before the command runs: a replay never runs it twice
        self.state.save()
        if self.state.dirty:          # the flash kept it not: a reboot could let a replay in
            self.state.set_cmd_ctr(self.counter.last)
            return self.answer(cid, name, "rejected", "storage error: the command counter could not be saved; "
                                                      "try again")
        self.counter.take(ctr)
        del p["ctr"]   # transport, not a command field: handlers refuse what they do not know
        handler = self.routes.get(name)
        if handler is None:
            return self.answer(cid, name, "rejected", "unknown command %r" % name[:32])
        try:
            extra = handler(p)
        except ValueError as e:
            return self.answer(cid, name, "rejected", str(e))
        except OSError as e:   # the flash failed: the command did not take effect, the charge goes on
            return self.answer(cid, name, "rejected", "storage error: %s; try again" % e)
        except MemoryError:
            gc.collect()
            return self.answer(cid, name, "rejected", BUSY)
        except Exception as e:   # a bug, or a value no check foresaw: refused, never an internal fault
            print_exception(e)
            return self.answer(cid, name, "rejected", "internal error: %s; not applied" % type(e).__name__)
        self.answer(cid, name, "accepted", None, extra)

    def answer(self, cid, name, status, reason, extra=None):
        ack = {"id": cid, "cmd": name[:32], "status": status}
        if reason:
            ack["reason"] = reason
        if extra:
            ack.update(extra)
        self.log.event("command", cmd=ack["cmd"], id=cid, result=status, reason=reason)
        self.sync.publish_now("cmd_ack", json.dumps(ack), 1)


def _id_of(raw):
    """The id a refused message claims, to name it in the answer (it is not trusted for anything)."""
    try:
        cid = jsonx.loads(raw).get("id")
    except Exception:   # anything unreadable: the refusal names no id
        return None
    return cid if isinstance(cid, str) and 0 < len(cid) <= _MAX_ID else None
