"""The store on PostgreSQL (SPEC 10): psycopg 3 behind the few DB-API calls the store makes.

Every statement the store holds is written once, in the SQL both databases speak; the
differences left are mechanical and made here, once per statement text: ``?`` and ``:name``
parameters, ``INSERT OR IGNORE``, ``last_insert_rowid()``, an empty ``IN ()``, the ``user``
column (a reserved word in PostgreSQL), and ``lastrowid`` (``RETURNING id``). Errors come back as the DB-API
classes of the standard library's ``sqlite3`` module, which the store and its callers already
tell apart (a lost connection is an ``OperationalError`` that ``health.outage`` names).

A write transaction takes one advisory lock first, so writers follow one another as they do on
SQLite (``BEGIN IMMEDIATE``): what the store checks inside a transaction still holds when it
writes, on any number of hosts."""
from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

WRITE_LOCK = 0x666C6F77  # "flow": the advisory lock every write transaction takes first
LAUNCH_LOCK = WRITE_LOCK + 1  # held while a runner decides launches against global pools

# Tables whose rows have an ``id`` the store reads back after an insert.
ID_TABLES = frozenset({
    "import_errors", "runners", "events", "audit_log", "requests", "backfills", "alerts",
    "deliveries", "delivery_attempts", "dag_runs", "tries", "dataset_events"})

_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|(?<!:):([A-Za-z_]\w*)|%"
                     r"|\buser\b|\blast_insert_rowid\(\)|\bINSERT OR IGNORE INTO\b", re.I)
_EMPTY_IN = re.compile(r"\s+IN\s*\(\s*\)", re.I)
_INSERT = re.compile(r"^\s*INSERT\s+(?:OR\s+IGNORE\s+)?INTO\s+(\w+)", re.I)


@lru_cache(maxsize=2048)
def translate(sql: str) -> tuple[str, bool]:
    """PostgreSQL's text for one of the store's statements, and whether it was given
    ``RETURNING id`` (its cursor then has a ``lastrowid``)."""
    ignore = False

    def swap(match: re.Match[str]) -> str:
        nonlocal ignore
        token = match.group(0)
        if token[0] in "'\"-":
            return token.replace("%", "%%") if token[0] == "'" else token
        if token == "?":
            return "%s"
        if match.group(1):
            return f"%({match.group(1)})s"
        if token == "%":
            return "%%"
        lowered = token.lower()
        if lowered == "user":
            return '"user"'
        if lowered == "last_insert_rowid()":
            return "lastval()"
        ignore = True  # INSERT OR IGNORE INTO
        return "INSERT INTO"

    text = _TOKENS.sub(swap, sql).rstrip().rstrip(";")
    text = _EMPTY_IN.sub(" IN (SELECT NULL WHERE FALSE)", text)  # SQLite takes `IN ()`
    if ignore:
        text += " ON CONFLICT DO NOTHING"
    insert = _INSERT.match(sql)
    returning = bool(insert and insert.group(1).lower() in ID_TABLES
                     and "returning" not in sql.lower() and "select" not in sql.lower())
    if returning:
        text += " RETURNING id"
    return text, returning


def _dbapi_error(exc: Exception) -> sqlite3.Error:
    """The standard library's class for a psycopg error, with PostgreSQL's message."""
    import psycopg

    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.errors.IntegrityError):
        return sqlite3.IntegrityError(message)
    if isinstance(exc, (psycopg.OperationalError, psycopg.errors.LockNotAvailable,
                        psycopg.errors.QueryCanceled)):
        return sqlite3.OperationalError(f"database unavailable: {message}")
    if isinstance(exc, psycopg.ProgrammingError):
        return sqlite3.ProgrammingError(message)
    return sqlite3.DatabaseError(message)


class Cursor:
    """What the store reads of a cursor: rows, ``rowcount``, ``lastrowid``."""

    def __init__(self, rows: list[tuple] | None, rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows or []
        self._at = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> tuple | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[tuple]:
        rows, self._at = self._rows[self._at:], len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.fetchall())


class Connection:
    """One PostgreSQL session in autocommit mode (each read stands alone); ``BEGIN
    IMMEDIATE`` opens a transaction that holds the write lock until ``COMMIT`` or
    ``ROLLBACK``. Shared by threads (the TUI's readers): one statement at a time."""

    def __init__(self, url: str, connect_timeout: float = 10.0,
                 lock_timeout: float = 30.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.lock_timeout = lock_timeout  # a write waits this long for another's, as on SQLite
        self._lock = threading.RLock()
        self._owner: int | None = None  # the thread inside a transaction
        self.raw = self._connect()

    def _connect(self) -> Any:
        import psycopg

        try:
            raw = psycopg.connect(self.url, autocommit=True,
                                  connect_timeout=max(1, int(self.connect_timeout)))
        except psycopg.Error as exc:
            raise _dbapi_error(exc) from None
        # sum() and avg() give numeric: read as int when whole, else float, as SQLite does
        raw.adapters.register_loader("numeric", _NumberLoader)
        raw.adapters.register_dumper(bool, _BoolDumper)  # flags are 0/1 columns, as in SQLite
        raw.execute(f"SET lock_timeout = {int(self.lock_timeout * 1000)}")
        return raw

    @property
    def in_transaction(self) -> bool:
        return self._owner is not None

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        head = sql.lstrip()[:16].upper()
        if head.startswith("BEGIN"):
            self._begin()
            return Cursor(None, -1, None)
        if head.startswith(("COMMIT", "ROLLBACK")):
            self._end(head.startswith("COMMIT"))
            return Cursor(None, -1, None)
        text, returning = translate(sql)
        with self._lock:
            try:
                cur = self._cursor().execute(text, params or ())
                rows = cur.fetchall() if cur.description is not None else None
            except Exception as exc:
                raise self._failed(exc) from None
        lastrowid = rows[0][0] if returning and rows else None
        return Cursor(None if returning else rows, cur.rowcount, lastrowid)

    def executemany(self, sql: str, seq: Any) -> Cursor:
        text, returning = translate(sql)
        if returning:
            text = text[: -len(" RETURNING id")]
        seq = list(seq)
        if not seq:
            return Cursor(None, 0, None)
        with self._lock:
            try:
                cur = self._cursor()
                cur.executemany(text, seq)
            except Exception as exc:
                raise self._failed(exc) from None
        return Cursor(None, cur.rowcount, None)

    def execute_all(self, ops: Any) -> None:
        """Statements whose results nobody reads (the engine's writes), sent in one pipeline:
        one round trip to the server for the lot instead of one each."""
        with self._lock:
            try:
                with self.raw.pipeline():
                    cur = self._cursor()
                    for sql, params in ops:
                        cur.execute(translate(sql)[0], params or ())
            except Exception as exc:
                raise self._failed(exc) from None

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:
            pass

    # -- transactions ----------------------------------------------------------------------
    def _begin(self) -> None:
        self._lock.acquire()  # held until COMMIT/ROLLBACK: no other thread's statement inside
        try:
            self._reconnect_if_broken()
            cur = self.raw.cursor()
            cur.execute("BEGIN")
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        except Exception as exc:
            self._lock.release()
            raise self._failed(exc) from None
        self._owner = threading.get_ident()

    def _end(self, commit: bool) -> None:
        if self._owner is None:
            return
        try:
            self.raw.cursor().execute("COMMIT" if commit else "ROLLBACK")
        except Exception as exc:
            if commit:
                self._rollback_quietly()
            raise self._failed(exc) from None
        finally:
            self._owner = None
            self._lock.release()

    def _rollback_quietly(self) -> None:
        try:
            self.raw.cursor().execute("ROLLBACK")
        except Exception:
            pass

    def _cursor(self) -> Any:
        if self._owner is None:
            self._reconnect_if_broken()
        return self.raw.cursor()

    def _reconnect_if_broken(self) -> None:
        if self.raw.closed or self.raw.broken:
            self.raw = self._connect()

    def _failed(self, exc: Exception) -> sqlite3.Error:
        """An error inside a transaction leaves it aborted in PostgreSQL: the caller rolls
        back (the store always does), and nothing half-done is committed."""
        if isinstance(exc, sqlite3.Error):
            return exc
        return _dbapi_error(exc)


def _number(text: str) -> int | float:
    value = float(text)
    return int(text) if value.is_integer() and "." not in text else value


try:  # a loader class needs psycopg at import time; the store imports this module lazily
    from psycopg.adapt import Loader

    from psycopg.adapt import Dumper
    from psycopg.postgres import types as _types

    class _NumberLoader(Loader):
        def load(self, data: Any) -> int | float:
            return _number(bytes(data).decode())

    class _BoolDumper(Dumper):
        oid = _types["int8"].oid

        def dump(self, obj: Any) -> bytes:
            return b"1" if obj else b"0"
except ImportError:  # pragma: no cover - without psycopg, PostgreSQL is never opened
    _NumberLoader = _BoolDumper = None  # type: ignore[assignment,misc]


class Listener(threading.Thread):
    """A runner's ear on the database: ``LISTEN flowtui_wake`` on a connection of its own;
    each notification calls ``woken(payload)`` (which only pokes the runner's loop). A lost connection
    is opened again, a second later and then less often, until ``stop``."""

    CHANNEL = "flowtui_wake"

    def __init__(self, url: str, woken: Any) -> None:
        super().__init__(name="flowtui-listen", daemon=True)
        self.url = url
        self.woken = woken
        self._quit = threading.Event()
        self.listening = threading.Event()  # set while LISTEN is in force

    def run(self) -> None:
        import psycopg

        delay = 1.0
        while not self._quit.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {self.CHANNEL}")
                    self.listening.set()
                    delay = 1.0
                    self.woken("")  # whatever was notified while we were not listening
                    while not self._quit.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self.woken(notice.payload)
            except psycopg.Error:
                self.listening.clear()
                self._quit.wait(delay)
                delay = min(delay * 2, 30.0)

    def stop(self) -> None:
        self._quit.set()
