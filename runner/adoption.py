"""Taking over runs from the store: after a runner died, or for an operator's action."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flowtui.runner import executor, protocol
from flowtui.runner.model import DagSpec
from flowtui.store import RunState, TaskState, host_name
from flowtui.store.models import Run

if TYPE_CHECKING:
    from flowtui.runner.engine import Engine
    from flowtui.runner.live import LiveRun, LiveTask

S = TaskState


def adopt_run(engine: Engine, dag: DagSpec, run: Run, now: float, *,
              settle: bool = True) -> LiveRun:
    """Rebuild a run in memory from the store and carry on from where it stands.

    A running task whose process still lives (same pid and start time) is watched to its end;
    one whose process is gone ends with the exit status its shell wrote, or as a zombie. With
    ``settle`` false, a run with nothing left to do is only read (an operator's request on a
    finished run decides whether it runs again)."""
    if run.pk in engine.runs:  # already ours: taking it twice would run its tasks twice
        return engine.runs[run.pk]
    lifecycle = engine.lifecycle
    store = engine.store
    tis = {t.task_id: t for t in store.task_instances(run.pk)}
    live = lifecycle.new_live_run(dag, run, now)
    for task_id, task in live.tasks.items():
        ti = tis.get(task_id)
        if ti is None:
            continue
        task.state = task.recorded = S(ti.state)
        task.try_number = ti.try_number
        task.max_tries = ti.max_tries
        task.reason = ti.reason
        task.next_try_at = ti.next_try_at
        task.first_poke_at = ti.first_poke_at
        if ti.pool != task.spec.pool:
            task.pool_override = ti.pool
    if len(tis) < len(dag.tasks):  # tasks added to the DAG since the run was created
        store.add_task_instances(run.pk, dag.dag_id, run.run_id, [
            (t.task_id, t.max_tries, t.spec.pool, t.spec.pool_slots, t.priority)
            for t in live.tasks.values() if t.task_id not in tis])
    lifecycle.recount(live, now)
    live.state = RunState(run.state)
    if not settle and live.unfinished == 0:
        return live
    lifecycle.move_run(live, live.state, RunState.RUNNING, now, "scheduler",
                       detail="taken by this runner", runner_id=engine.runner_id,
                       first_start=now, end_date=None)
    lifecycle.take(live)
    attempts = {(t.task_id, t.try_number): t for t in store.tries(live.pk)}
    # Tries whose recorded pid cannot vouch for them are looked for by their mark, in one pass.
    leaders = executor.find_leaders({
        a.exit_path for task in live.tasks.values() if task.state in (S.RUNNING, S.QUEUED)
        for a in [attempts.get((task.task_id, task.try_number))]
        if a is not None and not (a.pid and a.pid_start
                                  and executor.same_process(a.pid, a.pid_start))})
    for task in sorted(live.tasks.values(), key=lambda t: t.order):
        _resume(engine, task, now, attempts, leaders)
    if live.unfinished == 0 and settle:
        lifecycle.finish(live, now)
    return live


def _resume(engine: Engine, task: LiveTask, now: float, attempts: dict,
            leaders: dict[str, int]) -> None:
    lifecycle = engine.lifecycle
    state = task.state
    if state == S.QUEUED and engine.remote.adopt(task, None, now):
        return  # offered to every runner (SPEC 10): followed until one claims it
    if state in (S.RUNNING, S.QUEUED):
        _resume_running(engine, task, now, attempts.get((task.task_id, task.try_number)),
                        leaders)
    elif state in (S.UP_FOR_RETRY, S.UP_FOR_RESCHEDULE):
        lifecycle.due_at(task, task.next_try_at or now)
    elif state == S.SCHEDULED:
        task.state = S.NONE  # decided again from its upstreams, as a fresh task would be
        lifecycle.evaluate(task, now)
    elif state == S.NONE:
        lifecycle.evaluate(task, now)


def resume_running(engine: Engine, task: LiveTask, now: float) -> None:
    """A running task of a run held here whose try's runner is gone (SPEC 10: a runner of
    this host that ran it for this run's runner died): read again from the try's row, its
    process watched here, or its end read, as an adoption does."""
    attempt = next((a for a in engine.store.tries(task.run.pk, task.task_id)
                    if a.try_number == task.try_number), None)
    leaders: dict[str, int] = {}
    if attempt is not None and not (attempt.pid and attempt.pid_start and
                                    executor.same_process(attempt.pid, attempt.pid_start)):
        leaders = executor.find_leaders({attempt.exit_path})
    task.state = S.RUNNING
    _resume_running(engine, task, now, attempt, leaders)


def start_afresh(engine: Engine, task: LiveTask, now: float) -> None:
    """A try recorded as running whose process never started: it did not happen. The task
    is recorded as scheduled again, with the try number it had before, and starts as soon as
    a slot allows (here, or offered to another runner)."""
    task.try_number = max(0, task.try_number - 1)
    engine.lifecycle.move(task, S.SCHEDULED, "scheduler", "its try never started (its runner "
                          "stopped first): it starts again", now, try_number=task.try_number,
                          pid=None, start_date=None, notify=False)
    engine.lifecycle.schedule(task, now)


def _resume_running(engine: Engine, task: LiveTask, now: float, attempt: Any,
                    leaders: dict[str, int]) -> None:
    live = task.run
    lifecycle = engine.lifecycle
    if attempt is None:  # the state says running but no try was written: start it afresh
        start_afresh(engine, task, now)
        return
    task.log_path, task.exit_path = attempt.log_path, attempt.exit_path
    task.started_at = attempt.start_date
    task.state = S.RUNNING
    if engine.remote.adopt(task, attempt, now):
        return  # claimed by a runner (SPEC 10): it runs the try, this runner follows it
    if engine.store.kind == "postgresql" and attempt.runner_id not in (None, engine.runner_id) \
            and engine.host_of(attempt.runner_id) not in (None, host_name()):
        # Its process ran on a host declared lost (SPEC 10): nothing here can watch it, and
        # that host's runner kills it when it comes back. The try fails and retries here.
        task.watch = protocol.LogWatch(task.log_path, last_activity=now)
        lifecycle.end_try(task, None, "host lost", now)
        return
    pid = executor.locate(attempt.pid, attempt.pid_start, attempt.exit_path, leaders)
    if pid is not None:
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        if pidfd is not None:
            engine.slots.take(task)
            task.pid, task.pidfd = pid, pidfd
            task.pid_start = executor.process_start_time(pid)
            task.watch = protocol.LogWatch(task.log_path, last_activity=now)
            engine.watch(task, pidfd)
            if task.spec.execution_timeout:
                lifecycle.timeout_at(task, attempt.start_date + task.spec.execution_timeout)
            engine.changes.try_adopted(live.pk, task.task_id, task.try_number,
                                       engine.runner_id, pid, task.pid_start)
            return
    code = executor.read_exit_status(task.exit_path)
    if code is None and executor.never_started(task.exit_path, task.log_path):
        # The try was recorded but its command never ran (the runner died before it opened
        # the try's gate). Nothing ran: start it afresh.
        engine.changes.try_forgotten(live.pk, task.task_id, task.try_number)
        start_afresh(engine, task, now)
        return
    # Whatever the shell left behind (a child that outlived it) must not run beside a retry.
    executor.kill_tree(None, task.exit_path)
    task.watch = protocol.LogWatch(task.log_path, last_activity=now)
    if code is not None:
        # It ended while no runner watched: its real code, and the time its shell wrote it.
        written = executor.status_written_at(task.exit_path)
        ended = now if written is None else min(now, written)
        lifecycle.end_try(task, code, None, ended)
    else:
        lifecycle.end_try(task, None, "zombie", now)

