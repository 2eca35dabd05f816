"""Applying operator requests (clear, retry, mark, kill, cancel) to the runs an engine owns.

This is the only implementation of each action: a live runner applies it to its runs, and with
no runner alive the CLI applies it through a short-lived engine that launches nothing
(``runner/actions.py``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flowtui.store import TERMINAL, RunState, TaskState
from flowtui.store.models import Request

if TYPE_CHECKING:
    from flowtui.runner.engine import Engine
    from flowtui.runner.live import LiveRun, LiveTask

S = TaskState


def already(task_id: str, state: str) -> str:
    """What a mark to the state a task already has says (it changes nothing)."""
    return f"{task_id} is already {state}; nothing changed"


def apply_request(engine: Engine, live: LiveRun, request: Request, now: float) -> str:
    """Change the live run as the operator asked; record and return a one-line result."""
    lifecycle = engine.lifecycle
    user, action = request.user, request.action
    done: list[str] = []
    notes: list[str] = []
    if action == "cancel_run":
        cancel_run(engine, live, f"cancelled by {user}", user, now)
        done = [live.run_id]
    for task_id in request.task_ids:
        task = live.tasks.get(task_id)
        if task is None:
            continue
        if action in ("clear", "mark"):
            engine.remote.settle(task, now)  # an offered task is taken back first (SPEC 10)
        elif action == "kill" and task.state == S.QUEUED:
            engine.remote.follow(now, {live.pk})  # claimed since the owner last looked?
        if action == "kill":
            if task.state == S.RUNNING and task.executing:
                lifecycle.kill(task, f"killed by {user}", now)
                done.append(task_id)
        elif action == "retry":
            if task.state == S.UP_FOR_RETRY:
                task.next_try_at = now
                lifecycle.set_reason(task, f"retry now, requested by {user}", now)
                engine.changes.task_retry_at(task.run.pk, task.task_id, now)
                lifecycle.schedule(task, now)
                done.append(task_id)
        elif action == "clear":
            # A cleared task gets its retries again, counted from the tries it has used.
            task.max_tries = task.try_number + task.spec.retries + 1
            _reset(engine, task, S.NONE, f"cleared by {user}", user, now,
                   max_tries=task.max_tries, exit_code=None, pid=None, start_date=None,
                   end_date=None)
            done.append(task_id)
        elif action == "mark":
            target = S(request.options["state"])
            if task.state == target and task.override is None:
                # Marking what already is would only rewrite its end (and so its duration).
                notes.append(already(task_id, target.value))
                continue
            _reset(engine, task, target, f"marked {target.value} by {user}", user, now)
            done.append(task_id)
    if action in ("clear", "mark") and done:
        _reopen(engine, live, now, user)
    result = f"{action}: {', '.join(done) or 'nothing to do'}"
    if notes:
        result = "; ".join(([result] if done else []) + notes)
    engine.changes.request_done(request.id, result, engine.now())
    return result


def _reset(engine: Engine, task: LiveTask, target: TaskState, reason: str, user: str,
           now: float, **fields: object) -> None:
    """Force a task to ``target`` (the operator's word); a running process is killed first and
    the task takes ``target`` once it has ended."""
    lifecycle = engine.lifecycle
    if task.state == S.RUNNING and task.executing:
        # The try ends as failed with the operator's reason; the task keeps the new state.
        task.override = (target, reason, user)
        lifecycle.kill(task, reason, now)
        if "max_tries" in fields:
            engine.changes.task_max_tries(task.run.pk, task.task_id, task.max_tries)
        return
    task.next_try_at = None
    if target in TERMINAL:
        # A task that already ended keeps its start and end (its duration feeds the duration
        # history and SLA predictions); only its state changes.
        fields = {"keep_end": now, "pid": None}
    lifecycle.move(task, target, "operator", reason, now, actor=user, operator=True,
                   next_try_at=None, **fields)


def _reopen(engine: Engine, live: LiveRun, now: float, user: str) -> None:
    """After tasks were moved by hand: recount, run again if the run had ended, decide again."""
    lifecycle = engine.lifecycle
    lifecycle.recount(live, now)
    # An operator who reopens tasks of a run that timed out or was cancelled wants it to run.
    live.timed_out = live.cancelled = False
    if live.state != RunState.RUNNING:
        lifecycle.move_run(live, live.state, RunState.RUNNING, now, "operator", actor=user,
                           runner_id=engine.runner_id, end_date=None)
        lifecycle.take(live)
    for task in sorted(live.tasks.values(), key=lambda t: t.order):
        lifecycle.evaluate(task, now)
    if live.unfinished == 0:
        lifecycle.finish(live, now)


def cancel_run(engine: Engine, live: LiveRun, reason: str, user: str, now: float) -> None:
    """End a run now: running trees are killed and fail, tasks not started are skipped."""
    lifecycle = engine.lifecycle
    for task in live.tasks.values():
        engine.remote.settle(task, now)  # an offered task is taken back first (SPEC 10)
        if task.state == S.RUNNING and task.executing:
            task.override = (S.FAILED, reason, user)
            lifecycle.kill(task, reason, now)
        elif task.state not in TERMINAL and task.state != S.RUNNING:
            lifecycle.move(task, S.SKIPPED, "operator", reason, now, actor=user, operator=True,
                           end_date=now)
            live.unfinished -= 1
    live.timed_out = live.cancelled = True  # nothing new starts in this run
    if live.unfinished == 0:
        lifecycle.finish(live, now)


def handle_own_requests(engine: Engine, now: float) -> None:
    """For a foreground runner: apply the requests aimed at the runs it is executing."""
    for request in engine.store.pending_requests():
        live = engine.runs.get(request.run_pk)
        if live is not None:
            engine.apply(request, live, now)
