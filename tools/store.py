"""The backend's store: charger records in SQLite or PostgreSQL, one set of SQL for both.

The reference backend (tools/backend.py) writes here and the reports (tools/report.py) read
from here. A URL picks the database: a file path (or sqlite:///path) opens SQLite through the
standard library; postgresql://user@host/db opens PostgreSQL through psycopg 3. Every
statement is written once with `?` placeholders and portable SQL (ON CONFLICT upserts, no
identity columns, no date functions): dates are kept both as ISO text and as Unix seconds.

    with Store("out/backend.sqlite") as st:
        new, gaps, closed = st.add_session_event("cp-0001", record, received_s=1772438100)

Units: energy in Wh, money in the currency's minor unit, times in seconds; all integers.
"""
import datetime
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile

SCHEMA_VERSION = 2   # 2: the data epoch (`ep`) in the keys of what a device's ids name
SCHEMA_LOCK = 0x63707631   # PostgreSQL advisory lock held while the schema is created ("cpv1")
MAX_GAPS_LISTED = 256  # missing seqs flagged per check; a wilder jump is reported as a count

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        name TEXT PRIMARY KEY, value TEXT)""",
    """CREATE TABLE IF NOT EXISTS sessions (
        device TEXT NOT NULL, ep BIGINT NOT NULL DEFAULT 0, tx_id BIGINT NOT NULL,
        token TEXT, key_version INTEGER, auth TEXT, tariff_id TEXT,
        started_at TEXT, started_s BIGINT, ended_at TEXT, ended_s BIGINT,
        energy_wh BIGINT, meter_start_wh BIGINT, meter_stop_wh BIGINT, stop_reason TEXT,
        currency TEXT, total_excl_minor BIGINT, total_incl_minor BIGINT,
        parking_s BIGINT, parking_excl_minor BIGINT, parking_incl_minor BIGINT,
        offline INTEGER NOT NULL DEFAULT 0, final INTEGER NOT NULL DEFAULT 0,
        record TEXT, updated_s BIGINT,
        PRIMARY KEY (device, ep, tx_id))""",
    """CREATE TABLE IF NOT EXISTS session_events (
        device TEXT NOT NULL, ep BIGINT NOT NULL DEFAULT 0, tx_id BIGINT NOT NULL, seq INTEGER NOT NULL,
        msg_id TEXT, event TEXT, ts TEXT, ts_s BIGINT, offline INTEGER NOT NULL DEFAULT 0,
        record TEXT, received_s BIGINT,
        PRIMARY KEY (device, ep, tx_id, seq))""",
    """CREATE TABLE IF NOT EXISTS gaps (
        device TEXT NOT NULL, ep BIGINT NOT NULL DEFAULT 0, tx_id BIGINT NOT NULL, seq INTEGER NOT NULL,
        kind TEXT, found_s BIGINT, resolved_s BIGINT,
        PRIMARY KEY (device, ep, tx_id, seq))""",
    """CREATE TABLE IF NOT EXISTS faults (
        device TEXT NOT NULL, ep BIGINT NOT NULL DEFAULT 0, msg_id TEXT NOT NULL, event TEXT, code TEXT, ts TEXT, ts_s BIGINT,
        tx_id BIGINT, latched INTEGER, trips INTEGER, stop_reason TEXT, detail TEXT,
        offline INTEGER NOT NULL DEFAULT 0, record TEXT, received_s BIGINT,
        PRIMARY KEY (device, ep, msg_id))""",
    """CREATE TABLE IF NOT EXISTS feedback (
        device TEXT NOT NULL, ep BIGINT NOT NULL DEFAULT 0, msg_id TEXT NOT NULL, ts TEXT, ts_s BIGINT, tx_id BIGINT,
        token TEXT, source TEXT, text TEXT, offline INTEGER NOT NULL DEFAULT 0,
        record TEXT, received_s BIGINT,
        PRIMARY KEY (device, ep, msg_id))""",
    """CREATE TABLE IF NOT EXISTS status_current (
        device TEXT PRIMARY KEY, state TEXT, connector TEXT, error TEXT, ts TEXT,
        received_s BIGINT, record TEXT)""",
    """CREATE TABLE IF NOT EXISTS status_history (
        device TEXT NOT NULL, k TEXT NOT NULL, state TEXT, connector TEXT, error TEXT, ts TEXT, ts_s BIGINT,
        received_s BIGINT, record TEXT,
        PRIMARY KEY (device, k))""",
    """CREATE TABLE IF NOT EXISTS stats (
        device TEXT NOT NULL, ts TEXT NOT NULL, ts_s BIGINT, currency TEXT,
        day TEXT, day_sessions BIGINT, day_energy_wh BIGINT, day_excl_minor BIGINT, day_incl_minor BIGINT,
        month TEXT, month_sessions BIGINT, month_energy_wh BIGINT, month_excl_minor BIGINT,
        month_incl_minor BIGINT, contactor_cycles BIGINT, boots BIGINT, record TEXT, received_s BIGINT,
        PRIMARY KEY (device, ts))""",
    """CREATE TABLE IF NOT EXISTS meter_values (
        device TEXT NOT NULL, ep BIGINT NOT NULL DEFAULT 0, tx_id BIGINT, ts TEXT, ts_s BIGINT, register_wh BIGINT,
        energy_wh BIGINT, p_w BIGINT, record TEXT, received_s BIGINT)""",
    """CREATE TABLE IF NOT EXISTS rejects (
        device TEXT, topic TEXT, payload TEXT, reason TEXT, received_s BIGINT)""",
    """CREATE TABLE IF NOT EXISTS cmd_acks (
        device TEXT NOT NULL, k TEXT NOT NULL, cmd_id TEXT, cmd TEXT, status TEXT, reason TEXT,
        extra TEXT, record TEXT, received_s BIGINT,
        PRIMARY KEY (device, k))""",
    """CREATE TABLE IF NOT EXISTS counters (
        device TEXT PRIMARY KEY, ctr BIGINT NOT NULL)""",
    # each data epoch (a life of the device: firmware/app.py new_epoch) as first seen; `previous`
    # is the epoch seen before it: set when a known device was re-initialised (state and journal lost)
    """CREATE TABLE IF NOT EXISTS epochs (
        device TEXT NOT NULL, ep BIGINT NOT NULL, first_s BIGINT, previous BIGINT,
        PRIMARY KEY (device, ep))""",
    "CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_s)",
    "CREATE INDEX IF NOT EXISTS sessions_token ON sessions (token)",
    "CREATE INDEX IF NOT EXISTS status_history_device ON status_history (device, received_s)",
    "CREATE INDEX IF NOT EXISTS meter_values_device ON meter_values (device, received_s)",
    "CREATE INDEX IF NOT EXISTS cmd_acks_device ON cmd_acks (device, cmd, received_s)",
)

# Columns of `sessions` that events fill in; a non-final event only fills what a final one left empty.
_SESSION_COLS = ("token", "key_version", "auth", "tariff_id", "started_at", "started_s", "ended_at",
                 "ended_s", "energy_wh", "meter_start_wh", "meter_stop_wh", "stop_reason", "currency",
                 "total_excl_minor", "total_incl_minor", "parking_s", "parking_excl_minor",
                 "parking_incl_minor", "record", "updated_s")

_SESSION_UPSERT = (
    "INSERT INTO sessions (device, ep, tx_id, final, offline, %s) VALUES (?, ?, ?, ?, ?, %s) "
    "ON CONFLICT (device, ep, tx_id) DO UPDATE SET %s, "
    "final = CASE WHEN sessions.final = 1 THEN 1 ELSE excluded.final END, "
    "offline = CASE WHEN sessions.offline = 1 OR excluded.offline = 1 THEN 1 ELSE 0 END"
) % (", ".join(_SESSION_COLS), ", ".join("?" for _ in _SESSION_COLS), ", ".join(
    "%s = CASE WHEN sessions.final = 1 AND excluded.final = 0 THEN COALESCE(sessions.%s, excluded.%s) "
    "ELSE COALESCE(excluded.%s, sessions.%s) END" % (c, c, c, c, c) for c in _SESSION_COLS))

_MIGRATED = ("sessions", "session_events", "gaps", "faults", "feedback", "meter_values")   # v1 -> v2: + ep
_ACK_COLS = ("id", "cmd", "status", "reason")   # cmd_ack fields with a column; the rest go to `extra`

DECIMALS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "XAF": 0, "XOF": 0}


def epoch(text):
    """ISO 8601 with a zone -> Unix seconds, or None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return int(t.timestamp())


def money(minor, currency):
    """Minor units as text in the currency's major unit: money(1234, "EUR") == "EUR 12.34"."""
    if minor is None:
        return "%s ?" % (currency or "")
    d = DECIMALS.get(currency, 2)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(int(minor)), 10 ** d)
    return "%s %s%d%s" % (currency or "?", sign, whole, ("." + str(frac).zfill(d)) if d else "")


def _flag(value):
    return 1 if value is True else 0


def _int(value):
    """An integer field, or None when absent or not an integer (never a float or bool)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value):
    """A text field, or None when absent or not a string."""
    return value if isinstance(value, str) else None


def ep_of(rec):
    """A record's data epoch: 0 for records of older firmware, which name none."""
    return _int(rec.get("ep")) or 0


def _dumps(rec):
    return json.dumps(rec, sort_keys=True, separators=(",", ":"))


def is_postgres(url):
    return url.startswith("postgresql://") or url.startswith("postgres://")


class Store:
    """One connection to the store; creates the schema when it is missing."""

    def __init__(self, url, create=True):
        self.url = url
        if is_postgres(url):
            try:
                import psycopg
            except ImportError:
                raise RuntimeError("a PostgreSQL URL needs psycopg 3: pip install 'psycopg[binary]'")
            self.kind = "postgresql"
            self.errors = (psycopg.Error,)
            try:
                self.conn = psycopg.connect(url)
            except psycopg.Error as e:
                raise RuntimeError("cannot open the PostgreSQL store: %s" % str(e).strip())
        else:
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
            if not create and not os.path.exists(path):
                raise FileNotFoundError("no store at %s" % path)
            d = os.path.dirname(os.path.abspath(path))
            os.makedirs(d, exist_ok=True)
            self.kind = "sqlite"
            self.errors = (sqlite3.Error,)
            try:
                self.conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as e:
                raise RuntimeError("cannot open the SQLite store %s: %s" % (path, e))
        self._named = 0
        try:
            self._schema()
        except self.errors as e:
            self.conn.close()
            raise RuntimeError("cannot use the store (%s): %s" % (self.kind, e))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.conn.close()

    def sql(self, text):
        """Portable SQL with `?` placeholders in this database's parameter style."""
        if self.kind == "postgresql":
            return text.replace("%", "%%").replace("?", "%s")
        return text

    def execute(self, text, params=()):
        cur = self.conn.cursor()
        cur.execute(self.sql(text), params)
        return cur

    def query(self, text, params=()):
        cur = self.execute(text, params)
        rows = cur.fetchall()
        cur.close()
        return rows

    def iterate(self, text, params=(), batch=2000):
        """Rows one by one without loading the whole result (a server-side cursor on PostgreSQL)."""
        if self.kind == "postgresql":
            self._named += 1
            cur = self.conn.cursor(name="it%d" % self._named)
            cur.itersize = batch
        else:
            cur = self.conn.cursor()
        try:
            cur.execute(self.sql(text), params)
            while True:
                rows = cur.fetchmany(batch)
                if not rows:
                    break
                yield from rows
        finally:
            cur.close()
            if self.kind == "postgresql":
                self.conn.commit()

    def commit(self):
        self.conn.commit()

    def rollback(self):
        self.conn.rollback()

    def _schema(self):
        if self.kind == "postgresql":   # instances starting together would race on CREATE TABLE: one at a time
            self.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
        self.execute(SCHEMA[0])
        rows = self.query("SELECT value FROM meta WHERE name = ?", ("schema_version",))
        old = int(rows[0][0]) if rows else SCHEMA_VERSION
        if old > SCHEMA_VERSION:
            raise RuntimeError("the store's schema %d is newer than this tool's (%d)" % (old, SCHEMA_VERSION))
        if old == 1:
            self._to_v2()
        for stmt in SCHEMA:
            self.execute(stmt)
        self.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                     "SET value = excluded.value", ("schema_version", str(SCHEMA_VERSION)))
        self.commit()

    def _to_v2(self):
        """Schema 1 -> 2, in the same transaction: the tables keyed on ids get `ep` (0: the rows
        came from firmware without epochs); every device seen so far has epoch 0 on record."""
        for t in _MIGRATED:
            self.execute("ALTER TABLE %s RENAME TO %s_v1" % (t, t))
        for stmt in SCHEMA:
            if stmt.startswith("CREATE TABLE"):
                self.execute(stmt)
        for t in _MIGRATED:
            cur = self.execute("SELECT * FROM %s_v1 WHERE 1 = 0" % t)
            cols = ", ".join(d[0] for d in cur.description)
            cur.close()
            self.execute("INSERT INTO %s (%s) SELECT %s FROM %s_v1" % (t, cols, cols, t))
            self.execute("DROP TABLE %s_v1" % t)
        self.execute("INSERT INTO epochs (device, ep, first_s) SELECT device, 0, MIN(received_s) FROM ("
                     "SELECT device, received_s FROM session_events UNION ALL SELECT device, received_s FROM faults "
                     "UNION ALL SELECT device, received_s FROM feedback) old GROUP BY device")

    # --- writes (the backend) -------------------------------------------------------------

    def add_session_event(self, device, rec, received_s):
        """Stores one `session` record: (new?, newly missing seqs [(seq, kind)], seqs now filled)."""
        tx, seq, event, ep = rec["tx_id"], rec["seq"], rec["event"], ep_of(rec)
        offline = _flag(rec.get("offline"))
        cur = self.execute(
            "INSERT INTO session_events (device, ep, tx_id, seq, msg_id, event, ts, ts_s, offline, record, "
            "received_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, ep, tx_id, seq) DO NOTHING",
            (device, ep, tx, seq, rec.get("msg_id"), event, rec.get("ts"), epoch(rec.get("ts")), offline,
             _dumps(rec), received_s))
        if cur.rowcount != 1:
            self.commit()
            return False, [], []
        final = 1 if event == "ended" else 0
        cost = rec.get("cost") if isinstance(rec.get("cost"), dict) else {}
        parking = cost.get("parking") if isinstance(cost.get("parking"), dict) else {}
        started_at = rec.get("started_at") or (rec.get("ts") if event == "started" else None)
        ended_at = rec.get("ended_at") or (rec.get("ts") if final else None)
        row = {
            "token": rec.get("token"), "key_version": _int(rec.get("key")), "auth": rec.get("auth"),
            "tariff_id": rec.get("tariff_id"), "started_at": started_at, "started_s": epoch(started_at),
            "ended_at": ended_at, "ended_s": epoch(ended_at), "energy_wh": _int(rec.get("energy_wh")),
            "meter_start_wh": _int(rec.get("meter_start_wh")), "meter_stop_wh": _int(rec.get("meter_stop_wh")),
            "stop_reason": rec.get("stop_reason"), "currency": cost.get("currency"),
            "total_excl_minor": _int(cost.get("total_excl_vat_minor")),
            "total_incl_minor": _int(cost.get("total_incl_vat_minor")),
            "parking_s": _int(rec.get("parking_s")), "parking_excl_minor": _int(parking.get("excl_vat_minor")),
            "parking_incl_minor": _int(parking.get("incl_vat_minor")), "record": _dumps(rec),
            "updated_s": received_s}
        self.execute(_SESSION_UPSERT, (device, ep, tx, final, offline) + tuple(row[c] for c in _SESSION_COLS))
        missing, closed = self._gaps(device, ep, tx, seq, event, received_s)
        self.commit()
        return True, missing, closed

    def _gaps(self, device, ep, tx, seq, event, now):
        """Flags seqs missing below the newest one of a tx; clears a flag the event just filled."""
        seen = set(r[0] for r in self.query(
            "SELECT seq FROM session_events WHERE device = ? AND ep = ? AND tx_id = ?", (device, ep, tx)))
        top = max(seen)
        missing = []
        extra = 0
        for s in range(top):
            if s not in seen:
                if len(missing) >= MAX_GAPS_LISTED:
                    extra += 1
                    continue
                kind = "started_missing" if s == 0 else "seq_missing"
                cur = self.execute(
                    "INSERT INTO gaps (device, ep, tx_id, seq, kind, found_s) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (device, ep, tx_id, seq) DO NOTHING", (device, ep, tx, s, kind, now))
                if cur.rowcount == 1:
                    missing.append((s, kind))
        if extra:
            missing.append((-1, "%d more seqs missing" % extra))
        if event == "ended" and seq == 0:  # an `ended` that claims seq 0 has no `started` at all
            cur = self.execute("INSERT INTO gaps (device, ep, tx_id, seq, kind, found_s) VALUES (?, ?, ?, ?, ?, ?) "
                               "ON CONFLICT (device, ep, tx_id, seq) DO NOTHING",
                               (device, ep, tx, -1, "started_missing", now))
            if cur.rowcount == 1:
                missing.append((-1, "started_missing"))
        cur = self.execute("UPDATE gaps SET resolved_s = ? WHERE device = ? AND ep = ? AND tx_id = ? AND seq = ? "
                           "AND resolved_s IS NULL", (now, device, ep, tx, seq))
        return missing, [seq] if cur.rowcount == 1 else []

    def add_fault(self, device, rec, received_s):
        cur = self.execute(
            "INSERT INTO faults (device, ep, msg_id, event, code, ts, ts_s, tx_id, latched, trips, stop_reason, "
            "detail, offline, record, received_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (device, ep, msg_id) DO NOTHING",
            (device, ep_of(rec), rec["msg_id"], rec.get("event"), rec.get("code"), rec.get("ts"), epoch(rec.get("ts")),
             _int(rec.get("tx_id")), _flag(rec.get("latched")), _int(rec.get("trips")), rec.get("stop_reason"),
             rec.get("detail"), _flag(rec.get("offline")), _dumps(rec), received_s))
        self.commit()
        return cur.rowcount == 1

    def add_feedback(self, device, rec, received_s):
        cur = self.execute(
            "INSERT INTO feedback (device, ep, msg_id, ts, ts_s, tx_id, token, source, text, offline, record, "
            "received_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, ep, msg_id) DO NOTHING",
            (device, ep_of(rec), rec["msg_id"], rec.get("ts"), epoch(rec.get("ts")), _int(rec.get("tx_id")),
             rec.get("token"), rec.get("source"), rec.get("text"), _flag(rec.get("offline")), _dumps(rec),
             received_s))
        self.commit()
        return cur.rowcount == 1

    def add_status(self, device, rec, received_s):
        """Keeps the current status and a history of changes; True when it changed."""
        # a retained status reaches every instance that subscribes: the key (device, ts, values)
        # keeps one history row even when several instances store it at the same moment
        key = (rec.get("state"), rec.get("connector"), rec.get("error"), rec.get("ts"))
        old = self.query("SELECT state, connector, error, ts FROM status_current WHERE device = ?", (device,))
        if old and tuple(old[0]) == key:
            return False
        self.execute(
            "INSERT INTO status_current (device, state, connector, error, ts, received_s, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET state = excluded.state, "
            "connector = excluded.connector, error = excluded.error, ts = excluded.ts, "
            "received_s = excluded.received_s, record = excluded.record",
            (device,) + key + (received_s, _dumps(rec)))
        k = "|".join(str(v) for v in key) if key[3] else "%s|recv %d" % ("|".join(str(v) for v in key), received_s)
        self.execute(
            "INSERT INTO status_history (device, k, state, connector, error, ts, ts_s, received_s, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, k) DO NOTHING",
            (device, k) + key + (epoch(rec.get("ts")), received_s, _dumps(rec)))
        self.commit()
        return True

    def add_stats(self, device, rec, received_s):
        day = rec.get("day") if isinstance(rec.get("day"), dict) else {}
        month = rec.get("month") if isinstance(rec.get("month"), dict) else {}
        cur = self.execute(
            "INSERT INTO stats (device, ts, ts_s, currency, day, day_sessions, day_energy_wh, day_excl_minor, "
            "day_incl_minor, month, month_sessions, month_energy_wh, month_excl_minor, month_incl_minor, "
            "contactor_cycles, boots, record, received_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, ts) DO NOTHING",
            (device, rec["ts"], epoch(rec["ts"]), rec.get("currency"), day.get("date"),
             _int(day.get("sessions")), _int(day.get("energy_wh")), _int(day.get("excl_vat_minor")),
             _int(day.get("incl_vat_minor")), month.get("month"), _int(month.get("sessions")),
             _int(month.get("energy_wh")), _int(month.get("excl_vat_minor")), _int(month.get("incl_vat_minor")),
             _int(rec.get("contactor_cycles")), _int(rec.get("boots")), _dumps(rec), received_s))
        self.commit()
        return cur.rowcount == 1

    def add_meter(self, device, rec, received_s, ep=0):
        """ep: the device's current data epoch, for meter values that do not name theirs."""
        self.execute(
            "INSERT INTO meter_values (device, ep, tx_id, ts, ts_s, register_wh, energy_wh, p_w, record, received_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device, _int(rec.get("ep")) if "ep" in rec else ep, _int(rec.get("tx_id")), rec.get("ts"), epoch(rec.get("ts")), _int(rec.get("register_wh")),
             _int(rec.get("energy_wh")), _int(rec.get("p_w")), _dumps(rec), received_s))
        self.commit()

    def add_cmd_ack(self, device, rec, received_s):
        """Keeps one `cmd_ack` (a re-delivered identical answer once); True when it was new."""
        body = _dumps(rec)
        if isinstance(rec.get("id"), str):
            k = hashlib.sha256(body.encode()).hexdigest()[:32]
        else:   # a rejection of a command without a usable id: every one is its own answer
            k = "recv %d %s" % (received_s, hashlib.sha256(body.encode()).hexdigest()[:16])
        extra = {n: v for n, v in rec.items() if n not in _ACK_COLS}
        cur = self.execute(
            "INSERT INTO cmd_acks (device, k, cmd_id, cmd, status, reason, extra, record, received_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, k) DO NOTHING",
            (device, k, _text(rec.get("id")), _text(rec.get("cmd")), _text(rec.get("status")),
             _text(rec.get("reason")), _dumps(extra) if extra else None, body, received_s))
        self.commit()
        return cur.rowcount == 1

    def add_reject(self, device, topic, payload, reason, received_s):
        """Keeps a malformed message for a person to look at (it is not lost, just not used)."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        self.execute("INSERT INTO rejects (device, topic, payload, reason, received_s) VALUES (?, ?, ?, ?, ?)",
                     (device, topic, text[:65536], reason, received_s))
        self.commit()

    def next_ctr(self, device):
        """The next counter of backend -> device messages (tools/downlink.py): one atomic statement,
        so restarts and several backend instances on one database never reuse one."""
        row = self.query("INSERT INTO counters (device, ctr) VALUES (?, 1) ON CONFLICT (device) DO UPDATE "
                         "SET ctr = counters.ctr + 1 RETURNING ctr", (device,))
        self.commit()
        return row[0][0]

    def stored_record(self, kind, device, rec):
        """The record already stored under this message's key (session: ep, tx_id, seq; else ep, msg_id), or None."""
        if kind == "session":
            rows = self.query("SELECT record FROM session_events WHERE device = ? AND ep = ? AND tx_id = ? AND seq = ?",
                              (device, ep_of(rec), rec["tx_id"], rec["seq"]))
        else:
            table = {"fault": "faults", "feedback": "feedback"}[kind]
            rows = self.query("SELECT record FROM %s WHERE device = ? AND ep = ? AND msg_id = ?" % table,
                              (device, ep_of(rec), rec["msg_id"]))
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def note_epoch(self, device, ep, received_s):
        """Keeps a data epoch of a device as first seen: the epoch it follows if the device was known
        before (re-initialised: its state and journal were lost), else None; False if it is not new."""
        cur = self.execute("INSERT INTO epochs (device, ep, first_s) VALUES (?, ?, ?) "
                           "ON CONFLICT (device, ep) DO NOTHING", (device, ep, received_s))
        if cur.rowcount != 1:
            self.commit()
            return False
        rows = self.query("SELECT ep FROM epochs WHERE device = ? AND ep <> ? ORDER BY first_s DESC, ep DESC LIMIT 1",
                          (device, ep))
        previous = rows[0][0] if rows else None
        if previous is not None:
            self.execute("UPDATE epochs SET previous = ? WHERE device = ? AND ep = ?", (previous, device, ep))
        self.commit()
        return previous

    def current_epoch(self, device):
        """The device's newest data epoch (its current life), 0 when none is on record."""
        rows = self.query("SELECT ep FROM epochs WHERE device = ? ORDER BY first_s DESC, ep DESC LIMIT 1", (device,))
        return rows[0][0] if rows else 0

    def reinitialised(self):
        """Every re-initialisation seen: [{device, ep, previous, first_s}], oldest first."""
        names = ("device", "ep", "previous", "first_s")
        rows = self.query("SELECT %s FROM epochs WHERE previous IS NOT NULL ORDER BY first_s, device" % ", ".join(names))
        return [dict(zip(names, r)) for r in rows]

    def count(self, table):
        return self.query("SELECT COUNT(*) FROM %s" % table)[0][0]

    # --- reads (the fleet page, tools/fleetweb.py) ------------------------------------------

    def _one(self, text, params, names):
        rows = self.query(text, params)
        return dict(zip(names, rows[0])) if rows else None

    def devices(self):
        """Every device the store has heard of (a status, a session or stats), sorted."""
        rows = self.query("SELECT device FROM status_current UNION SELECT device FROM sessions "
                          "UNION SELECT device FROM stats UNION SELECT device FROM cmd_acks")
        return sorted(r[0] for r in rows)

    def status_of(self, device):
        """The current status row: state, connector, error, ts, received_s, record; or None."""
        return self._one("SELECT state, connector, error, ts, received_s, record FROM status_current "
                         "WHERE device = ?", (device,), ("state", "connector", "error", "ts", "received_s", "record"))

    def last_connector(self, device):
        """The newest status that named the connector (the Last Will does not)."""
        return self._one("SELECT connector, error, ts, received_s FROM status_history WHERE device = ? "
                         "AND connector IS NOT NULL ORDER BY received_s DESC, ts_s DESC LIMIT 1", (device,),
                         ("connector", "error", "ts", "received_s"))

    def latest_meter(self, device):
        """The newest meter value: ep, tx_id, ts, energy_wh, p_w, register_wh, received_s; or None."""
        return self._one("SELECT ep, tx_id, ts, energy_wh, p_w, register_wh, received_s FROM meter_values "
                         "WHERE device = ? ORDER BY received_s DESC, ts_s DESC LIMIT 1", (device,),
                         ("ep", "tx_id", "ts", "energy_wh", "p_w", "register_wh", "received_s"))

    def latest_session(self, device):
        """The device's newest transaction (tx_ids only grow within a data epoch, the current one):
        ep, tx_id, final, started_at, energy_wh."""
        return self._one("SELECT ep, tx_id, final, started_at, started_s, energy_wh, updated_s FROM sessions "
                         "WHERE device = ? AND ep = ? ORDER BY tx_id DESC LIMIT 1", (device, self.current_epoch(device)),
                         ("ep", "tx_id", "final", "started_at", "started_s", "energy_wh", "updated_s"))

    def fault_events(self, device, limit=1000):
        """The newest `limit` raised/cleared fault records (msg_id, event, code, latched, detail, ts, record)
        of the device's current data epoch (a re-initialised charger forgot the faults of its earlier life)."""
        names = ("msg_id", "event", "code", "latched", "detail", "ts", "received_s", "record")
        rows = self.query("SELECT %s FROM faults WHERE device = ? AND ep = ? AND event IN ('raised', 'cleared') "
                          "ORDER BY received_s DESC LIMIT %d" % (", ".join(names), int(limit)),
                          (device, self.current_epoch(device)))
        return [dict(zip(names, r)) for r in rows]

    def latest_stats(self, device):
        return self._one("SELECT ts, contactor_cycles, boots, received_s FROM stats WHERE device = ? "
                         "ORDER BY ts_s DESC LIMIT 1", (device,), ("ts", "contactor_cycles", "boots", "received_s"))

    def cmd_acks_of(self, device, cmd=None, limit=50):
        """The newest acknowledgements (of one command kind, or all), newest first."""
        names = ("cmd_id", "cmd", "status", "reason", "extra", "record", "received_s")
        where, params = "device = ?", (device,)
        if cmd is not None:
            where, params = "device = ? AND cmd = ?", (device, cmd)
        rows = self.query("SELECT %s FROM cmd_acks WHERE %s ORDER BY received_s DESC LIMIT %d"
                          % (", ".join(names), where, int(limit)), params)
        return [dict(zip(names, r)) for r in rows]

    def last_seen(self, device):
        """Unix seconds of the newest message stored from the device, or None."""
        newest = None
        for table in ("status_history", "meter_values", "session_events", "faults", "stats", "cmd_acks"):
            rows = self.query("SELECT MAX(received_s) FROM %s WHERE device = ?" % table, (device,))
            if rows and rows[0][0] is not None and (newest is None or rows[0][0] > newest):
                newest = rows[0][0]
        return newest

    def day_totals(self, start_s, end_s):
        """Finished sessions started in [start_s, end_s) per device and currency (as tools/report.py
        counts them): {device: [{currency, sessions, energy_wh, excl_minor, incl_minor}]}."""
        out = {}
        for device, currency, n, wh, excl, incl in self.query(
                "SELECT device, currency, COUNT(*), SUM(energy_wh), SUM(total_excl_minor), SUM(total_incl_minor) "
                "FROM sessions WHERE final = 1 AND started_s >= ? AND started_s < ? "
                "GROUP BY device, currency ORDER BY device, currency", (start_s, end_s)):
            out.setdefault(device, []).append({"currency": currency, "sessions": int(n), "energy_wh": int(wh or 0),
                                               "excl_minor": int(excl or 0), "incl_minor": int(incl or 0)})
        return out


def _find_pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    base = "/usr/lib/postgresql"
    if os.path.isdir(base):
        for v in sorted(os.listdir(base), reverse=True):
            p = os.path.join(base, v, "bin", name)
            if os.path.exists(p):
                return p
    return None


def postgres_available():
    return _find_pg_bin("initdb") is not None and _find_pg_bin("pg_ctl") is not None


class TempPostgres:
    """A throwaway PostgreSQL server on a private Unix socket, for tests and demos.

        with TempPostgres() as pg:
            Store(pg.url("reports"))     # a fresh database in it
    """

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cp-pg-")
        self.data = os.path.join(self.dir, "data")
        self._as = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")
        self.started = False
        self._dbs = 0

    def _run(self, *cmd):
        return subprocess.run(self._as + list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    def __enter__(self):
        r = self._run(_find_pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8")
        if r.returncode:
            self.__exit__()
            raise RuntimeError("initdb failed: %s" % r.stdout.decode(errors="replace")[-500:])
        r = self._run(_find_pg_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w",
                      "-o", "-c listen_addresses='' -k %s -c fsync=off -c full_page_writes=off" % self.dir,
                      "start")
        if r.returncode:
            self.__exit__()
            raise RuntimeError("PostgreSQL did not start: %s" % r.stdout.decode(errors="replace")[-500:])
        self.started = True
        return self

    def url(self, db=None):
        """URL of a new empty database (or of an existing one by name)."""
        if db is None:
            self._dbs += 1
            db = "t%d_%d" % (os.getpid(), self._dbs)
            import psycopg
            with psycopg.connect(self._url("postgres"), autocommit=True) as c:
                c.execute("CREATE DATABASE %s" % db)
        return self._url(db)

    def _url(self, db):
        return "postgresql://postgres@/%s?host=%s" % (db, self.dir)

    def __exit__(self, *exc):
        if self.started:
            self._run(_find_pg_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop")
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
