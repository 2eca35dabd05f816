"""Text and JSON renderings shared by the CLI: echo, tables, runs and tasks as JSON, errors."""
from __future__ import annotations

import time
from typing import Any

from flowtui.runner.clock import iso
from flowtui.runner.excerpt import find_excerpt
from flowtui.runner.text import visible
from flowtui.store import Store
from flowtui.store.models import Run, TaskInstance, Try


def echo(text: str = "", **kwargs: Any) -> None:
    """``print`` for CLI output that carries pipeline-file or task text."""
    print(visible(text), **kwargs)


def run_json(run: Run) -> dict[str, Any]:
    return {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "run_type": run.run_type,
        "logical_date": iso(run.logical_date),
        "data_interval_start": iso(run.data_interval_start),
        "data_interval_end": iso(run.data_interval_end),
        "state": run.state,
        "start_date": iso(run.start_date),
        "end_date": iso(run.end_date),
    }


def task_json(ti: TaskInstance, error: str | None = None) -> dict[str, Any]:
    """A task instance as SPEC 6 lists it, plus ``error``: its latest try's error excerpt."""
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "state": ti.state,
        "try_number": ti.try_number,
        "max_tries": ti.max_tries,
        "start_date": iso(ti.start_date),
        "end_date": iso(ti.end_date),
        "duration": None if ti.duration is None else round(ti.duration, 6),
        "exit_code": ti.exit_code,
        "pid": ti.pid,
        "reason": ti.reason,
        "error": error,
    }


def local_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain aligned text table (no colour: it is also what scripts and pipes read); every
    cell is shown with ``visible``, so pipeline-file text cannot drive the terminal."""
    rows = [[visible(cell, inline=True) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)


def latest_tries(store: Store, run: Run) -> dict[str, Try]:
    latest: dict[str, Try] = {}
    for attempt in store.tries(run.pk):
        if attempt.task_id not in latest or attempt.try_number > latest[attempt.task_id].try_number:
            latest[attempt.task_id] = attempt
    return latest


def task_errors(store: Store, run: Run, only: set[str] | None = None) -> dict[str, str]:
    """The error excerpt of each task's latest try log, for the tasks that have one (of
    ``only`` these tasks, when given: reading a thousand logs is not free)."""
    errors = {}
    for task_id, attempt in latest_tries(store, run).items():
        if only is not None and task_id not in only:
            continue
        excerpt = find_excerpt(attempt.log_path)
        if excerpt is not None:
            errors[task_id] = excerpt.text
    return errors
