"""Read-only queries the TUI and the CLI show: each returns dataclasses.

Every query is bounded (a limit, an index) so a home with years of history stays fast, and
``change_mark()`` lets a reader refetch only when something was written since it last looked.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flowtui.store.models import (
    RUN_COLUMNS, RUNNER_COLUMNS, TI_COLUMNS, Run, RunnerRecord, TaskInstance,
)
from flowtui.store.states import RunState, TaskState

if TYPE_CHECKING:
    from flowtui.store.db import Store


@dataclass(frozen=True, slots=True)
class ChangeMark:
    """The newest event id and the newest runner heartbeat: equal marks, nothing to refetch."""
    last_event_id: int
    last_heartbeat_at: float


@dataclass(slots=True)
class FlaggedTask:
    """A task instance in a state Now may show (failed, retrying, upstream failed, running)."""
    dag_id: str
    run_id: str
    run_pk: int
    task_id: str
    state: TaskState
    try_number: int
    max_tries: int
    reason: str
    updated_at: float
    start_date: float | None
    end_date: float | None
    next_try_at: float | None


@dataclass(slots=True)
class DagSummary:
    """A DAG's row on the DAGs screen; ``last_states`` and ``durations`` oldest first."""
    dag_id: str
    schedule: str | None
    timezone: str
    paused: bool
    paused_reason: str | None
    is_active: bool
    fileloc: str
    has_error: bool = False
    last_states: list[RunState] = field(default_factory=list)
    durations: list[float | None] = field(default_factory=list)
    running: int = 0


@dataclass(slots=True)
class Grid:
    """A DAG's recent runs (oldest first) by task: the cells the grid and graph paint."""
    dag_id: str
    runs: list[Run]
    task_ids: list[str]
    cells: dict[tuple[int, str], TaskInstance]


@dataclass(slots=True)
class RunDuration:
    run_id: str
    state: RunState
    seconds: float | None  # None while it has not ended




class Views:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- change tracking and the header ----------------------------------------------------
    def change_mark(self) -> ChangeMark:
        row = self.store.conn.execute(
            "SELECT (SELECT max(id) FROM events), (SELECT max(heartbeat_at) FROM runners)"
        ).fetchone()
        return ChangeMark(int(row[0] or 0), float(row[1] or 0))

    def newest_runner(self, kind: str) -> RunnerRecord | None:
        row = self.store.conn.execute(
            f"SELECT {RUNNER_COLUMNS} FROM runners WHERE kind = ? ORDER BY id DESC LIMIT 1",
            (kind,)).fetchone()
        return RunnerRecord(*row) if row else None

    def open_tries(self) -> dict[int, int]:
        """How many tries each runner is running now."""
        return dict(self.store.conn.execute(
            "SELECT runner_id, count(*) FROM tries WHERE end_date IS NULL AND runner_id IS NOT "
            "NULL GROUP BY runner_id").fetchall())

    def runners(self, limit: int) -> list[RunnerRecord]:
        """Newest first."""
        rows = self.store.conn.execute(
            f"SELECT {RUNNER_COLUMNS} FROM runners ORDER BY id DESC LIMIT ?", (limit,))
        return [RunnerRecord(*r) for r in rows]

    def open_alert_count(self) -> int:
        row = self.store.conn.execute("SELECT count(*) FROM alerts WHERE state = 'open'").fetchone()
        return int(row[0])

    # -- Now -------------------------------------------------------------------------------
    def flagged_tasks(self, since: float, limit: int) -> list[FlaggedTask]:
        """Failed, retrying, upstream-failed and running tasks changed since ``since``, newest
        first."""
        rows = self.store.conn.execute(
            "SELECT dag_id, run_id, run_pk, task_id, state, try_number, max_tries, reason, "
            "updated_at, start_date, end_date, next_try_at FROM task_instances "
            "WHERE state IN ('failed', 'up_for_retry', 'running', 'upstream_failed') "
            "AND updated_at >= ? ORDER BY updated_at DESC LIMIT ?", (since, limit)).fetchall()
        return [FlaggedTask(r[0], r[1], r[2], r[3], TaskState(r[4]), *r[5:]) for r in rows]

    def typical_duration(self, dag_id: str, task_id: str, tries: int = 20) -> float | None:
        """The median duration of the task's ``tries`` newest successful tries."""
        rows = self.store.conn.execute(
            "SELECT t.end_date - t.start_date FROM tries t JOIN dag_runs r ON r.id = t.run_pk "
            "WHERE r.dag_id = ? AND t.task_id = ? AND t.state = 'success' "
            "ORDER BY t.id DESC LIMIT ?", (dag_id, task_id, tries)).fetchall()
        values = sorted(v[0] for v in rows if v[0] is not None)
        return values[len(values) // 2] if values else None

    # -- DAGs ------------------------------------------------------------------------------
    def dag_ids(self) -> list[str]:
        return [r[0] for r in self.store.conn.execute("SELECT dag_id FROM dags ORDER BY dag_id")]

    def dag_summaries(self, runs_per_dag: int) -> list[DagSummary]:
        conn = self.store.conn
        errors = {r[0] for r in conn.execute("SELECT DISTINCT fileloc FROM import_errors")}
        out = []
        for r in conn.execute("SELECT dag_id, schedule, timezone, paused, paused_reason, "
                              "is_active, fileloc FROM dags ORDER BY dag_id").fetchall():
            recent = conn.execute("SELECT state, start_date, end_date FROM dag_runs WHERE "
                                  "dag_id = ? ORDER BY logical_date DESC, id DESC LIMIT ?",
                                  (r[0], runs_per_dag)).fetchall()
            recent.reverse()
            out.append(DagSummary(
                r[0], r[1], r[2], bool(r[3]), r[4], bool(r[5]), r[6], has_error=r[6] in errors,
                last_states=[RunState(s[0]) for s in recent],
                durations=[(s[2] - s[1]) if s[1] is not None and s[2] is not None else None
                           for s in recent],
                running=sum(1 for s in recent if s[0] == "running")))
        return out

    # -- a DAG -----------------------------------------------------------------------------
    def grid(self, dag_id: str, task_ids: list[str], limit: int) -> Grid:
        """The DAG's ``limit`` newest runs by logical date; rows are ``task_ids`` in that
        order, then any other task the runs have (a task since removed from the file)."""
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

    def run_durations(self, dag_id: str, limit: int) -> list[RunDuration]:
        """The DAG's ``limit`` newest runs by logical date, oldest first."""
        rows = self.store.conn.execute(
            "SELECT run_id, state, end_date - start_date FROM dag_runs WHERE dag_id = ? "
            "ORDER BY logical_date DESC, id DESC LIMIT ?", (dag_id, limit)).fetchall()
        return [RunDuration(r[0], RunState(r[1]), r[2]) for r in reversed(rows)]

    # -- pools -----------------------------------------------------------------------------
    def pool_slots_used(self) -> dict[str, int]:
        """Slots taken in each pool by running tasks (a queued one is only offered)."""
        rows = self.store.conn.execute(
            "SELECT pool, sum(pool_slots) FROM task_instances WHERE state = 'running' "
            "GROUP BY pool").fetchall()
        return {pool: int(used) for pool, used in rows}
