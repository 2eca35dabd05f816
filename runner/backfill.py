"""Backfills: one run per schedule interval in a date range, previewed, throttled, stoppable."""
from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from flowtui.runner.clock import iso
from flowtui.runner.model import DagSpec
from flowtui.runner.schedule import DATE_RANGE, FIRST_DAY, LAST_DAY, Interval, fire_times
from flowtui.store import Store, current_user
from flowtui.store.models import BACKFILL_COLUMNS, Backfill

ORDERS = ("oldest-first", "newest-first")
REPROCESS = ("none", "failed", "completed")
MAX_WITHOUT_YES = 10_000
MAX_ID = 2**63 - 1


class BackfillError(Exception):
    """A backfill that cannot be made as asked; the message says why and what to do."""


@dataclass(slots=True)
class Plan:
    create: list[Interval] = field(default_factory=list)
    skip: list[tuple[Interval, str]] = field(default_factory=list)


def parse_day(text: str, timezone: str, flag: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise BackfillError(f"{flag} {text!r} is not a date; use YYYY-MM-DD") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise BackfillError(f"{flag} {text!r} is out of range; {DATE_RANGE}")
    return day


def intervals_in_range(dag: DagSpec, first: dt.date, last: dt.date) -> list[Interval]:
    """Every schedule interval whose logical date falls on a day from ``first`` to ``last``
    (in the DAG's timezone)."""
    if not dag.schedule:
        raise BackfillError(f"DAG {dag.dag_id!r} has no schedule, so it has no intervals to "
                            "backfill; use 'flowtui trigger --date' for single runs")
    if first > last:
        raise BackfillError(f"--start {first} is after --end {last}")
    tz = ZoneInfo(dag.timezone)
    begin = dt.datetime(first.year, first.month, first.day, tzinfo=tz).timestamp()
    nxt = last + dt.timedelta(days=1)
    stop = dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()
    out: list[Interval] = []
    # Fires at or after begin (the float just below it: at year 9999, begin - 1e-6 == begin).
    times = fire_times(dag.schedule, dag.timezone, math.nextafter(begin, -math.inf))
    start = next(times, None)
    if start is None:
        return out
    for end in times:
        if start >= stop:
            break
        out.append(Interval(start, end))
        start = end
        if len(out) > 10 * MAX_WITHOUT_YES:
            break
    return out


def plan_backfill(store: Store, dag: DagSpec, intervals: list[Interval], reprocess: str) -> Plan:
    """Which dates get a new run and which are skipped, with the reason for each skip."""
    existing: dict[float, list[str]] = {}
    for logical, state in store.conn.execute(
            "SELECT logical_date, state FROM dag_runs WHERE dag_id = ? ORDER BY id",
            (dag.dag_id,)):
        existing.setdefault(round(logical, 3), []).append(state)
    plan = Plan()
    for interval in intervals:
        states = existing.get(round(interval.start, 3), [])
        if any(s in ("queued", "running") for s in states):
            plan.skip.append((interval, "a run for this date is already queued or running"))
        elif not states:
            plan.create.append(interval)
        elif reprocess == "completed":
            plan.create.append(interval)
        elif reprocess == "failed" and states[-1] == "failed":
            plan.create.append(interval)
        else:
            plan.skip.append((interval, f"already has a {states[-1]} run (reprocess {reprocess})"))
    return plan


def overlapping(store: Store, dag_id: str, intervals: list[Interval]) -> Backfill | None:
    if not intervals:
        return None
    first, last = intervals[0].start, intervals[-1].start
    row = store.conn.execute(
        f"SELECT {BACKFILL_COLUMNS} FROM backfills WHERE dag_id = ? AND state IN "
        "('running', 'paused') AND start_date <= ? AND end_date >= ? LIMIT 1",
        (dag_id, last, first)).fetchone()
    return Backfill(*row) if row else None


def queue_backfill(store: Store, dag: DagSpec, start: str, end: str, *, reprocess: str | None,
                   order: str, parallelism: int, pool: str | None, allow_many: bool = False,
                   user: str | None = None) -> tuple[int | None, Plan]:
    """Check, plan and record a backfill as one write transaction (BEGIN IMMEDIATE), so two at
    once see each other: the second is refused as overlapping, or plans around the first.
    Returns the new backfill's id (None when every date is skipped) and its plan."""
    intervals = _checked_intervals(dag, start, end, allow_many)
    with store.transaction():
        plan, chosen = _plan(store, dag, intervals, reprocess, order)
        if not plan.create:
            return None, plan
        return _record(store, dag, plan, parallelism=parallelism, order=order,
                       reprocess=chosen, pool=pool, user=user), plan


def _record(store: Store, dag: DagSpec, plan: Plan, *, parallelism: int, order: str,
            reprocess: str, pool: str | None, user: str | None) -> int:
    """The inserts of a backfill and its runs, inside the caller's transaction."""
    user = user or current_user()
    now = time.time()
    starts = [i.start for i in plan.create] or [i.start for i, _ in plan.skip]
    taken = store.run_ids(dag.dag_id)
    conn = store.conn
    cur = conn.execute(
        "INSERT INTO backfills (dag_id, start_date, end_date, parallelism, run_order, "
        "reprocess, pool, state, skipped, user, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
        (dag.dag_id, min(starts), max(starts), parallelism, order, reprocess, pool,
         len(plan.skip), user, now, now))
    backfill_id = int(cur.lastrowid or 0)
    for interval in plan.create:
        base = f"backfill__{iso(interval.start)}"
        run_id, n = base, 2
        while run_id in taken:
            run_id, n = f"{base}.{n}", n + 1
        taken.add(run_id)
        run_cur = conn.execute(
            "INSERT INTO dag_runs (dag_id, run_id, run_type, logical_date, "
            "data_interval_start, data_interval_end, conf, state, created_at, updated_at, "
            "backfill_id) VALUES (?, ?, 'backfill', ?, ?, ?, '{}', 'queued', ?, ?, ?)",
            (dag.dag_id, run_id, interval.start, interval.start, interval.end, now, now,
             backfill_id))
        run_pk = int(run_cur.lastrowid or 0)
        conn.executemany(
            "INSERT INTO task_instances (run_pk, dag_id, run_id, task_id, state, max_tries, "
            "pool, pool_slots, priority, updated_at) VALUES (?, ?, ?, ?, 'none', ?, ?, ?, ?, ?)",
            [(run_pk, dag.dag_id, run_id, t.task_id, t.max_tries, pool or t.pool,
              t.pool_slots, dag.priority[t.task_id], now) for t in dag.tasks.values()])
        conn.execute("INSERT INTO events (at, kind, dag_id, run_id, old_state, new_state, "
                     "cause, detail) VALUES (?, 'run', ?, ?, NULL, 'queued', ?, ?)",
                     (now, dag.dag_id, run_id, f"operator:{user}", f"backfill {backfill_id}"))
    _state_event(conn, backfill_id, dag.dag_id, None, "running", f"operator:{user}", now)
    store.audit(conn, "backfill", dag_id=dag.dag_id, user=user, detail={
        "backfill_id": backfill_id, "runs": len(plan.create), "skipped": len(plan.skip),
        "parallelism": parallelism, "order": order, "reprocess": reprocess, "pool": pool})
    return backfill_id


def get_backfill(store: Store, backfill_id: int) -> Backfill:
    row = None
    if 0 < backfill_id <= MAX_ID:  # beyond SQLite's integers no backfill can be named
        row = store.conn.execute(f"SELECT {BACKFILL_COLUMNS} FROM backfills WHERE id = ?",
                                 (backfill_id,)).fetchone()
    if row is None:
        raise BackfillError(f"no backfill {backfill_id}; 'flowtui backfill list' lists them")
    return Backfill(*row)


def list_backfills(store: Store) -> list[Backfill]:
    rows = store.conn.execute(f"SELECT {BACKFILL_COLUMNS} FROM backfills ORDER BY id DESC")
    return [Backfill(*r) for r in rows]


def progress(store: Store, backfill: Backfill) -> dict[str, int]:
    counts = {"done": 0, "running": 0, "failed": 0, "left": 0}
    for state, n in store.conn.execute(
            "SELECT state, count(*) FROM dag_runs WHERE backfill_id = ? GROUP BY state",
            (backfill.id,)):
        key = {"success": "done", "failed": "failed", "running": "running"}.get(state, "left")
        counts[key] += n
    counts["skipped"] = backfill.skipped
    return counts


def next_runs(store: Store, backfill: Backfill, limit: int) -> list:
    """The backfill's queued runs to start next, in its order."""
    from flowtui.store.models import RUN_COLUMNS, Run

    direction = "DESC" if backfill.run_order == "newest-first" else "ASC"
    rows = store.conn.execute(
        f"SELECT {RUN_COLUMNS} FROM dag_runs WHERE backfill_id = ? AND state = 'queued' "
        f"ORDER BY logical_date {direction} LIMIT ?", (backfill.id, limit))
    return [Run.from_row(r) for r in rows]


ACTIONS = {"pause": "paused", "resume": "running", "cancel": "cancelled"}
_ALLOWED = {"paused": ("running",), "running": ("paused",), "cancelled": ("running", "paused")}
_DONE = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}


@dataclass(slots=True)
class Change:
    backfill: Backfill  # as it was before the change
    state: str  # what it is now
    stopping: int  # running runs whose runner was asked to end them


def change_state(store: Store, backfill_id: int, action: str, user: str | None = None
                 ) -> Change:
    """Pause, resume or cancel a backfill (the CLI's and the TUI's one way to do it).

    One write transaction sets the state, writes the audit entry and an event (so every reader
    following the change counter sees it), and for a cancel removes the runs not started and
    records a cancel request for each running one: the live runner that owns it ends it now,
    and a run whose runner died is ended by the next runner that adopts it. Then the runners
    concerned are woken."""
    from flowtui.runner.actions import live_daemon, live_owner, wake

    if action not in ACTIONS:
        raise BackfillError(f"unknown backfill action {action!r}; use {', '.join(ACTIONS)}")
    state, user = ACTIONS[action], user or current_user()
    now = time.time()
    with store.transaction() as conn:
        backfill = get_backfill(store, backfill_id)  # read inside: no change is lost between
        if backfill.state not in _ALLOWED[state]:
            raise BackfillError(f"backfill {backfill.id} is {backfill.state}; it cannot be "
                                f"{_DONE[action]}")
        conn.execute("UPDATE backfills SET state = ?, updated_at = ? WHERE id = ?",
                     (state, now, backfill.id))
        _state_event(conn, backfill.id, backfill.dag_id, backfill.state, state,
                     f"operator:{user}", now)
        store.audit(conn, f"backfill_{action}", dag_id=backfill.dag_id, user=user,
                    detail={"backfill_id": backfill.id})
        running: list[tuple[int, int | None]] = []
        if state == "cancelled":
            # Runs that never started are removed: the date has no run, as before the backfill.
            conn.execute("DELETE FROM dag_runs WHERE backfill_id = ? AND state = 'queued'",
                         (backfill.id,))
            running = conn.execute("SELECT id, runner_id FROM dag_runs WHERE backfill_id = ? "
                                   "AND state = 'running'", (backfill.id,)).fetchall()
            conn.executemany("INSERT INTO requests (at, user, action, run_pk) VALUES "
                             "(?, ?, 'cancel_run', ?)", [(now, user, pk) for pk, _ in running])
    if state == "running":
        finish_if_done(store, backfill.id)  # resumed with nothing left to run
    owners = {live_owner(store, runner_id) for _, runner_id in running}
    pids = {owner[1] for owner in owners if owner is not None}
    daemon = live_daemon(store)
    if daemon is not None:
        pids.add(daemon[1])
    for pid in sorted(pids):
        wake(pid)
    return Change(backfill, state, len(running))


def _state_event(conn, backfill_id: int, dag_id: str, old: str | None, new: str, cause: str,
                 now: float) -> None:
    """A backfill changed state: an event, which moves the change counter readers follow."""
    conn.execute("INSERT INTO events (at, kind, dag_id, run_id, old_state, new_state, cause, "
                 "detail) VALUES (?, 'backfill', ?, '', ?, ?, ?, ?)",
                 (now, dag_id, old, new, cause, f"backfill {backfill_id}"))


def finish_if_done(store: Store, backfill_id: int) -> None:
    with store.transaction() as conn:
        left = conn.execute("SELECT count(*) FROM dag_runs WHERE backfill_id = ? AND state IN "
                            "('queued', 'running')", (backfill_id,)).fetchone()[0]
        if not left:
            now = time.time()
            done = conn.execute("UPDATE backfills SET state = 'done', updated_at = ? WHERE "
                                "id = ? AND state = 'running'", (now, backfill_id)).rowcount
            if done:
                dag_id = conn.execute("SELECT dag_id FROM backfills WHERE id = ?",
                                      (backfill_id,)).fetchone()[0]
                _state_event(conn, backfill_id, dag_id, "running", "done", "scheduler", now)


def to_json(store: Store, backfill: Backfill) -> dict:
    return {"id": backfill.id, "dag_id": backfill.dag_id, "state": backfill.state,
            "start": iso(backfill.start_date), "end": iso(backfill.end_date),
            "parallelism": backfill.parallelism, "order": backfill.run_order,
            "reprocess": backfill.reprocess, "pool": backfill.pool,
            "progress": progress(store, backfill), "user": backfill.user,
            "created_at": iso(backfill.created_at)}


def prepare(store: Store, dag: DagSpec, start: str, end: str, *, reprocess: str | None,
            order: str, allow_many: bool = False) -> tuple[Plan, str]:
    """Validate a backfill request and plan it: what the CLI and the TUI's dialog preview."""
    return _plan(store, dag, _checked_intervals(dag, start, end, allow_many), reprocess, order)


def _checked_intervals(dag: DagSpec, start: str, end: str, allow_many: bool) -> list[Interval]:
    first = parse_day(start, dag.timezone, "--start")
    last = parse_day(end, dag.timezone, "--end")
    intervals = intervals_in_range(dag, first, last)
    if len(intervals) > MAX_WITHOUT_YES and not allow_many:
        raise BackfillError(f"that range holds {len(intervals)} runs (more than "
                            f"{MAX_WITHOUT_YES:,}); narrow it or pass --yes")
    return intervals


def _plan(store: Store, dag: DagSpec, intervals: list[Interval], reprocess: str | None,
          order: str) -> tuple[Plan, str]:
    other = overlapping(store, dag.dag_id, intervals)
    if other is not None and reprocess is None:
        raise BackfillError(f"these dates overlap backfill {other.id} ({other.state}); say what "
                            "to do with dates that have runs: --reprocess none|failed|completed")
    chosen = reprocess or "none"
    plan = plan_backfill(store, dag, intervals, chosen)
    if order == "newest-first":
        plan.create.reverse()
    return plan, chosen


def start_backfill_runs(engine, store: Store, dag: DagSpec, now: float) -> None:
    """Start queued runs of the DAG's active backfills, at most ``parallelism`` each."""
    from flowtui.runner.actions import live_owner
    from flowtui.runner.adoption import adopt_run

    for row in store.conn.execute(
            f"SELECT {BACKFILL_COLUMNS} FROM backfills WHERE dag_id = ? AND state = 'running'",
            (dag.dag_id,)).fetchall():
        backfill = Backfill(*row)
        if backfill.runner_id not in (None, engine.runner_id) and \
                live_owner(store, backfill.runner_id) is not None:
            continue  # a `backfill --wait` process executes this one
        active = sum(1 for live in engine.runs.values() if live.backfill_id == backfill.id)
        free = backfill.parallelism - active
        if free > 0:
            for run in next_runs(store, backfill, free + active):
                if run.pk not in engine.runs and free > 0:
                    adopt_run(engine, dag, run, now)
                    free -= 1
            engine._flush()  # running in the store before a cancel can delete it as queued


def run_in_foreground(store: Store, config, dag: DagSpec, backfill_id: int,
                      on_progress=None) -> dict[str, int]:
    """``backfill --wait``: execute the backfill in this process; return its final progress."""
    import os

    from flowtui.runner.engine import Engine
    from flowtui.runner.executor import process_start_time
    from flowtui.runner.operator import handle_own_requests

    runner_id = store.register_runner("backfill", process_start_time(os.getpid()))
    with store.transaction() as conn:
        conn.execute("UPDATE backfills SET runner_id = ? WHERE id = ?", (runner_id, backfill_id))
    engine = Engine(store, config, runner_id)
    engine.on_wake = lambda now: handle_own_requests(engine, now)

    def refill(now: float) -> None:
        backfill = get_backfill(store, backfill_id)
        if backfill.state != "running" or engine._stopping:
            return
        active = sum(1 for live in engine.runs.values() if live.backfill_id == backfill_id)
        from flowtui.runner.adoption import adopt_run

        for run in next_runs(store, backfill, backfill.parallelism - active):
            adopt_run(engine, dag, run, now)

    def finished(live) -> None:
        engine._flush()
        if on_progress is not None:
            on_progress(progress(store, get_backfill(store, backfill_id)))
        refill(time.time())

    engine.on_run_finished = finished
    try:
        import signal

        engine.install_signal_handlers()
        signal.signal(signal.SIGUSR1, lambda *_: None)  # operator requests wake the loop
        refill(time.time())
        engine.run_until_done()
        engine._flush()
    finally:
        engine.close()
        store.stop_runner(runner_id)
        with store.transaction() as conn:
            conn.execute("UPDATE backfills SET runner_id = NULL WHERE id = ?", (backfill_id,))
    finish_if_done(store, backfill_id)
    return progress(store, get_backfill(store, backfill_id))


__all__ = ["BackfillError", "Change", "Plan", "change_state", "get_backfill",
           "intervals_in_range", "list_backfills", "next_runs", "overlapping", "plan_backfill",
           "progress", "queue_backfill", "to_json", "json"]
