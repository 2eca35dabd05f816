"""Backfills and the runs they own: every read and write of them."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowtui.store.changes import EVENT
from flowtui.store.models import BACKFILL_COLUMNS, RUN_COLUMNS, Backfill, Run
from flowtui.store.states import RunState

if TYPE_CHECKING:
    from flowtui.store.db import Store

MAX_ID = 2**63 - 1  # SQLite's largest integer: no backfill id lies beyond it


@dataclass(slots=True)
class DatedRun:
    """A run of a DAG as a backfill plan sees it: its logical date and state."""
    logical_date: float
    state: RunState


@dataclass(slots=True)
class BackfillRun:
    """A run a new backfill creates: its wanted run id (the store makes it unique) and its
    interval (the start is the logical date)."""
    run_id: str
    start: float
    end: float


class BackfillRecords:
    """Methods marked "in the caller's transaction" must run inside ``store.transaction()``,
    so a check, a plan and its writes stay one unit; the others are whole on their own."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads -----------------------------------------------------------------------------
    def get(self, backfill_id: int) -> Backfill | None:
        if not 0 < backfill_id <= MAX_ID:
            return None
        row = self.store.conn.execute(f"SELECT {BACKFILL_COLUMNS} FROM backfills WHERE id = ?",
                                      (backfill_id,)).fetchone()
        return Backfill(*row) if row else None

    def all(self) -> list[Backfill]:
        """Every backfill, the newest first."""
        rows = self.store.conn.execute(
            f"SELECT {BACKFILL_COLUMNS} FROM backfills ORDER BY id DESC")
        return [Backfill(*r) for r in rows]

    def running(self, dag_id: str) -> list[Backfill]:
        """The DAG's backfills whose runs may start (not paused, cancelled or done)."""
        rows = self.store.conn.execute(
            f"SELECT {BACKFILL_COLUMNS} FROM backfills WHERE dag_id = ? AND state = 'running' "
            "ORDER BY id", (dag_id,))
        return [Backfill(*r) for r in rows]

    def overlapping(self, dag_id: str, first: float, last: float) -> Backfill | None:
        """A running or paused backfill of the DAG whose range meets ``first``..``last``."""
        row = self.store.conn.execute(
            f"SELECT {BACKFILL_COLUMNS} FROM backfills WHERE dag_id = ? AND state IN "
            "('running', 'paused') AND start_date <= ? AND end_date >= ? ORDER BY id LIMIT 1",
            (dag_id, last, first)).fetchone()
        return Backfill(*row) if row else None

    def dated_runs(self, dag_id: str) -> list[DatedRun]:
        """Every run of the DAG, oldest first: what a plan checks each date against."""
        rows = self.store.conn.execute(
            "SELECT logical_date, state FROM dag_runs WHERE dag_id = ? ORDER BY id", (dag_id,))
        return [DatedRun(logical, RunState(state)) for logical, state in rows]

    def run_counts(self, backfill_id: int) -> dict[RunState, int]:
        """How many of the backfill's runs are in each state."""
        rows = self.store.conn.execute(
            "SELECT state, count(*) FROM dag_runs WHERE backfill_id = ? GROUP BY state",
            (backfill_id,))
        return {RunState(state): n for state, n in rows}

    def runs_in(self, backfill_id: int, state: RunState, *, newest_first: bool = False,
                limit: int = -1) -> list[Run]:
        """The backfill's runs in ``state`` by logical date (all of them when ``limit`` < 0)."""
        direction = "DESC" if newest_first else "ASC"
        rows = self.store.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM dag_runs WHERE backfill_id = ? AND state = ? "
            f"ORDER BY logical_date {direction}, id {direction} LIMIT ?",
            (backfill_id, RunState(state).value, limit))
        return [Run.from_row(r) for r in rows]

    def unfinished(self, backfill_id: int) -> int:
        """How many of the backfill's runs are queued or running."""
        return int(self.store.conn.execute(
            "SELECT count(*) FROM dag_runs WHERE backfill_id = ? AND state IN "
            "('queued', 'running')", (backfill_id,)).fetchone()[0])

    # -- writes in the caller's transaction ------------------------------------------------
    def create(self, *, dag_id: str, start_date: float, end_date: float, parallelism: int,
               run_order: str, reprocess: str, pool: str | None, skipped: int, user: str,
               runs: Sequence[BackfillRun], tasks: Sequence[tuple[str, int, str, int, int]]
               ) -> int:
        """Record a backfill (``running``), its queued runs with their task instances
        ``(task_id, max_tries, pool, slots, priority)``, their events and the audit entry, in
        the caller's transaction. Returns the backfill's id."""
        store = self._in_transaction()
        now = store.now()
        cur = store.conn.execute(
            "INSERT INTO backfills (dag_id, start_date, end_date, parallelism, run_order, "
            "reprocess, pool, state, skipped, user, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            (dag_id, start_date, end_date, parallelism, run_order, reprocess, pool, skipped,
             user, now, now))
        backfill_id = int(cur.lastrowid or 0)
        taken = store.run_ids(dag_id)
        for run in runs:
            store.insert_run(
                store.conn, dag_id=dag_id, run_id=run.run_id, unique=True, taken=taken,
                run_type="backfill", logical_date=run.start, data_interval_start=run.start,
                data_interval_end=run.end, conf={}, state=RunState.QUEUED, runner_id=None,
                backfill_id=backfill_id, tasks=tasks, at=now, cause="operator", actor=user,
                detail=f"backfill {backfill_id}")
        self._event(backfill_id, dag_id, None, "running", "operator", user, now)
        store.audit(store.conn, "backfill", dag_id=dag_id, user=user, detail={
            "backfill_id": backfill_id, "runs": len(runs), "skipped": skipped,
            "parallelism": parallelism, "order": run_order, "reprocess": reprocess,
            "pool": pool})
        return backfill_id

    def move(self, backfill: Backfill, new: str, *, cause: str, actor: str,
             audit: str | None = None) -> bool:
        """Move a backfill from the state ``backfill`` holds to ``new`` with its event (and,
        for an operator's change, the audit entry ``audit``), in the caller's transaction.
        False, writing nothing, when the backfill is no longer in that state."""
        store = self._in_transaction()
        now = store.now()
        moved = store.conn.execute(
            "UPDATE backfills SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
            (new, now, backfill.id, backfill.state)).rowcount
        if not moved:
            return False
        self._event(backfill.id, backfill.dag_id, backfill.state, new, cause, actor, now)
        if audit is not None:
            store.audit(store.conn, audit, dag_id=backfill.dag_id, user=actor,
                        detail={"backfill_id": backfill.id})
        return True

    def drop_queued_runs(self, backfill_id: int) -> int:
        """Remove the backfill's runs that never started (their tasks and requests go with
        them), in the caller's transaction; how many there were."""
        store = self._in_transaction()
        return int(store.conn.execute(
            "DELETE FROM dag_runs WHERE backfill_id = ? AND state = 'queued'",
            (backfill_id,)).rowcount)

    def request_cancels(self, run_pks: Iterable[int], user: str) -> None:
        """Ask the runner owning each run (now, or the next to adopt it) to end it, in the
        caller's transaction."""
        store = self._in_transaction()
        now = store.now()
        store.conn.executemany(
            "INSERT INTO requests (at, user, action, run_pk) VALUES (?, ?, 'cancel_run', ?)",
            [(now, user, pk) for pk in run_pks])

    # -- writes that are a transaction of their own ----------------------------------------
    def set_runner(self, backfill_id: int, runner_id: int | None) -> None:
        """The runner executing the backfill in its own process (``backfill --wait``), or
        None when it stops."""
        with self.store.transaction() as conn:
            conn.execute("UPDATE backfills SET runner_id = ? WHERE id = ?",
                         (runner_id, backfill_id))

    def finish_if_done(self, backfill_id: int, *, cause: str, actor: str) -> bool:
        """A running backfill with no queued or running run left is done (with its event);
        True when this call finished it."""
        with self.store.transaction():
            backfill = self.get(backfill_id)
            if backfill is None or backfill.state != "running" or self.unfinished(backfill_id):
                return False
            return self.move(backfill, "done", cause=cause, actor=actor)

    # -- helpers ---------------------------------------------------------------------------
    def _in_transaction(self) -> Store:
        if not self.store.conn.in_transaction:
            raise RuntimeError("this backfill write belongs inside store.transaction()")
        return self.store

    def _event(self, backfill_id: int, dag_id: str, old: str | None, new: str, cause: str,
               actor: str, at: float) -> None:
        """A backfill changed state: an event, which moves the change counter readers follow."""
        self.store.conn.execute(EVENT, (at, "backfill", dag_id, "", None, None, old, new, cause,
                                         actor, f"backfill {backfill_id}"))
