"""The SQLite store: connections, transactions, and every read and write of flowtui's state."""
from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from flowtui.store.models import (
    EVENT_COLUMNS, RUN_COLUMNS, RUNNER_COLUMNS, TI_COLUMNS, TRY_COLUMNS, AuditEntry, DagRecord, Event,
    ImportError_, Request, Run, RunnerRecord, TaskInstance, Try,
)
from flowtui.store import changes
from flowtui.store.health import StoreError, WriteHealth, outage
from flowtui.store.states import RunState, TaskState
from flowtui.store.version import MIGRATION_NAMES, MIGRATION_SET

if TYPE_CHECKING:
    from flowtui.store.alerts import AlertRecords
    from flowtui.store.datasets import DatasetRecords
    from flowtui.store.backfills import BackfillRecords
    from flowtui.store.retention import RetentionRecords
    from flowtui.store.views import Views

BUSY_TIMEOUT_MS = 30_000
CHECKPOINT_EVERY = 32  # an engine's commits between two copies of the WAL into the database


def host_name() -> str:
    """This host's identity among several runners on one database (SPEC 10):
    $FLOWTUI_HOSTNAME, else the hostname."""
    return os.environ.get("FLOWTUI_HOSTNAME", "").strip() or socket.gethostname()


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return str(os.getuid())


def _connect(path: Path, readonly: bool, busy_ms: int) -> sqlite3.Connection:
    if readonly:
        uri = f"file:{path}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                               timeout=busy_ms / 1000)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=busy_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    if not readonly:
        # WAL lets readers (TUIs, CLI) run beside the one writer at a time; NORMAL syncs at
        # checkpoints, so a killed process loses nothing (a power cut may lose the last commits).
        mode = _switch_to_wal(conn, busy_ms)
        if mode.lower() != "wal":
            raise StoreError(f"{path}: cannot switch the database to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _switch_to_wal(conn: sqlite3.Connection, busy_ms: int) -> str:
    """``PRAGMA journal_mode = WAL``, waiting like any write for another process's lock. The
    switch of a new file needs it alone, and SQLite answers "locked" at once instead of waiting
    when two processes open a new home together (three `flowtui backfill` at once, one failed
    1 time in 240 beside a CPU hog)."""
    deadline = time.monotonic() + busy_ms / 1000
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        else:
            if mode.lower() == "wal" or time.monotonic() >= deadline:
                return mode
        time.sleep(0.005)


def _rollback(conn: sqlite3.Connection) -> None:
    # After a full disk or an I/O error SQLite may already have rolled back by itself; a second
    # ROLLBACK would fail and hide the error that matters.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# Runs that count against max_active_runs on every host: running, or queued and taken.
_ACTIVE_RUNS = ("SELECT count(*) FROM dag_runs WHERE dag_id = ? AND backfill_id IS NULL AND "
                "(state = 'running' OR (state = 'queued' AND runner_id IS NOT NULL))")

_BACKFILL_ACTIVE = ("SELECT count(*) FROM dag_runs WHERE backfill_id = ? AND (state = 'running' "
                    "OR (state = 'queued' AND runner_id IS NOT NULL))")


class Checkpointer:
    """Copies the write-ahead log into the database file from a thread of its own, every
    ``CHECKPOINT_EVERY`` commits of an engine, beside its writes (PASSIVE: it waits for
    nobody and nobody waits for it). Left alone, the commit that takes the log past 1,000
    pages copies all of it, 10-25 ms on this machine's disk once every hundred tasks while the
    next task waits; that commit now finds it copied but for the last few commits, and starts
    the log over (SQLite's own checkpoint at that threshold stays: it bounds the log)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._commits = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="flowtui-checkpoint",
                                        daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY:
            self._commits = 0
            self._wake.set()

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing:
                break
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                pass  # busy or gone: the next nudge, or the writer's own checkpoint, copies it
        self._conn.close()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(5.0)


class Store:
    """One open database. Writes go through ``transaction()`` (BEGIN IMMEDIATE)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool,
                 busy_ms: int = BUSY_TIMEOUT_MS, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.conn = conn
        self.readonly = readonly
        self.busy_ms = busy_ms
        self.health = WriteHealth()
        self.now = now  # the injected clock's ``now``: every time the store records
        self.kind = "sqlite"  # or "postgresql" (SPEC 10); ``path`` is then the URL, redacted
        self._checkpointer: Checkpointer | None = None
        self._checkpointer_lock = threading.Lock()

    # -- query groups (each a repository a second backend implements with its own SQL) ------
    @cached_property
    def alerts(self) -> "AlertRecords":
        from flowtui.store.alerts import AlertRecords

        return AlertRecords(self)

    @cached_property
    def backfills(self) -> "BackfillRecords":
        from flowtui.store.backfills import BackfillRecords

        return BackfillRecords(self)

    @cached_property
    def datasets(self) -> "DatasetRecords":
        from flowtui.store.datasets import DatasetRecords

        return DatasetRecords(self)

    @cached_property
    def retention(self) -> "RetentionRecords":
        from flowtui.store.retention import RetentionRecords

        return RetentionRecords(self)

    @cached_property
    def offers(self) -> "Offers":
        from flowtui.store.offers import Offers

        return Offers(self)

    @cached_property
    def views(self) -> "Views":
        from flowtui.store.views import Views

        return Views(self)

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False,
             busy_timeout: float | None = None,
             now: Callable[[], float] = time.time) -> "Store":
        """Open (and migrate) the database; a write waits up to ``busy_timeout`` seconds
        (default $FLOWTUI_BUSY_TIMEOUT, else 30) for another process's lock before it fails."""
        if busy_timeout is None:
            try:
                busy_timeout = float(os.environ.get("FLOWTUI_BUSY_TIMEOUT", ""))
            except ValueError:
                busy_timeout = BUSY_TIMEOUT_MS / 1000
        if not 0 <= busy_timeout <= 86_400:  # also NaN: the default
            busy_timeout = BUSY_TIMEOUT_MS / 1000
        if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
            return cls._open_postgresql(path, readonly=readonly, now=now,
                                        busy_timeout=busy_timeout)
        db_path = Path(path)
        busy_ms = int(busy_timeout * 1000)
        if readonly and not db_path.exists():
            raise StoreError(f"{db_path}: no database here yet; run a DAG or start the runner first")
        try:
            if not readonly:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(db_path, readonly, busy_ms)
            store = cls(db_path, conn, readonly, busy_ms, now)
            if not readonly:
                store._migrate()
            elif not store._applied() >= MIGRATION_NAMES:
                raise StoreError(f"{db_path} has no flowtui schema yet (or an older one); "
                                 "open it once without --read-only, or run a DAG first")
        except sqlite3.DatabaseError as exc:
            problem = outage(exc)
            if problem is not None:
                raise StoreError(f"{db_path}: {problem}; try again") from None
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StoreError(
                    f"{db_path} is not a flowtui SQLite database ({exc}); "
                    "point --home at another folder or move the file away"
                ) from None
            raise StoreError(f"{db_path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{db_path}: {exc.strerror or exc}") from None
        return store

    @classmethod
    def _open_postgresql(cls, url: str, *, readonly: bool, now: Callable[[], float],
                         busy_timeout: float) -> "Store":
        """The store on a PostgreSQL server (SPEC 10); the schema is created on first use."""
        from flowtui.runner.config import redact
        from flowtui.store.pg import Connection

        shown = redact(url)
        try:
            conn = Connection(url, lock_timeout=max(busy_timeout, 0.001))
        except ImportError:
            raise StoreError(f"{shown}: PostgreSQL needs psycopg: pip install "
                             "'flowtui[postgresql]'") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{shown}: cannot connect ({exc}); check the URL, that the "
                             "server runs and takes connections from this host") from None
        store = cls(shown, conn, readonly, BUSY_TIMEOUT_MS, now)  # type: ignore[arg-type]
        store.kind = "postgresql"
        try:
            if not readonly:
                store._migrate()
            elif not store._applied() >= MIGRATION_NAMES:
                raise StoreError(f"{shown} has no flowtui schema yet (or an older one); "
                                 "open it once without --read-only, or run a DAG first")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{shown}: {exc}") from None
        return store

    def _migrate(self) -> None:
        if self._applied() >= MIGRATION_NAMES:
            return  # the common case, checked without importing the schema
        if self.kind == "postgresql":
            from flowtui.store.pg_schema import MIGRATIONS

            with self.transaction() as conn:  # under the write lock: one process migrates
                conn.execute("CREATE TABLE IF NOT EXISTS flowtui_migrations (name TEXT "
                             "PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
                done = {r[0] for r in conn.execute("SELECT name FROM flowtui_migrations")}
                for names, ddl in MIGRATIONS:
                    if set(names) <= done:
                        continue
                    for statement in ddl.split(";\n"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.executemany("INSERT INTO flowtui_migrations (name, applied_at) "
                                     "VALUES (?, ?)", [(n, self.now()) for n in names])
            return
        from flowtui.store.schema import migrations

        # One process migrates at a time; the others wait on the write lock, then see none left.
        # Foreign keys are off meanwhile (they can only be switched outside a transaction): a
        # table rebuilt in place must not cascade its delete to the rows that refer to it.
        self.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            with self.transaction() as conn:
                migrations.apply(conn)
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StoreError(f"{self.path}: the schema upgrade left {len(broken)} rows "
                                     "pointing nowhere; nothing was changed")
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")

    def _applied(self) -> frozenset[str]:
        if self.kind == "postgresql":
            if not self.conn.execute(
                    "SELECT to_regclass('flowtui_migrations') IS NOT NULL").fetchone()[0]:
                return frozenset()  # a new database
            return frozenset(r[0] for r in self.conn.execute(
                "SELECT name FROM flowtui_migrations"))
        try:
            rows = self.conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?",
                                     (MIGRATION_SET,)).fetchall()
        except sqlite3.OperationalError:  # no migrations table yet: a new database
            return frozenset()
        return frozenset(r[0] for r in rows)

    def close(self) -> None:
        self.checkpoint_inline()
        self.conn.close()

    def checkpoint_aside(self) -> None:
        """From now on a thread copies the write-ahead log every few dozen ``apply`` commits
        (an engine's hot path), until ``checkpoint_inline``."""
        with self._checkpointer_lock:
            if self.kind == "sqlite" and not self.readonly and self._checkpointer is None:
                self._checkpointer = Checkpointer(self.path)

    def checkpoint_inline(self) -> None:
        with self._checkpointer_lock:
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()

    def checkpoint(self, wait: float = 2.0) -> bool:
        """Copy the write-ahead log into the database file and empty it, so that flowtui.db
        alone is a complete copy. False when a reader or writer kept it from finishing within
        ``wait`` seconds (what it copied stays copied)."""
        conn = self.conn
        if self.kind == "postgresql":
            return True  # the server keeps its own log
        conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_ms}")
        return bool(row) and row[0] == 0

    # -- several hosts (SPEC 10) -----------------------------------------------------------
    def notify_runners(self) -> None:
        """Wake every runner listening on this database (PostgreSQL); SQLite's runners all run
        on this host and are signalled."""
        if self.kind == "postgresql":
            self.conn.execute("NOTIFY flowtui_wake")

    def listen(self, woken: Callable[[str], None]) -> Any:
        """Call ``woken(payload)`` (from a thread) whenever a runner is to look at the store
        now; None where signals do it (SQLite)."""
        if self.kind != "postgresql":
            return None
        from flowtui.store.pg import Listener

        return Listener(self.conn.url, woken)

    def ran_elsewhere(self, attempt: Try) -> bool:
        """Whether a try ran on another host (PostgreSQL): its log is then read from what its
        runner shipped to the database; a path there names nothing here."""
        if self.kind != "postgresql" or attempt.runner_id is None:
            return False
        record = self.runner(attempt.runner_id)
        return record is not None and record.hostname != host_name()

    def log_chunks(self, run_pk: int, task_id: str, try_number: int,
                   after: int = -1) -> list[tuple[int, bytes]]:
        """A try's log as shipped by its runner (PostgreSQL): (seq, bytes) after ``after``."""
        return [(seq, bytes(data)) for seq, data in self.conn.execute(
            "SELECT seq, data FROM log_chunks WHERE run_pk = ? AND task_id = ? AND "
            "try_number = ? AND seq > ? ORDER BY seq", (run_pk, task_id, try_number, after))]

    @contextmanager
    def launch_lock(self) -> Iterator[None]:
        """Held while a runner decides which tasks to start from the pools' global use and
        commits them (PostgreSQL: a session advisory lock; SQLite has one runner)."""
        if self.kind != "postgresql":
            yield
            return
        from flowtui.store.pg import LAUNCH_LOCK

        self.conn.execute("SELECT pg_advisory_lock(?)", (LAUNCH_LOCK,))
        try:
            yield
        finally:
            self.conn.execute("SELECT pg_advisory_unlock(?)", (LAUNCH_LOCK,))

    def claim_run(self, run_pk: int, seen: int | None, runner_id: int,
                  cap: tuple[str, int] | None = None,
                  backfill_cap: tuple[int, int] | None = None) -> bool:
        """Make this runner the run's owner, unless its owner changed since it was read as
        ``seen`` (another runner took it first): one winner however many hosts try at once.
        With ``cap`` (DAG, max_active_runs), only while fewer of the DAG's runs are active;
        with ``backfill_cap`` (backfill, parallelism), fewer of the backfill's."""
        if seen == runner_id:
            return True
        sql = ("UPDATE dag_runs SET runner_id = ? WHERE id = ? AND runner_id IS NOT DISTINCT "
               "FROM ?")
        params: tuple = (runner_id, run_pk, seen)
        if cap is not None:
            sql += f" AND ({_ACTIVE_RUNS}) < ?"
            params += (cap[0], cap[1])
        if backfill_cap is not None:
            sql += f" AND ({_BACKFILL_ACTIVE}) < ?"
            params += (backfill_cap[0], backfill_cap[1])
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount == 1

    def runner_loads(self, now: float) -> dict[int, int]:
        """Runs each live daemon holds (running, or queued and taken), by runner id: daemons
        that beat within their lease, with none counted as 0."""
        live = [r[0] for r in self.conn.execute(
            "SELECT id FROM runners WHERE kind = 'daemon' AND stopped_at IS NULL AND "
            "heartbeat_at > ? - coalesce(lease, 60)", (now,))]
        if not live:
            return {}
        held = dict(self.conn.execute(
            f"SELECT runner_id, count(*) FROM dag_runs WHERE runner_id IN "
            f"({', '.join('?' * len(live))}) AND (state = 'running' OR state = 'queued') "
            "GROUP BY runner_id", live).fetchall())
        return {runner: held.get(runner, 0) for runner in live}

    def backfill_active(self, backfill_id: int) -> int:
        """The backfill's runs running or taken by a runner, on every host."""
        return self.conn.execute(_BACKFILL_ACTIVE, (backfill_id,)).fetchone()[0]

    def active_runs(self, dag_id: str) -> int:
        """The DAG's runs running or taken by a runner, on every host (backfills aside)."""
        return self.conn.execute(_ACTIVE_RUNS, (dag_id,)).fetchone()[0]

    def taken_from(self, runner_id: int, run_pks: Iterable[int]) -> set[int]:
        """Of these runs, those another runner owns now (after this one was declared lost)."""
        pks = list(run_pks)
        found: set[int] = set()
        for start in range(0, len(pks), 500):
            chunk = pks[start:start + 500]
            found |= {r[0] for r in self.conn.execute(
                f"SELECT id FROM dag_runs WHERE id IN ({', '.join('?' * len(chunk))}) AND "
                "runner_id IS NOT NULL AND runner_id <> ?", (*chunk, runner_id))}
        return found

    # -- transactions ----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def apply(self, changes: Any, fence: int | None = None,
              foreign: set[tuple[int, str, int]] = frozenset()) -> set[Any]:
        """Commit a ``Changes`` in one transaction: the engine's hot path. On PostgreSQL, with
        ``fence`` (the writing runner's id), the writes for runs another runner owns now are
        refused, under the same lock that took them over, and so are the writes for
        ``foreign`` tries (run here for another runner's run) that runner ended: the runs and
        tries refused are returned (SPEC 10: a runner back from a partition never writes over
        a newer try)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        lost: set[Any] = set()
        try:
            if self.kind == "postgresql":
                if fence is not None:
                    mine = {key for key in changes.tries if key in foreign}
                    lost = self.taken_from(fence, {
                        pk for pk, key in zip(changes.runs, changes.tries)
                        if pk is not None and key not in mine})
                    lost |= self.offers.lost(fence, mine, lock=True)
                    if lost:
                        changes = changes.without(lost, mine)
                conn.execute_all(changes)
            else:
                for sql, params in changes:
                    conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        checkpointer = self._checkpointer  # once: a close on another thread may clear it
        if checkpointer is not None:
            checkpointer.committed()
        return lost

    @staticmethod
    def write(conn: sqlite3.Connection, changes: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Write a ``Changes`` inside the caller's transaction."""
        for sql, params in changes:
            conn.execute(sql, params)

    # -- runners ---------------------------------------------------------------------------
    def register_runner(self, kind: str, pid_start: float | None = None, *,
                        refuse: Callable[[sqlite3.Connection], None] | None = None,
                        lease: float | None = None,
                        queues: Iterable[str] | None = None,
                        channels: Iterable[str] = ()) -> int:
        """Insert this process's runner row. ``refuse(conn)`` runs first in the same write
        transaction and may raise to keep the row out (one daemon per home). ``queues``: the
        ones it serves (None: every queue); ``channels``: the alert channels it can send to."""
        now = self.now()
        served = None if queues is None else ",".join(sorted(queues))
        with self.transaction() as conn:
            if refuse is not None:
                refuse(conn)
            cur = conn.execute(
                "INSERT INTO runners (kind, hostname, pid, pid_start, started_at, heartbeat_at, "
                "lease, queues, channels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, host_name(), os.getpid(), pid_start, now, now, lease, served,
                 ",".join(sorted(channels))),
            )
            return int(cur.lastrowid or 0)

    def served_channels(self, now: float) -> set[str]:
        """The alert channels live daemons can send to (live as ``runner_loads`` counts them)."""
        return {name for (names,) in self.conn.execute(
                    "SELECT channels FROM runners WHERE kind = 'daemon' AND stopped_at IS NULL "
                    "AND heartbeat_at > ? - coalesce(lease, 60)", (now,))
                for name in (names or "").split(",") if name}

    def served_queues(self, now: float) -> list[frozenset[str] | None]:
        """The queues each live daemon serves (None: every queue); live as ``runner_loads``
        counts them."""
        return [None if row[0] is None else frozenset(row[0].split(",")) for row in
                self.conn.execute(
                    "SELECT queues FROM runners WHERE kind = 'daemon' AND stopped_at IS NULL "
                    "AND heartbeat_at > ? - coalesce(lease, 60)", (now,))]

    def stop_runner(self, runner_id: int, checkpoint: bool = True) -> None:
        """A runner's last write: it stopped. The log is then folded into the database file,
        so a copy of flowtui.db alone holds everything up to this stop."""
        with self.transaction() as conn:
            conn.execute("UPDATE runners SET stopped_at = ? WHERE id = ?", (self.now(), runner_id))
        if checkpoint:
            self.checkpoint()

    # -- DAGs and import errors ------------------------------------------------------------
    def sync_dags(self, dags: Iterable[DagRecord], errors: Iterable[ImportError_],
                  parsed_files: Iterable[str]) -> None:
        """Record the DAGs and import errors of one parse of the pipelines folder."""
        now = self.now()
        dags = list(dags)
        with self.transaction() as conn:
            for d in dags:
                conn.execute(
                    "INSERT INTO dags (dag_id, fileloc, description, schedule, timezone, owner, "
                    "tags, paused, is_active, task_count, last_parsed_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?) "
                    "ON CONFLICT(dag_id) DO UPDATE SET fileloc=excluded.fileloc, "
                    "description=excluded.description, schedule=excluded.schedule, "
                    "timezone=excluded.timezone, owner=excluded.owner, tags=excluded.tags, "
                    "is_active=1, task_count=excluded.task_count, "
                    "last_parsed_at=excluded.last_parsed_at, updated_at=excluded.updated_at",
                    (d.dag_id, d.fileloc, d.description, d.schedule, d.timezone, d.owner,
                     json.dumps(d.tags), int(d.paused), d.task_count, now, now),
                )
            files = list(parsed_files)
            parsed = set(files)
            errors = list(errors)
            before = {row for row in conn.execute(
                "SELECT fileloc, line, message FROM import_errors WHERE origin = 'load'")
                if row[0] in parsed}
            conn.executemany("DELETE FROM import_errors WHERE fileloc = ? AND origin = 'load'",
                             [(f,) for f in files])
            conn.executemany(
                "INSERT INTO import_errors (fileloc, line, message, created_at) VALUES (?, ?, ?, ?)",
                [(e.fileloc, e.line, e.message, now) for e in errors],
            )
            if before != {(e.fileloc, e.line, e.message) for e in errors}:
                # readers refetch when the newest event moves: a file that broke (or was
                # mended) is news to a screen open on the DAGs
                conn.execute(changes.EVENT, (now, "load", "", "", None, None, None, "changed",
                                             "load", "", f"{len(errors)} import errors"))

    def dags(self) -> list[DagRecord]:
        rows = self.conn.execute(
            "SELECT dag_id, fileloc, description, schedule, timezone, owner, tags, paused, "
            "paused_reason, is_active, task_count, last_parsed_at FROM dags ORDER BY dag_id"
        ).fetchall()
        return [DagRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), bool(r[7]), r[8],
                          bool(r[9]), r[10], r[11]) for r in rows]

    def set_runner_errors(self, errors: Iterable[ImportError_]) -> None:
        """Replace the errors the runner found while scheduling (DAGs it set aside); a parse
        of the folder leaves them alone."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM import_errors WHERE origin = 'runner'")
            conn.executemany(
                "INSERT INTO import_errors (fileloc, line, message, created_at, origin) "
                "VALUES (?, ?, ?, ?, 'runner')",
                [(e.fileloc, e.line, e.message, e.created_at) for e in errors])

    def import_errors(self) -> list[ImportError_]:
        rows = self.conn.execute(
            "SELECT fileloc, line, message, created_at, origin FROM import_errors "
            "ORDER BY fileloc, line"
        ).fetchall()
        return [ImportError_(*r) for r in rows]

    # -- runs ------------------------------------------------------------------------------
    def create_run(
        self, *, dag_id: str, run_id: str, run_type: str, logical_date: float,
        data_interval_start: float, data_interval_end: float, conf: dict[str, Any],
        state: RunState, runner_id: int | None,
        tasks: Sequence[tuple[str, int, str, int, int]],
        cause: str = "scheduler", actor: str = "", unique: bool = False,
        backfill_id: int | None = None, detail: str = "",
    ) -> Run:
        """Insert a run and its task instances ``(task_id, max_tries, pool, slots, priority)``.
        With ``unique``, a run id taken already gets the next free ``.N`` suffix; without, a
        taken one is a ``StoreError``."""
        now = self.now()
        state = RunState(state)
        with self.transaction() as conn:
            return self.insert_run(
                conn, dag_id=dag_id, run_id=run_id, run_type=run_type,
                logical_date=logical_date, data_interval_start=data_interval_start,
                data_interval_end=data_interval_end, conf=conf, state=state,
                runner_id=runner_id, backfill_id=backfill_id, tasks=tasks, at=now, cause=cause,
                actor=actor, detail=detail, unique=unique)

    def insert_run(self, conn: sqlite3.Connection, *, run_id: str, unique: bool,
                   taken: set[str] | None = None, **values: Any) -> Run:
        """``create_run`` inside the caller's transaction (``taken``: run ids known taken)."""
        base, n = run_id, 2
        if unique:
            taken = taken if taken is not None else self.run_ids(values["dag_id"], like=base)
            while run_id in taken:
                run_id, n = f"{base}.{n}", n + 1
        while True:
            try:
                pk = changes.insert_run(conn, run_id=run_id, **values)
                break
            except sqlite3.IntegrityError:
                if not unique:
                    raise StoreError(f"DAG {values['dag_id']} already has a run {run_id}") from None
                run_id, n = f"{base}.{n}", n + 1
        if taken is not None:
            taken.add(run_id)
        at, state = values["at"], values["state"]
        return Run(pk, values["dag_id"], run_id, values["run_type"], values["logical_date"],
                   values["data_interval_start"], values["data_interval_end"],
                   dict(values["conf"]), state, at if state == RunState.RUNNING else None, None,
                   values["runner_id"], at, values["backfill_id"], values.get("partition"))

    def add_task_instances(self, run_pk: int, dag_id: str, run_id: str,
                           tasks: Sequence[tuple[str, int, str, int, int]]) -> None:
        with self.transaction() as conn:
            changes.add_task_instances(conn, run_pk, dag_id, run_id, tasks, self.now())

    def run_ids(self, dag_id: str, like: str | None = None) -> set[str]:
        """A DAG's run ids; with ``like``, only that id and its uniquified forms (``id.2``...),
        read by a range on the (dag_id, run_id) index, not the DAG's whole history."""
        if like is None:
            return {r[0] for r in self.conn.execute(
                "SELECT run_id FROM dag_runs WHERE dag_id = ?", (dag_id,))}
        return {r[0] for r in self.conn.execute(
            "SELECT run_id FROM dag_runs WHERE dag_id = ? AND (run_id = ? OR "
            "(run_id > ? AND run_id < ?))", (dag_id, like, like + ".", like + "/"))}

    def get_run(self, dag_id: str, run_id: str) -> Run | None:
        if run_id == "latest":
            row = self.conn.execute(
                f"SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = ? "
                "ORDER BY created_at DESC, id DESC LIMIT 1", (dag_id,)).fetchone()
        else:
            row = self.conn.execute(
                f"SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id)).fetchone()
        return Run.from_row(row) if row else None

    def get_run_by_pk(self, run_pk: int) -> Run | None:
        row = self.conn.execute(f"SELECT {RUN_COLUMNS} FROM dag_runs WHERE id = ?",
                                (run_pk,)).fetchone()
        return Run.from_row(row) if row else None

    def list_runs(self, dag_id: str | None = None, state: str | None = None,
                  limit: int | None = None) -> list[Run]:
        where, params = [], []
        if dag_id:
            where.append("dag_id = ?")
            params.append(dag_id)
        if state:
            where.append("state = ?")
            params.append(state)
        sql = f"SELECT {RUN_COLUMNS} FROM dag_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [Run.from_row(r) for r in self.conn.execute(sql, params)]

    def queued_runs(self, dag_id: str, limit: int) -> list[Run]:
        rows = self.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = ? AND state = 'queued' "
            "AND backfill_id IS NULL ORDER BY logical_date, id LIMIT ?", (dag_id, limit))
        return [Run.from_row(r) for r in rows]

    def consecutive_failures(self, dag_id: str) -> int:
        count = 0
        for (state,) in self.conn.execute(
                "SELECT state FROM dag_runs WHERE dag_id = ? AND state IN ('success', 'failed') "
                "ORDER BY end_date DESC, id DESC LIMIT 1000", (dag_id,)):
            if state != "failed":
                break
            count += 1
        return count

    def set_paused(self, dag_id: str, paused: bool, reason: str | None, user: str) -> bool:
        """Pause or unpause a DAG (audited); False when the DAG is not known to the store."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE dags SET paused = ?, paused_reason = ?, updated_at = ? "
                               "WHERE dag_id = ?", (int(paused), reason, self.now(), dag_id))
            if cur.rowcount:
                self.audit(conn, "pause" if paused else "unpause", dag_id=dag_id,
                           detail={"reason": reason} if reason else {}, user=user)
            return bool(cur.rowcount)

    def pause_dag(self, dag_id: str, reason: str, user: str) -> None:
        self.set_paused(dag_id, True, reason, user)

    # -- task instances and tries ----------------------------------------------------------
    def task_instances(self, run_pk: int) -> list[TaskInstance]:
        rows = self.conn.execute(
            f"SELECT {TI_COLUMNS} FROM task_instances WHERE run_pk = ? ORDER BY rowid", (run_pk,))
        return [TaskInstance.from_row(r) for r in rows]

    def tries(self, run_pk: int, task_id: str | None = None) -> list[Try]:
        if task_id is None:
            rows = self.conn.execute(
                f"SELECT {TRY_COLUMNS} FROM tries WHERE run_pk = ? ORDER BY task_id, try_number",
                (run_pk,))
        else:
            rows = self.conn.execute(
                f"SELECT {TRY_COLUMNS} FROM tries WHERE run_pk = ? AND task_id = ? "
                "ORDER BY try_number", (run_pk, task_id))
        return [Try.from_row(r) for r in rows]

    def events(self, *, since_id: int = 0, dag_id: str | None = None,
               run_id: str | None = None, limit: int = 10_000) -> list[Event]:
        where, params = ["id > ?"], [since_id]
        if dag_id:
            where.append("dag_id = ?")
            params.append(dag_id)
        if run_id:
            where.append("run_id = ?")
            params.append(run_id)
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
            (*params, limit))
        return [Event(*r) for r in rows]

    def change_counter(self) -> int:
        """The id of the newest event: readers refetch only when it moved."""
        row = self.conn.execute("SELECT max(id) FROM events").fetchone()
        return int(row[0] or 0)

    # -- operator requests and runners ----------------------------------------------------
    def pending_requests(self) -> list[Request]:
        """Requests not yet applied, oldest first (those of runs deleted since are dropped)."""
        rows = self.conn.execute(
            "SELECT r.id, r.user, r.action, r.run_pk, r.task_ids, r.options FROM requests r "
            "JOIN dag_runs d ON d.id = r.run_pk WHERE r.done_at IS NULL ORDER BY r.id")
        return [Request.from_row(r) for r in rows]

    def add_request(self, conn: sqlite3.Connection, user: str, action: str, run_pk: int,
                    task_ids: Sequence[str], options: dict[str, Any]) -> int:
        """Queue a request for the runner that owns the run (in the caller's transaction)."""
        cur = conn.execute(
            "INSERT INTO requests (at, user, action, run_pk, task_ids, options) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self.now(), user, action, run_pk, json.dumps(list(task_ids)), json.dumps(options)))
        return int(cur.lastrowid or 0)

    def request_result(self, request_id: int) -> str | None:
        """What the runner said when it applied the request; None while it has not."""
        row = self.conn.execute("SELECT done_at, result FROM requests WHERE id = ?",
                                (request_id,)).fetchone()
        return row[1] if row and row[0] is not None else None

    def runner(self, runner_id: int) -> RunnerRecord | None:
        row = self.conn.execute(f"SELECT {RUNNER_COLUMNS} FROM runners WHERE id = ?",
                                (runner_id,)).fetchone()
        return RunnerRecord(*row) if row else None

    def newest_daemon(self, hostname: str | None = None) -> list[RunnerRecord]:
        """Daemons not recorded as stopped, newest first (on one host when it is given)."""
        sql = f"SELECT {RUNNER_COLUMNS} FROM runners WHERE kind = 'daemon' AND stopped_at IS NULL"
        params: tuple = ()
        if hostname is not None:
            sql += " AND hostname = ?"
            params = (hostname,)
        return [RunnerRecord(*r) for r in self.conn.execute(sql + " ORDER BY id DESC", params)]

    def is_paused(self, dag_id: str) -> bool:
        row = self.conn.execute("SELECT paused FROM dags WHERE dag_id = ?", (dag_id,)).fetchone()
        return bool(row and row[0])

    def last_scheduled(self, dag_id: str) -> float | None:
        """The logical date of the DAG's newest scheduled run: where its schedule carries on."""
        row = self.conn.execute(
            "SELECT max(logical_date) FROM dag_runs WHERE dag_id = ? AND run_type = 'scheduled'",
            (dag_id,)).fetchone()
        return row[0] if row else None

    def task_state_on(self, dag_id: str, task_id: str, logical_date: float) -> TaskState | None:
        """A task's state in the DAG's run of that logical date (a success among several runs
        counts); None when there is no such run."""
        row = self.conn.execute(
            "SELECT t.state FROM task_instances t JOIN dag_runs r ON r.id = t.run_pk "
            "WHERE r.dag_id = ? AND t.task_id = ? AND abs(r.logical_date - ?) < 0.001 "
            "ORDER BY (t.state = 'success') DESC LIMIT 1",
            (dag_id, task_id, logical_date)).fetchone()
        return TaskState(row[0]) if row else None

    def queued_dag_ids(self) -> set[str]:
        """The DAGs with a run waiting to start (a backfill's included): the only ones a
        runner has anything to start for when it is woken or rescans."""
        return {row[0] for row in self.conn.execute(
            "SELECT DISTINCT dag_id FROM dag_runs WHERE state = 'queued'")}

    def has_queued(self, dag_id: str) -> bool:
        """Whether the DAG has runs waiting for a run slot (backfills aside)."""
        return self.conn.execute(
            "SELECT 1 FROM dag_runs WHERE dag_id = ? AND state = 'queued' AND backfill_id IS NULL "
            "LIMIT 1", (dag_id,)).fetchone() is not None

    def set_active(self, dag_ids: Iterable[str]) -> None:
        """The DAGs the runner schedules now are active; every other one is not."""
        ids = list(dag_ids)
        with self.transaction() as conn:
            if ids:
                marks = ",".join("?" * len(ids))
                conn.execute(f"UPDATE dags SET is_active = CASE WHEN dag_id IN ({marks}) THEN 1 "
                             "ELSE 0 END", ids)
            else:
                conn.execute("UPDATE dags SET is_active = 0")

    # -- audit -----------------------------------------------------------------------------
    def audit(self, conn: sqlite3.Connection, action: str, *, dag_id: str | None = None,
              run_id: str | None = None, task_id: str | None = None,
              detail: dict[str, Any] | None = None, user: str | None = None) -> None:
        conn.execute(
            "INSERT INTO audit_log (at, user, action, dag_id, run_id, task_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.now(), user or current_user(), action, dag_id, run_id, task_id,
             json.dumps(detail or {})),
        )

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        rows = self.conn.execute(
            "SELECT id, at, user, action, dag_id, run_id, task_id, detail FROM audit_log "
            "ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]))
                for r in rows]

    # -- small reads and writes for the CLI ------------------------------------------------
    def active_dag_timezone(self, dag_id: str) -> str | None:
        """The timezone of a DAG the last parse still found, else None."""
        row = self.conn.execute("SELECT timezone FROM dags WHERE dag_id = ? AND is_active = 1",
                                (dag_id,)).fetchone()
        return None if row is None else str(row[0])

    def record_action(self, action: str, *, dag_id: str | None = None,
                      run_id: str | None = None, task_id: str | None = None,
                      detail: dict[str, Any] | None = None, user: str | None = None) -> None:
        """An audit row in a transaction of its own."""
        with self.transaction() as conn:
            self.audit(conn, action, dag_id=dag_id, run_id=run_id, task_id=task_id,
                       detail=detail, user=user)
