"""Applying operator requests (clear, retry, mark, kill) to the runs a runner owns."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from flowtui.runner.actions import already
from flowtui.runner.trigger_rules import Counts
from flowtui.store import RunState, TaskState

if TYPE_CHECKING:
    from flowtui.runner.engine import Engine, LiveRun

S = TaskState
_TERMINAL = frozenset({S.SUCCESS, S.FAILED, S.UPSTREAM_FAILED, S.SKIPPED})


def pending_requests(engine: "Engine") -> list[tuple]:
    return engine.store.conn.execute(
        "SELECT r.id, r.user, r.action, r.run_pk, r.task_ids, r.options FROM requests r "
        "JOIN dag_runs d ON d.id = r.run_pk WHERE r.done_at IS NULL ORDER BY r.id").fetchall()


def apply_request(engine: "Engine", live: "LiveRun", request: tuple, now: float) -> str:
    """Change the live run as the operator asked; return a one-line result."""
    request_id, user, action, _, task_ids_json, options_json = request
    task_ids: list[str] = json.loads(task_ids_json)
    options = json.loads(options_json)
    cause = f"operator:{user}"
    done: list[str] = []
    notes: list[str] = []
    if action == "cancel_run":
        cancel_run(engine, live, f"cancelled by {user}", cause, now)
        done = [live.run_id]
    for task_id in task_ids:
        task = live.tasks.get(task_id)
        if task is None:
            continue
        if action == "kill":
            if task.state == S.RUNNING and task.pid is not None:
                engine._kill(task, f"killed by {user}", now, grace=task.spec.kill_grace)
                done.append(task_id)
        elif action == "retry":
            if task.state == S.UP_FOR_RETRY:
                task.next_try_at = now
                engine._set_reason(task, f"retry now, requested by {user}", now)
                engine._schedule(task, now)
                done.append(task_id)
        elif action == "clear":
            _reset(engine, task, S.NONE, f"cleared by {user}", cause, now)
            task.max_tries = task.try_number + task.spec.retries + 1
            engine._ops.append(("UPDATE task_instances SET max_tries = ?, exit_code = NULL, "
                                "pid = NULL, start_date = NULL WHERE run_pk = ? AND task_id = ?",
                                (task.max_tries, live.pk, task_id)))
            done.append(task_id)
        elif action == "mark":
            target = S(options["state"])
            if task.state == target and task.override is None:
                # Marking what already is would only rewrite its end (and so its duration).
                notes.append(already(task_id, target.value))
                continue
            _reset(engine, task, target, f"marked {target.value} by {user}", cause, now)
            done.append(task_id)
    if action in ("clear", "mark") and done:
        _recount(engine, live, now)
    result = f"{action}: {', '.join(done) or 'nothing to do'}"
    if notes:
        result = "; ".join(([result] if done else []) + notes)
    engine._ops.append(("UPDATE requests SET done_at = ?, result = ? WHERE id = ?",
                        (time.time(), result, request_id)))
    return f"{action} {', '.join(done)}"


# A mark of a task that already ended changes its state only: its start and end (its duration,
# which feeds duration history and SLA predictions) stay as recorded.
SQL_TI_RELABEL = ("UPDATE task_instances SET state=?, reason=?, end_date=COALESCE(end_date, ?), "
                  "next_try_at=NULL, updated_at=? WHERE run_pk=? AND task_id=?")


def _reset(engine: "Engine", task, target: TaskState, reason: str, cause: str, now: float) -> None:
    """Force a task to ``target`` (operator's word); a running process is killed first."""
    if task.state == S.RUNNING and task.pid is not None:
        # The try ends as failed with the operator's reason; the task keeps the new state.
        task.override = (target, reason, cause)
        engine._kill(task, reason, now, grace=task.spec.kill_grace)
        return
    task.next_try_at = None
    if target not in _TERMINAL:
        engine._set_state(task, target, cause, reason, now, end=None, operator=True)
        return
    old = task.state
    engine._set_state(task, target, cause, reason, now, write=False, operator=True)
    engine._ops.append((SQL_TI_RELABEL, (target.value, reason, now, now, task.run.pk,
                                         task.task_id)))
    engine._event(task, old, target, cause, reason, now)
    engine._notify(task.run, task, target.value, reason)


def _recount(engine: "Engine", live: "LiveRun", now: float) -> None:
    """Recompute upstream tallies after the operator moved tasks, then decide again."""
    for task in live.tasks.values():
        task.counts = Counts(len(task.spec.deps))
    for task in live.tasks.values():
        if task.state in _TERMINAL:
            for child in live.dag.downstream[task.task_id]:
                live.tasks[child].counts.add(task.state.value)
    live.unfinished = sum(1 for t in live.tasks.values()
                          if t.state not in _TERMINAL or getattr(t, "override", None))
    # An operator who reopens tasks of a run that timed out or was cancelled wants it to run.
    live.timed_out = live.cancelled = False
    if live.state != RunState.RUNNING:
        live.state = RunState.RUNNING
        engine.runs[live.pk] = live
        engine._ops.append(("UPDATE dag_runs SET state = 'running', end_date = NULL, "
                            "runner_id = ?, updated_at = ? WHERE id = ?",
                            (engine.runner_id, now, live.pk)))
    for task in sorted(live.tasks.values(), key=lambda t: t.order):
        engine._evaluate(task, now)
    if live.unfinished == 0:
        engine._finish_run(live, now)


def handle_own_requests(engine: "Engine", now: float) -> None:
    """For a foreground runner: apply the requests aimed at the runs it is executing."""
    for request in pending_requests(engine):
        live = engine.runs.get(request[3])
        if live is not None:
            apply_request(engine, live, request, now)


def cancel_run(engine: "Engine", live: "LiveRun", reason: str, cause: str, now: float) -> None:
    """End a run now: running trees are killed and fail, tasks not started are skipped."""
    for task in live.tasks.values():
        if task.state == S.RUNNING and task.pid is not None:
            task.override = (S.FAILED, reason, cause)
            engine._kill(task, reason, now, grace=task.spec.kill_grace)
        elif task.state not in _TERMINAL and task.state != S.RUNNING:
            engine._set_state(task, S.SKIPPED, cause, reason, now, end=now, operator=True)
            live.unfinished -= 1
    live.timed_out = live.cancelled = True  # nothing new starts in this run
    if live.unfinished == 0:
        engine._finish_run(live, now)
