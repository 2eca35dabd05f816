"""What the TUI reads: small queries over the store, returning plain dataclasses.

Every query is bounded (a limit, an index) so a home with years of history stays fast, and
``changes()`` lets the app refetch only when something was written since it last looked.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from flowtui.runner.config import Config
from flowtui.store import Store
from flowtui.store.models import RUN_COLUMNS, TI_COLUMNS, Run, TaskInstance, Try


@dataclass(slots=True)
class RunnerHealth:
    alive: bool
    pid: int | None
    kind: str
    heartbeat_age: float | None
    problem: str = ""  # why a live runner cannot do its work (no write for too long, an outage)


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
class DagRow:
    dag_id: str
    schedule: str | None
    timezone: str
    paused: bool
    paused_reason: str | None
    is_active: bool
    fileloc: str
    last_states: list[str] = field(default_factory=list)
    running: int = 0
    next_run: float | None = None
    has_error: bool = False
    durations: list[float | None] = field(default_factory=list)  # of last_states' runs


@dataclass(slots=True)
class Grid:
    dag_id: str
    runs: list[Run]
    task_ids: list[str]
    cells: dict[tuple[int, str], TaskInstance]


@dataclass(slots=True)
class PoolUse:
    name: str
    size: int
    used: int


class Data:
    """One read connection (per thread: workers use their own via ``for_thread``)."""

    def __init__(self, config: Config, read_only: bool) -> None:
        self.config = config
        self.read_only = read_only
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.config.db_path, readonly=self.read_only)
        return self._store

    # -- change tracking -------------------------------------------------------------------
    def changes(self) -> tuple[int, float]:
        """(newest event id, newest runner heartbeat): what the app compares to refetch."""
        row = self.store.conn.execute(
            "SELECT (SELECT max(id) FROM events), (SELECT max(heartbeat_at) FROM runners)"
        ).fetchone()
        return int(row[0] or 0), float(row[1] or 0)

    # -- header ----------------------------------------------------------------------------
    def runner_health(self) -> RunnerHealth:
        row = self.store.conn.execute(
            "SELECT id, pid, kind, heartbeat_at, stopped_at, hostname, health, last_error "
            "FROM runners WHERE kind = 'daemon' ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return RunnerHealth(False, None, "daemon", None)
        from flowtui.runner.actions import live_owner
        from flowtui.runner.engine import HEARTBEAT_INTERVAL

        age = time.time() - row[3]
        alive = row[4] is None and live_owner(self.store, row[0]) is not None
        problem = ""
        if alive and age > 3 * HEARTBEAT_INTERVAL:
            problem = f"no heartbeat written for {age:.0f}s: database locked or full?"
        elif alive and row[6] not in ("ok", None):
            problem = row[7] or row[6]
        return RunnerHealth(alive, row[1], row[2], age, problem)

    def open_alerts(self) -> int:
        try:
            row = self.store.conn.execute(
                "SELECT count(*) FROM alerts WHERE state = 'open'").fetchone()
        except Exception:  # no alerts table yet
            return 0
        return int(row[0])

    # -- Now -------------------------------------------------------------------------------
    def now_items(self, since: float, limit: int = 200) -> list[NowItem]:
        """Failed, retrying, upstream-failed and long-running tasks, newest first."""
        rows = self.store.conn.execute(
            "SELECT ti.dag_id, ti.run_id, ti.run_pk, ti.task_id, ti.state, ti.try_number, "
            "ti.max_tries, ti.reason, ti.updated_at, ti.start_date, ti.end_date, ti.next_try_at "
            "FROM task_instances ti WHERE ti.state IN ('failed', 'up_for_retry', 'running', "
            "'upstream_failed') AND ti.updated_at >= ? ORDER BY ti.updated_at DESC LIMIT ?",
            (since, limit * 3)).fetchall()
        typical = self._typical_durations({(r[0], r[3]) for r in rows if r[4] == "running"})
        out: list[NowItem] = []
        now = time.time()
        for r in rows:
            state, start, end = r[4], r[9], r[10]
            duration = None if start is None else (end or now) - start
            if state == "running":
                usual = typical.get((r[0], r[3]))
                if not usual or duration is None or duration < max(2 * usual, usual + 60):
                    continue  # running as usual: not news
                reason = f"running {duration:.0f}s, usually {usual:.0f}s"
            else:
                reason = r[7]
            out.append(NowItem(r[0], r[1], r[2], r[3], state, r[5], r[6], reason, r[8], duration,
                               r[11]))
            if len(out) >= limit:
                break
        return out

    def _typical_durations(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
        out = {}
        for dag_id, task_id in keys:
            rows = self.store.conn.execute(
                "SELECT t.end_date - t.start_date FROM tries t JOIN dag_runs r ON r.id = t.run_pk "
                "WHERE r.dag_id = ? AND t.task_id = ? AND t.state = 'success' "
                "ORDER BY t.id DESC LIMIT 20", (dag_id, task_id)).fetchall()
            values = sorted(v[0] for v in rows if v[0] is not None)
            if values:
                out[(dag_id, task_id)] = values[len(values) // 2]
        return out

    # -- DAGs ------------------------------------------------------------------------------
    def dag_rows(self, runs_per_dag: int = 8) -> list[DagRow]:
        conn = self.store.conn
        errors = {r[0] for r in conn.execute("SELECT DISTINCT fileloc FROM import_errors")}
        rows = []
        for r in conn.execute("SELECT dag_id, schedule, timezone, paused, paused_reason, "
                              "is_active, fileloc FROM dags ORDER BY dag_id").fetchall():
            row = DagRow(r[0], r[1], r[2], bool(r[3]), r[4], bool(r[5]), r[6],
                         has_error=r[6] in errors)
            recent = conn.execute("SELECT state, start_date, end_date FROM dag_runs WHERE "
                                  "dag_id = ? ORDER BY logical_date DESC, id DESC LIMIT ?",
                                  (row.dag_id, runs_per_dag)).fetchall()
            row.last_states = [s[0] for s in reversed(recent)]
            row.durations = [(s[2] - s[1]) if s[1] is not None and s[2] is not None else None
                             for s in reversed(recent)]
            row.running = sum(1 for s in recent if s[0] == "running")
            rows.append(row)
        return rows

    def import_errors(self) -> list[tuple[str, int | None, str]]:
        return [(e.fileloc, e.line, e.message) for e in self.store.import_errors()]

    # -- a DAG -----------------------------------------------------------------------------
    def grid(self, dag_id: str, task_ids: list[str], limit: int = 25) -> Grid:
        conn = self.store.conn
        runs = [Run.from_row(r) for r in conn.execute(
            f"SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = ? ORDER BY logical_date DESC, "
            "id DESC LIMIT ?", (dag_id, limit))]
        runs.reverse()
        cells: dict[tuple[int, str], TaskInstance] = {}
        known = list(task_ids)
        for run in runs:
            for row in conn.execute(f"SELECT {TI_COLUMNS} FROM task_instances WHERE run_pk = ?",
                                    (run.pk,)):
                ti = TaskInstance.from_row(row)
                cells[(run.pk, ti.task_id)] = ti
                if ti.task_id not in known:
                    known.append(ti.task_id)
        return Grid(dag_id, runs, known, cells)

    def run(self, run_pk: int) -> Run | None:
        return self.store.get_run_by_pk(run_pk)

    def task_instances(self, run_pk: int) -> list[TaskInstance]:
        return self.store.task_instances(run_pk)

    def tries(self, run_pk: int, task_id: str) -> list[Try]:
        return self.store.tries(run_pk, task_id)

    def durations(self, dag_id: str, limit: int = 30) -> list[tuple[str, str, float | None]]:
        rows = self.store.conn.execute(
            "SELECT run_id, state, end_date - start_date FROM dag_runs WHERE dag_id = ? "
            "ORDER BY logical_date DESC, id DESC LIMIT ?", (dag_id, limit)).fetchall()
        return [(r[0], r[1], r[2]) for r in reversed(rows)]

    # -- runs ------------------------------------------------------------------------------
    def runs(self, limit: int = 200, state: str | None = None) -> list[Run]:
        return self.store.list_runs(None, state, limit)

    # -- runner ----------------------------------------------------------------------------
    def runners(self, limit: int = 20) -> list[tuple]:
        return self.store.conn.execute(
            "SELECT id, kind, hostname, pid, started_at, heartbeat_at, stopped_at FROM runners "
            "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()

    def pools(self) -> list[PoolUse]:
        used = dict(self.store.conn.execute(
            "SELECT pool, sum(pool_slots) FROM task_instances WHERE state IN ('running', "
            "'queued') GROUP BY pool").fetchall())
        names = {"default", *self.config.pools, *used}
        return [PoolUse(name, self.config.pool_size(name) or 0, int(used.get(name, 0)))
                for name in sorted(names)]

    def audit(self, limit: int = 50) -> list[tuple]:
        return [(a.at, a.user, a.action, a.dag_id or "", a.run_id or "", a.task_id or "",
                 json.dumps(a.detail)) for a in self.store.audit_log(limit)]


@dataclass(slots=True)
class AlertRow:
    id: int
    kind: str
    dag_id: str
    run_id: str
    task_id: str
    state: str
    severity: str
    level: int
    created_at: float
    summary: str
    next_step_at: float | None
    acked_by: str | None
    deliveries: str


def alert_rows(data: Data, include_resolved: bool = False) -> list[AlertRow]:
    from flowtui.runner.alerting import list_alerts

    try:
        rows = list_alerts(data.store, include_resolved=include_resolved, limit=300)
    except Exception:  # an older database without the alerts table
        return []
    out = []
    for r in rows:
        parts = []
        for channel, action, status, attempts in data.store.conn.execute(
                "SELECT channel, action, status, attempts FROM deliveries WHERE alert_id = ? "
                "ORDER BY id", (r[0],)):
            retry = f" x{attempts}" if attempts > 1 else ""
            parts.append(f"{channel} {action} {status}{retry}")
        out.append(AlertRow(*r, deliveries="; ".join(parts[-4:])))
    return out


def sla_rows(data: Data, dags: dict) -> list:
    from flowtui.runner.sla import active_statuses

    return active_statuses(data.store, dags, time.time())
