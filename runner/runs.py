"""Creating runs and executing one in the foreground (``flowtui run``)."""
from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any
from zoneinfo import ZoneInfo

from flowtui.runner.clock import SYSTEM, Clock, iso
from flowtui.runner.config import Config
from flowtui.runner.engine import Engine, Listener
from flowtui.runner.executor import process_start_time
from flowtui.runner.model import DagSpec
from flowtui.runner.operator import handle_own_requests
from flowtui.runner.schedule import DATE_RANGE, in_date_range
from flowtui.store import RunState, Store, current_user
from flowtui.store.models import Run


class RunError(Exception):
    """A run cannot be created or started; the message says why and what to do."""


def parse_date(value: str, timezone: str) -> float:
    """A logical date from ``2026-01-01`` (midnight in the DAG's timezone) or an ISO datetime."""
    tz = ZoneInfo(timezone)
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            moment = dt.datetime(day.year, day.month, day.day, tzinfo=tz)
        else:
            moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RunError(f"cannot read the date {value!r}; use YYYY-MM-DD or an ISO datetime "
                       "such as 2026-01-01T06:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    if not in_date_range(moment, timezone):
        raise RunError(f"the date {value!r} is out of range; {DATE_RANGE}")
    return moment.timestamp()


def partition_day(partition: str, timezone: str) -> float | None:
    """A dataset partition that is a day (``2026-03-28``) as that midnight in the DAG's
    timezone, so a consumer run's ``{{ ds }}`` is its partition; None for any other name."""
    if len(partition) != 10:
        return None
    try:
        return parse_date(partition, timezone)
    except RunError:
        return None


_NAMEABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+=-]{0,63}")


def consumer_run_id(partition: str, now: float, timezone: str) -> str:
    """A dataset-triggered run's id: ``dataset__`` and the partition it is for when that is a
    plain name (a day, an hour, a region), else the moment it was made (a partition is free
    text from ``datasets emit``, and a run id becomes a folder of log files)."""
    if _NAMEABLE.fullmatch(partition) and ".." not in partition:
        return f"dataset__{partition}"
    return f"dataset__{iso(now, timezone)}"


def check_runnable(dag: DagSpec, config: Config) -> None:
    """Refuse, before anything is recorded, a run that could never finish."""
    for task in dag.tasks.values():
        size = config.pool_size(task.pool)
        if size is None:
            raise RunError(f"task {task.task_id!r} uses pool {task.pool!r}, which flowtui.toml "
                           "does not define; add it under [pools]")
        if task.pool_slots > size:
            raise RunError(f"task {task.task_id!r} needs {task.pool_slots} slots of pool "
                           f"{task.pool!r}, which has {size}; lower pool_slots or grow the pool")


def create_manual_run(store: Store, dag: DagSpec, *, logical_date: float | None,
                      conf: dict[str, Any], run_type: str = "manual",
                      state: str = RunState.RUNNING.value, runner_id: int | None = None) -> Run:
    """A manual run (``manual__<logical date>``, with ``.N`` when that id is taken) with every
    task ``none``; its logical date is now, to the second, unless one is given."""
    when = float(int(store.now())) if logical_date is None else logical_date
    base = f"{run_type}__{iso(when, dag.timezone)}"
    tasks = [(t.task_id, t.max_tries, t.pool, t.pool_slots, dag.priority[t.task_id])
             for t in dag.tasks.values()]
    return store.create_run(dag_id=dag.dag_id, run_id=base, run_type=run_type,
                            logical_date=when, data_interval_start=when, data_interval_end=when,
                            conf=conf, state=RunState(state), runner_id=runner_id, tasks=tasks,
                            cause="operator", actor=current_user(), unique=True)


def run_in_foreground(store: Store, config: Config, dag: DagSpec, *,
                      logical_date: float | None, conf: dict[str, Any],
                      listener: Listener | None = None, handle_signals: bool = True,
                      clock: Clock = SYSTEM) -> Run:
    """Create a manual run, execute it here until it ends, and return its final row."""
    check_runnable(dag, config)
    runner_id = store.register_runner("run", process_start_time(os.getpid()))
    engine = Engine(store, config, runner_id, listener=listener, clock=clock)
    try:
        run = create_manual_run(store, dag, logical_date=logical_date, conf=conf,
                                runner_id=runner_id)
        if handle_signals:
            engine.install_signal_handlers()
        engine.on_wake = lambda now: handle_own_requests(engine, now)
        engine.start_run(dag, run)
        engine.run_until_done()
    finally:
        engine.close()
        store.stop_runner(runner_id)
    final = store.get_run_by_pk(run.pk)
    assert final is not None
    return final
