"""What the TUI reads: the store's views, and what the screens make of them.

A read that fails (another process holds the database locked, the file went away) raises one of
``READ_ERRORS``; screens keep what they last painted and say why they cannot read.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from flowtui.runner.config import Config
from flowtui.store import Store, StoreError
from flowtui.store.alerts import Alert
from flowtui.store.health import outage
from flowtui.store.models import AuditEntry, ImportError_, Run, RunnerRecord, TaskInstance, Try
from flowtui.store.views import ChangeMark, DagSummary, FlaggedTask, Grid, RunDuration, Views

# What a read of the store raises when the database cannot be read now.
READ_ERRORS = (sqlite3.Error, StoreError)
# A TUI read waits this long for another process's lock, then says so and retries on the next
# poll: the screen keeps its last good data meanwhile.
READ_BUSY_TIMEOUT = 1.0


def read_problem(error: BaseException) -> str:
    """Why a read failed, in a few words for the header."""
    problem = outage(error)
    if problem is not None:
        return "database busy" if "locked" in problem else problem
    text = str(error)
    if isinstance(error, StoreError) and "locked by another process" in text:
        return "database busy"
    return f"cannot read: {text}"


@dataclass(slots=True)
class RunnerHealth:
    alive: bool
    pid: int | None
    kind: str
    heartbeat_age: float | None
    problem: str = ""  # why a live runner cannot do its work (no write for too long, an outage)


@dataclass(slots=True)
class Header:
    """What the header line shows: the runner's health and the open alerts."""
    health: RunnerHealth
    open_alerts: int


@dataclass(slots=True)
class NowItem:
    dag_id: str
    run_id: str
    run_pk: int
    task_id: str
    state: str
    try_number: int
    max_tries: int
    reason: str
    since: float
    duration: float | None
    next_try_at: float | None = None


@dataclass(slots=True)
class PoolUse:
    name: str
    size: int
    used: int


@dataclass(slots=True)
class AlertRow:
    alert: Alert
    deliveries: str  # the newest few, as "channel action status"


class Data:
    """One read connection, opened on first use; a worker's own (``FlowtuiApp.reading``)."""

    def __init__(self, config: Config, read_only: bool) -> None:
        self.config = config
        self.read_only = read_only
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.config.database, readonly=self.read_only,
                                     busy_timeout=READ_BUSY_TIMEOUT)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def views(self) -> Views:
        return self.store.views

    # -- change tracking and the header ----------------------------------------------------
    def changes(self) -> ChangeMark:
        return self.views.change_mark()

    def header(self, now: float) -> Header:
        return Header(self.runner_health(now), self.views.open_alert_count())

    def runner_health(self, now: float) -> RunnerHealth:
        runner = self.views.newest_runner("daemon")
        if runner is None:
            return RunnerHealth(False, None, "daemon", None)
        from flowtui.runner.actions import live_owner
        from flowtui.runner.engine import HEARTBEAT_INTERVAL

        age = now - runner.heartbeat_at
        alive = runner.stopped_at is None and live_owner(self.store, runner.id) is not None
        problem = ""
        if alive and age > 3 * HEARTBEAT_INTERVAL:
            problem = f"no heartbeat written for {age:.0f}s: database locked or full?"
        elif alive and runner.health != "ok":
            problem = runner.last_error or runner.health
        return RunnerHealth(alive, runner.pid, runner.kind, age, problem)

    # -- Now -------------------------------------------------------------------------------
    def now_items(self, since: float, now: float, limit: int = 200) -> list[NowItem]:
        """Failed, retrying, upstream-failed and long-running tasks, newest run first; within a
        run the causes before their consequences (a task failed upstream ends a moment after
        the failure that ended it, and would otherwise sit on top, under the cursor)."""
        flagged = self.views.flagged_tasks(since, limit * 3)
        typical = self._typical_durations({(f.dag_id, f.task_id) for f in flagged
                                           if f.state == "running"})
        out: list[NowItem] = []
        for f in flagged:
            duration = None if f.start_date is None else (f.end_date or now) - f.start_date
            if f.state == "running":
                usual = typical.get((f.dag_id, f.task_id))
                if not usual or duration is None or duration < max(2 * usual, usual + 60):
                    continue  # running as usual: not news
                reason = f"running {duration:.0f}s, usually {usual:.0f}s"
            else:
                reason = f.reason
            out.append(_now_item(f, reason, duration))
            if len(out) >= limit:
                break
        first: dict[int, int] = {}
        for index, item in enumerate(out):
            first.setdefault(item.run_pk, index)
        out.sort(key=lambda item: (first[item.run_pk], item.state == "upstream_failed"))
        return out

    def _typical_durations(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
        out = {}
        for dag_id, task_id in keys:
            usual = self.views.typical_duration(dag_id, task_id)
            if usual is not None:
                out[(dag_id, task_id)] = usual
        return out

    # -- DAGs ------------------------------------------------------------------------------
    def dag_rows(self, runs_per_dag: int = 8) -> list[DagSummary]:
        return self.views.dag_summaries(runs_per_dag)

    def import_errors(self) -> list[ImportError_]:
        return self.store.import_errors()

    # -- a DAG -----------------------------------------------------------------------------
    def grid(self, dag_id: str, task_ids: list[str], limit: int = 25) -> Grid:
        return self.views.grid(dag_id, task_ids, limit)

    def run(self, run_pk: int) -> Run | None:
        return self.store.get_run_by_pk(run_pk)

    def task_instances(self, run_pk: int) -> list[TaskInstance]:
        return self.store.task_instances(run_pk)

    def tries(self, run_pk: int, task_id: str) -> list[Try]:
        """A task's tries; a log written on another host (PostgreSQL) is read from a local
        copy of what its runner shipped, so every screen reads a file as it does here."""
        tries = self.store.tries(run_pk, task_id)
        if self.store.kind != "postgresql":
            return tries
        return [replace(t, log_path=fetched_log(self.store, t))
                if self.store.ran_elsewhere(t) else t for t in tries]

    def runner_host(self, runner_id: int) -> str | None:
        record = self.store.runner(runner_id)
        return record.hostname if record else None

    def several_hosts(self) -> bool:
        """Whether runners share this store from several hosts (PostgreSQL)."""
        return self.store.kind == "postgresql"

    def open_tries(self) -> dict[int, int]:
        """Running tries per runner id."""
        return self.views.open_tries()

    def durations(self, dag_id: str, limit: int = 30) -> list[RunDuration]:
        return self.views.run_durations(dag_id, limit)

    # -- runs ------------------------------------------------------------------------------
    def runs(self, limit: int = 200, state: str | None = None) -> list[Run]:
        return self.store.list_runs(None, state, limit)

    # -- runner ----------------------------------------------------------------------------
    def runners(self, limit: int = 20) -> list[RunnerRecord]:
        return self.views.runners(limit)

    def pools(self) -> list[PoolUse]:
        used = self.views.pool_slots_used()
        names = {"default", *self.config.pools, *used}
        return [PoolUse(name, self.config.pool_size(name) or 0, used.get(name, 0))
                for name in sorted(names)]

    def audit(self, limit: int = 50) -> list[AuditEntry]:
        return self.store.audit_log(limit)

    # -- alerts and SLAs -------------------------------------------------------------------
    def alert_rows(self, include_resolved: bool = False) -> list[AlertRow]:
        out = []
        records = self.store.alerts
        for alert in records.newest(include_resolved=include_resolved, limit=300):
            parts = [f"{d.channel} {d.action} {d.status}" + (f" x{d.attempts}"
                                                              if d.attempts > 1 else "")
                     for d in records.deliveries(alert.id)]
            out.append(AlertRow(alert, "; ".join(parts[-4:])))
        return out

    def sla_rows(self, dags: dict, now: float) -> list:
        from flowtui.runner.sla import active_statuses

        return active_statuses(self.store, dags, now)


def _now_item(flagged: FlaggedTask, reason: str, duration: float | None) -> NowItem:
    f = flagged
    return NowItem(f.dag_id, f.run_id, f.run_pk, f.task_id, f.state, f.try_number, f.max_tries,
                   reason, f.updated_at, duration, f.next_try_at)


_fetched: dict[str, int] = {}  # local copy -> the last chunk written to it
_fetching = threading.Lock()


def fetched_log(store: Store, attempt: Try) -> str:
    """The local copy of a try's log shipped to the database by a runner on another host
    (SPEC 10), brought up to date: new chunks are appended, a copy of unknown state rewritten."""
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flowtui" / "logs"
    name = hashlib.sha1(f"{store.path}|{attempt.run_pk}|{attempt.task_id}".encode()).hexdigest()
    path = folder / f"{name[:16]}-{attempt.try_number}.log"
    with _fetching:  # the TUI's readers are threads: one writer of a copy at a time
        after = _fetched.get(str(path), -1) if path.exists() else -1
        chunks = store.log_chunks(attempt.run_pk, attempt.task_id, attempt.try_number, after)
        if chunks or not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            with open(path, "ab" if after >= 0 else "wb") as fh:
                for seq, data in chunks:
                    fh.write(data)
                    after = seq
            _fetched[str(path)] = after
    return str(path)

