"""Helpers for tests that execute runs in-process against a real store and real subprocesses."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flowtui.runner.clock import SYSTEM, Clock
from flowtui.runner.config import load_config
from flowtui.runner.loader import load_folder
from flowtui.runner.runs import run_in_foreground
from flowtui.store import Store
from flowtui.store.models import Run, TaskInstance, Try


def run_dag(home: Path, pipelines: Path, dag_id: str, *, conf: dict[str, Any] | None = None,
            logical_date: float | None = None, clock: Clock = SYSTEM,
            ) -> tuple[Store, Run, dict[str, TaskInstance]]:
    """Load the folder, execute one manual run of ``dag_id`` in-process, return its rows.
    With a ``ManualClock(autojump=True)``, waits with nothing running (retries, reschedules)
    take no real time."""
    result = load_folder(pipelines)
    assert not result.errors, [str(e) for e in result.errors]
    config = load_config(home, pipelines)
    store = Store.open(config.db_path, now=clock.now)
    run = run_in_foreground(store, config, result.dags[dag_id], logical_date=logical_date,
                            conf=conf or {}, handle_signals=False, clock=clock)
    tis = {ti.task_id: ti for ti in store.task_instances(run.pk)}
    return store, run, tis


def tries(store: Store, run: Run, task_id: str) -> list[Try]:
    return store.tries(run.pk, task_id)


def log_text(store: Store, run: Run, task_id: str, try_number: int = 1) -> str:
    t = [t for t in store.tries(run.pk, task_id) if t.try_number == try_number][0]
    return Path(t.log_path).read_text()
