"""Backfills: one run per schedule interval in a date range, previewed, throttled, stoppable."""
from __future__ import annotations

import datetime as dt
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from flowtui.runner.clock import iso
from flowtui.runner.model import DagSpec
from flowtui.runner.schedule import DATE_RANGE, FIRST_DAY, LAST_DAY, Interval, fire_times
from flowtui.store import RunState, Store, current_user
from flowtui.store.backfills import BackfillRun
from flowtui.store.models import Backfill, Run

if TYPE_CHECKING:
    from flowtui.runner.config import Config
    from flowtui.runner.engine import Engine, LiveRun

ORDERS = ("oldest-first", "newest-first")
REPROCESS = ("none", "failed", "completed")
MAX_WITHOUT_YES = 10_000


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
    existing: dict[float, list[RunState]] = {}
    for run in store.backfills.dated_runs(dag.dag_id):
        existing.setdefault(round(run.logical_date, 3), []).append(run.state)
    plan = Plan()
    for interval in intervals:
        states = existing.get(round(interval.start, 3), [])
        if any(s in (RunState.QUEUED, RunState.RUNNING) for s in states):
            plan.skip.append((interval, "a run for this date is already queued or running"))
        elif not states:
            plan.create.append(interval)
        elif reprocess == "completed":
            plan.create.append(interval)
        elif reprocess == "failed" and states[-1] == RunState.FAILED:
            plan.create.append(interval)
        else:
            plan.skip.append((interval, f"already has a {states[-1].value} run "
                                        f"(reprocess {reprocess})"))
    return plan


def overlapping(store: Store, dag_id: str, intervals: list[Interval]) -> Backfill | None:
    if not intervals:
        return None
    return store.backfills.overlapping(dag_id, intervals[0].start, intervals[-1].start)


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
    """The backfill and its queued runs, inside the caller's transaction."""
    starts = [i.start for i in plan.create] or [i.start for i, _ in plan.skip]
    return store.backfills.create(
        dag_id=dag.dag_id, start_date=min(starts), end_date=max(starts),
        parallelism=parallelism, run_order=order, reprocess=reprocess, pool=pool,
        skipped=len(plan.skip), user=user or current_user(),
        runs=[BackfillRun(f"backfill__{iso(i.start)}", i.start, i.end) for i in plan.create],
        tasks=[(t.task_id, t.max_tries, pool or t.pool, t.pool_slots, dag.priority[t.task_id])
               for t in dag.tasks.values()])


def get_backfill(store: Store, backfill_id: int) -> Backfill:
    backfill = store.backfills.get(backfill_id)
    if backfill is None:
        raise BackfillError(f"no backfill {backfill_id}; 'flowtui backfill list' lists them")
    return backfill


def list_backfills(store: Store) -> list[Backfill]:
    return store.backfills.all()


_PROGRESS = {RunState.SUCCESS: "done", RunState.FAILED: "failed", RunState.RUNNING: "running",
             RunState.QUEUED: "left"}


def progress(store: Store, backfill: Backfill) -> dict[str, int]:
    counts = {"done": 0, "running": 0, "failed": 0, "left": 0}
    for state, n in store.backfills.run_counts(backfill.id).items():
        counts[_PROGRESS[state]] += n
    counts["skipped"] = backfill.skipped
    return counts


def next_runs(store: Store, backfill: Backfill, limit: int) -> list[Run]:
    """The backfill's queued runs to start next, in its order."""
    if limit <= 0:
        return []
    return store.backfills.runs_in(backfill.id, RunState.QUEUED,
                                   newest_first=backfill.run_order == "newest-first",
                                   limit=limit)


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
    records = store.backfills
    with store.transaction():
        backfill = get_backfill(store, backfill_id)  # read inside: no change is lost between
        if backfill.state not in _ALLOWED[state]:
            raise BackfillError(f"backfill {backfill.id} is {backfill.state}; it cannot be "
                                f"{_DONE[action]}")
        records.move(backfill, state, cause="operator", actor=user, audit=f"backfill_{action}")
        running: list[Run] = []
        if state == "cancelled":
            # Runs that never started are removed: the date has no run, as before the backfill.
            records.drop_queued_runs(backfill.id)
            running = records.runs_in(backfill.id, RunState.RUNNING)
            records.request_cancels([run.pk for run in running], user)
    if state == "running":
        finish_if_done(store, backfill.id, actor=user)  # resumed with nothing left to run
    owners = {live_owner(store, run.runner_id) for run in running} | {live_daemon(store)}
    for owner in sorted(o for o in owners if o is not None):
        wake(store, owner)
    return Change(backfill, state, len(running))


def finish_if_done(store: Store, backfill_id: int, actor: str = "") -> None:
    """A running backfill none of whose runs is queued or running any more is done."""
    store.backfills.finish_if_done(backfill_id, cause="scheduler", actor=actor)


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


def _active(engine: Engine, backfill_id: int) -> int:
    return sum(1 for live in engine.runs.values() if live.backfill_id == backfill_id)


def start_backfill_runs(engine: Engine, store: Store, dag: DagSpec, now: float) -> None:
    """Start queued runs of the DAG's active backfills, at most ``parallelism`` each."""
    from flowtui.runner.actions import claim, live_owner

    for backfill in store.backfills.running(dag.dag_id):
        if backfill.runner_id not in (None, engine.runner_id) and \
                live_owner(store, backfill.runner_id) is not None:
            continue  # a `backfill --wait` process executes this one
        several = store.kind == "postgresql"  # parallelism holds across hosts
        active = store.backfill_active(backfill.id) if several else _active(engine, backfill.id)
        free = backfill.parallelism - active
        cap = (backfill.id, backfill.parallelism) if several else None
        if free > 0:
            # Adopted runs may still read as queued until the flush: ask for enough to skip them.
            for run in next_runs(store, backfill, free + active):
                if run.pk not in engine.runs and free > 0 and \
                        claim(store, run, engine.runner_id, backfill_cap=cap):
                    engine.adopt_run(dag, run, now)
                    free -= 1
            engine.flush()  # running in the store before a cancel can delete it as queued


def run_in_foreground(store: Store, config: Config, dag: DagSpec, backfill_id: int,
                      on_progress: Callable[[dict[str, int]], Any] | None = None
                      ) -> dict[str, int]:
    """``backfill --wait``: execute the backfill in this process; return its final progress."""
    import os

    from flowtui.runner.engine import Engine
    from flowtui.runner.executor import process_start_time
    from flowtui.runner.operator import handle_own_requests

    runner_id = store.register_runner("backfill", process_start_time(os.getpid()))
    actor = f"runner {runner_id}"
    store.backfills.set_runner(backfill_id, runner_id)
    engine = Engine(store, config, runner_id)
    engine.on_wake = lambda now: handle_own_requests(engine, now)

    def refill(now: float) -> None:
        backfill = get_backfill(store, backfill_id)
        if backfill.state != "running" or engine.stopping:
            return
        for run in next_runs(store, backfill, backfill.parallelism - _active(engine, backfill_id)):
            engine.adopt_run(dag, run, now)

    def finished(live: LiveRun) -> None:
        engine.flush()
        if on_progress is not None:
            on_progress(progress(store, get_backfill(store, backfill_id)))
        refill(store.now())

    engine.on_run_finished = finished
    try:
        engine.install_signal_handlers()
        signal.signal(signal.SIGUSR1, lambda *_: None)  # operator requests wake the loop
        refill(store.now())
        engine.run_until_done()
        engine.flush()
    finally:
        engine.close()
        store.stop_runner(runner_id)
        store.backfills.set_runner(backfill_id, None)
    finish_if_done(store, backfill_id, actor=actor)
    return progress(store, get_backfill(store, backfill_id))


__all__ = ["BackfillError", "Change", "Plan", "change_state", "finish_if_done", "get_backfill",
           "intervals_in_range", "list_backfills", "next_runs", "overlapping", "parse_day",
           "plan_backfill", "prepare", "progress", "queue_backfill", "run_in_foreground",
           "start_backfill_runs", "to_json"]
